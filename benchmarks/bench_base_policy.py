"""Train (or reuse) a profile's toy base policy and measure where it sits: the calibration check.

The policy trains until a check on the held-out `toy:calibration` split is inside the profile's target
(base_policy.ToyConfig: target_pos, target_mixed_min); this prints the calibration record (step reached, %Pos /
%Mixed at that check, torch version and threads), the training time, greedy accuracy, and, with the
profile's K / temperature / top-p on its seed problems, the share of positive samples (%Pos, paper
Table 1) and of problems whose K samples mix correct and incorrect answers (%Mixed, paper Table 4).
Grading is exact match of the last \\boxed{} number (the pipeline uses math-verify).

    .venv/bin/python benchmarks/bench_base_policy.py --profile tiny --threads 1
"""
import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rift_core import base_policy, toy_task  # noqa: E402
from rift_core.profiles import load_profile  # noqa: E402

boxed = toy_task.last_boxed


def sample(path, seeds: pl.DataFrame, **gen) -> tuple[list[str], float, float]:
    """The pipeline's own sampler (rift_core.generation): responses, problem-major; wall and CPU seconds."""
    from rift_core.generation import GenerationConfig, generate_rollouts

    t0, c0 = time.time(), time.process_time()
    rollouts = generate_rollouts(seeds, str(path), GenerationConfig(**gen), progress=False)
    responses = rollouts.sort("problem_id", "sample_idx", maintain_order=True)["response"].to_list()
    return responses, time.time() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--cache", default=None, help="policy cache folder (default: a fresh temporary one)")
    ap.add_argument("--model", default=None, help="measure this policy dir instead of training the profile's")
    ap.add_argument("--n", type=int, default=None, help="seed problems to sample (default: the profile's n_seeds)")
    ap.add_argument("--top-p", type=float, default=None, help="override the profile's top_p")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prof = load_profile(args.profile)
    gen = {**asdict(prof.generation_config()), **({"top_p": args.top_p} if args.top_p else {})}
    k, n = gen["k"], args.n or prof.n_seeds

    cache = Path(args.cache or tempfile.mkdtemp(prefix="toy-base-"))
    t0, c0 = time.time(), time.process_time()
    path = Path(args.model) if args.model else base_policy.ensure_base_policy(cache, **asdict(prof.toy_config()))
    train_s, train_cpu = time.time() - t0, time.process_time() - c0

    seeds = toy_task.problems(prof.seeds.removeprefix("toy:"), n, prof.seed)
    seeds = seeds.sort("problem_id")
    answers = seeds["answer"].to_list()
    greedy, greedy_s, greedy_cpu = sample(path, seeds, **{**gen, "k": 1, "temperature": 0.0})
    sampled, sample_s, sample_cpu = sample(path, seeds, **gen)

    correct = [[boxed(sampled[i * k + j]) == a for j in range(k)] for i, a in enumerate(answers)]
    frame = seeds.select(steps=pl.col("solution").str.count_matches(" = ")).with_columns(
        greedy=pl.Series([boxed(g) == a for g, a in zip(greedy, answers)]),
        pos=pl.Series([sum(c) / k for c in correct]),
        mixed=pl.Series([0 < sum(c) < k for c in correct]),
    )
    print(f"profile {prof.name} ({prof.source}), toy settings {prof.toy_config()}, torch threads {args.threads}")
    print(f"base policy: {path}")
    # On a shared machine wall time overstates the cost; CPU time is what one free core would take.
    print(f"train (or reuse) base policy: {train_s:.1f} s wall, {train_cpu:.1f} s CPU")
    print(f"greedy, {n} problems: {greedy_s:.1f} s wall, {greedy_cpu:.1f} s CPU")
    print(f"sampled, {n} x K={k} at T={gen['temperature']}, top_p={gen['top_p']}: {sample_s:.1f} s wall, "
          f"{sample_cpu:.1f} s CPU ({n * k / sample_cpu:.1f} sequences per CPU second)")
    cfg = prof.toy_config()
    lo, hi = cfg.target_pos
    calib = base_policy.read_calibration(path)
    if calib:
        stop = (f"%Pos {calib['pos']:.1%} %Mixed {calib['mixed']:.1%} on {calib['check_problems']} calibration "
                f"problems" if calib.get("calibrated") else "fixed step count, no calibration")
        print(f"calibration: step {calib['step']}, {stop}; torch {calib['torch_version']}, "
              f"{calib['threads']} thread(s), trained in {calib.get('train_seconds')} s")
    print(f"greedy accuracy {frame['greedy'].mean():.1%}   %Pos {frame['pos'].mean():.1%}   "
          f"%Mixed {frame['mixed'].mean():.1%}   (target: %Mixed >= {cfg.target_mixed_min:.0%}, "
          f"%Pos {lo:.0%}-{hi:.0%}; seed split, {n} problems)")
    by = frame.group_by("steps").agg(pl.len().alias("problems"), pl.col("greedy", "pos", "mixed").mean()).sort("steps")
    print(by)


if __name__ == "__main__":
    main()
