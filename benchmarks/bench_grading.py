"""Grading pools side by side: the project's `grade_jobs` against `pebble.ProcessPool` with per-task timeouts.

Same work for every contender: MATH-500 reference answers x K responses built from them (correct boxed,
wrong boxed, unboxed, ~16k-character long; `bench_labelling.build_buffer`), graded by math-verify with
`rift_core.rewards._grade_parsed` (each reference parsed once per worker / job), the same number of
worker processes (the same warmed forkserver context), the same per-row deadline. Contenders:

- `grade_jobs` (ours): jobs of up to 64 rows grouped by reference, a per-step deadline read from shared
  memory, a hung worker killed and replaced, the rest of its job graded again;
- `pebble.map, 1 row/task`: what the Qwen2.5-Math evaluation does (`ProcessPool.map(fn, rows, timeout=T)`),
  a per-process cache of parsed references;
- `pebble.schedule, 64-row jobs`: the same jobs as ours, one pebble task each with `timeout=T`; a job
  that times out is graded again one row per task (each with `timeout=T`), so only the hung row fails.

Two workloads: `clean` (the buffer alone) and `hostile` (the same buffer plus a few rows that make
math-verify run for ~40 s: deeply nested braces, must end as "timeout"). Rounds are interleaved and the
order alternates per round; prints best-of-rounds seconds, rows/s, ours' speed over each, and checks
that every contender returns the same labels.

    .venv/bin/python benchmarks/bench_grading.py [--problems 500] [--k 8] [--rounds 3] [--timeout-s 3]
"""
import argparse
import os
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_labelling import build_buffer  # noqa: E402

from rift_core.rewards import CHUNK_ROWS, _context, _grade_parsed, _jobs, _parse, grade_jobs, wrap_gold  # noqa: E402

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


def pebble_job(groups):
    """One job of `_jobs`: [(gold, [(idx, response), ...]), ...] -> results in row order."""
    return [_grade_parsed(_gold(gold), response) for gold, items in groups for _, response in items]


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


def run_ours(golds, responses, workers, timeout_s):
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


def run_pebble_jobs(golds, responses, workers, timeout_s):
    from pebble import ProcessPool

    out = [None] * len(golds)
    with ProcessPool(max_workers=workers, context=_context()) as pool:
        futures = [(job, pool.schedule(pebble_job, args=(job[1],), timeout=timeout_s)) for job in _jobs(golds, responses)]
        retry = []
        for (_, groups), future in futures:
            rows = [(idx, gold, response) for gold, items in groups for idx, response in items]
            try:
                for (idx, _, _), value in zip(rows, future.result()):
                    out[idx] = value
            except Exception:  # timed out or died: grade each row alone, under its own deadline
                retry += [(idx, pool.schedule(pebble_row, args=(gold, response), timeout=timeout_s))
                          for idx, gold, response in rows]
        for idx, future in retry:
            try:
                out[idx] = future.result()
            except FutureTimeout:
                out[idx] = TIMED_OUT
            except Exception:
                out[idx] = (False, None, "error")
    return out


CONTENDERS = {"grade_jobs (ours)": run_ours, "pebble.map, 1 row/task": run_pebble_rows,
              "pebble.schedule, 64-row jobs": run_pebble_jobs}


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
    run_ours(golds[:1], responses[:1], 1, args.timeout_s)  # start the forkserver outside the timing

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

    print(f"\nbest of {args.rounds} rounds (seconds; rows/s); ours' speed over each = their time / ours, from the best "
          "times and the median of the per-round ratios (each round runs every contender back to back):")
    for wl, (gs, _) in work.items():
        ours = best[wl, names[0]]
        for name in names:
            same = sum(a == b for a, b in zip(results[wl, name], results[wl, names[0]]))
            timeouts = sum(o[2] == "timeout" for o in results[wl, name])
            per_round = sorted(t / o for t, o in zip(times[wl, name], times[wl, names[0]]))
            print(f"  {wl:8s} {name:30s} {best[wl, name]:6.2f} s {len(gs) / best[wl, name]:6.0f} rows/s   "
                  f"ours is {best[wl, name] / ours:4.2f}x (best), {per_round[len(per_round) // 2]:4.2f}x (median per "
                  f"round; {per_round[0]:.2f}-{per_round[-1]:.2f}); CPU-s {cpu[wl, name][0]:5.2f} (parent "
                  f"{cpu[wl, name][1]:4.2f}), ours is {cpu[wl, name][0] / cpu[wl, names[0]][0]:4.2f}x; labels equal to ours "
                  f"{same}/{len(gs)}, timeouts {timeouts}")


if __name__ == "__main__":
    main()
