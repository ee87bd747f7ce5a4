"""Evaluation sampling in float32 against bfloat16, side by side: speed and what it does to Mean@k.

The pipeline's sampler (rift_core.generation.generate_rollouts) on a trained toy policy, the same problems, K and
seeds in both dtypes, in interleaved rounds so that load from other users hits both alike. Prints samples/s per
dtype, bfloat16's speed-up (best rates and median of per-round ratios), and each dtype's Mean@k with its 95%
interval (graded by exact match of the last \\boxed{} number): whether the cheaper kernels move the score.
bfloat16 pays off only on a CPU with bf16 matrix units (AMX / avx512_bf16); the flags are printed.
Results: benchmarks/results/tiny.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval_dtype.py --model data/toy_policies/toy-base-...
"""
import argparse
import statistics
import time
from pathlib import Path

import polars as pl

from rift_core import toy_task
from rift_core.generation import GenerationConfig, generate_rollouts


def mean_at_k(rollouts: pl.DataFrame) -> tuple[float, float]:
    """Mean@k in % and the half-width of its 95% interval over problems."""
    graded = rollouts.select("problem_id", correct=pl.Series(
        [toy_task.last_boxed(r) == a for r, a in zip(rollouts["response"], rollouts["answer"])]))
    per = graded.group_by("problem_id").agg(pl.col("correct").mean())["correct"]
    return 100 * per.mean(), 100 * 1.96 * per.std() / len(per) ** 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained toy policy dir (data/toy_policies/toy-base-...)")
    p.add_argument("--split", default="id")
    p.add_argument("--problems", type=int, default=400)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    import torch

    flags = [f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("amx", "avx512_bf16"))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU flags: {sorted(set(flags)) or 'none'}")
    problems = toy_task.problems(args.split, args.problems, seed=0)
    rates, scores = {"float32": [], "bfloat16": []}, {}
    for r in range(args.rounds):
        for dtype in rates:
            cfg = GenerationConfig(k=args.k, temperature=0.7, top_p=1.0, max_new_tokens=128, batch_size=512,
                                   dtype=dtype, seed=r, chunk_problems=args.problems)
            start = time.perf_counter()
            rollouts = generate_rollouts(problems, args.model, cfg, progress=False)
            rates[dtype].append(rollouts.height / (time.perf_counter() - start))
            scores.setdefault(dtype, []).append(mean_at_k(rollouts))
            print(f"round {r}: {dtype:8s} {rates[dtype][-1]:6.1f} samples/s, Mean@{args.k} "
                  f"{scores[dtype][-1][0]:.1f} ± {scores[dtype][-1][1]:.1f}", flush=True)
    ratios = [b / f for f, b in zip(rates["float32"], rates["bfloat16"])]
    print(f"bfloat16 / float32 speed: {max(rates['bfloat16']) / max(rates['float32']):.2f}x (best rates), "
          f"{statistics.median(ratios):.2f}x (median per round)")
    for dtype, s in scores.items():
        print(f"{dtype}: Mean@{args.k} {statistics.mean(m for m, _ in s):.1f} over {args.rounds} seed(s) of "
              f"{args.problems} toy:{args.split} problems (95% interval of one seed ±{s[0][1]:.1f})")


if __name__ == "__main__":
    main()
