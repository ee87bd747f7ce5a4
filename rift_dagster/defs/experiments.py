"""The paper's further protocols, as assets of the `experiments` group, driven by the profile's `experiments`
section (which variants, sizes and seeds): the learning-rate sweep and the collapse of the naive loss on a
validation split, reward schemes (Table 6), K (Tables 8-10), a second round from the SFT, DFT and RIFT checkpoints
(Tables 11-13), the regeneration rounds' scores, and efficiency (Table 7, Figure 1). Work is partitioned by variant x
replicate seed where that fits; every file lands under `<data_dir>/<profile>/experiments/` and each table is a SQL
view. The `report` asset (rift_dagster.defs.report) gathers them.

Each partition trains and scores in one step (the checkpoint is an intermediate, kept on disk), so a crash resumes:
training from its last checkpoint, sampling from its finished chunks."""
import json
from pathlib import Path

import dagster as dg
import polars as pl
from rift_core.collapse import collapse_table, epoch_dirs, verdict
from rift_core.data import load_problems
from rift_core.figures import accuracy_vs_memory, collapse_figure, markdown_image
from rift_core.report import COLLAPSE_FIGURE, FIGURE1, MODELS
from rift_core.rewards import assign_rewards
from rift_core.schemes import PAPER_VARIANTS
from rift_core.stats import buffer_table, k_ablation_table, mixed_table, to_markdown

from rift_dagster.defs import evaluation, iteration, problems, rewards, training
from rift_dagster.defs.evaluation import read_scores, score
from rift_dagster.defs.generation import sample
from rift_dagster.defs.iteration import round_dir, round_partitions
from rift_dagster.defs.problems import DYNAMIC, base_model_info, seed_partitions
from rift_dagster.defs.resources import RiftStorage, RunProfile, table_metadata
from rift_dagster.defs.rewards import label
from rift_dagster.defs.training import train, write_train_data

GROUP = "experiments"
# the keys are the profile's selection (problems.PROFILE_PARTITIONS), so "Materialize all" runs what it selects
variant_partitions = dg.MultiPartitionsDefinition({"variant": DYNAMIC["reward_variant"], "seed": seed_partitions})
k_partitions = dg.MultiPartitionsDefinition({"k": DYNAMIC["train_k"], "seed": seed_partitions})
source_partitions = dg.MultiPartitionsDefinition({"source": DYNAMIC["second_round_source"], "seed": seed_partitions})
method_partitions = DYNAMIC["lr_sweep_method"]


def keys(context) -> dict:
    return context.partition_key.keys_by_dimension


def root(storage: RiftStorage, profile) -> Path:
    return storage.root(profile.name) / "experiments"


def check_selected(value: str, selected: list, what: str, profile) -> None:
    if value not in [str(v) for v in selected]:
        raise dg.Failure(f"{what} {value!r} is not selected by profile {profile.name!r} (experiments: "
                         f"{[str(v) for v in selected]}); add it to the profile to run it", allow_retries=False)


def train_rift_and_score(context, rift, storage, pipes_client, p, model: str, labels, work: Path, seed: int,
                         name: str, **sampling):
    """RIFT trained from `model` on `labels` at replicate `seed` into `work/checkpoint`, then scored on the
    benchmarks (sampling overrides, e.g. k); (the score rows named `name`, the training's metadata)."""
    data, _ = write_train_data(storage, p, "rift", labels,
                               str((work / "train_data.parquet").relative_to(storage.root(p.name))))
    metadata, _ = train(context, rift, pipes_client, p, "rift", model, data, work / "checkpoint", seed=seed)
    scores, _, _ = score(context, rift, storage, pipes_client, p, str(work / "checkpoint"), work / "eval", seed,
                         **sampling)
    return scores.with_columns(pl.lit(name).alias("model")), metadata


# ------------------------------------------------------------------------------- validation: rates, collapse


@dg.asset(group_name=GROUP, kinds={"parquet"})
def validation_problems(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage):
    """The profile's validation problems (`experiments.validation`): learning rates are chosen and the collapse is
    watched on them, never on a benchmark."""
    p = rift.load()
    if not p.experiments.validation:
        raise dg.Failure(f"profile {p.name!r} sets no `experiments.validation` source (e.g. toy:validation); "
                         "the learning-rate sweep and the collapse experiment need one", allow_retries=False)
    if p.experiments.validation in p.benchmarks:
        raise dg.Failure(f"experiments.validation {p.experiments.validation!r} is also a benchmark: choosing rates "
                         "on it would tune on the test set", allow_retries=False)
    df = load_problems(p.experiments.validation, data_root=p.data_root, limit=p.experiments.validation_limit,
                       seed=p.seed, fmt=p.problem_format(p.experiments.validation))
    storage.store(context, p.name, {"experiments/validation.parquet": df}, hash_as="content_hash")
    return dg.MaterializeResult(metadata={**table_metadata(df), "source": p.experiments.validation})


def validation_score(context, rift, storage, pipes_client, p, model: str, work: Path, seed: int) -> dict:
    scores, _, _ = score(context, rift, storage, pipes_client, p, model, work, seed,
                         bench={"validation": root(storage, p) / "validation.parquet"})
    return {"mean_at_k": float(scores["mean_at_k"][0]), "pass_at_k": float(scores["pass_at_k"][0])}


@dg.asset(group_name=GROUP, partitions_def=method_partitions, kinds={"pytorch", "parquet"}, pool="compute",
          deps=[validation_problems, rewards.reward_labels, problems.base_model])
def lr_sweep(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
             pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """One method trained at its profile rate times each of `experiments.lr_factors` (first replicate seed) and
    scored on the validation split beside the base model; the best rate by validation Mean@k is the one to write
    into the profile (`methods.<method>.learning_rate`). SQL view `lr_sweep`."""
    method, p = context.partition_key, rift.load()
    check_selected(method, p.experiments.lr_sweep_methods, "method", p)
    seed, base = p.experiment_seeds[0], base_model_info(storage, p)
    data, _ = write_train_data(storage, p, method, pl.read_parquet(storage.root(p.name) / "labels.parquet"),
                               f"train_data/{method}.parquet")
    work = root(storage, p) / "lr_sweep"
    rows = [{"method": "base", "learning_rate": None, "factor": None,
             **validation_score(context, rift, storage, pipes_client, p, base["path"], work / "base" / "eval", seed)}]
    rate = p.train_config(method, base["path"], "").learning_rate
    for factor in p.experiments.lr_factors:
        lr = rate * factor
        out = work / method / f"lr={lr:.3g}"
        context.log.info(f"{method}: learning rate {lr:.3g} ({factor} x {rate:.3g})")
        train(context, rift, pipes_client, p, method, base["path"], data, out / "checkpoint", seed=seed,
              learning_rate=lr)
        rows.append({"method": method, "learning_rate": lr, "factor": factor,
                     **validation_score(context, rift, storage, pipes_client, p, str(out / "checkpoint"),
                                        out / "eval", seed)})
    table = pl.DataFrame(rows).with_columns(pl.lit(seed).alias("seed"))
    tried = table.filter(pl.col("method") == method)
    best = tried.sort("mean_at_k", descending=True).row(0, named=True)
    base_score = rows[0]["mean_at_k"]
    table = table.with_columns((pl.col("learning_rate") == best["learning_rate"]).fill_null(False).alias("chosen"))
    storage.store(context, p.name, {f"experiments/lr_sweep/{method}.parquet": table})
    below = best["mean_at_k"] < base_score
    if below:
        context.log.warning(f"{method}: every rate in the sweep ends below the base model on validation "
                            f"({100 * best['mean_at_k']:.1f}% < {100 * base_score:.1f}%)")
    return dg.MaterializeResult(metadata={
        "sweep": dg.MetadataValue.md(to_markdown(table.with_columns(pl.col("mean_at_k", "pass_at_k") * 100))),
        "chosen_learning_rate": best["learning_rate"], "validation_mean_at_k": round(100 * best["mean_at_k"], 2),
        "base_validation_mean_at_k": round(100 * base_score, 2), "every_rate_below_base": below,
    })


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"}, pool="compute",
          deps=[validation_problems, rewards.reward_labels, problems.base_model])
def collapse(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
             pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """The paper's Theorem 3.2, shown: the naive reward-weighted NLL and RIFT trained on the same buffer at the same
    rate for `experiments.collapse_epochs` epochs, each epoch's weights scored on the validation split. The naive
    loss falls without bound while its accuracy collapses; RIFT's stays bounded. SQL view `collapse`."""
    p = rift.load()
    seed, base = p.experiment_seeds[0], base_model_info(storage, p)
    rate = p.experiments.collapse_learning_rate or p.train_config("rift", base["path"], "").learning_rate
    work = root(storage, p) / "collapse"
    labels = pl.read_parquet(storage.root(p.name) / "labels.parquet")
    start_score = validation_score(context, rift, storage, pipes_client, p, base["path"], work / "base_eval", seed)
    runs, scored = {}, [{"method": m, "epoch": 0, "mean_at_k": start_score["mean_at_k"]} for m in ("naive", "rift")]
    for method in ("naive", "rift"):
        data, _ = write_train_data(storage, p, method, labels, f"experiments/collapse/{method}/train_data.parquet")
        out = work / method / "checkpoint"
        train(context, rift, pipes_client, p, method, base["path"], data, out, seed=seed, learning_rate=rate,
              num_epochs=p.experiments.collapse_epochs, save_epochs=True)
        runs[method] = json.loads((out / "rift_run.json").read_text())
        for epoch, folder in epoch_dirs(out):
            s = validation_score(context, rift, storage, pipes_client, p, str(folder), work / method / f"eval-{epoch}", seed)
            scored.append({"method": method, "epoch": epoch, "mean_at_k": s["mean_at_k"]})
    table = collapse_table(runs, pl.DataFrame(scored))
    table = table.with_columns(pl.lit(rate).alias("learning_rate"), pl.lit(seed).alias("seed"))
    fig = collapse_figure(table, title=f"naive vs RIFT at lr {rate:.3g}")
    storage.store(context, p.name, {"experiments/collapse.parquet": table, f"report/{COLLAPSE_FIGURE}": fig})
    return dg.MaterializeResult(metadata={
        "collapse": dg.MetadataValue.md(to_markdown(table)), "verdict": verdict(table),
        "figure": dg.MetadataValue.md(markdown_image(fig, "collapse: loss and validation Mean@k per epoch")),
    })


# --------------------------------------------------------------------------------------- Table 6: reward schemes


@dg.asset(group_name=GROUP, partitions_def=variant_partitions, kinds={"pytorch", "parquet"}, pool="compute",
          deps=[rewards.reward_labels, problems.base_model, evaluation.benchmarks])
def reward_scheme_scores(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                         pipes_client: dg.ResourceParam[dg.PipesClient]):
    """RIFT trained on the one rollout buffer relabelled with one reward variant of the paper's Table 6 (constant
    r_neg -0.2/-0.5/-0.8, Gaussian, GPG mean-centred, GPG scaled), at one replicate seed, and scored."""
    variant, seed = keys(context)["variant"], int(keys(context)["seed"])
    p = rift.load()
    check_selected(variant, p.experiments.reward_variants, "reward variant", p)
    labels = assign_rewards(pl.read_parquet(storage.root(p.name) / "labels.parquet").drop("reward"),
                            **{"r_pos": p.rewards.r_pos, **PAPER_VARIANTS[variant]})
    work = root(storage, p) / "reward_schemes" / variant / f"seed={seed}"
    scores, metadata = train_rift_and_score(context, rift, storage, pipes_client, p,
                                                     base_model_info(storage, p)["path"], labels, work, seed, variant)
    storage.store(context, p.name, {f"experiments/reward_schemes/scores/{variant}-seed{seed}.parquet": scores})
    yield dg.MaterializeResult(metadata={**metadata, **table_metadata(scores),
                                         "avg_mean_at_k": round(100 * float(scores["mean_at_k"].mean()), 2)})


# ------------------------------------------------------------------------------------------- Tables 8-10: K


@dg.asset(group_name=GROUP, deps=[problems.seed_problems, problems.base_model], kinds={"pytorch", "parquet"},
          pool="compute")
def k_rollouts(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
               pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """One labelled generation at the largest K of `experiments.ks` (paper: 16); the buffer of a smaller K is each
    problem's first K samples. The samples of a problem are independent draws from the same policy, so the first K
    of them are distributed exactly as K sampled afresh (docs/ARCHITECTURE.md). Tables 9/10: view `table9_10`."""
    p = rift.load()
    work = root(storage, p) / "k"
    k = max(p.experiments.ks)
    metadata = sample(context, rift, pipes_client, p, base_model_info(storage, p)["path"],
                      storage.root(p.name) / "problems.parquet", work / "chunks", work / "rollouts.parquet", k=k)
    labels = label(context, rift, p, pl.read_parquet(work / "rollouts.parquet"))
    table = k_ablation_table(labels, sorted(p.experiments.ks)).drop("model")
    storage.store(context, p.name, {"experiments/k/labels.parquet": labels,
                                    "experiments/k/buffer_stats.parquet": table})
    return dg.MaterializeResult(metadata={**metadata, "k": k, "tables_9_10": dg.MetadataValue.md(to_markdown(table))})


@dg.asset(group_name=GROUP, partitions_def=k_partitions, deps=[k_rollouts, evaluation.benchmarks],
          kinds={"pytorch", "parquet"}, pool="compute")
def k_scores(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
             pipes_client: dg.ResourceParam[dg.PipesClient]):
    """RIFT trained on the first K samples of each problem at one replicate seed, scored with the paper's Mean@3 /
    Pass@3 (`experiments.small_k` samples)."""
    k, seed = int(keys(context)["k"]), int(keys(context)["seed"])
    p = rift.load()
    check_selected(str(k), p.experiments.ks, "K", p)
    labels = pl.read_parquet(root(storage, p) / "k" / "labels.parquet").filter(pl.col("sample_idx") < k)
    work = root(storage, p) / "k" / f"k={k}" / f"seed={seed}"
    scores, metadata = train_rift_and_score(context, rift, storage, pipes_client, p,
                                                     base_model_info(storage, p)["path"], labels, work, seed,
                                                     f"K={k}", k=p.experiments.small_k)
    scores = scores.with_columns(pl.lit(k).alias("train_k"))
    storage.store(context, p.name, {f"experiments/k/scores/k{k}-seed{seed}.parquet": scores})
    yield dg.MaterializeResult(metadata={**metadata, **table_metadata(scores)})


# ------------------------------------------------------------------------------- Tables 11-13: second round


@dg.asset(group_name=GROUP, partitions_def=source_partitions, kinds={"pytorch", "parquet"}, pool="compute",
          deps=[evaluation.benchmarks, problems.seed_problems,
                dg.AssetDep(training.checkpoints, partition_mapping=dg.MultiPartitionMapping({
              "method": dg.DimensionPartitionMapping("source", dg.IdentityPartitionMapping()),
              "seed": dg.DimensionPartitionMapping("seed", dg.IdentityPartitionMapping())}))])
def second_round_scores(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                        pipes_client: dg.ResourceParam[dg.PipesClient]):
    """A second round from one method's checkpoint (paper Table 11: SFT, DFT, RIFT): sample a new buffer from it,
    label it, train RIFT starting from it, and score both it and the result with Mean@3 / Pass@3."""
    source, seed = keys(context)["source"], int(keys(context)["seed"])
    p = rift.load()
    check_selected(source, p.experiments.second_round_from, "second-round source", p)
    start_from = storage.checkpoint_dir(p.name, source, seed)
    if not (start_from / "rift_run.json").exists():
        raise dg.Failure(f"checkpoints[{source}, seed {seed}] is not materialised yet ({start_from})")
    work = root(storage, p) / "second_round" / source / f"seed={seed}"
    # a sampling stream of its own: not the first round's draws
    sample(context, rift, pipes_client, p, str(start_from), storage.root(p.name) / "problems.parquet",
           work / "chunks", work / "rollouts.parquet", seed_offset=1000 + seed)
    labels = label(context, rift, p, pl.read_parquet(work / "rollouts.parquet")).with_columns(pl.lit(source).alias("model"))
    stats = buffer_table(labels).join(mixed_table(labels).drop("num"), on=["model", "dataset"])
    small_k = p.experiments.small_k
    before, _, _ = score(context, rift, storage, pipes_client, p, str(start_from), work / "eval_before", seed, k=small_k)
    after, metadata = train_rift_and_score(context, rift, storage, pipes_client, p, str(start_from), labels,
                                                    work, seed, f"{source} + RIFT", k=small_k)
    scores = pl.concat([before.with_columns(pl.lit(source).alias("model")), after], how="diagonal_relaxed")
    name = f"{source}-seed{seed}.parquet"
    storage.store(context, p.name, {
        f"experiments/second_round/scores/{name}": scores.with_columns(pl.lit(source).alias("source")),
        f"experiments/second_round/buffers/{name}": stats.with_columns(pl.lit(seed).alias("seed")),
        work / "labels.parquet": labels})
    yield dg.MaterializeResult(metadata={**metadata, "buffer": dg.MetadataValue.md(to_markdown(stats)),
                                         **table_metadata(scores)})


@dg.asset(group_name=GROUP, partitions_def=round_partitions, deps=[iteration.round_checkpoint, evaluation.benchmarks],
          kinds={"pytorch", "parquet"}, pool="compute")
def round_scores(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                 pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """Mean@k / Pass@k of one regeneration round's checkpoint, scored like `benchmark_scores` (first replicate
    seed), so the iterative protocol shows its effect, not only its training. SQL view `round_scores`."""
    key, p = context.partition_key, rift.load()
    ckpt = round_dir(storage, p, key) / "checkpoint"
    if not (ckpt / "rift_run.json").exists():
        raise dg.Failure(f"round_checkpoint[{key}] is not materialised yet ({ckpt})")
    seed = p.experiment_seeds[0]
    scores, metadata, _ = score(context, rift, storage, pipes_client, p, str(ckpt), round_dir(storage, p, key) / "eval", seed)
    scores = scores.with_columns(pl.lit(f"round {key}").alias("model"))
    storage.store(context, p.name, {f"rounds/round={key}/scores.parquet": scores})
    return dg.MaterializeResult(metadata={**metadata, **table_metadata(scores),
                                          "avg_mean_at_k": round(100 * float(scores["mean_at_k"].mean()), 2)})


# ------------------------------------------------------------------------------- Table 7 / Figure 1: efficiency


def efficiency_rows(storage: RiftStorage, p):
    """Per method and seed: peak training memory, median step time and wall time (from each checkpoint's
    rift_run.json) with that checkpoint's Avg Mean@k."""
    scores = read_scores(storage, p)
    if scores is None:
        raise dg.Failure("no benchmark_scores are materialised yet")
    avg = scores.group_by("model", "seed").agg((pl.col("mean_at_k").mean() * 100).alias("avg_mean_at_k"))
    rows = [{"method": method, "seed": seed, "peak_memory_gb": summary.get("peak_memory_bytes", 0) / 2**30,
             "peak_memory_source": summary.get("peak_memory_source"),
             "step_seconds_median": summary.get("step_seconds_median"), "train_seconds": summary.get("seconds")}
            for method, seed, summary in storage.trained_runs(p.name)]
    if not rows:
        raise dg.Failure("no checkpoints are materialised yet")
    return pl.DataFrame(rows).join(avg.rename({"model": "method"}), on=["method", "seed"], how="left")


@dg.asset(group_name=GROUP, deps=[training.checkpoints, evaluation.benchmark_scores], kinds={"duckdb"})
def efficiency(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """The paper's Table 7 (peak training memory, step time and Avg Mean@k per method; view `table7`, a row per
    method and seed) and Figure 1 (accuracy against peak memory, one point per method with its seed spread). On a
    CPU the memory is the training process's peak RSS (`peak_memory_source`), on a GPU CUDA's peak allocation."""
    p = rift.load()
    rows = efficiency_rows(storage, p)
    summary = (rows.group_by("method")
               .agg(pl.col("peak_memory_gb").mean(), pl.col("step_seconds_median").mean(),
                    pl.col("avg_mean_at_k").mean().alias("mean"), pl.col("avg_mean_at_k").std().alias("std"),
                    pl.len().alias("seeds"))
               .sort(pl.col("method").cast(pl.Enum(MODELS))))
    fig = accuracy_vs_memory(summary, title="Figure 1: accuracy against peak training memory")
    storage.store(context, p.name, {"experiments/efficiency.parquet": rows, f"report/{FIGURE1}": fig})
    return dg.MaterializeResult(metadata={
        "table7": dg.MetadataValue.md(to_markdown(summary.with_columns(pl.col(pl.Float64).round(3)))),
        "figure1": dg.MetadataValue.md(markdown_image(fig, "Figure 1: accuracy against peak memory")),
        **table_metadata(rows),
    })
