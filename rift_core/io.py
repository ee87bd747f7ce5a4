"""Atomic Parquet writes and tolerant table reads."""
import os
import threading
from pathlib import Path

import polars as pl


def tmp_beside(path: Path) -> Path:
    """A temporary name beside `path`, for a write-then-rename; unique per process and thread, so concurrent steps
    in one process (`rift_dagster.demo --jobs`) never share it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_parquet_atomic(df: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    df.write_parquet(tmp)
    os.replace(tmp, path)
    return path


def read_table(path: str | os.PathLike) -> pl.DataFrame:
    """Read a Parquet file, a folder of Parquet parts, or a JSONL file into a frame."""
    path = Path(path)
    if path.is_dir():
        parts = sorted(path.glob("*.parquet"))
        if not parts:
            raise FileNotFoundError(f"{path}: folder holds no .parquet files")
        return pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pl.read_ndjson(path)
    raise ValueError(f"{path}: unsupported table format (expected .parquet, .jsonl or a folder of parts)")
