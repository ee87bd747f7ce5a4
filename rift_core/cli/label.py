"""`python -m rift_core label`: grade rollouts and assign rewards."""
import argparse
import os
import sys
import time

from rift_core.io import read_table, write_parquet_atomic
from rift_core.rewards import DEFAULT_TIMEOUT_S, assign_rewards, label_rollouts
from rift_core.schemes import SCHEMES


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
