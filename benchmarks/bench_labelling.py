"""Labelling throughput on a paper-sized buffer: 3,000 MATH problems x 8 responses = 24,000 rows.

Responses are built from the real MATH reference answers: correct boxed answers, wrong ones (another
problem's answer), answers stated without \\boxed{}, and long ~16k-character responses (about the
paper's 4,096-token limit). Prints the pool's time for the whole buffer with 2 workers against the
60 s target, and, side by side, in-process serial grading of a subsample (no deadline, no IPC).

    .venv/bin/python benchmarks/bench_labelling.py [--data ../shared/data] [--workers 2]
"""
import argparse
import json
import os
import random
import threading
import time
from pathlib import Path

import polars as pl

from rift_core.rewards import _grade_parsed, _parse, label_rollouts, wrap_gold

STEP = "We simplify the expression step by step: $2x + 3 = 7$ gives $x = 2$, so $x^2 = 4$. "


def build_buffer(data: Path, n_problems: int = 3000, k: int = 8, seed: int = 0,
                 source: str = "seeds/math/train.jsonl") -> pl.DataFrame:
    """n_problems of `data / source` (jsonl with an `answer` field) x k responses built from the answers."""
    rows = [json.loads(line) for line in (data / source).open()]
    rng = random.Random(seed)
    problems = rng.sample(rows, min(n_problems, len(rows)))
    answers = [p["answer"] for p in problems]
    out = []
    for i, p in enumerate(problems):
        for j in range(k):
            kind = rng.choices(["correct", "wrong", "unboxed", "long"], weights=[45, 35, 10, 10])[0]
            answer = p["answer"] if kind in ("correct", "long") or rng.random() < 0.3 else rng.choice(answers)
            steps = STEP * (200 if kind == "long" else rng.randint(3, 30))
            if kind == "unboxed":
                response = f"{steps}So the answer is {answer}."
            else:
                response = f"{steps}Therefore the final answer is $\\boxed{{{answer}}}$."
            out.append({"problem_id": f"math-{i}", "sample_idx": j, "answer": p["answer"], "response": response, "kind": kind})
    return pl.DataFrame(out)


def watch_worker_cpu(cpu: dict, stop: threading.Event) -> None:
    """Record the CPU seconds of every child of the grading forkserver (the workers), Linux /proc."""
    from multiprocessing import forkserver

    tick = os.sysconf("SC_CLK_TCK")
    while not stop.wait(0.05):
        server = forkserver._forkserver._forkserver_pid
        for pid in os.listdir("/proc"):
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if pid.isdigit() and int(fields[1]) == server:
                cpu[pid] = (int(fields[11]) + int(fields[12])) / tick


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--serial-sample", type=int, default=2400)
    args = p.parse_args()

    buffer = build_buffer(Path(args.data))
    print(f"buffer: {buffer.height} responses, {buffer['problem_id'].n_unique()} problems, "
          f"mean {buffer['response'].str.len_chars().mean():.0f} chars; kinds {dict(buffer['kind'].value_counts().iter_rows())}")

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    label_rollouts(buffer.head(1), workers=1)  # start the forkserver outside the timing
    cpu, stop = {}, threading.Event()
    watcher = threading.Thread(target=watch_worker_cpu, args=(cpu, stop), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    labels = label_rollouts(buffer, workers=args.workers, timeout_s=10.0)
    pool_s = time.perf_counter() - t0
    stop.set()
    watcher.join()
    status = dict(labels["status"].value_counts().iter_rows())
    by_kind = labels.group_by("kind").agg(pl.col("correct").mean().round(3)).sort("kind")
    print(f"pool, {args.workers} workers: {pool_s:.1f} s for {labels.height} rows = {labels.height / pool_s:.0f} labels/s; "
          f"target <= 60 s: {'MET' if pool_s <= 60 else 'MISSED'} ({pool_s / 60:.2f}x of budget)")
    print(f"status {status}; accuracy by kind {dict(by_kind.iter_rows())}")
    worker_cpu = sum(cpu.values())
    print(f"workers used {worker_cpu:.1f} CPU-s ({1000 * worker_cpu / labels.height:.2f} ms per response), "
          f"{worker_cpu / args.workers / pool_s:.0%} of a core each; on {args.workers} idle cores: "
          f"{worker_cpu / args.workers:.1f} s ({worker_cpu / args.workers / 60:.2f}x of the 60 s budget)")

    # Serial in-process grading of a subsample, timed by wall clock and by CPU time: the CPU rate is
    # what an idle core gives, so it tells the pool's time on an idle 2-core machine apart from the
    # load other users put on this one.
    # Same work per row as a worker: each problem's gold parsed once for its 8 responses.
    sample = buffer.head(args.serial_sample)
    t0, c0 = time.perf_counter(), time.process_time()
    for (gold,), group in sample.group_by("answer", maintain_order=True):
        gold_parsed = _parse(wrap_gold(gold))
        for response in group["response"]:
            _grade_parsed(gold_parsed, response)
    wall_rate = sample.height / (time.perf_counter() - t0)
    cpu_rate = sample.height / (time.process_time() - c0)
    idle_s = buffer.height / (args.workers * cpu_rate)
    print(f"serial in-process, {sample.height} rows: {wall_rate:.0f} labels/s wall, {cpu_rate:.0f} labels/s per CPU-second "
          f"(wall/CPU {cpu_rate / wall_rate:.2f}x: 1.0 on an idle machine); pool vs serial wall rate {labels.height / pool_s / wall_rate:.2f}x")
    print(f"grading CPU for the whole buffer: {buffer.height / cpu_rate:.1f} CPU-s -> {idle_s:.1f} s on {args.workers} idle cores "
          f"({idle_s / 60:.2f}x of the 60 s budget); load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
