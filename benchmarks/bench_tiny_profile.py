"""Time per stage of the whole graph on a profile (default `tiny`), as `make demo` runs it, then the
figures issue 5 asks for: base accuracy (sampled), %Pos, %Mixed and Mean@k / Pass@k per method.

    python benchmarks/bench_tiny_profile.py                      # a first run: trains the base policy too
    python benchmarks/bench_tiny_profile.py --reuse-base-policy  # a rerun that keeps only the base policy

Runs go to --data-dir (default benchmarks/out/<profile>); --reuse-base-policy deletes everything there
except the cached base policy before it starts. Budgets on a 2-core machine: 30 min for a first run,
15 min for one that reuses the base policy.
"""
import argparse
import shutil
import sys
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rift_dagster.demo import BUFFER, all_steps, materialize_all, tables  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--reuse-base-policy", action="store_true")
    ap.add_argument("--in-process", action="store_true", help="no Pipes subprocesses (make demo uses them)")
    ap.add_argument("--seeds", default="0", help="comma-separated replicate seeds (make demo runs seed 0)")
    args = ap.parse_args()
    stages = [([name], [None]) for name in BUFFER] + all_steps([int(s) for s in args.seeds.split(",")])[1:]
    data = Path(args.data_dir or f"benchmarks/out/{args.profile}")
    root = data / Path(args.profile).stem
    if args.reuse_base_policy:
        for child in root.glob("*"):
            if child.name != "base_model":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif root.exists():
        shutil.rmtree(root)

    times = []
    start = time.time()
    with dg.instance_for_test() as instance:
        for selection, keys in stages:
            for key in keys:
                t0 = time.time()
                materialize_all(args.profile, str(data), instance, steps=[(selection, [key])], out_of_process=not args.in_process)
                times.append((selection[0] + (f"[{', '.join(key.values())}]" if key else ""), time.time() - t0))
    total = time.time() - start

    budget = 15 if args.reuse_base_policy else 30
    print(f"\n## Time per stage, profile {args.profile} ({'base policy reused' if args.reuse_base_policy else 'first run'})\n")
    print("| stage | seconds |\n|---|---:|")
    for name, seconds in times:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **total** | **{total:.1f}** ({total / 60:.1f} min; budget {budget} min: {'PASS' if total <= budget * 60 else 'MISSED'}) |")
    for title, md in tables(args.profile, str(data)).items():
        print(f"\n## {title}\n\n{md}")


if __name__ == "__main__":
    main()
