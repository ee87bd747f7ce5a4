"""Reward labels: math-verify grading under a per-row deadline, and the paper's reward schemes.

Model responses are hostile input. math-verify never evals them (LaTeX goes through its ANTLR parser,
plain expressions only reach sympy after a digits-and-operators regex), but some inputs make it run
for minutes (deeply nested braces, towers of powers). Its own SIGALRM timeouts only work on the main
thread, so we switch them off and grade in a `pebble.ProcessPool` whose per-task timeout kills and
replaces a worker that overruns its deadline (docs/DESIGN.md, "Grading"; `DEFAULT_TIMEOUT_S` seconds unless
told otherwise).
"""
import logging
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable

import polars as pl

from rift_core.schemes import SCHEMES

STATUSES = ("ok", "no_answer", "timeout", "error")
BAD_REFERENCE = "reference answer does not parse"
DEFAULT_TIMEOUT_S = 10.0  # per-step grading deadline (seconds): the default of every function and CLI flag here
CHUNK_ROWS = 64  # rows per job: amortises IPC and the parent's wake-ups, small enough to balance workers
MAX_EXTRACTED_CHARS = 2000  # `extracted` is for reading; `correct` is decided on the full answer
_WARM_UP = "_RIFT_WARM_UP_GRADER"

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
# math-verify warns on every call that its timeouts are off; ours is the worker deadline below.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def wrap_gold(gold: str) -> str:
    """Delimit a reference answer so math-verify reads it whole: bare `(3, -1)` parses to -1, `\\boxed{(3, -1)}` to the tuple."""
    gold = gold.strip()
    if "\\boxed" in gold or _UNESCAPED_DOLLAR.search(gold):
        return gold
    return "\\boxed{" + gold + "}"


def _parse(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=None)


def _grade_parsed(gold_parsed: list, response: str | None) -> tuple[bool, str | None, str]:
    """(correct, extracted, status) of one response against an already parsed reference."""
    from math_verify import verify

    if not gold_parsed:
        return False, None, "error"
    if not response:
        return False, None, "no_answer"
    try:
        pred = _parse(response)
        if not pred:
            return False, None, "no_answer"
        extracted = str(pred[-1] if isinstance(pred[-1], str) else pred[0])[:MAX_EXTRACTED_CHARS]
        return bool(verify(gold_parsed, pred, timeout_seconds=None)), extracted, "ok"
    except Exception:
        return False, None, "error"


def grade(gold: str, response: str) -> bool:
    """Whether `response`'s final answer equals the reference `gold` (math-verify, gold first).

    Runs in-process with no deadline: fine for one trusted response; use `label_rollouts` for batches
    of model output.
    """
    gold_parsed = _parse(wrap_gold(gold))
    if not gold_parsed:
        raise ValueError(f"{BAD_REFERENCE}: {gold!r}")
    return _grade_parsed(gold_parsed, response)[0]


# ---- process pool with a per-row deadline -------------------------------------------------------
# A job is (check_only, groups), groups = [(gold, [(row_idx, response), ...]), ...] holding up to
# CHUNK_ROWS rows, so that one IPC round trip serves many rows. The pool is pebble's ProcessPool
# (per-task timeout, a hung or dead worker killed and replaced); it measured as fast as the
# hand-written pool this replaced on clean work (benchmarks/results/grading.md).

def _grade_job(check_only: bool, groups: list) -> list:
    """Worker side: one job's results, (correct, extracted, status) per row in job order. A check_only
    job only parses each gold: its rows get "ok" with the parsed gold as `extracted`, or "error"."""
    out = []
    for gold, items in groups:
        gold_parsed = _parse_gold(gold)
        if check_only:
            out += [_gold_check(gold_parsed)] * len(items)
        else:
            out += [_grade_parsed(gold_parsed, response) for _, response in items]
    return out


def _parse_gold(gold: str | None) -> list:
    try:
        return _parse(wrap_gold(gold)) if gold is not None else []
    except Exception:  # a reference that does not parse grades nothing correct; check_references reports it
        return []


def _gold_check(gold_parsed: list) -> tuple[bool, str | None, str]:
    """A check_only row's result: "ok" with the parsed gold, or "error"."""
    parsed = str(gold_parsed[-1])[:MAX_EXTRACTED_CHARS] if gold_parsed else None
    return bool(gold_parsed), parsed, "ok" if gold_parsed else "error"


def _context():
    # forkserver: children fork from a clean server that already imported and warmed up math-verify
    # (its first parse takes ~1 s), so a new or replacement worker starts in milliseconds and never
    # inherits the parent's threads (polars, tqdm, pebble's own).
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["rift_core.rewards"])
    os.environ[_WARM_UP] = "1"  # seen only by the server's import of this module, see the end of the file
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(_WARM_UP, None)
    return ctx


def _jobs(golds: list, responses: list, check_only: bool = False) -> list:
    """Rows grouped by reference answer (each gold is parsed once per job), packed into jobs."""
    by_gold: dict = {}
    for idx, (gold, response) in enumerate(zip(golds, responses)):
        by_gold.setdefault(gold, []).append((idx, response))
    return _pack([(g, items) for g, items in by_gold.items()], check_only)


def _pack(groups: list, check_only: bool) -> list:
    jobs, current, size = [], [], 0
    for gold, items in groups:
        for i in range(0, len(items), CHUNK_ROWS):
            part = items[i:i + CHUNK_ROWS]
            if size + len(part) > CHUNK_ROWS and current:
                jobs.append((check_only, current))
                current, size = [], 0
            current.append((gold, part))
            size += len(part)
    if current:
        jobs.append((check_only, current))
    return jobs


class Recorder:
    """Where graded rows land: `results[row]`, a tqdm bar on a terminal, and `on_progress(stage=desc, done=, total=,
    rows_per_s=, timeouts=)` (keywords only, in the calling thread) each time rows are recorded."""

    def __init__(self, jobs: list, n_rows: int, desc: str, on_progress: Callable | None):
        from tqdm import tqdm

        self.results: list = [None] * n_rows
        self.total = sum(len(items) for _, groups in jobs for _, items in groups)
        self.desc, self.on_progress = desc, on_progress
        self.done, self.timeouts, self.start = 0, 0, time.monotonic()
        self.bar = tqdm(total=self.total, desc=desc, unit="resp", disable=None)

    def __call__(self, items: list, values: list) -> None:
        for (idx, _), value in zip(items, values):
            self.results[idx] = value
            self.timeouts += value[2] == "timeout"
        self.bar.update(len(items))
        self.done += len(items)
        if self.on_progress is not None:
            elapsed = time.monotonic() - self.start
            self.on_progress(stage=self.desc, done=self.done, total=self.total,
                             rows_per_s=self.done / elapsed if elapsed > 0 else None, timeouts=self.timeouts)

    def close(self) -> None:
        self.bar.close()


def grade_jobs(jobs: list, n_rows: int, workers: int = 2, timeout_s: float | None = DEFAULT_TIMEOUT_S,
               desc: str = "label", on_progress: Callable | None = None) -> list:
    """Grade `jobs` (see `_jobs`) into a list of (correct, extracted, status) indexed by row. A
    check_only job only parses golds: each row gets status "ok" with the parsed gold as `extracted`,
    or "error".

    Deadlines (`timeout_s`, None: DEFAULT_TIMEOUT_S): a job gets `timeout_s` seconds in all. One that
    overruns (or whose worker dies) has its worker killed and replaced and is graded again piece by
    piece, each piece under its own `timeout_s`: first each reference answer alone (one that hangs or
    kills the worker gives all its rows "timeout" / "error"), then each row alone (a row that hangs gets
    "timeout", one that kills the worker "error"). So every row gets at least `timeout_s` seconds, and
    a hanging row costs two deadlines of one worker.

    `on_progress(stage=desc, done=rows, total=rows, rows_per_s=, timeouts=)` is called as jobs finish
    (keywords only, in this thread; every ~64 rows, so the caller throttles). A tqdm bar shows on a terminal.
    """
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures import TimeoutError as FutureTimeout  # the builtin TimeoutError from Python 3.11

    from pebble import ProcessExpired, ProcessPool

    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    record = Recorder(jobs, n_rows, desc, on_progress)
    if not jobs:
        record.close()
        return record.results
    pool = ProcessPool(max_workers=max(1, min(workers, len(jobs))), context=_context())
    # future -> (stage, job): "job" (a whole job), "gold" (one gold of a job that failed, rows kept
    # for later), "row" (one row, its gold already known to parse)
    pending = {}

    def submit(stage, job):
        args = (True, [(job[1][0][0], [(-1, None)])]) if stage == "gold" else job  # "gold": parse it, one result
        pending[pool.schedule(_grade_job, args=args, timeout=timeout_s)] = (stage, job)

    try:
        for job in jobs:
            submit("job", job)
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                stage, (check_only, groups) = pending.pop(future)
                rows = [row for _, items in groups for row in items]
                try:
                    out = future.result()
                except (FutureTimeout, ProcessExpired) as failure:
                    status = "timeout" if isinstance(failure, FutureTimeout) else "error"
                    if stage == "job":  # grade it again piece by piece: its golds first
                        for gold, items in groups:
                            submit("gold", (check_only, [(gold, items)]))
                    else:  # a gold or a row failed on its own: that is its result
                        record(rows, [(False, None, status)] * len(rows))
                    continue
                if stage == "gold":
                    (gold, items), = groups
                    if check_only or not out[0][0]:  # the gold's check is the answer for all its rows
                        record(items, [out[0] if check_only else (False, None, "error")] * len(items))
                    else:
                        for item in items:
                            submit("row", (False, [(gold, [item])]))
                    continue
                record(rows, out)
        pool.close()
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.join()
        record.close()
    return record.results


def check_references(answers: list[str], workers: int = 2, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                     on_progress: Callable | None = None) -> list[bool]:
    """Whether each reference answer parses (a row that does not can never be graded correct).

    `on_progress(stage="references", done=answers, total=answers, ...)` as in `grade_jobs`.
    """
    answers = [None if a is None else str(a) for a in answers]
    out = grade_jobs(_jobs(answers, [None] * len(answers), True), len(answers), workers, timeout_s, desc="references",
                     on_progress=on_progress)
    return [r[2] == "ok" for r in out]


def label_rollouts(rollouts: pl.DataFrame, workers: int = 2, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                   on_progress: Callable | None = None) -> pl.DataFrame:
    """The rollouts with `correct`, `extracted` and `status` (ok / no_answer / timeout / error) added.

    `status` is "error" for every row whose reference answer does not parse; `correct` is False for
    every status but "ok". Each response gets `timeout_s` seconds (None: DEFAULT_TIMEOUT_S).
    `on_progress(stage="label", done=responses, total=responses, rows_per_s=, timeouts=)` is called as
    work advances (keywords only).
    """
    missing = [c for c in ("answer", "response") if c not in rollouts.columns]
    if missing:
        raise ValueError(f"rollouts lack column(s) {', '.join(missing)} (have {', '.join(rollouts.columns)})")
    golds = [None if a is None else str(a) for a in rollouts["answer"].to_list()]
    out = grade_jobs(_jobs(golds, rollouts["response"].to_list()), rollouts.height, workers, timeout_s,
                     on_progress=on_progress)
    return rollouts.with_columns(
        pl.Series("correct", [r[0] for r in out], dtype=pl.Boolean),
        pl.Series("extracted", [r[1] for r in out], dtype=pl.String),
        pl.Series("status", [r[2] for r in out], dtype=pl.String),
    )


# ---- reward schemes ----------------------------------------------------------------------------

def _reward_expr(scheme: str, r_pos: float, r_neg: float, over: list[str] | None) -> pl.Expr:
    """The reward of each row from its group's `correct` column (Eqs. 6-8 of the paper).

    r is the constant reward (r_pos if correct else r_neg). Groups where every sample is right or
    every sample is wrong have std = 0 and r - mean = 0: `gaussian` and `gpg_mean` give them 0 (no
    gradient, as GRPO does); `gpg_scaled` gives all-wrong groups 0 (alpha = 0) and all-correct groups
    r_pos (alpha = 1). std is the population std (ddof=0) of the group.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown reward scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    r = pl.when(pl.col("correct")).then(pl.lit(r_pos)).otherwise(pl.lit(r_neg)).cast(pl.Float64)
    if scheme == "constant":
        return r
    grp = (lambda e: e.over(over)) if over else (lambda e: e)
    alpha = grp(pl.col("correct").cast(pl.Float64).mean())  # N+ / N
    if scheme == "gpg_scaled":
        return alpha * r
    centred = r - grp(r.mean())
    value = centred / grp(r.std(ddof=0)) if scheme == "gaussian" else alpha * centred
    # uniform groups decided on counts, not on a float std that rounding may leave at 1e-17
    return pl.when((alpha > 0) & (alpha < 1)).then(value).otherwise(0.0)


def group_rewards(correct: list[bool], scheme: str = "constant", r_pos: float = 1.0, r_neg: float = -0.2) -> list[float]:
    """Rewards of one problem's K samples under `scheme` (see `_reward_expr` for uniform groups)."""
    if not correct:
        return []
    frame = pl.DataFrame({"correct": [bool(c) for c in correct]})
    return frame.select(_reward_expr(scheme, r_pos, r_neg, None).alias("reward"))["reward"].to_list()


def assign_rewards(labels: pl.DataFrame, scheme: str = "constant", r_pos: float = 1.0, r_neg: float = -0.2) -> pl.DataFrame:
    """`labels` with a `reward` column, groups being a problem's samples (per model when a `model` column exists)."""
    if "correct" not in labels.columns or "problem_id" not in labels.columns:
        raise ValueError("labels need columns 'problem_id' and 'correct' (run label_rollouts first)")
    over = ["model", "problem_id"] if "model" in labels.columns else ["problem_id"]
    return labels.with_columns(_reward_expr(scheme, r_pos, r_neg, over).alias("reward"))


if os.environ.pop(_WARM_UP, None):  # we are the forkserver: pay math-verify's first-call cost once
    _grade_parsed(_parse("\\boxed{1}"), "so $\\boxed{\\frac{1}{2}}$")
