"""Score one policy on the toy benchmark splits as the tiny profile evaluates them, with confidence intervals.

Per split: problems, Mean@K, Pass@K and the 95% CI half-width of Mean@K, then the Avg line (the mean of the
splits, as results tables report it). Problems come from `rift_core.data.load_problems("toy:<split>",
limit, seed)` like the evaluation assets'; sampling is the profile's evaluation section (K=8, T=0.7,
top_p 1.0, 128 new tokens for tiny) through the pipeline's sampler; grading is exact match of the last
\\boxed{} number (toy answers are integers; the pipeline's math-verify agrees on them).

The CI is the normal approximation over problems: half-width 1.96 * sd(per-problem Mean@K) / sqrt(n), and
for Avg 1.96 * sqrt(sum of the splits' variances) / (number of splits), the splits' problems being
independent draws; per-problem Mean@K carries both problem-to-problem spread and the K samples' noise, so
this is the spread of one evaluation run. A bootstrap over problems (resampling each split's problems,
`--boot` draws) is printed next to it as a check. `--sizes 100,200,300` also prints the Avg half-width
of the first N problems of each split (toy_task.problems(split, N) is a prefix of toy_task.problems(split, M > N)).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_splits.py --policy DIR --limit 300 --threads 1
"""
import argparse
import math
import random
import sys
import time
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rift_core import toy_task  # noqa: E402
from rift_core.data import load_problems  # noqa: E402
from rift_core.generation import generate_rollouts  # noqa: E402
from rift_core.profiles import load_profile  # noqa: E402


def half_width(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return 1.96 * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def avg_half_width(per_split: list[list[float]]) -> float:
    return math.sqrt(sum(half_width(v) ** 2 for v in per_split)) / len(per_split)


def boot_half_width(per_split: list[list[float]], draws: int, seed: int = 0) -> float:
    """Half the 2.5-97.5 percentile range of the Avg over `draws` resamplings of each split's problems."""
    rng = random.Random(seed)
    avgs = sorted(sum(sum(rng.choices(v, k=len(v))) / len(v) for v in per_split) / len(per_split)
                  for _ in range(draws))
    return (avgs[int(0.975 * (draws - 1))] - avgs[int(0.025 * (draws - 1))]) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="model dir (e.g. a cached toy-base-<key>)")
    ap.add_argument("--limit", type=int, default=300, help="problems per split")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--profile", default="tiny", help="whose evaluation sampling settings to use")
    ap.add_argument("--splits", default="id,ood_steps,ood_numbers")
    ap.add_argument("--seed", type=int, default=0, help="problem subset and sampling seed (a replicate's)")
    ap.add_argument("--sizes", default="", help="also print the Avg half-width at these first-N sizes")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap draws (0: none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prof = load_profile(args.profile)
    gen = prof.evaluation_config(args.seed)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    print(f"policy {args.policy}; {args.limit} problems per split, seed {args.seed}; K={gen.k}, "
          f"T={gen.temperature}, top_p={gen.top_p}, max_new_tokens={gen.max_new_tokens}; torch threads {args.threads}")

    per_split, lines = {}, []
    t_all, c_all = time.time(), time.process_time()
    for split in splits:
        problems = load_problems(f"toy:{split}", limit=args.limit, seed=args.seed)
        t0, c0 = time.time(), time.process_time()
        rollouts = generate_rollouts(problems, args.policy, gen, progress=False)
        t1 = time.time()
        right = pl.Series([toy_task.last_boxed(r) == a for r, a in zip(rollouts["response"], rollouts["answer"])])
        per = (rollouts.select("problem_id").with_columns(right=right).group_by("problem_id", maintain_order=True)
               .agg(pl.col("right").mean()))
        order = {p: i for i, p in enumerate(problems["problem_id"])}  # problem order, for the prefix sizes
        values = [v for _, v in sorted(zip(per["problem_id"], per["right"]), key=lambda x: order[x[0]])]
        per_split[split] = values
        steps = problems["solution"].str.count_matches(" = ").mean()
        mean, pass_k = sum(values) / len(values), sum(v > 0 for v in values) / len(values)
        lines.append(f"{split:12s} {len(values):8d} {mean:8.1%} {pass_k:8.1%} {100 * half_width(values):8.1f} "
                     f"{steps:6.2f} {t1 - t0:8.1f} {time.process_time() - c0:8.1f} {time.time() - t1:6.2f}")
    wall, cpu = time.time() - t_all, time.process_time() - c_all
    print(f"{'split':12s} {'problems':>8s} {'Mean@' + str(gen.k):>8s} {'Pass@' + str(gen.k):>8s} {'±CI95':>8s} "
          f"{'steps':>6s} {'sample s':>8s} {'CPU s':>8s} {'grade s':>6s}")
    print("\n".join(lines))
    values = list(per_split.values())
    avg = sum(sum(v) / len(v) for v in values) / len(values)
    avg_pass = sum(sum(x > 0 for x in v) / len(v) for v in values) / len(values)
    boot = f", bootstrap ±{100 * boot_half_width(values, args.boot):.2f}" if args.boot else ""
    print(f"{'Avg':12s} {sum(map(len, values)):8d} {avg:8.1%} {avg_pass:8.1%} {100 * avg_half_width(values):8.1f}"
          f"   (normal ±{100 * avg_half_width(values):.2f}{boot} points)")
    print(f"total {wall:.1f} s wall, {cpu:.1f} s CPU (sampling + grading, {len(splits)} splits)")
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        if size <= args.limit:
            cut = [v[:size] for v in values]
            boot = f", bootstrap ±{100 * boot_half_width(cut, args.boot):.2f}" if args.boot else ""
            means = " ".join(f"{s} {sum(v) / len(v):.1%}" for s, v in zip(per_split, cut))
            print(f"first {size:4d} per split: Avg Mean@{gen.k} {sum(sum(v) / len(v) for v in cut) / len(cut):.1%} "
                  f"normal ±{100 * avg_half_width(cut):.2f}{boot} points ({means})")


if __name__ == "__main__":
    main()
