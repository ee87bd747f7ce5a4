"""`rift_dagster.demo --jobs`: partitions of one step side by side, each in a process of its own, on the project's
Dagster instance (whose `compute` pool allows one step at a time), never two of the same method at once."""
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from conftest import seed_base_policy

ROOT = Path(__file__).resolve().parent.parent


def test_partitions_run_side_by_side_in_their_own_processes(tmp_path_factory, tmp_path, monkeypatch):
    import dagster as dg

    from rift_dagster.demo import BUFFER, instance_for_jobs, materialize_all

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home)  # pool `compute`: one slot
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    data = tmp_path / "data"
    seed_base_policy(tmp_path_factory, data, "smoke")
    keys = [{"method": "sft", "seed": "0"}, {"method": "sft", "seed": "1"}, {"method": "dft", "seed": "0"}]
    results = materialize_all("smoke", str(data), instance_for_jobs(2), jobs=2,
                              steps=[(BUFFER, [None]), (["checkpoints"], keys),
                                     (["benchmark_scores"], [{"model": "sft", "seed": "0"}])])

    assert len(results) == 5 and all(r.success for r in results)
    for key in keys:  # each child trained its own partition
        assert (data / "smoke" / "checkpoints" / key["method"] / f"seed={key['seed']}" / "rift_run.json").exists()
    timings, = [pl.read_parquet(f) for f in (data / "smoke" / "timings").glob("*.parquet")]
    spans = {}
    for row in timings.filter(pl.col("partition") != "").iter_rows(named=True):
        end = datetime.strptime(row["finished_at"], "%Y-%m-%dT%H:%M:%S%z")
        spans[(row["step"], row["partition"])] = (end - timedelta(seconds=row["seconds"]), end)
    (sft0, sft1, dft0) = (spans[("checkpoints", str(k))] for k in keys)
    score = spans[("benchmark_scores", str({"model": "sft", "seed": "0"}))]
    assert sft0[0] < dft0[1] and dft0[0] < sft0[1], spans  # side by side
    second = timedelta(seconds=1)  # finished_at has whole seconds
    assert sft0[1] <= sft1[0] + second or sft1[1] <= sft0[0] + second, spans  # one method: never together
    # sft's seed-0 model is scored once it is trained, not after the whole checkpoints step
    assert sft0[1] <= score[0] + second and score[0] < sft1[1], spans
    # the runs are in the instance's history, and its pool is back at dagster.yaml's one slot
    instance = dg.DagsterInstance.get()
    assert len(instance.get_runs()) == 5
    assert instance.event_log_storage.get_concurrency_info("compute").slot_count == 1


def test_a_partition_waits_for_what_it_reads_only():
    from rift_dagster.demo import upstream

    steps = [(["buffer"], [None]),
             (["checkpoints"], [{"method": "sft", "seed": "0"}, {"method": "rift", "seed": "0"}]),
             (["benchmark_scores"], [{"model": "base", "seed": "0"}, {"model": "rift", "seed": "0"}]),
             (["results"], [None]),
             (["round_checkpoint", "round_scores"], ["1"])]
    assert upstream(steps) == [set(), {0}, {0},
                               {0, 1, 2},  # base: no checkpoint of its own, so after the whole step before
                               {0, 2},  # rift's scores after rift's checkpoint only
                               {0, 1, 2, 3, 4}, {5}]


def test_a_step_server_reports_a_failed_step_and_serves_the_next(tmp_path, monkeypatch):
    from rift_dagster.demo import StepServers

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    servers = StepServers("smoke", str(tmp_path / "data"), 1)
    try:
        failed = servers.run(["checkpoints"], {"method": "sft", "seed": "9"})  # no such replicate seed
        assert not failed.success and failed.failures, failed
        assert servers.run(["seed_problems"], None).success
        assert len(servers.started) == 1  # the same process served both
    finally:
        servers.close()
    assert all(p.returncode == 0 for p in servers.started)  # ended at the end of its input
