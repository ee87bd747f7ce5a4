"""Reward labels: math-verify grading under a per-row deadline, and the paper's reward schemes.

Model responses are hostile input. math-verify never evals them (LaTeX goes through its ANTLR parser,
plain expressions only reach sympy after a digits-and-operators regex), but some inputs make it run
for minutes (deeply nested braces, towers of powers). Its own SIGALRM timeouts only work on the main
thread, so we switch them off and grade in worker processes that the parent kills and replaces when
a row overruns its deadline (DESIGN.md section 4).
"""
import argparse
import logging
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait

import polars as pl

STATUSES = ("ok", "no_answer", "timeout", "error")
SCHEMES = ("constant", "gaussian", "gpg_mean", "gpg_scaled")
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
# CHUNK_ROWS rows, so that one IPC round trip (and the parent's wake-up) serves many rows.

def _worker(conn, progress) -> None:
    """Grade the jobs the parent sends, one reply (a result per row, in order) per job. Before each
    step it writes progress = [row, start time, 1 if parsing that row's gold else 0], so the parent can
    time the step without a message per row."""
    while True:
        job = conn.recv()
        if job is None:
            return
        check_only, groups = job
        out, row = [], 0
        for gold, items in groups:
            progress[1], progress[2], progress[0] = time.monotonic(), 1, row
            try:
                gold_parsed = _parse(wrap_gold(gold)) if gold is not None else []
            except Exception:
                gold_parsed = []
            if check_only:
                parsed = str(gold_parsed[-1])[:MAX_EXTRACTED_CHARS] if gold_parsed else None
                out += [(bool(gold_parsed), parsed, "ok" if gold_parsed else "error")] * len(items)
                row += len(items)
                continue
            for _, response in items:
                progress[1], progress[2], progress[0] = time.monotonic(), 0, row
                out.append(_grade_parsed(gold_parsed, response))
                row += 1
        conn.send(out)


def _context():
    # forkserver: children fork from a clean server that already imported and warmed up math-verify
    # (its first parse takes ~1 s), so a new or replacement worker starts in milliseconds and never
    # inherits the parent's threads (polars, tqdm).
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


class _Slot:
    """One worker process, the job it is grading and its shared progress."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.progress = ctx.RawArray("d", 3)
        self.proc = ctx.Process(target=_worker, args=(child, self.progress), daemon=True)
        self.proc.start()
        child.close()
        self.job = None

    def give(self, job) -> None:
        self.job = job
        self.progress[1], self.progress[2], self.progress[0] = time.monotonic(), 1, 0
        self.conn.send(job)

    def step(self) -> tuple[int, float, bool]:
        while True:  # the worker writes three doubles; read until they are from the same step
            row, since, gold = self.progress[0], self.progress[1], self.progress[2]
            if self.progress[0] == row and self.progress[1] == since:
                return int(row), since, bool(gold)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


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


def grade_jobs(jobs: list, n_rows: int, workers: int = 2, timeout_s: float | None = DEFAULT_TIMEOUT_S,
               desc: str = "label", on_progress: Callable | None = None) -> list:
    """Grade `jobs` (see `_jobs`) into a list of (correct, extracted, status) indexed by row. A
    check_only job only parses golds: each row gets status "ok" with the parsed gold as `extracted`,
    or "error".

    Each step (parsing a gold, grading one row) gets `timeout_s` seconds (None: DEFAULT_TIMEOUT_S). A
    worker that overruns is killed and replaced; the row gets status "timeout" (all rows of that gold if
    the gold itself hangs; "error" if the worker died instead), and the job's other rows are graded again
    by the new worker.

    `on_progress(stage=desc, done=rows, total=rows, rows_per_s=, timeouts=)` is called as jobs finish
    (keywords only; every ~64 rows, so the caller throttles).
    """
    from tqdm import tqdm

    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    results: list = [None] * n_rows
    todo = list(reversed(jobs))  # pop() from the end keeps the original order
    total = sum(len(items) for _, groups in jobs for _, items in groups)
    ctx = _context()
    slots = [_Slot(ctx) for _ in range(max(1, min(workers, len(todo))))] if todo else []
    bar = tqdm(total=total, desc=desc, unit="resp", disable=None)
    state = {"done": 0, "timeouts": 0, "start": time.monotonic()}

    def record(items, values):
        for (idx, _), value in zip(items, values):
            results[idx] = value
            state["timeouts"] += value[2] == "timeout"
        bar.update(len(items))
        state["done"] += len(items)
        if on_progress is not None:
            elapsed = time.monotonic() - state["start"]
            on_progress(stage=desc, done=state["done"], total=total,
                        rows_per_s=state["done"] / elapsed if elapsed > 0 else None, timeouts=state["timeouts"])

    try:
        for slot in slots:
            if todo:
                slot.give(todo.pop())
        while any(s.job for s in slots):
            busy = [s for s in slots if s.job]
            deadline = min(s.step()[1] for s in busy) + timeout_s
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=max(0.0, deadline - time.monotonic()) + 0.01)
            for i, slot in enumerate(slots):
                if not slot.job:
                    continue
                check_only, groups = slot.job
                rows = [(g, row) for g, (_, items) in enumerate(groups) for row in items]
                try:
                    out = slot.conn.recv() if slot.conn.poll() else None
                except (EOFError, OSError):  # the worker died (segfault, OOM kill): handled below
                    out = None
                if out is not None:
                    record([row for _, row in rows], out)
                    slot.job = None
                    if todo:
                        slot.give(todo.pop())
                    continue
                pos, since, at_gold = slot.step()
                died = not slot.proc.is_alive()
                if died or time.monotonic() - since > timeout_s:
                    failed = (False, None, "error" if died else "timeout")
                    slot.kill()
                    slots[i] = _Slot(ctx)
                    # the step's row, or every row of its gold if the gold itself hung or crashed
                    bad_group = rows[pos][0]
                    lost = [r for j, (g, r) in enumerate(rows) if (g == bad_group if at_gold else j == pos)]
                    record(lost, [failed] * len(lost))
                    lost_idx = {idx for idx, _ in lost}
                    rest = [(gold, [r for r in items if r[0] not in lost_idx]) for gold, items in groups]
                    todo += _pack([(gold, items) for gold, items in rest if items], check_only)
                    if todo:
                        slots[i].give(todo.pop())
    finally:
        bar.close()
        for slot in slots:
            try:
                slot.conn.send(None)
            except OSError:
                pass
        for slot in slots:
            slot.proc.join(timeout=1)
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join()
    return results


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rift_core label", description="Grade rollouts and assign rewards.")
    p.add_argument("--rollouts", required=True, help="rollouts table (.parquet, .jsonl, or a folder of parts)")
    p.add_argument("--out", required=True, help="labels .parquet to write")
    p.add_argument("--scheme", default="constant", choices=SCHEMES)
    p.add_argument("--r-pos", type=float, default=1.0)
    p.add_argument("--r-neg", type=float, default=-0.2)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="deadline per response, seconds")
    return p


def main(argv: list[str]) -> None:
    from rift_core.io import read_table, write_parquet_atomic

    args = build_parser().parse_args(argv)

    rollouts = read_table(args.rollouts)
    missing = [c for c in ("problem_id", "answer", "response") if c not in rollouts.columns]
    if missing:
        raise SystemExit(f"{args.rollouts}: missing column(s) {', '.join(missing)}")
    t0 = time.monotonic()
    labels = assign_rewards(label_rollouts(rollouts, args.workers, args.timeout_s), args.scheme, args.r_pos, args.r_neg)
    write_parquet_atomic(labels, args.out)
    counts = dict(labels["status"].value_counts().iter_rows())
    print(
        f"labelled {labels.height} responses in {time.monotonic() - t0:.1f}s -> {args.out}\n"
        f"correct {int(labels['correct'].sum())}, status {counts}, scheme {args.scheme}",
        file=sys.stderr,
    )


if os.environ.pop(_WARM_UP, None):  # we are the forkserver: pay math-verify's first-call cost once
    _grade_parsed(_parse("\\boxed{1}"), "so $\\boxed{\\frac{1}{2}}$")
