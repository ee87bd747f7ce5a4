"""Checkpoints: the base model fine-tuned by each method of the registry (rift_core.methods), out of
process: a Pipes child (`python -m rift_dagster.worker`) behind the run profile's `launcher`, e.g.
`accelerate launch --config_file rift_core/configs/accelerate/ddp.yaml`, to use several GPUs."""
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import polars as pl
from rift_core import methods

from rift_dagster.defs import problems, rewards
from rift_dagster.defs.resources import RiftStorage, RunProfile, file_hash, run_step

METHODS = list(methods.METHODS)
checkpoint_partitions = dg.MultiPartitionsDefinition(
    {"method": dg.StaticPartitionsDefinition(METHODS), "seed": problems.seed_partitions})


def partition(context, first: str) -> tuple[str, int]:
    """(method or model, replicate seed) of a method x seed partition."""
    keys = context.partition_key.keys_by_dimension
    return keys[first], int(keys["seed"])


def write_train_data(storage: RiftStorage, profile, method: str, labels, relpath: str) -> tuple[Path, int]:
    """`method`'s training frame from the profile's problems and `labels`, written to `relpath` (under the profile's
    folder): its path and row count."""
    seeds = pl.read_parquet(storage.root(profile.name) / "problems.parquet")
    data = methods.get(method).buffer_rows(seeds, labels)
    return storage.write(data, profile.name, relpath), len(data)


def train(context, rift: RunProfile, pipes_client: dg.PipesClient, profile, method: str, model: str,
          data_path: Path, out_dir: Path, seed: int | None = None, **overrides) -> tuple[dict, list]:
    """Train one method out of process (replicate `seed`; TrainConfig `overrides`); the same `out_dir` resumes
    from its last checkpoint. Returns the child's metadata and checks."""
    cfg = profile.train_config(method, model, str(out_dir), seed=seed, **overrides)
    spec = methods.get(method)
    try:  # cheap, before any process starts: a buffer this method cannot learn from fails just this partition
        spec.rows(pl.read_parquet(data_path), str(data_path), **spec.option_values(cfg))
    except methods.NothingToTrain as e:
        raise dg.Failure(description=f"{method} cannot train on this buffer: {e}", allow_retries=False) from None
    metadata, results = run_step(context, rift, pipes_client, "train",
                                 {"config": asdict(cfg), "data": str(data_path)}, distributed=True)
    if not (out_dir / "rift_run.json").exists():
        raise dg.Failure(f"training finished but wrote no {out_dir / 'rift_run.json'}")
    return metadata, results


@dg.asset(
    group_name="training", partitions_def=checkpoint_partitions,
    deps=[rewards.reward_labels, problems.seed_problems, problems.base_model],
    kinds={"pytorch"}, pool="compute",
    check_specs=[dg.AssetCheckSpec("loss_finite", asset="checkpoints"),
                 dg.AssetCheckSpec("checkpoint_loadable", asset="checkpoints")],
)
def checkpoints(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                pipes_client: dg.ResourceParam[dg.PipesClient]):
    """The base model fine-tuned with one method: SFT/DFT on ground-truth solutions, RFT on the positive
    samples, DPO on (response, ground truth) pairs, KTO on unpaired right/wrong samples, RIFT and the naive
    reward-weighted NLL on all samples. Each replicate seed changes the data order and initialisation noise."""
    method, seed = partition(context, "method")
    p = rift.load()
    root = storage.root(p.name)
    base = problems.base_model_info(storage, p)
    data_path, n_rows = write_train_data(storage, p, method, pl.read_parquet(root / "labels.parquet"),
                                         f"train_data/{method}.parquet")
    out_dir = storage.checkpoint_dir(p.name, method, seed)
    start = time.time()
    metadata, results = train(context, rift, pipes_client, p, method, base["path"], data_path, out_dir, seed=seed)
    buffer_hash = file_hash(root / "labels.parquet")
    ckpt_hash = storage.store(context, p.name, output=out_dir, hash_as="checkpoint_hash", buffer_hash=buffer_hash,
                              base_model_hash=base["hash"], method=method, seed=seed)
    yield dg.MaterializeResult(
        metadata={**metadata, "checkpoint_hash": ckpt_hash, "buffer_hash": buffer_hash,
                  "base_model_hash": base["hash"], "training_rows": n_rows,
                  "duration_s": round(time.time() - start, 2)},
        data_version=dg.DataVersion(ckpt_hash),
    )
    yield from results
