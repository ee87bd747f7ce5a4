"""Resources a user edits in the Launchpad: which run profile, how steps are launched, where data lives.

Storage design (DESIGN.md section 4): every asset writes Parquet by atomic rename under `<data_dir>/<profile>/`,
and the DuckDB file users open, `<data_dir>/<profile>/rift.duckdb`, holds only VIEWs over those files. The views
are published as a fresh database file renamed over the old one, so the pipeline never needs a write lock on a file
a user has open: an open read-only (or even read-write) SQL session keeps working and its views read the new Parquet
files on the next query. `RiftStorage.store` is the one call an asset makes for all of it: its files, its lineage
row, the views.
"""
import hashlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from rift_core import locks
from rift_core.figures import save_png
from rift_core.io import tmp_beside, write_parquet_atomic
from rift_core.rewards import DEFAULT_TIMEOUT_S

from rift_dagster.worker import run_in_process

# view name -> (path glob under the profile folder, hive partitioning)
VIEWS = {
    "problems": ("problems.parquet", False),
    "benchmark_problems": ("benchmarks/*.parquet", False),
    "rollouts": ("rollouts.parquet", False),
    "labels": ("labels.parquet", False),
    "buffer_stats": ("buffer_stats.parquet", False),
    "mixed_stats": ("mixed_stats.parquet", False),
    "k_ablation": ("k_ablation.parquet", False),
    "scores": ("scores/*.parquet", False),
    "results": ("results.parquet", False),
    "comparisons": ("comparisons.parquet", False),
    "runs": ("runs/*.parquet", False),
    "round_rollouts": ("rounds/round=*/rollouts.parquet", True),
    "round_labels": ("rounds/round=*/labels.parquet", True),
    "round_scores": ("rounds/round=*/scores.parquet", True),
    # the experiments group and the report: one view per table
    "lr_sweep": ("experiments/lr_sweep/*.parquet", False),
    "collapse": ("experiments/collapse.parquet", False),
    "table6": ("experiments/reward_schemes/scores/*.parquet", False),
    "table7": ("experiments/efficiency.parquet", False),
    "table8": ("experiments/k/scores/*.parquet", False),
    "table9_10": ("experiments/k/buffer_stats.parquet", False),
    "table11": ("experiments/second_round/scores/*.parquet", False),
    "table12_13": ("experiments/second_round/buffers/*.parquet", False),
    "timings": ("timings/*.parquet", False),
}


# Defaults of the environment variables the resources read (dg.EnvVar); set them to change a deployment.
ENV_DEFAULTS = {"RIFT_PROFILE": "tiny", "RIFT_DATA_DIR": "data"}
for _name, _value in ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


class RunProfile(dg.ConfigurableResource):
    """The run profile (a packaged profile's name, e.g. `tiny`, or a YAML path) and how out-of-process steps start.

    `launcher` replaces `python` in front of `-m rift_dagster.worker` for the steps that can use several
    devices (training): e.g. ["accelerate", "launch", "--config_file", "rift_core/configs/accelerate/ddp.yaml"].
    `wait_for_lock`: a step whose output another run is writing waits for that run instead of failing at once
    (rift_core.locks: one writer per output).
    """

    profile: str = "tiny"
    launcher: list[str] = []
    label_workers: int = 2
    label_timeout_s: float = DEFAULT_TIMEOUT_S
    wait_for_lock: bool = False

    def load(self):
        from rift_core.profiles import load_profile  # imports torch (the trainer's config): only when a run needs it

        return load_profile(self.profile)

    def command(self, distributed: bool = False) -> list[str]:
        """The Pipes child's command line: `python -m rift_dagster.worker`, behind the launcher if `distributed`."""
        prefix = list(self.launcher) if (distributed and self.launcher) else [sys.executable]
        return [*prefix, "-m", "rift_dagster.worker"]


class InProcessPipesClient(dg.PipesClient):
    """Runs the Pipes child (rift_dagster.worker) inside the run's own process, through a real Pipes session:
    the same extras, logs, metadata and checks as a subprocess, without the start-up cost (fast tests)."""

    def run(self, *, context, extras=None, command=None, **_):
        with dg.open_pipes_session(context=context, extras=extras, context_injector=dg.PipesTempFileContextInjector(),
                                   message_reader=dg.PipesTempFileMessageReader()) as session:
            run_in_process(session.get_bootstrap_env_vars())
            # The reader thread stops at the first empty read after the session closes; on a busy CPU that read can
            # come before it has seen the last lines (metadata, checks). The child's last message is "closed".
            deadline = time.monotonic() + 30
            while not session.message_handler.received_closed_message and time.monotonic() < deadline:
                time.sleep(0.01)
        return dg.PipesClientCompletedInvocation(session)


def run_step(context, rift: RunProfile, pipes_client: dg.PipesClient, step: str, params: dict,
             distributed: bool = False) -> tuple:
    """Run a rift_dagster.worker step as a Pipes child; returns what the child reported: (its materialisation's
    metadata, its asset check results)."""
    command = rift.command(distributed)
    context.log.info(f"{step} step: {shlex.join(command)}")
    extras = {"step": step, "wait_for_lock": rift.wait_for_lock, **params}
    reported = pipes_client.run(command=command, context=context, extras=extras).get_results()
    metadata = {k: v for r in reported if isinstance(r, dg.MaterializeResult) for k, v in (r.metadata or {}).items()}
    return metadata, [r for r in reported if isinstance(r, dg.AssetCheckResult)]


def writing(context, rift: RunProfile, path: Path):
    """Hold the lock of an output this asset writes in its own process (rift_core.locks): one writer per output,
    the owner record naming this run."""
    return locks.hold(path, wait=rift.wait_for_lock, run_id=context.run.run_id, log=context.log.info)


def table_metadata(df) -> dict:
    """Row count and column schema of a polars frame, as the UI shows them for table assets."""
    return {
        "dagster/row_count": len(df),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype)) for name, dtype in df.schema.items()]),
    }


class RiftStorage(dg.ConfigurableResource):
    """Where the pipeline writes (Parquet files, model dirs) and the DuckDB catalog of views over them."""

    data_dir: str = "data"

    def root(self, profile: str) -> Path:
        path = Path(self.data_dir).resolve() / profile
        path.mkdir(parents=True, exist_ok=True)
        return path

    def toy_policies(self) -> Path:
        """Toy base policies, shared by every profile: each is keyed by all it depends on (base_policy.policy_key), so the
        `demo` profile and `tiny` train one policy between them."""
        return Path(self.data_dir).resolve() / "toy_policies"

    def benchmark_path(self, profile: str, name: str) -> Path:
        """Where the `benchmarks` asset keeps one evaluation set: a flat file name even for a path or hub id."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")
        if slug != name:  # two sources may slug alike: the hash keeps them apart
            slug = f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        return self.root(profile) / "benchmarks" / f"{slug}.parquet"

    def checkpoint_dir(self, profile: str, method: str, seed: int) -> Path:
        return self.root(profile) / "checkpoints" / method / f"seed={seed}"

    def trained_runs(self, profile: str) -> list[tuple[str, int, dict]]:
        """(method, seed, run summary) of every finished checkpoint (its rift_run.json)."""
        runs = sorted((self.root(profile) / "checkpoints").glob("*/seed=*/rift_run.json"))
        return [(run.parent.parent.name, int(run.parent.name.split("=")[1]), json.loads(run.read_text()))
                for run in runs]

    def scores_path(self, profile: str, model: str, seed: int) -> Path:
        """One model's scores at one replicate seed (the `scores` view reads them all)."""
        return self.root(profile) / "scores" / f"{model}-seed{seed}.parquet"

    def db_path(self, profile: str) -> Path:
        return self.root(profile) / "rift.duckdb"

    def write(self, df, profile: str, relpath: str) -> Path:
        return write_parquet_atomic(df, self.root(profile) / relpath)

    def store(self, context, profile: str, files: Mapping[str | Path, object] | None = None, *,
              output: str | os.PathLike | None = None, hash_as: str | None = None, **lineage) -> str | None:
        """What every asset does with its results: write `files` ({path, a relative one under the profile's folder:
        a value `write_file` writes}), each by atomic rename; append the lineage row (view `runs`) naming `output`
        (default: the first file) with the `lineage` fields, and with `output`'s own hash under the name `hash_as`
        if given; then publish the SQL views. Returns that hash (None without `hash_as`)."""
        written = [write_file(value, self.root(profile) / relpath) for relpath, value in (files or {}).items()]
        if output is None and not written:
            raise ValueError("store() needs the files to write or the `output` a step wrote itself")
        output = written[0] if output is None else output
        digest = file_hash(output) if hash_as else None
        self._record_run(context, profile, path=output, **({hash_as: digest} if hash_as else {}), **lineage)
        self.publish_views(profile)
        return digest

    def _record_run(self, context, profile: str, **fields) -> None:
        """Append one lineage row (the `runs` view): which inputs, by hash, made which output."""
        partition = context.partition_key if context.has_partition_key else ""
        row = {
            "asset": context.asset_key.to_user_string(),
            "partition": partition,
            "run_id": context.run.run_id,
            "profile": profile,
            "materialized_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **{k: (None if v is None else str(v)) for k, v in fields.items()},
        }
        name = f"{row['asset']}-{partition or 'all'}-{context.run.run_id[:8]}.parquet"
        self.write(pl.DataFrame([row]), profile, f"runs/{name}")

    def publish_views(self, profile: str) -> Path:
        """Write a fresh catalog of views over the Parquet files that exist, then rename it into place."""
        root = self.root(profile)
        db = self.db_path(profile)
        tmp = tmp_beside(db)
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            for view, (pattern, hive) in VIEWS.items():
                if not any(root.glob(pattern)):
                    continue  # a view over no files cannot be created; it appears once the asset runs
                glob = str(root / pattern).replace("'", "''")
                opts = ", union_by_name = true" + (", hive_partitioning = true" if hive else "")
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}'{opts})")
        finally:
            con.close()
        os.replace(tmp, db)
        return db


def read_parquets(folder: Path, pattern: str = "*.parquet"):
    """Every Parquet file under `folder` matching `pattern`, as one frame (columns unioned by name), or None."""
    files = sorted(Path(folder).glob(pattern))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else None


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a model dir's weights and config (names and bytes, in name order)."""
    path = Path(path)
    if not path.exists():
        return f"external:{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"  # e.g. a hub id
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*")
        if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name in ("config.json", "tokenizer.json"))
        and "checkpoint-" not in str(p.relative_to(path))
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def settings_key(*parts) -> str:
    """A short hash of a step's inputs: the folder name that keeps resumable work of different settings apart."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_file(value, path: Path) -> Path:
    """`value` written to `path` by atomic rename: a polars frame as Parquet, a dict as JSON, a str as text, else a
    figure as PNG."""
    if isinstance(value, pl.DataFrame):
        return write_parquet_atomic(value, path)
    if isinstance(value, dict):
        return write_text(path, json.dumps(value, indent=1))
    if isinstance(value, str):
        return write_text(path, value)
    return save_png(value, path)


def rift_resources(profile: str | None = None, data_dir: str | None = None, out_of_process: bool = True) -> dict:
    """The code location's resources; `profile` / `data_dir` default to $RIFT_PROFILE / $RIFT_DATA_DIR."""
    return {
        "rift": RunProfile(profile=profile or dg.EnvVar("RIFT_PROFILE")),
        "storage": RiftStorage(data_dir=data_dir or dg.EnvVar("RIFT_DATA_DIR")),
        "pipes_client": dg.PipesSubprocessClient() if out_of_process else InProcessPipesClient(),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources=rift_resources())
