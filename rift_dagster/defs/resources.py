"""Resources a user edits in the Launchpad: which run profile, how steps are launched, where data lives.

Storage design (DESIGN.md section 4): every asset writes Parquet by atomic rename under
`<data_dir>/<profile>/`, and the DuckDB file users open, `<data_dir>/<profile>/rift.duckdb`, holds
only VIEWs over those files. The views are published as a fresh database file renamed over the old
one, so the pipeline never needs a write lock on a file a user has open: an open read-only (or even
read-write) SQL session keeps working and its views read the new Parquet files on the next query.
"""
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

import dagster as dg

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
    "runs": ("runs/*.parquet", False),
    "round_rollouts": ("rounds/round=*/rollouts.parquet", True),
    "round_labels": ("rounds/round=*/labels.parquet", True),
}


class RunProfile(dg.ConfigurableResource):
    """The run profile (`configs/<name>.yaml` or a YAML path) and how out-of-process steps start.

    `launcher` replaces `python` in front of `-m rift_core ...` for training: e.g.
    ["accelerate", "launch", "--num_processes", "8"] trains on 8 GPUs with the same graph.
    """

    profile: str = "tiny"
    launcher: list[str] = []
    out_of_process: bool = True  # False: train/generate/evaluate inside the run's process (fast tests)
    label_workers: int = 2
    label_timeout_s: float = 5.0

    def load(self):
        from rift_core.profiles import load_profile

        return load_profile(self.profile)

    def command(self, *args: str, distributed: bool = False, module: str = "rift_core") -> list[str]:
        """`python -m rift_core ARGS`, behind the launcher for steps that can use several devices."""
        prefix = list(self.launcher) if (distributed and self.launcher) else [sys.executable]
        return [*prefix, "-m", module, *args]

    def pipes(self, context, cmd: list[str]) -> None:
        """Run `cmd` as a Pipes subprocess: its output goes to the run's logs, a non-zero exit fails the step."""
        context.log.info("running: " + shlex.join(cmd))
        dg.PipesSubprocessClient().run(command=cmd, context=context)

    def worker(self, context, step: str, spec: dict, spec_path: Path) -> None:
        """A `rift_dagster.worker` step (generate / evaluate), out of process unless out_of_process=False."""
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec))
        if self.out_of_process:
            self.pipes(context, self.command(step, str(spec_path), module="rift_dagster.worker"))
        else:
            from rift_dagster.worker import main

            main([step, str(spec_path)])


class RiftStorage(dg.ConfigurableResource):
    """Where the pipeline writes (Parquet files, model dirs) and the DuckDB catalog of views over them."""

    data_dir: str = "data"

    def root(self, profile: str) -> Path:
        path = Path(self.data_dir).resolve() / profile
        path.mkdir(parents=True, exist_ok=True)
        return path

    def db_path(self, profile: str) -> Path:
        return self.root(profile) / "rift.duckdb"

    def write(self, df, profile: str, relpath: str) -> Path:
        from rift_core.io import write_parquet_atomic

        return write_parquet_atomic(df, self.root(profile) / relpath)

    def record_run(self, context, profile: str, **fields) -> None:
        """Append one lineage row (the `runs` view): which inputs, by hash, made which output."""
        import polars as pl

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
        import duckdb

        root = self.root(profile)
        db = self.db_path(profile)
        tmp = db.with_name(f".{db.name}.tmp-{os.getpid()}")
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


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)

