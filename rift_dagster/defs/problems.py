"""Seed problems (the prompts rollouts are sampled on) and the base model that samples them."""
import time
import warnings
from dataclasses import asdict

import dagster as dg
from rift_core.data import SkippedRowsWarning, load_problems
from rift_core.stats import to_markdown
from rift_core.base_policy import ensure_base_policy, read_calibration

from rift_dagster.defs.resources import RiftStorage, RunProfile, file_hash, read_json, table_metadata

# Partition keys that come from the profile, registered by `seed_problems` (and `make demo`), so that every key
# in the UI is one the profile selects: replicate seeds of training and evaluation, and the experiments' variants
PROFILE_PARTITIONS = {
    "seed": lambda p: sorted({*p.replicates, *p.experiment_seeds}),
    "lr_sweep_method": lambda p: p.experiments.lr_sweep_methods,
    "reward_variant": lambda p: p.experiments.reward_variants,
    "train_k": lambda p: p.experiments.ks,
    "second_round_source": lambda p: p.experiments.second_round_from,
}
DYNAMIC = {name: dg.DynamicPartitionsDefinition(name=name) for name in PROFILE_PARTITIONS}
seed_partitions = DYNAMIC["seed"]


@dg.asset(group_name="problems", kinds={"polars", "parquet"})
def seed_problems(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """The profile's seed problems with reference answers (paper: 3,000 random MATH problems). Also registers the
    profile's replicate seeds and experiment variants as partition keys (PROFILE_PARTITIONS)."""
    p = rift.load()
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedRowsWarning)
        df = load_problems(p.seeds, data_root=p.data_root, limit=p.n_seeds, seed=p.seed, skip_bad=p.skip_bad,
                           fmt=p.problem_format(p.seeds))
    skipped = [row for w in caught if isinstance(w.message, SkippedRowsWarning) for row in w.message.rows]
    for row in skipped:
        context.log.warning(f"skipped seed row: {row}")
    digest = storage.store(context, p.name, {"problems.parquet": df}, hash_as="content_hash")
    register_partitions(context.instance, p)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(df),
            "source": p.seeds,
            "skipped_rows": len(skipped),
            "with_solution": int(df["solution"].is_not_null().sum()),
            "path": dg.MetadataValue.path(str(storage.root(p.name) / "problems.parquet")),
            "content_hash": digest,
            "duration_s": round(time.time() - start, 2),
            "preview": dg.MetadataValue.md(to_markdown(df.head(5).select("problem_id", "question", "answer"))),
        },
        data_version=dg.DataVersion(digest),
    )


@dg.asset(group_name="problems", deps=[seed_problems], kinds={"pytorch"}, pool="compute")
def base_model(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """The policy rollouts are sampled from: a local path or hub id, or (profile `base_model: toy`) the
    project's own small arithmetic policy, trained once and reused until its settings change."""
    p = rift.load()
    start = time.time()
    calibration = {}
    if p.base_model == "toy":
        path = str(ensure_base_policy(storage.toy_policies(), **asdict(p.toy_config())))
        calibration = {f"calibration/{k}": v for k, v in (read_calibration(path) or {}).items()
                       if isinstance(v, (int, float, str, bool))}  # step reached, %Pos/%Mixed, torch, threads
    else:
        path = p.base_model
    digest = file_hash(path)
    storage.store(context, p.name, {"base_model.json": {"path": path, "hash": digest}}, output=path,
                  base_model_hash=digest)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(path),
            "base_model_hash": digest,
            "duration_s": round(time.time() - start, 2),
            **calibration,
        },
        data_version=dg.DataVersion(digest),
    )


def register_partitions(instance, profile) -> dict[str, list[str]]:
    """Add the profile's keys to each of its dynamic partition sets (PROFILE_PARTITIONS); keys of other profiles stay.
    Returns the profile's keys per set."""
    selected = {}
    for name, keys_of in PROFILE_PARTITIONS.items():
        keys = [str(k) for k in keys_of(profile)]
        known = set(instance.get_dynamic_partitions(name))
        instance.add_dynamic_partitions(name, [k for k in keys if k not in known])
        selected[name] = keys
    return selected


def base_model_info(storage: RiftStorage, profile) -> dict:
    """{"path", "hash"} of the materialised base model, for the assets downstream of it."""
    info = read_json(storage.root(profile.name) / "base_model.json")
    if not info:
        raise dg.Failure(f"base_model of profile {profile.name!r} is not materialised yet; materialise it first")
    return info
