"""Rollouts: K sampled responses per seed problem from the base model."""
import time
from pathlib import Path

import dagster as dg

from rift_dagster.defs.problems import base_model, base_model_info, seed_problems
from rift_dagster.defs.resources import RiftStorage, RunProfile, file_hash, settings_key


def sample(context, rift: RunProfile, profile, model: str, problems_path: Path, chunks_root: Path, output: Path,
           seed_offset: int = 0):
    """Generate rollouts into `output`. Chunks go to `chunks_root/<hash of model, problems, settings>/`, so a
    re-run with the same inputs resumes from the finished chunks and changed settings start afresh."""
    import polars as pl

    config = {**profile.generation, "seed": profile.generation.get("seed", profile.seed) + seed_offset}
    chunk_dir = chunks_root / settings_key(file_hash(model), file_hash(problems_path), config)
    spec = {"problems": str(problems_path), "model": model, "chunks": str(chunk_dir), "output": str(output),
            "config": config}
    context.log.info(f"rollout chunks: {chunk_dir}")
    rift.worker(context, "generate", spec, chunk_dir / "spec.json")
    return pl.read_parquet(output)


def rollout_metadata(df, path: Path, seconds: float) -> dict:
    n = len(df)
    return {
        "dagster/row_count": n,
        "problems": df["problem_id"].n_unique(),
        "k": int(df["sample_idx"].max()) + 1 if n else 0,
        "mean_response_tokens": round(float(df["num_tokens"].mean() or 0), 1),
        "cut_at_length_pct": round(100 * float((df["finish_reason"] == "length").mean() or 0), 1),
        "tokens_per_s": round(float(df["num_tokens"].sum()) / max(seconds, 1e-9), 1),
        "path": dg.MetadataValue.path(str(path)),
        "duration_s": round(seconds, 2),
    }


@dg.asset(group_name="generation", deps=[seed_problems, base_model], kinds={"pytorch", "parquet"})
def rollouts(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """K samples per seed problem (paper: K=8, temperature 0.7, top-p 0.8). Written in chunks under
    `rollout_chunks/`: re-materialising after a crash resumes after the last finished chunk."""
    p = rift.load()
    root = storage.root(p.name)
    base = base_model_info(storage, p)
    start = time.time()
    path = root / "rollouts.parquet"
    df = sample(context, rift, p, base["path"], root / "problems.parquet", root / "rollout_chunks", path)
    digest = file_hash(path)
    storage.record_run(context, p.name, path=path, content_hash=digest, base_model_hash=base["hash"],
                       problems_hash=file_hash(root / "problems.parquet"))
    storage.publish_views(p.name)
    return dg.MaterializeResult(
        metadata={**rollout_metadata(df, path, time.time() - start), "content_hash": digest,
                  "base_model_hash": base["hash"]},
        data_version=dg.DataVersion(digest),
    )
