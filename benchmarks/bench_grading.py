"""Grading pools side by side: the hand-written pool `grade_jobs` used to be against `pebble.ProcessPool`.

Same work for every contender: MATH-500 reference answers x K responses built from them (correct boxed,
wrong boxed, unboxed, ~16k-character long; `bench_labelling.build_buffer`), graded by math-verify with
`rift_core.rewards._grade_parsed`, the same number of worker processes from the same warmed
forkserver, the same per-row deadline. Contenders:

- `own pool (removed)`: the hand-written pool `rift_core.rewards.grade_jobs` had until this benchmark
  (kept below, verbatim but for the name): jobs of up to 64 rows grouped by reference, a per-step
  deadline read from shared memory, a hung worker killed and replaced, the rest of its job graded again;
- `pebble jobs (grade_jobs now)`: `rift_core.rewards.grade_jobs` as it is now: the same 64-row jobs, one
  `pebble.ProcessPool.schedule(..., timeout=T)` task each; a job that overruns is graded again piece by
  piece (each reference, then each row, under its own deadline);
- `pebble.map, 1 row/task`: what the Qwen2.5-Math evaluation does (`ProcessPool.map(fn, rows, timeout=T)`),
  with a per-process cache of parsed references.

Two workloads: `clean` (the buffer alone) and `hostile` (the same buffer plus a few rows that make
math-verify run for ~40 s: deeply nested braces; they must end as "timeout"). Rounds are interleaved and
the order alternates per round. Prints, per contender, best-of-rounds seconds and rows/s, the own pool's
speed over it (their time / own time) from the best times and as the median of per-round ratios, CPU
seconds (parent + workers, sampled from /proc), and whether every contender returns the same labels.

    .venv/bin/python benchmarks/bench_grading.py [--problems 500] [--k 8] [--rounds 3] [--timeout-s 3]

Results and the decision drawn from them (pebble replaced the own pool): benchmarks/results/grading.md.
"""
import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_labelling import build_buffer  # noqa: E402

from rift_core.rewards import (CHUNK_ROWS, DEFAULT_TIMEOUT_S, Recorder, _context,  # noqa: E402
                               _gold_check, _grade_parsed, _parse_gold, _jobs, _pack, _parse, grade_jobs, wrap_gold)

NESTED = "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}"  # math-verify takes ~40 s on it
_GOLDS: dict = {}


def _gold(gold):
    if gold not in _GOLDS:
        try:
            _GOLDS[gold] = _parse(wrap_gold(gold)) if gold is not None else []
        except Exception:
            _GOLDS[gold] = []
    return _GOLDS[gold]


def pebble_row(gold, response):
    """One row, as Qwen2.5-Math's `math_equal_process` (a reference parsed once per worker)."""
    return _grade_parsed(_gold(gold), response)


TIMED_OUT = (False, None, "timeout")


class WorkerCPU:
    """CPU seconds of the grading forkserver's children (the workers of every contender), sampled from
    /proc every 50 ms while a contender runs (a worker killed between two samples loses its last 50 ms)."""

    def __enter__(self):
        from multiprocessing import forkserver

        self.server, self.cpu, self.stop = forkserver._forkserver._forkserver_pid, {}, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            try:
                pids = open(f"/proc/{self.server}/task/{self.server}/children").read().split()
            except OSError:
                pids = []
            for pid in pids:
                try:
                    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    self.cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
                except (OSError, IndexError):
                    pass
            if self.stop.wait(0.05):
                return

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.seconds = sum(self.cpu.values())


def run_own(golds, responses, workers, timeout_s):
    return own_grade_jobs(_jobs(golds, responses), len(golds), workers, timeout_s)


def run_grade_jobs(golds, responses, workers, timeout_s):
    return grade_jobs(_jobs(golds, responses), len(golds), workers, timeout_s)


def run_pebble_rows(golds, responses, workers, timeout_s):
    from pebble import ProcessPool

    out = []
    with ProcessPool(max_workers=workers, context=_context()) as pool:
        results = pool.map(pebble_row, golds, responses, timeout=timeout_s).result()
        while True:
            try:
                out.append(next(results))
            except StopIteration:
                break
            except FutureTimeout:
                out.append(TIMED_OUT)
            except Exception:  # the worker died
                out.append((False, None, "error"))
    return out


# ---- the hand-written pool rift_core.rewards.grade_jobs had before (removed there) -------------------

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
            gold_parsed = _parse_gold(gold)
            if check_only:
                out += [_gold_check(gold_parsed)] * len(items)
                row += len(items)
                continue
            for _, response in items:
                progress[1], progress[2], progress[0] = time.monotonic(), 0, row
                out.append(_grade_parsed(gold_parsed, response))
                row += 1
        conn.send(out)


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


def own_grade_jobs(jobs: list, n_rows: int, workers: int = 2, timeout_s: float | None = DEFAULT_TIMEOUT_S,
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
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    record = Recorder(jobs, n_rows, desc, on_progress)  # the same bookkeeping as grade_jobs
    todo = list(reversed(jobs))  # pop() from the end keeps the original order
    ctx = _context()
    slots = [_Slot(ctx) for _ in range(max(1, min(workers, len(todo))))] if todo else []

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
        record.close()
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
    return record.results


CONTENDERS = {"own pool (removed)": run_own, "pebble jobs (grade_jobs now)": run_grade_jobs,
              "pebble.map, 1 row/task": run_pebble_rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--source", default="benchmarks/math500/test.jsonl")
    p.add_argument("--problems", type=int, default=500)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout-s", type=float, default=3.0, help="per-row deadline (Qwen2.5-Math uses 3 s)")
    p.add_argument("--hostile", type=int, default=4, help="hanging rows added for the `hostile` workload")
    p.add_argument("--workloads", default="clean,hostile")
    args = p.parse_args()

    buffer = build_buffer(Path(args.data), args.problems, args.k, source=args.source)
    golds, responses = buffer["answer"].to_list(), buffer["response"].to_list()
    work = {"clean": (golds, responses)}
    g, r = list(golds), list(responses)
    for i in range(args.hostile):  # spread over the buffer, each inside an ordinary problem's rows
        at = (i + 1) * len(g) // (args.hostile + 1)
        g.insert(at, g[at])
        r.insert(at, NESTED)
    work["hostile"] = (g, r)
    work = {name: work[name] for name in args.workloads.split(",")}
    print(f"buffer: {buffer.height} responses to {buffer['answer'].n_unique()} MATH-500 answers, mean "
          f"{buffer['response'].str.len_chars().mean():.0f} chars, kinds {dict(buffer['kind'].value_counts().iter_rows())}; "
          f"hostile workload +{args.hostile} nested-brace rows; {args.workers} workers, deadline {args.timeout_s} s, "
          f"{CHUNK_ROWS}-row jobs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    run_own(golds[:1], responses[:1], 1, args.timeout_s)  # start the forkserver outside the timing

    best, results, times, cpu = {}, {}, {}, {}
    names = list(CONTENDERS)
    for rnd in range(args.rounds):
        for wl, (gs, rs) in work.items():
            for name in (names if rnd % 2 == 0 else names[::-1]):
                t0, c0 = time.perf_counter(), time.process_time()
                with WorkerCPU() as workers_cpu:
                    out = CONTENDERS[name](gs, rs, args.workers, args.timeout_s)
                dt, parent = time.perf_counter() - t0, time.process_time() - c0
                cpu[wl, name] = min(cpu.get((wl, name), (float("inf"),)), (parent + workers_cpu.seconds, parent))
                best[wl, name] = min(best.get((wl, name), float("inf")), dt)
                times.setdefault((wl, name), []).append(dt)
                results.setdefault((wl, name), out)
                statuses = {s: sum(o[2] == s for o in out) for s in sorted({o[2] for o in out})}
                print(f"round {rnd} {wl:8s} {name:30s} {dt:6.2f} s {len(gs) / dt:6.0f} rows/s; CPU-s: parent "
                      f"{parent:5.2f} workers {workers_cpu.seconds:5.2f}; {statuses} "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)

    print(f"\nbest of {args.rounds} rounds (seconds; rows/s); the own pool's speed over each = their time / own time, from the best "
          "times and the median of the per-round ratios (each round runs every contender back to back):")
    for wl, (gs, _) in work.items():
        ours = best[wl, names[0]]
        for name in names:
            same = sum(a == b for a, b in zip(results[wl, name], results[wl, names[0]]))
            timeouts = sum(o[2] == "timeout" for o in results[wl, name])
            per_round = sorted(t / o for t, o in zip(times[wl, name], times[wl, names[0]]))
            print(f"  {wl:8s} {name:30s} {best[wl, name]:6.2f} s {len(gs) / best[wl, name]:6.0f} rows/s   "
                  f"own is {best[wl, name] / ours:4.2f}x (best), {per_round[len(per_round) // 2]:4.2f}x (median per "
                  f"round; {per_round[0]:.2f}-{per_round[-1]:.2f}); CPU-s {cpu[wl, name][0]:5.2f} (parent "
                  f"{cpu[wl, name][1]:4.2f}), own is {cpu[wl, name][0] / cpu[wl, names[0]][0]:4.2f}x; labels equal to own "
                  f"{same}/{len(gs)}, timeouts {timeouts}")


if __name__ == "__main__":
    main()
