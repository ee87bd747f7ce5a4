import duckdb
import polars as pl
import pytest

from rift_core.io import write_parquet_atomic
from rift_core.rewards import assign_rewards
from rift_core.cli.stats import main
from rift_core.stats import TABLE1_SQL, TABLE4_SQL, buffer_table, k_ablation_table, mixed_table, to_markdown


def buffer(model: str, source: str, correct_per_problem: list[list[bool]]) -> pl.DataFrame:
    rows = [
        {"model": model, "source": source, "problem_id": f"{source}-{i}", "sample_idx": j, "correct": c}
        for i, samples in enumerate(correct_per_problem) for j, c in enumerate(samples)
    ]
    return assign_rewards(pl.DataFrame(rows), "constant", 1.0, -0.2)


def paper_math_buffer() -> pl.DataFrame:
    """3,000 problems x 8 samples with 15,941 positives, as the paper's Table 1 row for MATH.

    1,000 problems all correct (8,000), 500 all wrong, 441 with 6 correct (2,646) and 1,059 with 5
    (5,295): 8,000 + 2,646 + 5,295 = 15,941 positives; the 1,500 problems of the last two kinds are mixed.
    """
    groups = [[True] * 8] * 1000 + [[False] * 8] * 500 + [[True] * 6 + [False] * 2] * 441 + [[True] * 5 + [False] * 3] * 1059
    return buffer("qwen2.5-math-1.5b", "math", groups)


def test_table1_paper_arithmetic():
    t1 = buffer_table(paper_math_buffer())
    assert t1.rows(named=True) == [
        {"model": "qwen2.5-math-1.5b", "dataset": "math", "num": 3000, "total": 24000, "pos": 15941, "neg": 8059, "pct_pos": 66.4}
    ]


def test_table4_mixed_problems():
    t4 = mixed_table(paper_math_buffer())
    assert t4.rows(named=True) == [{"model": "qwen2.5-math-1.5b", "dataset": "math", "num": 3000, "mixed": 1500, "pct_mixed": 50.0}]


def small_buffer() -> pl.DataFrame:
    a = buffer("a", "math", [[True, True, False, False], [True, True, True, True], [False, False, False, True]])
    b = buffer("b", "gsm8k", [[False, False, False, False], [True, False, True, False]])
    return pl.concat([a, b])


def test_tables_per_model_and_dataset():
    t1 = buffer_table(small_buffer())
    assert t1.select("model", "dataset", "num", "total", "pos", "neg", "pct_pos").rows() == [
        ("a", "math", 3, 12, 7, 5, 58.3),
        ("b", "gsm8k", 2, 8, 2, 6, 25.0),
    ]
    assert mixed_table(small_buffer()).rows() == [("a", "math", 3, 2, 66.7), ("b", "gsm8k", 2, 1, 50.0)]


@pytest.mark.parametrize("scheme", ["constant", "gaussian", "gpg_mean", "gpg_scaled"])
def test_positives_are_the_correct_samples_whatever_the_reward_scheme(scheme, tmp_path):
    # gaussian / gpg_mean give the all-correct problem (TTTT) and the all-wrong one (FFFF) reward 0, gpg_scaled the
    # all-wrong one: counted on the reward's sign, Table 1 would lose them (a: 3 pos / 5 neg under gaussian)
    labels = assign_rewards(small_buffer(), scheme)
    assert buffer_table(labels).select("pos", "neg").rows() == [(7, 5), (2, 6)]
    assert mixed_table(labels)["mixed"].to_list() == [2, 1]
    path = write_parquet_atomic(labels, tmp_path / "labels.parquet")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet('{path}')")
    assert con.execute(TABLE1_SQL).pl().select("pos", "neg").rows() == [(7, 5), (2, 6)]


def test_k_ablation_first_k_samples():
    t = k_ablation_table(small_buffer(), [1, 2, 4]).filter(pl.col("model") == "a")
    # first sample: T, T, F -> 2 pos / 3; k=2: TT, TT, FF -> no mixed; k=4: the full buffer
    assert t.select("k", "num", "total", "pos", "neg", "mixed").rows() == [(1, 3, 3, 2, 1, 0), (2, 3, 6, 4, 2, 0), (4, 3, 12, 7, 5, 2)]
    assert t.filter(pl.col("k") == 4).drop("k").select(buffer_table(small_buffer()).columns).rows()[0] == buffer_table(small_buffer()).rows()[0]


@pytest.mark.parametrize("drop", [[], ["source", "reward"]])
def test_sql_reproduces_polars_in_duckdb(tmp_path, drop):
    labels = pl.concat([paper_math_buffer(), small_buffer()]).drop(drop)
    path = write_parquet_atomic(labels, tmp_path / "labels.parquet")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet('{path}')")
    for sql, polars_table in ((TABLE1_SQL, buffer_table(labels)), (TABLE4_SQL, mixed_table(labels))):
        got = con.execute(sql).pl()
        assert got.columns == polars_table.columns
        assert got.rows() == polars_table.rows()


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="labels lack column.*correct"):
        buffer_table(pl.DataFrame({"problem_id": ["p"]}))


def test_markdown():
    md = to_markdown(buffer_table(small_buffer()))
    lines = md.splitlines()
    assert lines[0].replace(" ", "") == "|model|dataset|num|total|pos|neg|pct_pos|"
    assert len(lines) == 4 and "58.3" in lines[2]


def test_stats_cli(tmp_path, capsys):
    path = write_parquet_atomic(small_buffer(), tmp_path / "labels.parquet")
    main(["--labels", str(path), "--ks", "1,4"])
    out = capsys.readouterr().out
    assert "## Table 1" in out and "## Table 4" in out and "## Tables 9/10" in out
    assert "58.3" in out and "66.7" in out
    with pytest.raises(SystemExit, match="--ks"):
        main(["--labels", str(path), "--ks", "1,x"])


def test_percentages_round_half_away_from_zero_like_sql(tmp_path):
    # 6 of 96 = 6.25%: polars' default half-to-even gives 6.2, DuckDB's round() gives 6.3
    labels = buffer("m", "s", [[True] * 6 + [False] * 2] + [[False] * 8] * 11)
    path = write_parquet_atomic(labels, tmp_path / "labels.parquet")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet('{path}')")
    assert buffer_table(labels)["pct_pos"].to_list() == con.execute(TABLE1_SQL).pl()["pct_pos"].to_list() == [6.3]
