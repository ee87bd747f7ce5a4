"""Reward labels (math-verify correctness -> scalar reward) and the buffer statistics of Tables 1/4."""
import time

import dagster as dg
import polars as pl
from rift_core.rewards import assign_rewards, label_rollouts
from rift_core.stats import buffer_table, k_ablation_table, mixed_table, to_markdown

from rift_dagster import checks
from rift_dagster.defs import generation
from rift_dagster.defs.resources import RiftStorage, RunProfile, file_hash, table_metadata, writing
from rift_dagster.worker import progress_logger


def label(context, rift: RunProfile, profile, rollouts_df):
    """Grade in worker processes of this run, with progress lines in the run's log."""
    labels = label_rollouts(rollouts_df, workers=rift.label_workers, timeout_s=rift.label_timeout_s,
                            on_progress=progress_logger(context.log.info))
    return assign_rewards(labels, **profile.rewards.model_dump())


def short_models(table):
    """The table with each model path cut to its last component, so the UI's narrow metadata column fits."""
    return table.with_columns(pl.col("model").str.strip_chars_end("/").str.split("/").list.last())


def label_metadata(labels, path, seconds: float) -> dict:
    status = labels.group_by("status").len().sort("status")
    return {
        **table_metadata(labels),
        "positives": int((labels["reward"] > 0).sum()),
        "negatives": int((labels["reward"] < 0).sum()),
        "zero_reward": int((labels["reward"] == 0).sum()),
        "status_counts": dg.MetadataValue.md(to_markdown(status)),
        "path": dg.MetadataValue.path(str(path)),
        "duration_s": round(seconds, 2),
    }


@dg.asset(
    group_name="rewards", deps=[generation.rollouts], kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("labels_complete", asset="reward_labels"),
                 dg.AssetCheckSpec("extraction_failure_rate", asset="reward_labels")],
)
def reward_labels(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage):
    """Each rollout graded against its reference answer with math-verify, then given the profile's
    reward (paper: +1.0 correct, -0.2 incorrect; or a group-normalised scheme)."""
    p = rift.load()
    root = storage.root(p.name)
    start = time.time()
    with writing(context, rift, root / "labels.parquet"):
        roll = pl.read_parquet(root / "rollouts.parquet")
        labels = label(context, rift, p, roll)
        digest = storage.store(context, p.name, {"labels.parquet": labels}, hash_as="buffer_hash",
                               rollouts_hash=file_hash(root / "rollouts.parquet"))
    yield dg.MaterializeResult(
        metadata={**label_metadata(labels, root / "labels.parquet", time.time() - start), "buffer_hash": digest,
                  **{f"reward_{k}": v for k, v in p.rewards.model_dump().items()}},
        data_version=dg.DataVersion(digest),
    )
    yield checks.as_result(checks.labels_complete(roll, labels))
    yield checks.as_result(checks.extraction_failure_rate(labels))


@dg.asset(
    group_name="rewards", deps=[reward_labels], kinds={"duckdb"},
    check_specs=[dg.AssetCheckSpec("stats_match_labels", asset="buffer_stats")],
)
def buffer_stats(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage):
    """The paper's Table 1 (#Num, #Total, #Pos, #Neg, %Pos), Table 4 (problems whose K responses mix
    correct and incorrect) and Tables 9/10 (the same for the first k samples)."""
    p = rift.load()
    root = storage.root(p.name)
    labels = pl.read_parquet(root / "labels.parquet")
    table1, table4 = buffer_table(labels), mixed_table(labels)
    k = int(labels["sample_idx"].max()) + 1
    ks = [n for n in (1, 2, 4, 8, 16, 32) if n < k] + [k]
    ablation = k_ablation_table(labels, ks)
    storage.store(context, p.name, {"buffer_stats.parquet": table1, "mixed_stats.parquet": table4,
                                     "k_ablation.parquet": ablation}, buffer_hash=file_hash(root / "labels.parquet"))
    yield dg.MaterializeResult(metadata={
        "table1": dg.MetadataValue.md(to_markdown(short_models(table1))),
        "table4": dg.MetadataValue.md(to_markdown(short_models(table4))),
        "k_ablation": dg.MetadataValue.md(to_markdown(short_models(ablation))),
        "duckdb": dg.MetadataValue.path(str(storage.db_path(p.name))),
        **table_metadata(table1),
    })
    yield checks.as_result(checks.stats_match_labels(labels, table1, table4, root / "labels.parquet"))
