"""The paper's iterative protocol (Table 11): sample a new round of rollouts from the latest RIFT
checkpoint, label them, retrain. Each round is a dynamic partition (`1`, `2`, ...) written under
`rounds/round=<n>/`, so every earlier round stays on disk and in SQL (`round_labels`, `round_rollouts`)."""
import time
from pathlib import Path

import dagster as dg
import polars as pl
from rift_core.stats import buffer_table, mixed_table, to_markdown

from rift_dagster import checks
from rift_dagster.defs import problems, training
from rift_dagster.defs.generation import sample
from rift_dagster.defs.resources import RiftStorage, RunProfile, file_hash, writing
from rift_dagster.defs.rewards import label, label_metadata, short_models
from rift_dagster.defs.training import train

round_partitions = dg.DynamicPartitionsDefinition(name="round")


def round_dir(storage: RiftStorage, profile, key: str) -> Path:
    return storage.root(profile.name) / "rounds" / f"round={key}"


def source_model(storage: RiftStorage, profile, key: str) -> Path:
    """The newest RIFT checkpoint before round `key`: an earlier round's, else checkpoints[rift] of the profile's
    first replicate seed."""
    n = int(key)
    for earlier in range(n - 1, 0, -1):
        ckpt = round_dir(storage, profile, str(earlier)) / "checkpoint"
        if (ckpt / "rift_run.json").exists():
            return ckpt
    seed = profile.replicates[0]
    ckpt = storage.checkpoint_dir(profile.name, "rift", seed)
    if not (ckpt / "rift_run.json").exists():
        raise dg.Failure(f"round {key} starts from a RIFT checkpoint, but checkpoints[rift, seed {seed}] is not "
                         f"materialised ({ckpt})")
    return ckpt


@dg.asset(
    group_name="iteration", partitions_def=round_partitions, kinds={"pytorch", "parquet"}, pool="compute",
    # reads the RIFT checkpoint of the first replicate seed (seeds are dynamic: no fixed key to name here)
    deps=[problems.seed_problems, dg.AssetDep(training.checkpoints, partition_mapping=dg.AllPartitionMapping())],
)
def round_rollouts(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                   pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """Rollouts of one round, sampled from the latest RIFT checkpoint with a round-specific seed."""
    key = context.partition_key
    if not key.isdigit() or int(key) < 1:
        raise dg.Failure(f"round partition keys are 1, 2, ...; got {key!r}")
    p = rift.load()
    model = source_model(storage, p, key)
    out = round_dir(storage, p, key)
    path = out / "rollouts.parquet"
    # a round-specific seed: fresh samples each round, reproducible per round
    metadata = sample(context, rift, pipes_client, p, str(model), storage.root(p.name) / "problems.parquet",
                      out / "chunks", path, seed_offset=int(key))
    storage.store(context, p.name, output=path, source_model=model, checkpoint_hash=file_hash(model))
    return dg.MaterializeResult(metadata={**metadata, "source_model": dg.MetadataValue.path(str(model))})


@dg.asset(
    group_name="iteration", partitions_def=round_partitions, deps=[round_rollouts], kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("labels_complete", asset="round_labels")],
)
def round_labels(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage):
    """Reward labels of one round, with Table 1 / Table 4 for it."""
    key = context.partition_key
    p = rift.load()
    start = time.time()
    path = round_dir(storage, p, key) / "labels.parquet"
    with writing(context, rift, path):
        roll = pl.read_parquet(round_dir(storage, p, key) / "rollouts.parquet")
        labels = label(context, rift, p, roll)
        storage.store(context, p.name, {path: labels}, hash_as="buffer_hash")
    yield dg.MaterializeResult(metadata={
        **label_metadata(labels, path, time.time() - start),
        "table1": dg.MetadataValue.md(to_markdown(short_models(buffer_table(labels)))),
        "table4": dg.MetadataValue.md(to_markdown(short_models(mixed_table(labels)))),
    })
    yield checks.as_result(checks.labels_complete(roll, labels))


@dg.asset(
    group_name="iteration", partitions_def=round_partitions, deps=[round_labels], kinds={"pytorch"}, pool="compute",
    check_specs=[dg.AssetCheckSpec("loss_finite", asset="round_checkpoint"),
                 dg.AssetCheckSpec("checkpoint_loadable", asset="round_checkpoint")],
)
def round_checkpoint(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage,
                     pipes_client: dg.ResourceParam[dg.PipesClient]):
    """RIFT retrained on this round's buffer, starting from the checkpoint that sampled it."""
    key = context.partition_key
    p = rift.load()
    out = round_dir(storage, p, key)
    model = source_model(storage, p, key)
    start = time.time()
    metadata, results = train(context, rift, pipes_client, p, "rift", str(model), out / "labels.parquet",
                              out / "checkpoint")
    digest = storage.store(context, p.name, output=out / "checkpoint", hash_as="checkpoint_hash",
                           buffer_hash=file_hash(out / "labels.parquet"), source_model=model, method="rift")
    yield dg.MaterializeResult(metadata={
        **metadata, "checkpoint_hash": digest, "source_model": dg.MetadataValue.path(str(model)),
        "duration_s": round(time.time() - start, 2),
    })
    yield from results
