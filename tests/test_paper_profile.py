"""The paper profiles: `paper` fit for a GPU, the paper's other settings as short `extends: paper` files, and the
whole `paper` graph on the real data on a CPU (`paper_cpu_test`: the project's toy policy, small sizes)."""
import os
import time
import warnings

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from rift_core import known_sets
from rift_core.methods import METHODS
from rift_core.profiles import CONFIG_DIR, load_profile
from rift_core.trainer import effective_accumulation

VARIANTS = {  # profile -> what it sets on top of `paper` (paper Section 4.1, 4.3, Tables 1-5)
    "paper_qwen25_math_7b": {"base_model": "Qwen/Qwen2.5-Math-7B"},
    "paper_qwen3_1_7b": {"base_model": "Qwen/Qwen3-1.7B", "template_kwargs": {"enable_thinking": False}},
    "paper_numina": {"seeds": "numina_cot", "n_seeds": 4000},
    "paper_r1_distill_1_5b": {"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "max_new_tokens": 8192},
}


def test_paper_profile_is_fit_for_a_gpu():
    p = load_profile("paper")
    t = p.train_config("rift", "m", "o")
    assert (t.dtype, t.bf16) == ("float32", True)  # fp32 master weights, bf16 autocast
    g, e = p.generation_config(), p.evaluation_config()
    assert "backend" not in p.evaluation.model_fields_set  # scoring samples with whatever generation samples with
    assert e == g and (e.backend, e.max_new_tokens, e.k) == ("vllm", 4096, 8)
    assert t.max_length >= e.max_new_tokens
    for m in METHODS:
        assert p.train_config(m, "m", "o").dpo_pairing == "ground_truth"  # the paper's DPO pairs
    # 64 rows per optimizer step on 1, 2, 4, 8 or 16 GPUs
    for processes in (1, 2, 4, 8, 16):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert effective_accumulation(t.global_batch_size, t.per_device_batch_size, processes) * 4 * processes == 64


def test_an_effective_batch_that_does_not_divide_the_global_one_is_named():
    with pytest.warns(UserWarning, match=r"global_batch_size=64 is not a multiple of per_device_batch_size=4 x 3 "
                                         r"process\(es\) = 12: each optimizer step sees 60 rows \(4 x 5 accumulation x 3\)"):
        assert effective_accumulation(64, 4, 3) == 5
    with pytest.warns(UserWarning, match=r"sees 128 rows \(4 x 1 accumulation x 32\), not 64"):
        assert effective_accumulation(64, 4, 32) == 1


def test_the_trainer_warns_and_records_the_effective_batch(tiny_model, tmp_path):
    from rift_core.trainer import TrainConfig, train

    frame = pl.DataFrame({"question": [f"What is {i} + 1?" for i in range(6)],
                          "response": [f"\\boxed{{{i + 1}}}" for i in range(6)], "reward": [1.0, -0.2] * 3})
    cfg = TrainConfig(method="rift", model=str(tiny_model), output_dir=str(tmp_path / "o"), global_batch_size=8,
                      per_device_batch_size=3, num_epochs=1, max_length=192, learning_rate=1e-3, warmup_ratio=0.0)
    with pytest.warns(UserWarning, match=r"global_batch_size=8 is not a multiple of per_device_batch_size=3"):
        summary = train(cfg, frame)
    assert summary["effective_batch_size"] == 6 and summary["gradient_accumulation_steps"] == 2


@pytest.mark.parametrize("name", VARIANTS)
def test_the_papers_other_settings_are_short_extensions_of_paper(name):
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert raw.pop("extends") == "paper"
    p, paper = load_profile(name), load_profile("paper")
    # everything the file does not set is the paper's
    for field in set(type(p).model_fields) - {"name", "source"}:
        mine, theirs = getattr(p, field), getattr(paper, field)
        if field not in raw:
            assert mine == theirs, field
        elif isinstance(raw[field], dict) and field != "methods":
            unset = set(type(mine).model_fields) - set(raw[field])
            assert {k: getattr(mine, k) for k in unset} == {k: getattr(theirs, k) for k in unset}, field
    want = VARIANTS[name]
    g, e, t = p.generation_config(), p.evaluation_config(), p.train_config("rift", "m", "o")
    assert p.base_model == want.get("base_model", paper.base_model)
    assert (p.seeds, p.n_seeds) == (want.get("seeds", "math"), want.get("n_seeds", 3000))
    assert p.seeds in known_sets.SEED_SETS and sorted(p.benchmarks) == sorted(known_sets.BENCHMARKS)
    assert g.max_new_tokens == e.max_new_tokens == want.get("max_new_tokens", 4096)
    assert t.max_length >= g.max_new_tokens + 256  # room for the prompt
    kwargs = want.get("template_kwargs", {})
    assert g.template_kwargs == e.template_kwargs == t.template_kwargs == kwargs  # sampled, scored, trained alike
    for m in METHODS:
        cfg = p.train_config(m, "m", "o")
        assert cfg.global_batch_size == 64 and 64 % cfg.per_device_batch_size == 0
        assert cfg.learning_rate == paper.train_config(m, "m", "o").learning_rate


# ---- the whole graph on the real data, on a CPU ---------------------------------------------------------------

PROFILE = "paper_cpu_test"
SECONDS = {}


@pytest.fixture(scope="module")
def paper_cpu(tmp_path_factory, shared_data):
    from rift_dagster.demo import failures, materialize_all
    from conftest import REPO, seed_base_policy

    p = load_profile(PROFILE)
    assert p.data_root == "../shared/data"  # relative to the repository: run from there
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        root = tmp_path_factory.mktemp("paper_data")
        seed_base_policy(tmp_path_factory, root, PROFILE)
        start = time.time()
        with dg.instance_for_test() as instance:
            results = materialize_all(PROFILE, str(root), instance, out_of_process=False, keep_going=True)
        SECONDS["graph"] = time.time() - start
        print(f"\n{PROFILE}: whole graph in {SECONDS['graph']:.0f} s")
    finally:
        os.chdir(cwd)
    con = duckdb.connect(str(root / PROFILE / "rift.duckdb"), read_only=True)
    yield root / PROFILE, con, results, failures(results)
    con.close()


def one(con, sql):
    return con.execute(sql).fetchone()[0]


@pytest.mark.slow
def test_the_buffer_is_real_math_sampled_by_the_toy_policy(paper_cpu):
    _, con, _, _ = paper_cpu
    assert one(con, "SELECT count(*) FROM problems WHERE problem_id LIKE 'math-train-%'") == 16
    assert con.execute("SELECT count(*), max(sample_idx) + 1 FROM rollouts").fetchone() == (32, 2)
    assert one(con, "SELECT count(*) FROM labels") == 32
    assert con.execute("SELECT sum(total), sum(pos) FROM buffer_stats").fetchone() == (
        32, one(con, "SELECT count(*) FILTER (WHERE correct) FROM labels"))


@pytest.mark.slow
def test_every_method_trains_on_the_real_buffer_or_its_partition_alone_says_why(paper_cpu):
    root, con, results, failed = paper_cpu
    correct = one(con, "SELECT count(*) FILTER (WHERE correct) FROM labels")
    # the toy policy solves next to nothing on real MATH: without a correct sample RFT cannot train, and says so
    expected = {} if correct else {"checkpoints[rft|0]": "rft cannot train on this buffer"}
    assert {k: v[:len(expected.get(k, ""))] for k, v in failed.items()} == expected
    for method in METHODS:
        trained = (root / "checkpoints" / method / "seed=0" / "rift_run.json").exists()
        assert trained == (method != "rft" or correct > 0), method
    assert sum(not r.success for r in results) == len(expected)


@pytest.mark.slow
def test_scores_cover_all_seven_benchmarks_for_every_trained_model(paper_cpu):
    root, con, _, failed = paper_cpu
    trained = [m for m in METHODS if f"checkpoints[{m}|0]" not in failed]
    rows = dict(con.execute("SELECT model, count(DISTINCT benchmark) FROM scores GROUP BY model").fetchall())
    assert rows == {m: 7 for m in ["base", *trained]}
    assert set(con.execute("SELECT DISTINCT benchmark FROM scores").pl()["benchmark"]) == set(known_sets.BENCHMARKS)
    assert one(con, "SELECT min(n_problems) FROM scores") >= 1 and one(con, "SELECT max(n_problems) FROM scores") <= 2
    assert one(con, "SELECT count(*) FROM scores WHERE mean_at_k NOT BETWEEN 0 AND 1 OR pass_at_k < mean_at_k") == 0


@pytest.mark.slow
def test_rft_with_no_correct_sample_fails_its_partition_alone_and_skips_its_score(paper_cpu, tmp_path):
    """Deterministic whatever the toy policy happened to get right: the same graph on a buffer where every sample
    is wrong."""
    import shutil

    from rift_dagster.demo import failures, materialize_all

    root, _, _, _ = paper_cpu
    copy = tmp_path / PROFILE
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("checkpoints", "eval", "scores", "rift.duckdb"))
    labels = pl.read_parquet(copy / "labels.parquet")
    labels.with_columns(correct=pl.lit(False), reward=pl.lit(-0.2)).write_parquet(copy / "labels.parquet")
    with dg.instance_for_test() as instance:
        results = materialize_all(PROFILE, str(tmp_path), instance, out_of_process=False, keep_going=True,
                                  steps=[(["checkpoints"], [{"method": m, "seed": "0"} for m in ("rft", "rift")]),
                                         (["benchmark_scores"], [{"model": "rft", "seed": "0"}])])
    assert [r.success for r in results] == [False, True]  # rft failed, rift trained, benchmark_scores[rft] skipped
    assert failures(results) == {"checkpoints[rft|0]": (
        f"rft cannot train on this buffer: {copy / 'train_data' / 'rft.parquet'}: none of the 32 samples is correct, "
        f"so rft has no positive sample to train on (it trains on correct responses only; a stronger base model, "
        f"more samples per problem or easier seed problems give it some)")}
    assert not (copy / "checkpoints" / "rft").exists() and not (copy / "scores").exists()
    assert (copy / "checkpoints" / "rift" / "seed=0" / "rift_run.json").exists()
