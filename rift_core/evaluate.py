"""Benchmark evaluation: k samples per problem, graded, scored as Mean@k and Pass@k (paper Tables 2/3).

The Qwen2.5-Math suite reports only sample 0; we keep every sample's score. Problems whose reference
answer math-verify cannot parse are never scored (they would count as wrong forever): `evaluate`
prints how many and which, and records them in `n_excluded` / `excluded_ids`.
"""
import contextlib
import sys
from dataclasses import asdict
from pathlib import Path

import polars as pl

from rift_core import known_sets, locks
from rift_core.data import load_problems
from rift_core.generation import GenerationConfig, generate_rollouts
from rift_core.io import write_parquet_atomic
from rift_core.metrics import mean_at_k, pass_at_k
from rift_core.rewards import DEFAULT_TIMEOUT_S, check_references, label_rollouts

# Column headings and order of the paper's tables; other benchmarks follow in the order given.
PAPER_NAMES = {
    "gsm8k": "GSM8K", "math500": "MATH500", "minerva_math": "Minerva Math", "olympiadbench": "OlympiadBench",
    "aime24": "AIME24", "amc23": "AMC23", "college_math": "College Math",
}
BENCHMARKS = list(known_sets.BENCHMARKS)
PAPER_SAMPLING = {"temperature": 0.7, "top_p": 0.8}


def _load(benchmarks, limit: int | None, seed: int, data_root: str) -> dict[str, pl.DataFrame]:
    if isinstance(benchmarks, dict):
        return {n: f.sample(limit, seed=seed) if limit is not None and f.height > limit else f for n, f in benchmarks.items()}
    return {name: load_problems(name, data_root=data_root, limit=limit, seed=seed) for name in benchmarks}


def score_labels(labels: pl.DataFrame) -> tuple[list[str], list[list[bool]]]:
    """Problem ids in first-seen order and each problem's per-sample correctness, by sample_idx."""
    ordered = labels.with_row_index("_row").sort("problem_id", "sample_idx")
    groups = ordered.group_by("problem_id", maintain_order=True).agg(pl.col("correct"), pl.col("_row").min()).sort("_row")
    return groups["problem_id"].to_list(), groups["correct"].to_list()


def evaluate(model: str, benchmarks, k: int = 8, limit: int | None = None, seed: int = 0, gen=None,
             data_root: str = "../shared/data", out_dir: str | None = None, workers: int = 2,
             timeout_s: float | None = None, on_progress=None, wait_for_lock: bool = False,
             **gen_kwargs) -> pl.DataFrame:
    """Score `model` (a local path or hub id) on `benchmarks`: names for `data.load_problems` (seeded
    subsets of `limit` problems) or a dict name -> problems frame.

    Sampling is the paper's (temperature 0.7, top-p 0.8, seed 0) unless `gen` (a GenerationConfig) or
    GenerationConfig fields in `gen_kwargs` (max_new_tokens, backend, batch_size, ...) say otherwise;
    `k` and `seed` always win. `on_progress(stage=..., done=..., total=..., **metrics)` hears from sampling and
    grading as they advance (see generation / rewards). With `out_dir`, generation resumes from `<out_dir>/<benchmark>/rollouts`
    and labels are kept in `<out_dir>/<benchmark>/labels.parquet`; this process alone writes `out_dir` meanwhile
    (locks.hold: another evaluation into it fails at once naming the holder, or with `wait_for_lock` waits).

    Returns one row per benchmark: model, benchmark, k, mean_at_k, pass_at_k, n_problems, n_excluded,
    excluded_ids, extraction_failure_rate (share of samples with no gradable answer), problem_ids and
    scores (per-sample correctness, aligned with problem_ids).
    """
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s

    base = asdict(gen) if gen is not None else dict(PAPER_SAMPLING)
    cfg = GenerationConfig(**{**base, **gen_kwargs, "k": k, "seed": seed})
    rows = []
    with locks.hold(out_dir, wait=wait_for_lock) if out_dir else contextlib.nullcontext():
        for name, problems in _load(benchmarks, limit, seed, data_root).items():
            parses = check_references(problems["answer"].to_list(), workers, timeout_s)
            excluded = problems.filter(~pl.Series(parses))["problem_id"].to_list()
            if excluded:
                shown = ", ".join(excluded[:20]) + (" ..." if len(excluded) > 20 else "")
                print(f"{name}: {len(excluded)} of {problems.height} reference answers do not parse; excluded: {shown}",
                      file=sys.stderr)
            kept = problems.filter(pl.Series(parses))
            if kept.height == 0:
                raise ValueError(f"{name}: no problem with a parseable reference answer to score")
            bench_dir = Path(out_dir) / name if out_dir else None
            rollouts = generate_rollouts(kept, model, cfg, out_dir=str(bench_dir / "rollouts") if bench_dir else None,
                                         on_progress=_named(on_progress, name), wait_for_lock=wait_for_lock)
            labels = label_rollouts(rollouts, workers, timeout_s, on_progress=_named(on_progress, name))
            if bench_dir:
                write_parquet_atomic(labels, bench_dir / "labels.parquet")
            ids, scores = score_labels(labels)
            rows.append({
                "model": str(model), "benchmark": name, "k": k,
                "mean_at_k": mean_at_k(scores), "pass_at_k": pass_at_k(scores, k),
                "n_problems": len(ids), "n_excluded": len(excluded), "excluded_ids": excluded,
                "extraction_failure_rate": float((labels["status"] != "ok").mean()),
                "problem_ids": ids, "scores": scores,
            })
    return pl.DataFrame(rows, schema_overrides={"excluded_ids": pl.List(pl.String), "scores": pl.List(pl.List(pl.Boolean))})


def _named(on_progress, benchmark: str):
    """`on_progress` with the benchmark's name in front of each stage."""
    if on_progress is None:
        return None
    return lambda stage, done, total, **metrics: on_progress(f"{benchmark} {stage}", done, total, **metrics)


def results_tables(scores: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(Mean@k table, Pass@k table) shaped like the paper's Tables 2/3: a row per model (per model
    and k when several k are present), a column per benchmark in the paper's order, then Avg; in %."""
    index = ["model", "k"] if scores["k"].n_unique() > 1 else ["model"]
    present = scores["benchmark"].unique(maintain_order=True).to_list()
    order = [b for b in BENCHMARKS if b in present] + [b for b in present if b not in BENCHMARKS]
    models = scores.select(index).unique(maintain_order=True)
    tables = []
    for metric in ("mean_at_k", "pass_at_k"):
        wide = scores.with_columns((pl.col(metric) * 100).round(1)).pivot(on="benchmark", index=index, values=metric, aggregate_function="last")
        wide = models.join(wide, on=index, how="left", maintain_order="left").select(*index, *order)
        # Avg over all benchmarks, as the paper; null if a model misses one.
        avg = pl.when(pl.any_horizontal(pl.col(order).is_null())).then(None).otherwise(pl.mean_horizontal(order).round(1))
        tables.append(wide.with_columns(avg.alias("Avg")).rename({b: PAPER_NAMES.get(b, b) for b in order}))
    return tables[0], tables[1]
