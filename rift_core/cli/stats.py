"""`python -m rift_core stats`: the buffer tables of a labels table (paper Tables 1, 4, 9/10)."""
import argparse
import sys

from rift_core.io import read_table
from rift_core.stats import buffer_table, k_ablation_table, mixed_table, to_markdown


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m rift_core stats", description="Print the buffer tables (paper Tables 1, 4, 9/10).")
    p.add_argument("--labels", required=True, help="labels table (.parquet, .jsonl, or a folder of parts)")
    p.add_argument("--ks", default=None, help="comma-separated k for the first-k tables, e.g. 1,2,4,8")
    args = p.parse_args(argv)
    labels = read_table(args.labels)
    try:
        ks = [int(k) for k in args.ks.split(",")] if args.ks else []
    except ValueError:
        raise SystemExit(f"--ks: expected comma-separated integers, got {args.ks!r}")
    try:
        sections = [("Table 1: buffer", buffer_table(labels)), ("Table 4: mixed problems", mixed_table(labels))]
        if ks:
            sections.append(("Tables 9/10: first k samples", k_ablation_table(labels, ks)))
    except ValueError as e:
        raise SystemExit(f"{args.labels}: {e}")
    for title, frame in sections:
        sys.stdout.write(f"## {title}\n\n{to_markdown(frame)}\n\n")
