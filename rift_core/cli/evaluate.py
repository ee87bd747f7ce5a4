"""`python -m rift_core evaluate`: Mean@k / Pass@k of a model on math benchmarks."""
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rift_core import locks
from rift_core.cli import config_parser
from rift_core.evaluate import BENCHMARKS, evaluate, results_tables
from rift_core.generation import GenerationConfig
from rift_core.io import write_parquet_atomic
from rift_core.stats import to_markdown


@dataclass
class EvaluateArgs:
    model: str = field(metadata={"help": "HF model directory or hub id."})
    benchmarks: str = field(default=",".join(BENCHMARKS), metadata={"help": "Comma-separated load_problems sources."})
    limit: int | None = field(default=None, metadata={"help": "Seeded random subset of N problems per benchmark."})
    data_root: str = field(default="../shared/data", metadata={"help": "Folder of the known data sets."})
    out_dir: str | None = field(default=None, metadata={
        "help": "Keep rollouts (resumable) and labels here, and write scores.parquet."})
    workers: int = field(default=2, metadata={"help": "Grading processes."})
    timeout_s: float | None = field(default=None, metadata={
        "help": "Grading deadline per response, seconds (default rewards.DEFAULT_TIMEOUT_S)."})
    wait_for_lock: bool = field(default=False, metadata={
        "help": "When another run is writing --out-dir, wait for it to finish instead of failing at once."})


def main(argv: list[str]) -> None:
    parser = config_parser([EvaluateArgs, GenerationConfig], prog="python -m rift_core evaluate",
                           description="Mean@k / Pass@k of a model on math benchmarks (every generation field is a flag).")
    parser.set_defaults(max_new_tokens=4096)  # the paper's evaluation length
    args, gen = parser.parse_args_and_config(argv)
    with locks.hold(args.out_dir, wait=args.wait_for_lock) if args.out_dir else contextlib.nullcontext():
        scores = evaluate(
            args.model, [b.strip() for b in args.benchmarks.split(",") if b.strip()], k=gen.k, limit=args.limit,
            seed=gen.seed, gen=gen, data_root=args.data_root, out_dir=args.out_dir, workers=args.workers,
            timeout_s=args.timeout_s,
        )
        if args.out_dir:
            path = write_parquet_atomic(scores, Path(args.out_dir) / "scores.parquet")
            print(f"scores -> {path}", file=sys.stderr)
    mean, pas = results_tables(scores)
    summary = scores.select("benchmark", "n_problems", "n_excluded", "extraction_failure_rate")
    sys.stdout.write(f"## Mean@{gen.k} (%)\n\n{to_markdown(mean)}\n\n## Pass@{gen.k} (%)\n\n{to_markdown(pas)}\n\n"
                     f"## Coverage\n\n{to_markdown(summary)}\n")
