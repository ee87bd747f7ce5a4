"""The whole `smoke` graph (the `smoke` fixture of conftest.py) materialised in process, in lineage order, then checked through the SQL
catalog a user opens (`make sql`): every table filled, consistent, and every score traceable by hash
to its checkpoint, buffer and base model."""

import dagster as dg
import pytest

from rift_core.profiles import load_profile

from rift_dagster.demo import materialize_all
from rift_dagster.defs.resources import file_hash
from rift_dagster.defs.training import METHODS

PROFILE = "smoke"
pytestmark = pytest.mark.slow


def one(con, sql, *params):
    return con.execute(sql, list(params)).fetchone()[0]


def test_every_step_and_check_succeeded(smoke):
    _, _, results = smoke
    assert all(r.success for r in results)
    evaluations = [e for r in results for e in r.get_asset_check_evaluations()]
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations
              if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    assert not failed
    # labels (2) + stats (1) + per seed: 2 per checkpoint + 1 per score partition; 2 rounds x (labels, loss, loadable)
    seeds = len(load_profile(PROFILE).replicates)
    assert len(evaluations) == 2 + 1 + seeds * (2 * len(METHODS) + (1 + len(METHODS))) + 2 * 3


def test_buffer_tables(smoke):
    _, con, _ = smoke
    n, k = one(con, "SELECT count(*) FROM problems"), one(con, "SELECT max(sample_idx) + 1 FROM rollouts")
    assert one(con, "SELECT count(*) FROM rollouts") == n * k
    assert one(con, "SELECT count(*) FROM labels") == n * k
    assert one(con, "SELECT count(*) FROM labels l ANTI JOIN rollouts r USING (problem_id, sample_idx)") == 0
    total, pos, neg = con.execute("SELECT sum(total), sum(pos), sum(neg) FROM buffer_stats").fetchone()
    assert total == n * k
    assert pos == one(con, "SELECT count(*) FROM labels WHERE reward > 0")
    assert neg == one(con, "SELECT count(*) FROM labels WHERE reward < 0")
    assert one(con, "SELECT sum(num) FROM mixed_stats") == n
    assert one(con, "SELECT count(DISTINCT k) FROM k_ablation") >= 2


def test_scores_cover_every_model_benchmark_and_seed(smoke):
    _, con, _ = smoke
    n_bench = one(con, "SELECT count(DISTINCT benchmark) FROM benchmark_problems")
    rows = con.execute("SELECT model, seed, count(DISTINCT benchmark) FROM scores GROUP BY ALL").fetchall()
    seeds = load_profile(PROFILE).replicates
    assert len(seeds) == 2 and sorted(rows) == sorted((m, s, n_bench) for m in ["base", *METHODS] for s in seeds)
    assert one(con, "SELECT count(*) FROM scores WHERE mean_at_k NOT BETWEEN 0 AND 1 OR pass_at_k < mean_at_k") == 0


def test_each_score_traces_to_its_checkpoint_buffer_and_base_model(smoke):
    root, con, _ = smoke
    buffer_hash = file_hash(root / "labels.parquet")
    base_hash = one(con, "SELECT base_model_hash FROM runs WHERE asset = 'base_model'")
    hashes = set()
    for method in METHODS:
        for seed in load_profile(PROFILE).replicates:
            # a score row names the checkpoint of the same method and seed
            ckpt = con.execute("SELECT checkpoint_hash, buffer_hash, base_model_hash FROM runs "
                               "WHERE asset = 'checkpoints' AND method = ? AND seed = ?", [method, str(seed)]).fetchone()
            score = con.execute("SELECT r.checkpoint_hash, r.buffer_hash, r.base_model_hash FROM scores s JOIN runs r "
                                "ON r.asset = 'benchmark_scores' AND r.method = s.model AND r.seed = s.seed::VARCHAR "
                                "WHERE s.model = ? AND s.seed = ? LIMIT 1", [method, seed]).fetchone()
            assert ckpt == score == (file_hash(root / "checkpoints" / method / f"seed={seed}"), buffer_hash, base_hash)
            hashes.add(ckpt[0])
    assert len(hashes) == len(METHODS) * len(load_profile(PROFILE).replicates)  # each seed trains its own weights
    assert one(con, "SELECT count(*) FROM runs WHERE asset = 'benchmark_scores' AND method = 'base'") == 2
    assert one(con, "SELECT count(checkpoint_hash) FROM runs WHERE asset = 'benchmark_scores' AND method = 'base'") == 0


def test_rematerialising_rollouts_reuses_finished_chunks(smoke):
    root, con, _ = smoke
    chunks = sorted((root / "rollout_chunks").rglob("chunk-*.parquet"))
    assert chunks
    before = {c: c.stat().st_mtime_ns for c in chunks}
    rows = one(con, "SELECT count(*) FROM rollouts")
    materialize_all(PROFILE, str(root.parent), steps=[(["rollouts"], [None])], out_of_process=False)
    after = sorted((root / "rollout_chunks").rglob("chunk-*.parquet"))
    assert after == chunks and {c: c.stat().st_mtime_ns for c in after} == before  # nothing regenerated
    assert one(con, "SELECT count(*) FROM rollouts") == rows  # the open session reads the rewritten file


def test_each_round_samples_from_the_previous_rift_checkpoint_and_stays_queryable(smoke):
    root, con, _ = smoke
    assert con.execute("SELECT round, count(*) FROM round_labels GROUP BY round ORDER BY round").fetchall() == [
        (1, one(con, "SELECT count(*) FROM labels")), (2, one(con, "SELECT count(*) FROM labels"))]
    sources = dict(con.execute("SELECT partition, source_model FROM runs WHERE asset = 'round_rollouts'").fetchall())
    assert sources == {"1": str(root / "checkpoints" / "rift" / "seed=0"),
                       "2": str(root / "rounds" / "round=1" / "checkpoint")}
    # a new round samples afresh: round 2's responses are not round 1's
    assert one(con, "SELECT count(*) FROM round_rollouts a JOIN round_rollouts b USING (problem_id, sample_idx) "
                    "WHERE a.round = 1 AND b.round = 2 AND a.response <> b.response") > 0


def test_a_second_run_gives_identical_buffers_and_checkpoints(smoke, tmp_path):
    import polars as pl
    from safetensors.torch import load_file

    from rift_dagster.demo import all_steps

    root, _, _ = smoke
    with dg.instance_for_test() as instance:  # from scratch, base policy included
        materialize_all(PROFILE, str(tmp_path), instance, steps=all_steps([0], METHODS)[:2], out_of_process=False)
    again = tmp_path / PROFILE
    first, second = pl.read_parquet(root / "labels.parquet"), pl.read_parquet(again / "labels.parquet")
    # `model` holds the base policy's path, which differs by data dir; its hashed name must not
    assert first["model"].str.split("/").list.last().equals(second["model"].str.split("/").list.last())
    assert first.drop("model").equals(second.drop("model"))
    for method in METHODS:
        a = load_file(root / "checkpoints" / method / "seed=0" / "model.safetensors")
        b = load_file(again / "checkpoints" / method / "seed=0" / "model.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), method


def test_table_assets_carry_their_column_schema_and_numbers_stay_numbers(smoke):
    _, _, results = smoke
    mats = {m.asset_key.to_user_string(): m.metadata for r in results for m in r.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]}
    for table in ("seed_problems", "rollouts", "reward_labels", "buffer_stats", "benchmarks", "benchmark_scores",
                  "round_rollouts", "round_labels"):
        schema = mats[table]["dagster/column_schema"].value
        assert schema.columns and all(c.name and c.type for c in schema.columns), table
    assert {"problem_id", "response", "reward"} <= {c.name for c in mats["reward_labels"]["dagster/column_schema"].value.columns}
    calibration = mats["base_model"]
    assert calibration["calibration/calibrated"].value is True and calibration["calibration/step"].value > 0
    low, high = load_profile(PROFILE).toy_config().target_pos
    assert low <= calibration["calibration/pos"].value <= high
    ckpt = mats["checkpoints"]
    assert isinstance(ckpt["run/final_loss"].value, float) and isinstance(ckpt["training_rows"].value, int)
    assert ckpt["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
