"""Rollouts: K sampled responses per seed problem from the base model, sampled out of process (Pipes)."""
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import polars as pl

from rift_dagster.defs import problems
from rift_dagster.defs.resources import (RiftStorage, RunProfile, file_hash, run_step, settings_key,
                                         table_metadata)


def sample(context, rift: RunProfile, pipes_client: dg.PipesClient, profile, model: str, problems_path: Path,
           chunks_root: Path, output: Path, seed_offset: int = 0, **overrides) -> dict:
    """Generate rollouts into `output` (GenerationConfig `overrides`, e.g. k); returns the child's metadata. Chunks go to `chunks_root/<hash of
    model, problems, settings>/`, so a re-run with the same inputs resumes from the finished chunks and
    changed settings start afresh."""
    config = {**asdict(profile.generation_config(seed_offset)), **overrides}
    chunk_dir = chunks_root / settings_key(file_hash(model), file_hash(problems_path), config)
    metadata, _ = run_step(context, rift, pipes_client, "generate", {
        "problems": str(problems_path), "model": model, "chunks": str(chunk_dir), "output": str(output),
        "config": config})
    return {**metadata, **table_metadata(pl.read_parquet(output))}


@dg.asset(group_name="generation", deps=[problems.seed_problems, problems.base_model], kinds={"pytorch", "parquet"},
          pool="compute")
def rollouts(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
             pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """K samples per seed problem (paper: K=8, temperature 0.7, top-p 0.8). Written in chunks under
    `rollout_chunks/`: re-materialising after a crash resumes after the last finished chunk."""
    p = rift.load()
    root = storage.root(p.name)
    base = problems.base_model_info(storage, p)
    path = root / "rollouts.parquet"
    metadata = sample(context, rift, pipes_client, p, base["path"], root / "problems.parquet",
                      root / "rollout_chunks", path)
    digest = storage.store(context, p.name, output=path, hash_as="content_hash", base_model_hash=base["hash"],
                           problems_hash=file_hash(root / "problems.parquet"))
    return dg.MaterializeResult(metadata={**metadata, "content_hash": digest, "base_model_hash": base["hash"]},
                                data_version=dg.DataVersion(digest))
