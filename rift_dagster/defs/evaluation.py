"""Benchmarks and scores: Mean@k / Pass@k of the base model and of every checkpoint (Tables 2/3/5),
sampled and graded out of process (Pipes)."""
import time
from dataclasses import asdict

import dagster as dg
from rift_core.stats import to_markdown

from rift_dagster.defs.problems import base_model, base_model_info
from rift_dagster.defs.resources import (RiftStorage, RunProfile, file_hash, run_step, settings_key,
                                         table_metadata)
from rift_dagster.defs.training import METHODS, checkpoints

model_partitions = dg.StaticPartitionsDefinition(["base", *METHODS])


@dg.asset(group_name="evaluation", kinds={"parquet"})
def benchmarks(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """The profile's evaluation sets (paper: GSM8K, MATH-500, Minerva Math, OlympiadBench, AIME24,
    AMC23, College Math), one Parquet file each, with the profile's per-benchmark limit applied."""
    import polars as pl
    from rift_core.data import load_problems

    p = rift.load()
    wanted = {storage.benchmark_path(p.name, name) for name in p.benchmarks}
    for stale in set((storage.root(p.name) / "benchmarks").glob("*.parquet")) - wanted:
        stale.unlink()  # a benchmark the profile no longer lists is no longer scored
    counts, frames = [], []
    for name in p.benchmarks:
        df = load_problems(name, data_root=p.data_root, limit=p.evaluation.limit, seed=p.seed,
                           fmt=p.problem_format(name))
        frames.append(df.with_columns(pl.lit(name).alias("benchmark")))
        storage.write(frames[-1], p.name, str(storage.benchmark_path(p.name, name).relative_to(storage.root(p.name))))
        counts.append({"benchmark": name, "problems": len(df)})
    storage.record_run(context, p.name, path=storage.root(p.name) / "benchmarks")
    storage.publish_views(p.name)
    return dg.MaterializeResult(metadata={
        **table_metadata(pl.concat(frames, how="diagonal_relaxed")),
        "benchmarks": dg.MetadataValue.md(to_markdown(pl.DataFrame(counts))),
    })


def in_paper_order(scores):
    """Score rows ordered base, sft, dft, rft, dpo, rift, naive (the row order of the results tables)."""
    import polars as pl

    return scores.sort(pl.col("model").cast(pl.Enum(model_partitions.get_partition_keys())), maintain_order=True)


def results_markdown(storage: RiftStorage, profile) -> dict:
    """The paper-shaped Mean@k / Pass@k tables over every model scored so far."""
    import polars as pl
    from rift_core.evaluate import results_tables

    files = sorted((storage.root(profile.name) / "scores").glob("*.parquet"))
    scores = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    mean, pas = results_tables(in_paper_order(scores))
    return {"mean_at_k": to_markdown(mean), "pass_at_k": to_markdown(pas)}


@dg.asset(
    group_name="evaluation", partitions_def=model_partitions, kinds={"pytorch", "parquet"}, pool="compute",
    deps=[base_model, benchmarks,
          dg.AssetDep(checkpoints, partition_mapping=dg.StaticPartitionMapping({m: m for m in METHODS}))],
    check_specs=[dg.AssetCheckSpec("scores_valid", asset="benchmark_scores")],
)
def benchmark_scores(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                     pipes_client: dg.ResourceParam[dg.PipesClient]):
    """Mean@k and Pass@k on every benchmark for the base model (`base`) or one method's checkpoint."""
    import polars as pl

    key = context.partition_key
    p = rift.load()
    root = storage.root(p.name)
    base = base_model_info(storage, p)
    if key == "base":
        model, lineage = base["path"], {}
    else:
        model = str(root / "checkpoints" / key)
        if not (root / "checkpoints" / key / "rift_run.json").exists():
            raise dg.Failure(f"checkpoints[{key}] is not materialised yet (no {model}/rift_run.json)")
        lineage = {"checkpoint_hash": file_hash(model), "buffer_hash": file_hash(root / "labels.parquet")}
    bench = {name: storage.benchmark_path(p.name, name) for name in p.benchmarks}
    missing = [name for name, f in bench.items() if not f.exists()]
    if missing:
        raise dg.Failure(f"benchmarks {', '.join(missing)} are not materialised yet; materialise `benchmarks` first")
    start = time.time()
    # the benchmarks asset applied the limit; the same inputs resume an interrupted evaluation from its chunks
    config = asdict(p.evaluation_config())
    settings = {"config": config, "workers": rift.label_workers, "timeout_s": rift.label_timeout_s}
    out_dir = root / "eval" / key / settings_key(file_hash(model), [file_hash(f) for f in bench.values()], settings)
    metadata, results = run_step(context, rift, pipes_client, "evaluate", {
        **settings, "model": model, "benchmarks": {n: str(f) for n, f in bench.items()}, "out_dir": str(out_dir),
        "output": str(out_dir / "scores.parquet")})
    scores = pl.read_parquet(out_dir / "scores.parquet").with_columns(pl.lit(key).alias("model"))
    path = storage.write(scores, p.name, f"scores/{key}.parquet")
    lineage = {**lineage, "base_model_hash": base["hash"]}
    storage.record_run(context, p.name, path=path, method=key, **lineage)
    storage.publish_views(p.name)
    tables = results_markdown(storage, p)
    yield dg.MaterializeResult(metadata={
        **metadata,
        **table_metadata(scores),
        "all_models_mean_at_k": dg.MetadataValue.md(tables["mean_at_k"]),
        "all_models_pass_at_k": dg.MetadataValue.md(tables["pass_at_k"]),
        "duration_s": round(time.time() - start, 2),
        **lineage,
    })
    yield from results
