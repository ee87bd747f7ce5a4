import time

import numpy as np
import polars as pl
import pytest

from rift_core.evaluate import results_tables
from rift_core.metrics import mean_at_k, pass_at_k
from rift_core.results import comparisons, paired_bootstrap, per_problem, seed_long, seed_table

SCHEMA = {"problem_ids": pl.List(pl.String), "scores": pl.List(pl.List(pl.Boolean))}


def row(model, benchmark, seed, problems: dict[str, list[bool]], k=None):
    samples = list(problems.values())
    k = k or len(samples[0])
    return {"model": model, "benchmark": benchmark, "seed": seed, "k": k, "mean_at_k": mean_at_k(samples),
            "pass_at_k": pass_at_k(samples, k), "n_problems": len(samples), "problem_ids": list(problems),
            "scores": samples}


def frame(rows):
    return pl.DataFrame(rows, schema_overrides=SCHEMA)


def correct(n_right, n=4):
    return [True] * n_right + [False] * (n - n_right)


def test_per_problem_explodes_and_reuses_the_metrics():
    f = frame([row("rift", "gsm8k", 0, {"p1": [True, False, False, False], "p2": [False] * 4, "p3": [True] * 4}),
               row("rift", "gsm8k", 1, {"p1": [True, True, False, False], "p2": [False] * 4, "p3": [True] * 4})])
    pp = per_problem(f)
    assert pp.columns == ["model", "benchmark", "seed", "problem_id", "k", "n_samples", "mean_at_k", "pass_at_k"]
    assert pp.height == 6
    assert pp.filter(pl.col("seed") == 0).select("problem_id", "mean_at_k", "pass_at_k").rows() == [
        ("p1", 0.25, 1.0), ("p2", 0.0, 0.0), ("p3", 1.0, 1.0)]
    # averaging the problems gives back the row's numbers
    back = pp.group_by("seed").agg(pl.col("mean_at_k", "pass_at_k").mean()).sort("seed")
    assert back["mean_at_k"].to_list() == pytest.approx(f["mean_at_k"].to_list())
    assert back["pass_at_k"].to_list() == pytest.approx(f["pass_at_k"].to_list())


def test_per_problem_pass_at_k_below_the_sample_count_is_the_unbiased_estimator():
    pp = per_problem(frame([row("sft", "aime24", 0, {"p": [True, False, False, False]}, k=2)]))
    assert pp["pass_at_k"].to_list() == [pytest.approx(1 - 3 / 6)]


def two_seed_scores():
    # rift: seed 0 Avg 10% (gsm8k 20, math500 0), seed 1 Avg 20% (gsm8k 30, math500 10); sft: one seed only
    rows = []
    for seed, (g, m) in enumerate([(0.2, 0.0), (0.3, 0.1)]):
        rows += [{"model": "rift", "benchmark": "math500", "seed": seed, "k": 8, "mean_at_k": m, "pass_at_k": 2 * m},
                 {"model": "rift", "benchmark": "gsm8k", "seed": seed, "k": 8, "mean_at_k": g, "pass_at_k": 2 * g}]
    rows.append({"model": "sft", "benchmark": "gsm8k", "seed": 0, "k": 8, "mean_at_k": 0.5, "pass_at_k": 0.75})
    rows.append({"model": "sft", "benchmark": "math500", "seed": 0, "k": 8, "mean_at_k": 0.25, "pass_at_k": 0.5})
    return pl.DataFrame(rows)


def test_seed_table_mean_pm_std_against_hand_numbers():
    t = seed_table(two_seed_scores())
    assert t.columns == ["model", "GSM8K", "MATH500", "Avg", "seeds"]
    # gsm8k 20, 30 -> 25.0 ± 7.1; math500 0, 10 -> 5.0 ± 7.1; Avg per seed 10, 20 -> 15.0 ± 7.1
    assert t.row(0) == ("rift", "25.0 ± 7.1", "5.0 ± 7.1", "15.0 ± 7.1", 2)
    assert t.row(1) == ("sft", "50.0", "25.0", "37.5", 1)  # one seed: the mean alone
    assert seed_table(two_seed_scores(), "pass_at_k").row(0) == ("rift", "50.0 ± 14.1", "10.0 ± 14.1", "30.0 ± 14.1", 2)
    assert seed_table(two_seed_scores(), models=["sft", "rift"])["model"].to_list() == ["sft", "rift"]
    with pytest.raises(ValueError, match="dpo"):
        seed_table(two_seed_scores(), models=["dpo"])


def test_seed_long_is_a_plain_numeric_frame():
    long = seed_long(two_seed_scores())
    assert long.columns == ["model", "benchmark", "label", "metric", "k", "mean", "std", "n_seeds"]
    assert long.schema["mean"] == pl.Float64 and long.schema["n_seeds"] == pl.Int64
    avg = long.filter(pl.col("benchmark") == "Avg")
    assert avg["model"].to_list() == ["rift", "sft"]
    assert avg["mean"].to_list() == pytest.approx([15.0, 37.5])
    assert avg["std"][0] == pytest.approx(np.std([10.0, 20.0], ddof=1)) and avg["std"][1] is None
    assert avg["n_seeds"].to_list() == [2, 1]
    assert long.filter(pl.col("model") == "rift")["label"].to_list() == ["GSM8K", "MATH500", "Avg"]


def test_seed_table_matches_results_tables_with_one_seed():
    f = two_seed_scores().filter(pl.col("seed") == 0)
    mean, _ = results_tables(f.drop("seed"))
    t = seed_table(f)
    assert [float(x) for x in t.row(0)[1:4]] == list(mean.row(0)[1:])


def test_seed_table_avg_only_over_seeds_with_every_benchmark_and_several_k():
    f = two_seed_scores().filter(~((pl.col("model") == "sft")))
    f = pl.concat([f, pl.DataFrame([{"model": "sft", "benchmark": "gsm8k", "seed": 0, "k": 8, "mean_at_k": 0.5, "pass_at_k": 0.5}])])
    t = seed_table(f)
    assert t.row(1) == ("sft", "50.0", None, None, 1)
    several = pl.concat([f, f.with_columns(pl.lit(3, dtype=pl.Int64).alias("k"))])
    with pytest.raises(ValueError, match="several k"):
        seed_table(several)
    assert seed_table(several, k=3).row(0) == t.row(0)


def pair(problems_a: dict, problems_b: dict, benchmark="gsm8k", seed=0):
    return [row("rift", benchmark, seed, problems_a), row("rft", benchmark, seed, problems_b)]


def test_bootstrap_hand_computed_two_problems():
    # per-problem differences d1 = 0.25 (0.5 - 0.25), d2 = 0.75 (1.0 - 0.25): resampled means are
    # d1, (d1+d2)/2, d2 with chances 1/4, 1/2, 1/4, so the 95% interval is [d1, d2]
    f = frame(pair({"p1": correct(2), "p2": correct(4)}, {"p1": correct(1), "p2": correct(1)}))
    r = paired_bootstrap(f, "rift", "rft")
    assert (r["diff"], r["lo"], r["hi"]) == (50.0, 25.0, 75.0)
    assert (r["n_boot"], r["n_problems"], r["n_seeds"]) == (2000, 2, 1)
    # and the reverse direction flips the signs
    back = paired_bootstrap(f, "rft", "rift")
    assert (back["diff"], back["lo"], back["hi"]) == (-50.0, -75.0, -25.0)


def test_bootstrap_equal_differences_collapse_the_interval():
    rows = []
    for seed in range(3):
        for bench in ("gsm8k", "math500"):
            rows += pair({f"p{i}": correct(3) for i in range(5)}, {f"p{i}": correct(1) for i in range(5)}, bench, seed)
    r = paired_bootstrap(frame(rows), "rift", "rft")
    assert r["diff"] == r["lo"] == r["hi"] == 50.0
    assert (r["n_problems"], r["n_seeds"]) == (10, 3)


def test_bootstrap_diff_is_the_difference_of_seed_table_avgs():
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(3):
        for bench, n in (("gsm8k", 7), ("aime24", 3)):
            for model in ("rift", "rft"):
                rows.append(row(model, bench, seed, {f"{bench}{i}": list(rng.random(4) < 0.5) for i in range(n)}))
    f = frame(rows)
    avg = seed_long(f).filter(pl.col("benchmark") == "Avg")
    r = paired_bootstrap(f, "rift", "rft", n_boot=500)
    assert r["diff"] == pytest.approx(avg["mean"][0] - avg["mean"][1])
    assert r["lo"] <= r["diff"] <= r["hi"]
    assert paired_bootstrap(f, "rift", "rft", n_boot=500) == r  # seeded


def test_bootstrap_resamples_seeds():
    # the same mean difference (1/3 of d per problem over 3 seeds), once in one seed only, once spread evenly
    def build(diff_by_seed):
        rows = []
        for seed, n_right in enumerate(diff_by_seed):
            a = {f"p{i}": correct(n_right[i], 12) for i in range(6)}
            rows += [row("rift", "gsm8k", seed, a), row("rft", "gsm8k", seed, {p: correct(0, 12) for p in a})]
        return frame(rows)

    varied = [3, 6, 9, 3, 6, 9]
    one_seed = paired_bootstrap(build([varied, [0] * 6, [0] * 6]), "rift", "rft")
    every_seed = paired_bootstrap(build([[v // 3 for v in varied]] * 3), "rift", "rft")
    assert one_seed["diff"] == pytest.approx(every_seed["diff"])
    assert one_seed["hi"] - one_seed["lo"] > 2 * (every_seed["hi"] - every_seed["lo"])
    assert one_seed["lo"] == pytest.approx(0.0)  # draws without seed 0 exist: no difference at all


def test_bootstrap_with_different_problems_per_seed():
    rows = pair({"a": correct(2), "b": correct(4)}, {"a": correct(1), "b": correct(1)}, seed=0)
    rows += pair({"c": correct(2), "d": correct(2)}, {"c": correct(2), "d": correct(2)}, seed=1)
    r = paired_bootstrap(frame(rows), "rift", "rft")
    assert r["diff"] == 25.0 and r["n_problems"] == 4 and r["n_seeds"] == 2
    assert r["lo"] == 0.0 and r["hi"] == 75.0


def test_bootstrap_mismatch_errors():
    base = pair({"p1": correct(2), "p2": correct(3)}, {"p1": correct(1), "p2": correct(1)})
    with pytest.raises(ValueError, match="'dpo' not in the score rows"):
        paired_bootstrap(frame(base), "rift", "dpo")
    other = frame([base[0], row("rft", "gsm8k", 0, {"p1": correct(1), "p9": correct(1)})])
    with pytest.raises(ValueError, match="not scored on the same problems and seeds"):
        paired_bootstrap(other, "rift", "rft")
    seeds = frame(base + [row("rift", "gsm8k", 1, {"p1": correct(2), "p2": correct(3)})])
    with pytest.raises(ValueError, match="same problems and seeds"):
        paired_bootstrap(seeds, "rift", "rft")
    benches = frame(base + pair({"q": correct(1)}, {"q": correct(2)}, "math500", seed=1))
    with pytest.raises(ValueError, match="different seeds"):
        paired_bootstrap(benches, "rift", "rft")
    with pytest.raises(ValueError, match="itself"):
        paired_bootstrap(frame(base), "rift", "rift")


def test_bootstrap_is_fast_at_paper_scale():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for model, p in (("rift", 0.55), ("rft", 0.5)):
            rows.append(row(model, "math500", seed, {f"q{i}": list(rng.random(8) < p) for i in range(1000)}))
    f = frame(rows)
    start = time.perf_counter()
    r = paired_bootstrap(f, "rift", "rft")
    assert time.perf_counter() - start < 1.0
    assert r["lo"] < r["diff"] < r["hi"] and r["n_problems"] == 1000


def test_comparisons_verdicts_and_skips_absent_baselines():
    rows = []
    for seed in range(2):
        ids = [f"p{i}" for i in range(8)]
        rows += [row("rift", "gsm8k", seed, {p: correct(3) for p in ids}),
                 row("rft", "gsm8k", seed, {p: correct(1) for p in ids}),   # clearly worse
                 row("sft", "gsm8k", seed, {p: correct(4) for p in ids}),   # clearly better
                 row("dpo", "gsm8k", seed, {p: correct(3 + (i % 2) * (1 if seed else -1)) for i, p in enumerate(ids)})]
    c = comparisons(frame(rows), n_boot=500)
    assert c["comparison"].to_list() == ["rift − rft", "rift − sft", "rift − dpo"]  # no dft in the scores
    assert c["verdict"].to_list() == ["rift better", "sft better", "no difference at 95%"]
    assert c["diff"].to_list() == pytest.approx([50.0, -25.0, 0.0])
    assert comparisons(frame(rows), against=("dft",)).height == 0
    with pytest.raises(ValueError, match="'naive' not in the score rows"):
        comparisons(frame(rows), method="naive")
