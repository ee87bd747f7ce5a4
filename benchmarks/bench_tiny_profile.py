"""Time per step of the graph on a profile (default `tiny`), then the tables it produced: Tables 1 and 4, Mean@k /
Pass@k as mean ± std over the seeds run, RIFT against the baselines with 95% intervals, and (with the collapse
protocol) the collapse verdict.

    python benchmarks/bench_tiny_profile.py                                   # make demo: seed 0, first run
    python benchmarks/bench_tiny_profile.py --seeds all --protocols graph,collapse --in-process   # make results

Runs go to --data-dir (default benchmarks/out/<profile>); --reuse-base-policy deletes everything there except the
cached base policy before it starts; --resume keeps everything (a rerun after a kill continues where it stopped).
"""
import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import dagster as dg
    import polars as pl
    from rift_core.profiles import load_profile

    from rift_dagster.demo import failures, materialize_all, tables

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", default="0", help="comma-separated replicate seeds, or `all` (the profile's)")
    ap.add_argument("--protocols", default="graph", help="as python -m rift_dagster.demo --protocols")
    ap.add_argument("--reuse-base-policy", action="store_true")
    ap.add_argument("--resume", action="store_true", help="keep what is there (resume after a kill)")
    ap.add_argument("--in-process", action="store_true", help="no Pipes subprocesses (make demo uses them)")
    args = ap.parse_args()
    p = load_profile(args.profile)
    seeds = p.replicates if args.seeds == "all" else [int(s) for s in args.seeds.split(",")]
    data = Path(args.data_dir or f"benchmarks/out/{p.name}")
    root = data / p.name
    if args.reuse_base_policy:
        for child in root.glob("*"):
            if child.name != "base_model":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif root.exists() and not args.resume:
        shutil.rmtree(root)

    start = time.time()
    with dg.instance_for_test() as instance:
        results = materialize_all(args.profile, str(data), instance, out_of_process=not args.in_process,
                                  keep_going=True, seeds=seeds, protocols=args.protocols.split(","))
    total = time.time() - start
    timings = pl.read_parquet(sorted((root / "timings").glob("*.parquet"))[-1])
    print(f"\n## Time per step, profile {p.name}, seeds {seeds}, protocols {args.protocols}\n")
    print("| step | partition | seconds |\n|---|---|---:|")
    for row in timings.iter_rows(named=True):
        print(f"| {row['step']} | {row['partition']} | {row['seconds']:.1f} |")
    print(f"| **total** | | **{total:.1f}** ({total / 60:.1f} min) |")
    for step, why in failures(results).items():
        print(f"\nFAILED {step}: {why}")
    for title, md in tables(args.profile, str(data)).items():
        print(f"\n## {title}\n\n{md}")
    if (root / "experiments" / "collapse.parquet").exists():
        from rift_core.collapse import verdict

        print(f"\n## Collapse\n\n{verdict(pl.read_parquet(root / 'experiments' / 'collapse.parquet'))}")


if __name__ == "__main__":
    main()
