"""Checkpoints: the base model fine-tuned by each method, out of process (Pipes subprocess running
`python -m rift_core train`, wrapped by the `launcher` of the run profile resource, e.g.
`accelerate launch --num_processes 8`, to use several GPUs)."""
import json
import time
from pathlib import Path

import dagster as dg
from rift_core.profiles import METHODS as PROFILE_METHODS
from rift_core.stats import to_markdown

from rift_dagster.defs import checks
from rift_dagster.defs.problems import base_model, base_model_info, seed_problems
from rift_dagster.defs.resources import RiftStorage, RunProfile, file_hash, read_json
from rift_dagster.defs.rewards import reward_labels

METHODS = list(PROFILE_METHODS)
method_partitions = dg.StaticPartitionsDefinition(METHODS)


def training_data(method: str, problems, labels):
    """The frame `rift_core.trainer.train` expects for `method` (docs/ARCHITECTURE.md)."""
    import polars as pl

    if method in ("sft", "dft"):
        return problems.filter(pl.col("solution").is_not_null()).select("problem_id", "question", "solution")
    # DPO pairs each response with the ground-truth solution; the others need only the rewards
    sol = problems.select("problem_id", "solution")
    return labels.join(sol, on="problem_id", how="left").select(
        "problem_id", "sample_idx", "question", "response", "correct", "reward", "solution")


def loss_curve(run: dict, max_rows: int = 40):
    """(log entry, loss) rows of the run summary's loss history, thinned to at most ~`max_rows`."""
    import polars as pl

    losses = run.get("loss_history") or []
    df = pl.DataFrame({"log_entry": list(range(1, len(losses) + 1)), "loss": losses},
                      schema={"log_entry": pl.Int64, "loss": pl.Float64})
    return df.gather_every(max(1, len(df) // max_rows))


def cli_flags(options: dict) -> list[str]:
    """TrainConfig fields as `python -m rift_core train` flags (the CLI has one flag per field)."""
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, "none" if value is None else str(value)]
    return flags


def train(context, rift: RunProfile, profile, method: str, model: str, data_path: Path, out_dir: Path) -> dict:
    """Run one training job out of process; the same `out_dir` resumes from its last checkpoint."""
    options = {"reward_scheme": profile.rewards.get("scheme"), "seed": profile.seed, **profile.train_kwargs(method)}
    if rift.out_of_process:
        rift.pipes(context, rift.command("train", "--method", method, "--model", model, "--data", str(data_path),
                                         "--output", str(out_dir), *cli_flags(options), distributed=True))
    else:
        from rift_core.trainer import TrainConfig
        from rift_core.trainer import train as train_in_process

        train_in_process(TrainConfig(method=method, model=model, output_dir=str(out_dir), **options), data_path)
    run = read_json(out_dir / "rift_run.json")
    if not run:
        raise dg.Failure(f"training finished but wrote no {out_dir / 'rift_run.json'}")
    return run


@dg.asset(
    group_name="training", partitions_def=method_partitions, deps=[reward_labels, seed_problems, base_model],
    kinds={"pytorch"},
    check_specs=[dg.AssetCheckSpec("loss_finite", asset="checkpoints"),
                 dg.AssetCheckSpec("checkpoint_loadable", asset="checkpoints")],
)
def checkpoints(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage):
    """The base model fine-tuned with one method: SFT/DFT on ground-truth solutions, RFT on the positive
    samples, DPO on (response, ground truth) pairs, RIFT and the naive reward-weighted NLL on all samples."""
    import polars as pl

    method = context.partition_key
    p = rift.load()
    root = storage.root(p.name)
    base = base_model_info(storage, p)
    data = training_data(method, pl.read_parquet(root / "problems.parquet"), pl.read_parquet(root / "labels.parquet"))
    data_path = storage.write(data, p.name, f"train_data/{method}.parquet")
    out_dir = root / "checkpoints" / method
    start = time.time()
    run = train(context, rift, p, method, base["path"], data_path, out_dir)
    ckpt_hash = file_hash(out_dir)
    buffer_hash = file_hash(root / "labels.parquet")
    storage.record_run(context, p.name, path=out_dir, checkpoint_hash=ckpt_hash, buffer_hash=buffer_hash,
                       base_model_hash=base["hash"], method=method)
    storage.publish_views(p.name)
    curve = loss_curve(run)
    scalars = {k: v for k, v in run.items() if isinstance(v, (int, float, str, bool))}
    yield dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out_dir)),
            "checkpoint_hash": ckpt_hash, "buffer_hash": buffer_hash, "base_model_hash": base["hash"],
            "training_rows": len(data),
            "duration_s": round(time.time() - start, 2),
            "loss_curve": dg.MetadataValue.md(to_markdown(curve)),
            **{f"run/{k}": v for k, v in scalars.items()},
        },
        data_version=dg.DataVersion(ckpt_hash),
    )
    yield checks.loss_finite(run)
    yield checks.checkpoint_loadable(str(out_dir))
