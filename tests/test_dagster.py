"""The Dagster project in process: the graph a user sees, and the SQL catalog a user queries while runs go on."""
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from rift_dagster.definitions import defs as load_defs
from rift_dagster.defs.resources import RiftStorage, file_hash
from rift_dagster.defs.resources import rift_resources as resources
from rift_dagster.defs.training import METHODS

defs = load_defs()

REPO = Path(__file__).resolve().parent.parent


def graph():
    return defs.resolve_asset_graph()


def parents(key: str) -> set[str]:
    return {k.to_user_string() for k in graph().get(dg.AssetKey(key)).parent_keys}


def test_lineage_is_the_papers_pipeline():
    assert parents("seed_problems") == set()
    assert parents("base_model") == {"seed_problems"}
    assert parents("rollouts") == {"seed_problems", "base_model"}
    assert parents("reward_labels") == {"rollouts"}
    assert parents("buffer_stats") == {"reward_labels"}
    assert parents("checkpoints") == {"reward_labels", "seed_problems", "base_model"}
    assert parents("benchmark_scores") == {"checkpoints", "base_model", "benchmarks"}
    assert parents("round_rollouts") == {"seed_problems", "checkpoints"}
    assert parents("round_checkpoint") == {"round_labels"}


def test_partitions_are_method_by_replicate_seed_and_scores_read_the_same_method_and_seed():
    from rift_dagster.defs.problems import register_partitions
    from rift_core.profiles import load_profile

    g = graph()
    ckpt, scores = g.get(dg.AssetKey("checkpoints")), g.get(dg.AssetKey("benchmark_scores"))
    with dg.instance_for_test() as instance:
        assert register_partitions(instance, load_profile("tiny"))["seed"] == ["0", "1", "2"]
        keys = ckpt.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
        assert {(k.keys_by_dimension["method"], k.keys_by_dimension["seed"]) for k in keys} == {
            (m, s) for m in METHODS for s in ("0", "1", "2")}
        models = {k.keys_by_dimension["model"] for k in scores.partitions_def.get_partition_keys(dynamic_partitions_store=instance)}
        assert models == {"base", *METHODS}
        mapping = g.get_partition_mapping(scores.key, ckpt.key)
        upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
            scores.partitions_def.subset_with_partition_keys([dg.MultiPartitionKey({"model": "rift", "seed": "2"}),
                                                               dg.MultiPartitionKey({"model": "base", "seed": "2"})]),
            scores.partitions_def, ckpt.partitions_def, dynamic_partitions_store=instance)
        # benchmark_scores[rift, 2] reads checkpoints[rift, 2]; benchmark_scores[base, 2] reads no checkpoint
        assert list(upstream.partitions_subset.get_partition_keys()) == [dg.MultiPartitionKey({"method": "rift", "seed": "2"})]
    schedule = defs.resolve_schedule_def("regeneration_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_schedule_starts_a_new_round_only_after_the_last_one_finished():
    from rift_dagster.defs.schedules import next_round

    with dg.instance_for_test() as instance:
        assert next_round(instance) == "1"
        assert next_round(instance) == "1"  # round 1 has no checkpoint yet: it is retried, not skipped
        assert instance.get_dynamic_partitions("round") == ["1"]
        instance.report_runless_asset_event(dg.AssetMaterialization("round_checkpoint", partition="1"))
        assert next_round(instance) == "2"
        assert instance.get_dynamic_partitions("round") == ["1", "2"]


def test_launcher_wraps_training_for_several_gpus():
    from rift_dagster.defs.resources import RunProfile

    rift = RunProfile(launcher=["accelerate", "launch", "--num_processes", "8"])
    assert rift.command(distributed=True) == [
        "accelerate", "launch", "--num_processes", "8", "-m", "rift_dagster.worker"]
    assert rift.command() == [sys.executable, "-m", "rift_dagster.worker"]


def write_profile(path: Path, n_seeds: int) -> str:
    """A profile needing only the data loaders: toy seed problems and one toy benchmark split."""
    path.write_text(yaml.safe_dump({
        "base_model": "toy", "seeds": "toy:seed", "n_seeds": n_seeds, "benchmarks": ["toy:id"],
        "evaluation": {"limit": 5},
    }))
    return str(path)


def test_open_sql_session_never_fails_a_run(tmp_path):
    """A user keeps `make sql` open on the catalog; runs still succeed and the same session sees their output."""
    profile = write_profile(tmp_path / "sqltest.yaml", n_seeds=12)
    data = tmp_path / "data"
    assets = list(defs.assets)
    dg.materialize(assets, selection=["seed_problems"], resources=resources(profile, str(data)))
    db = data / "sqltest" / "rift.duckdb"

    shell = subprocess.Popen(
        [sys.executable, "-m", "rift_dagster.sql", "--profile", "sqltest", "--data-dir", str(data)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        shell.stdin.write("SELECT 'n_problems=' || count(*) AS answer FROM problems;\n")
        shell.stdin.flush()
        # the session is open (and holds its read-only lock) before the next run starts
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in shell.stdout], daemon=True).start()
        out = ""
        deadline = time.time() + 30
        while time.time() < deadline and "n_problems=12" not in out:
            try:
                out += lines.get(timeout=1)
            except queue.Empty:
                pass
        assert "n_problems=12" in out, out

        write_profile(tmp_path / "sqltest.yaml", n_seeds=30)
        result = dg.materialize(assets, selection=["seed_problems", "benchmarks"], resources=resources(profile, str(data)))
        assert result.success

        shell.stdin.write("SELECT 'n_problems=' || count(*) AS answer FROM problems;\n"
                          "SELECT 'n_bench=' || count(*) AS answer FROM benchmark_problems;\n.quit\n")
        shell.stdin.flush()
        shell.stdin.close()
        shell.wait(timeout=60)
        time.sleep(0.5)
        rest = "".join(lines.get() for _ in range(lines.qsize()))
    finally:
        if shell.poll() is None:
            shell.kill()
    assert shell.returncode == 0, rest
    assert "n_problems=30" in rest and "n_bench=5" in rest and "error" not in rest.lower(), rest  # the open session reads the new problems and the new view
    # a fresh session sees the view added by the second run
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM benchmark_problems").fetchone()[0] == 5
    assert con.execute("SELECT count(*) FROM runs WHERE asset = 'seed_problems'").fetchone()[0] == 2
    con.close()


def test_paper_seed_problems_skip_and_report_the_bad_math_rows(tmp_path, shared_data):
    # the real MATH seed file has two empty answers; the paper profile skips them and says so
    result = dg.materialize(list(defs.assets), selection=["seed_problems"],
                            resources=resources("paper", str(tmp_path), False))
    metadata = result.asset_materializations_for_node("seed_problems")[0].metadata
    assert metadata["dagster/row_count"].value == 3000
    assert metadata["skipped_rows"].value == 2


def test_a_benchmark_named_by_a_file_path_is_kept_and_queryable(tmp_path):
    """A benchmark given as a path (or hub id) is stored under a flat file name, so the SQL view and the
    scoring step find it (it used to land in a nested folder and be skipped silently)."""
    bench = tmp_path / "my sets" / "extra.jsonl"
    bench.parent.mkdir()
    # a format the project has never seen: the question split over two fields, the answer nested and numeric
    bench.write_text('{"Body": "Ann has 2 apples.", "Query": "How many now?", "meta": {"gold": {"value": 5}}}\n'
                     '{"Body": "Ben has 4 pears.", "Query": "How many now?", "meta": {"gold": {"value": 8.0}}}\n')
    profile = tmp_path / "pathbench.yaml"
    profile.write_text(yaml.safe_dump({
        "extends": "smoke", "benchmarks": ["toy:id", str(bench)],
        "benchmark_formats": {str(bench): {"question_field": "{Body} {Query}", "answer_field": "meta.gold.value"}}}))
    data = tmp_path / "data"
    assert dg.materialize(list(defs.assets), selection=["benchmarks"], resources=resources(str(profile), str(data))).success
    files = sorted(p.name for p in (data / "pathbench" / "benchmarks").iterdir())
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)
    con = duckdb.connect(str(data / "pathbench" / "rift.duckdb"), read_only=True)
    counts = dict(con.execute("SELECT benchmark, count(*) FROM benchmark_problems GROUP BY benchmark").fetchall())
    mine = con.execute("SELECT question, answer FROM benchmark_problems WHERE benchmark = ? ORDER BY answer",
                       [str(bench)]).fetchall()
    con.close()
    assert counts == {"toy:id": 4, str(bench): 2}
    assert mine == [("Ann has 2 apples. How many now?", "5"), ("Ben has 4 pears. How many now?", "8")]


def test_one_label_deadline_everywhere():
    from rift_core import evaluate, rewards
    from rift_core.cli import evaluate as evaluate_command
    from rift_core.cli import label as label_command

    from rift_dagster.defs.resources import RunProfile

    assert RunProfile().label_timeout_s == rewards.DEFAULT_TIMEOUT_S
    assert label_command.build_parser().parse_args(["--rollouts", "r", "--out", "o"]).timeout_s == rewards.DEFAULT_TIMEOUT_S
    assert evaluate_command.EvaluateArgs(model="m").timeout_s is None  # None: evaluate() falls back to the default
    import inspect

    for fn in (rewards.label_rollouts, rewards.check_references, evaluate.evaluate):
        default = inspect.signature(fn).parameters["timeout_s"].default
        assert default in (rewards.DEFAULT_TIMEOUT_S, None), fn


def test_dg_lists_and_checks_the_project_definitions():
    import json
    import os

    env = {**os.environ, "DAGSTER_HOME": str(REPO / ".dagster_home")}
    out = subprocess.run([str(REPO / ".venv/bin/dg"), "list", "defs", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True)
    listed = json.loads(out.stdout[out.stdout.index("{"):])
    assert {a["asset_key"] for a in listed["assets"]} >= {
        "seed_problems", "base_model", "rollouts", "reward_labels", "buffer_stats", "checkpoints", "benchmarks",
        "benchmark_scores", "round_rollouts", "round_labels", "round_checkpoint"}
    check = subprocess.run([str(REPO / ".venv/bin/dg"), "check", "defs"], cwd=REPO, env=env, capture_output=True,
                           text=True)
    assert check.returncode == 0 and "loaded successfully" in check.stdout + check.stderr


def test_every_registry_method_is_a_partition_and_heavy_steps_share_a_pool():
    from rift_core import methods

    method_dimension = graph().get(dg.AssetKey("checkpoints")).partitions_def.get_partitions_def_for_dimension("method")
    assert method_dimension.get_partition_keys() == list(methods.METHODS)
    assert "kto" in methods.METHODS
    heavy = {"base_model", "rollouts", "checkpoints", "benchmark_scores", "round_rollouts", "round_checkpoint",
             "lr_sweep", "collapse", "reward_scheme_scores", "k_rollouts", "k_scores", "second_round_scores",
             "round_scores"}
    for assets_def in defs.assets:
        for spec in assets_def.specs:
            assert "dagster/code_references" in spec.metadata, spec.key
    pools = {k.to_user_string(): a.op.pool for a in defs.assets for k in a.keys}
    assert {key for key, pool in pools.items() if pool == "compute"} == heavy


def test_experiment_partitions_are_the_profiles_selection():
    """Every key of an experiments asset is one the profile selects, so the UI's "Materialize all" runs exactly the
    profile's protocols; second_round_scores[m, s] reads checkpoints[m, s]."""
    from rift_core.profiles import load_profile

    from rift_dagster.defs.problems import register_partitions

    g = graph()
    p = load_profile("smoke")
    with dg.instance_for_test() as instance:
        register_partitions(instance, p)
        keys = lambda asset: [k.keys_by_dimension if isinstance(k, dg.MultiPartitionKey) else k  # noqa: E731
                              for k in g.get(dg.AssetKey(asset)).partitions_def.get_partition_keys(
                                  dynamic_partitions_store=instance)]
        assert sorted(keys("lr_sweep")) == sorted(p.experiments.lr_sweep_methods)
        assert {k["variant"] for k in keys("reward_scheme_scores")} == set(p.experiments.reward_variants)
        assert {int(k["k"]) for k in keys("k_scores")} == set(p.experiments.ks)
        assert {k["seed"] for k in keys("second_round_scores")} == {str(s) for s in p.replicates}
        second, ckpt = g.get(dg.AssetKey("second_round_scores")), g.get(dg.AssetKey("checkpoints"))
        upstream = g.get_partition_mapping(second.key, ckpt.key).get_upstream_mapped_partitions_result_for_partitions(
            second.partitions_def.subset_with_partition_keys([dg.MultiPartitionKey({"source": "sft", "seed": "1"})]),
            second.partitions_def, ckpt.partitions_def, dynamic_partitions_store=instance)
        assert list(upstream.partitions_subset.get_partition_keys()) == [dg.MultiPartitionKey({"method": "sft", "seed": "1"})]



def test_the_defs_folder_defines_each_asset_once_and_holds_only_definitions():
    """Every Dagster object at the top level of a defs module is loaded as one of its definitions: a module that
    imported another domain's asset by name would define it twice. And every module there defines something."""
    import importlib

    loaded = dg.load_from_defs_folder(path_within_project=REPO / "rift_dagster")
    keys = [a.key for a in loaded.assets]
    assert len(keys) == len(set(keys)) == len(list(defs.assets))
    kinds = (dg.AssetsDefinition, dg.ScheduleDefinition, dg.SensorDefinition, type(dg.define_asset_job("job")),
             type(load_defs))  # load_defs: a @dg.definitions function, as resources.py holds
    for path in sorted((REPO / "rift_dagster" / "defs").glob("[!_]*.py")):
        module = importlib.import_module(f"rift_dagster.defs.{path.stem}")
        assert any(isinstance(v, kinds) for v in vars(module).values()), f"{path.name} defines no Dagster definition"


def test_store_writes_records_lineage_and_publishes_the_views_in_one_call(tmp_path):
    """An asset's files (a frame, a dict, a text, a figure) by atomic rename, its lineage row with its own hash and
    the given fields, and the SQL views over what now exists."""
    import polars as pl

    from rift_core.figures import loss_curves

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["3"]))
    def stored(context: dg.AssetExecutionContext, storage: RiftStorage) -> dg.MaterializeResult:
        digest = storage.store(context, "p", {"problems.parquet": pl.DataFrame({"problem_id": ["a", "b"]}),
                                              "base_model.json": {"path": "toy"}, "report/README.md": "# report",
                                              "report/figure.png": loss_curves({"rift": [1.0, 0.5]})},
                               hash_as="content_hash", base_model_hash="feed")
        return dg.MaterializeResult(metadata={"digest": digest})

    result = dg.materialize([stored], partition_key="3", resources={"storage": RiftStorage(data_dir=str(tmp_path))})
    root = tmp_path / "p"
    digest = result.asset_materializations_for_node("stored")[0].metadata["digest"].value
    assert digest == file_hash(root / "problems.parquet")
    assert yaml.safe_load((root / "base_model.json").read_text()) == {"path": "toy"}
    assert (root / "report" / "README.md").read_text() == "# report"
    assert (root / "report" / "figure.png").read_bytes().startswith(b"\x89PNG")
    assert not [f for f in root.rglob(".*tmp*")]  # nothing half-written left behind
    con = duckdb.connect(str(root / "rift.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM problems").fetchone()[0] == 2
        row = con.execute("SELECT asset, partition, path, content_hash, base_model_hash FROM runs").fetchall()
    finally:
        con.close()
    assert row == [("stored", "3", str(root / "problems.parquet"), digest, "feed")]
