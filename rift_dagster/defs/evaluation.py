"""Benchmarks and scores: Mean@k / Pass@k of the base model and of every checkpoint (Tables 2/3/5),
sampled and graded out of process (Pipes)."""
import time
from dataclasses import asdict

import dagster as dg
import polars as pl
from rift_core.data import load_problems
from rift_core.report import MODELS, results_markdown, scored_models
from rift_core.results import comparisons, seed_long
from rift_core.stats import to_markdown

from rift_dagster.defs import problems, training
from rift_dagster.defs.resources import (RiftStorage, RunProfile, file_hash, read_parquets, run_step, settings_key,
                                         table_metadata)
from rift_dagster.defs.training import METHODS, partition

model_partitions = dg.MultiPartitionsDefinition({"model": dg.StaticPartitionsDefinition(MODELS),
                                                 "seed": problems.seed_partitions})
# benchmark_scores[model, seed] reads checkpoints[model, seed]; the base model's scores need no checkpoint
same_method_and_seed = dg.MultiPartitionMapping({
    "method": dg.DimensionPartitionMapping("model", dg.StaticPartitionMapping({m: m for m in METHODS})),
    "seed": dg.DimensionPartitionMapping("seed", dg.IdentityPartitionMapping()),
})


@dg.asset(group_name="evaluation", kinds={"parquet"})
def benchmarks(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """The profile's evaluation sets (paper: GSM8K, MATH-500, Minerva Math, OlympiadBench, AIME24,
    AMC23, College Math), one Parquet file each, with the profile's per-benchmark limit applied."""
    p = rift.load()
    wanted = {storage.benchmark_path(p.name, name) for name in p.benchmarks}
    for stale in set((storage.root(p.name) / "benchmarks").glob("*.parquet")) - wanted:
        stale.unlink()  # a benchmark the profile no longer lists is no longer scored
    frames = {name: load_problems(name, data_root=p.data_root, limit=p.evaluation.limit, seed=p.seed,
                                  fmt=p.problem_format(name)).with_columns(pl.lit(name).alias("benchmark"))
              for name in p.benchmarks}
    storage.store(context, p.name, {storage.benchmark_path(p.name, name): df for name, df in frames.items()},
                  output=storage.root(p.name) / "benchmarks")
    counts = pl.DataFrame([{"benchmark": name, "problems": len(df)} for name, df in frames.items()])
    return dg.MaterializeResult(metadata={
        **table_metadata(pl.concat(frames.values(), how="diagonal_relaxed")),
        "benchmarks": dg.MetadataValue.md(to_markdown(counts)),
    })


def read_scores(storage: RiftStorage, profile):
    """Every score row written so far (all models and seeds), or None."""
    return read_parquets(storage.root(profile.name) / "scores")


def score(context, rift: RunProfile, storage: RiftStorage, pipes_client: dg.PipesClient, profile, model: str,
          work_dir, seed: int, bench: dict | None = None, **sampling) -> tuple:
    """Sample and grade `model` on `bench` ({name: Parquet path}; default: the profile's benchmarks) out of process,
    with the evaluation settings at replicate `seed` (GenerationConfig `sampling` overrides, e.g. k). Work goes to
    `work_dir/<hash of the inputs>/`, so the same inputs resume an interrupted evaluation from its chunks. Returns
    (scores frame with a `seed` column, the child's metadata, its checks)."""
    if bench is None:
        bench = {name: storage.benchmark_path(profile.name, name) for name in profile.benchmarks}
    missing = [name for name, f in bench.items() if not f.exists()]
    if missing:
        raise dg.Failure(f"benchmarks {', '.join(missing)} are not materialised yet; materialise `benchmarks` first")
    config = {**asdict(profile.evaluation_config(seed)), **sampling}
    settings = {"config": config, "workers": rift.label_workers, "timeout_s": rift.label_timeout_s}
    out_dir = work_dir / settings_key(file_hash(model), [file_hash(f) for f in bench.values()], settings)
    metadata, results = run_step(context, rift, pipes_client, "evaluate", {
        **settings, "model": model, "benchmarks": {n: str(f) for n, f in bench.items()}, "out_dir": str(out_dir),
        "output": str(out_dir / "scores.parquet")})
    scores = pl.read_parquet(out_dir / "scores.parquet").with_columns(pl.lit(seed).alias("seed"))
    return scores, metadata, results


@dg.asset(
    group_name="evaluation", partitions_def=model_partitions, kinds={"pytorch", "parquet"}, pool="compute",
    deps=[problems.base_model, benchmarks, dg.AssetDep(training.checkpoints, partition_mapping=same_method_and_seed)],
    check_specs=[dg.AssetCheckSpec("scores_valid", asset="benchmark_scores")],
)
def benchmark_scores(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                     pipes_client: dg.ResourceParam[dg.PipesClient]):
    """Mean@k and Pass@k on every benchmark for the base model (`base`) or one method's checkpoint, sampled with
    the replicate seed (the base model is scored at every seed too)."""
    key, seed = partition(context, "model")
    p = rift.load()
    root = storage.root(p.name)
    base = problems.base_model_info(storage, p)
    if key == "base":
        model, lineage = base["path"], {}
    else:
        ckpt = storage.checkpoint_dir(p.name, key, seed)
        if not (ckpt / "rift_run.json").exists():
            raise dg.Failure(f"checkpoints[{key}, seed {seed}] is not materialised yet (no {ckpt}/rift_run.json)")
        model = str(ckpt)
        lineage = {"checkpoint_hash": file_hash(model), "buffer_hash": file_hash(root / "labels.parquet")}
    start = time.time()
    scores, metadata, results = score(context, rift, storage, pipes_client, p, model,
                                      root / "eval" / key / f"seed={seed}", seed)
    scores = scores.with_columns(pl.lit(key).alias("model"))
    lineage = {**lineage, "base_model_hash": base["hash"]}
    storage.store(context, p.name, {storage.scores_path(p.name, key, seed): scores}, method=key, seed=seed, **lineage)
    tables = results_markdown(read_scores(storage, p))
    yield dg.MaterializeResult(metadata={
        **metadata,
        **table_metadata(scores),
        "all_models_mean_at_k": dg.MetadataValue.md(tables["mean_at_k"]),
        "all_models_pass_at_k": dg.MetadataValue.md(tables["pass_at_k"]),
        "duration_s": round(time.time() - start, 2),
        **lineage,
    })
    yield from results


@dg.asset(group_name="evaluation", deps=[benchmark_scores], kinds={"duckdb"})
def results(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """The paper's Tables 2/3 with their spread: Mean@k and Pass@k per method and benchmark as mean ± std over the
    replicate seeds (SQL view `results`), and RIFT against RFT, SFT, DFT and DPO: the difference of Avg Mean@k
    with a 95% paired bootstrap interval over problems and seeds (view `comparisons`)."""
    p = rift.load()
    scores = read_scores(storage, p)
    if scores is None:
        raise dg.Failure("no benchmark_scores partition is materialised yet; materialise benchmark_scores first")
    models = scored_models(scores)
    long = pl.concat([seed_long(scores, metric, models=models) for metric in ("mean_at_k", "pass_at_k")])
    if "rift" not in models:
        raise dg.Failure("benchmark_scores has no `rift` partition yet: the comparisons need RIFT's scores")
    versus = comparisons(scores)
    storage.store(context, p.name, {"results.parquet": long, "comparisons.parquet": versus})
    tables = results_markdown(scores)
    seeds = sorted(scores["seed"].unique().to_list())
    return dg.MaterializeResult(metadata={
        **table_metadata(long),
        "seeds": ", ".join(map(str, seeds)),
        "mean_at_k": dg.MetadataValue.md(tables["mean_at_k"]),
        "pass_at_k": dg.MetadataValue.md(tables["pass_at_k"]),
        "comparisons": dg.MetadataValue.md(to_markdown(versus)),
    })
