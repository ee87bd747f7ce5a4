"""`make demo`: materialise the whole graph in lineage order in this process, then print the paper's
tables from the SQL catalog and say how to open the web UI and the SQL shell.

    python -m rift_dagster.demo --profile tiny
"""
import argparse
import os
import time

import dagster as dg
from rift_core.stats import to_markdown

from rift_dagster.defs.training import METHODS

# Dagster's per-event DEBUG lines drown the demo's own progress; the UI keeps the full event log
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# (selection, partition keys) in lineage order; None = unpartitioned
STEPS = [
    (["seed_problems", "base_model", "benchmarks", "rollouts", "reward_labels", "buffer_stats"], [None]),
    (["checkpoints"], METHODS),
    (["benchmark_scores"], ["base", *METHODS]),
]


def materialize_all(profile: str, data_dir: str = "data", instance=None, steps=STEPS, out_of_process: bool = True,
                    keep_going: bool = False) -> list:
    """Materialise every step, stopping at the first failure with Dagster's error; the runs' results.

    `keep_going`: as a Dagster backfill does, a failed partition (e.g. checkpoints[rft] on a buffer with no correct
    sample) does not stop the others; the later steps' same partition key (benchmark_scores[rft]) is skipped, and
    `failures(results)` says what failed and why. A failed unpartitioned step still stops everything."""
    from rift_dagster.definitions import defs
    from rift_dagster.defs.resources import rift_resources

    assets = list(defs().assets)
    res = rift_resources(profile, data_dir, out_of_process)
    results, failed = [], {}
    for selection, keys in steps:
        for key in keys:
            label = ", ".join(selection) + (f" [{key}]" if key else "")
            if key in failed:
                print(f"==> skipping {label}: {failed[key]} failed", flush=True)
                continue
            print(f"==> materialising {label}", flush=True)
            start = time.time()
            results.append(dg.materialize(assets, selection=selection, partition_key=key, resources=res, instance=instance,
                                          run_config=QUIET, raise_on_error=not (keep_going and key)))
            if results[-1].success:
                print(f"    done in {time.time() - start:.1f} s", flush=True)
            else:
                failed[key] = label
                print(f"    FAILED in {time.time() - start:.1f} s: {' '.join(failures(results[-1:]).values())}", flush=True)
    return results


def failures(results: list) -> dict[str, str]:
    """{"checkpoints[rft]": why it failed} for the failed steps of `results` (runs of materialize_all); for a
    dg.Failure, its description."""
    out = {}
    for result in results:
        partition = result.dagster_run.tags.get("dagster/partition")
        for event in result.get_step_failure_events():
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name != "Failure":  # the step's own error, not its wrappers
                error = error.cause
            message = error.message.strip().removeprefix("dagster._core.definitions.events.Failure: ")
            out[event.step_key + (f"[{partition}]" if partition else "")] = message
    return out


def tables(profile: str, data_dir: str = "data") -> dict[str, str]:
    """Table 1, Table 4 and the Mean@k / Pass@k tables, read back through the user's SQL catalog."""
    from rift_core.evaluate import results_tables
    from rift_core.profiles import load_profile

    from rift_dagster.defs.evaluation import in_paper_order
    from rift_dagster.defs.rewards import short_models

    from rift_dagster.sql import connect
    from rift_dagster.defs.resources import RiftStorage

    con = connect(RiftStorage(data_dir=data_dir).db_path(load_profile(profile).name))
    try:
        out = {
            "Table 1 (rollout buffer)": to_markdown(short_models(con.sql("SELECT * FROM buffer_stats").pl())),
            "Table 4 (problems with mixed correct/incorrect responses)": to_markdown(short_models(con.sql("SELECT * FROM mixed_stats").pl())),
        }
        scores = con.sql("SELECT * FROM scores").pl()
    finally:
        con.close()
    mean, pas = results_tables(in_paper_order(scores))
    k = int(scores["k"].max())
    out[f"Mean@{k}"] = to_markdown(mean)
    out[f"Pass@{k}"] = to_markdown(pas)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--in-process", action="store_true",
                    help="run the Pipes steps (train, generate, evaluate) inside this process instead of subprocesses; "
                         "faster on a CPU")
    args = ap.parse_args(argv)
    # With DAGSTER_HOME set (the Makefile sets it) the runs land in the instance `make ui` shows.
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    start = time.time()
    failed = failures(materialize_all(args.profile, args.data_dir, instance, out_of_process=not args.in_process,
                                      keep_going=True))
    print(f"\nWhole graph materialised in {time.time() - start:.0f} s (profile {args.profile})"
          + (f", {len(failed)} partition(s) failed" if failed else "") + ".\n")
    for title, md in tables(args.profile, args.data_dir).items():
        print(f"## {title}\n\n{md}\n")
    print(f"Web UI:    make ui PROFILE={args.profile}   then open http://127.0.0.1:3000 (runs above are in its history)")
    print(f"SQL shell: make sql PROFILE={args.profile}  (read-only; tables: problems, rollouts, labels, buffer_stats,")
    print("           mixed_stats, k_ablation, scores, runs, benchmark_problems, round_labels, round_rollouts)")
    for label, message in failed.items():
        print(f"\nFAILED {label} (its downstream partitions were skipped): {message}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
