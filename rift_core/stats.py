"""Rollout-buffer statistics: the paper's Table 1, Table 4 and Tables 9/10, in polars and in SQL.

Rows are per (model, dataset); `dataset` is the labels' `source` column, or "all" when labels have
none. A sample is positive when it is correct and negative when it is not (the paper's r > 0 / r < 0
under its constant rewards): counted on `correct`, not on the reward's sign, because the gaussian and
gpg_mean schemes give every sample of an all-correct (or all-wrong) problem reward 0, and those samples
are positives (negatives) all the same. #Pos + #Neg = #Total whatever the scheme. A problem is "mixed"
when its samples hold both correct and incorrect ones. `TABLE1_SQL` / `TABLE4_SQL` give the same
numbers over a DuckDB table or view named `labels`.
"""

import polars as pl

KEYS = ["model", "dataset"]

# UNION ALL BY NAME adds any of model / source the stored labels lack, as NULLs.
_LABELS_SQL = """
WITH l AS (
    SELECT * FROM labels
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS model, NULL::VARCHAR AS source WHERE false
), s AS (
    SELECT coalesce(model, 'all') AS model, coalesce(source, 'all') AS dataset, problem_id,
           coalesce(correct, false) AS correct
    FROM l
)"""

TABLE1_SQL = _LABELS_SQL + """
SELECT model, dataset,
       count(DISTINCT problem_id) AS num,
       count(*) AS total,
       count(*) FILTER (WHERE correct) AS pos,
       count(*) FILTER (WHERE NOT correct) AS neg,
       round(100.0 * count(*) FILTER (WHERE correct) / count(*), 1) AS pct_pos
FROM s
GROUP BY model, dataset
ORDER BY model, dataset
"""

TABLE4_SQL = _LABELS_SQL + """, p AS (
    SELECT model, dataset, problem_id, bool_or(correct) AND NOT bool_and(correct) AS mixed
    FROM s
    GROUP BY model, dataset, problem_id
)
SELECT model, dataset,
       count(*) AS num,
       count(*) FILTER (WHERE mixed) AS mixed,
       round(100.0 * count(*) FILTER (WHERE mixed) / count(*), 1) AS pct_mixed
FROM p
GROUP BY model, dataset
ORDER BY model, dataset
"""


def _normalise(labels: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in ("problem_id", "correct") if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack column(s) {', '.join(missing)} (have {', '.join(labels.columns)})")
    col = lambda name, default: pl.col(name).fill_null(default) if name in labels.columns else pl.lit(default)  # noqa: E731
    return labels.select(
        col("model", "all").cast(pl.String).alias("model"),
        col("source", "all").cast(pl.String).alias("dataset"),
        "problem_id",
        pl.col("sample_idx") if "sample_idx" in labels.columns else pl.lit(0).alias("sample_idx"),
        pl.col("correct").fill_null(False),
    )


def _table1(s: pl.DataFrame) -> pl.DataFrame:
    return (
        s.group_by(KEYS)
        .agg(
            pl.col("problem_id").n_unique().alias("num"),
            pl.len().alias("total"),
            pl.col("correct").sum().alias("pos"),
            (~pl.col("correct")).sum().alias("neg"),
        )
        .with_columns((100.0 * pl.col("pos") / pl.col("total")).round(1, mode="half_away_from_zero").alias("pct_pos"))
        .sort(KEYS)
    )


def _table4(s: pl.DataFrame) -> pl.DataFrame:
    per_problem = s.group_by([*KEYS, "problem_id"]).agg((pl.col("correct").any() & ~pl.col("correct").all()).alias("mixed"))
    return (
        per_problem.group_by(KEYS)
        .agg(pl.len().alias("num"), pl.col("mixed").sum().alias("mixed"))
        .with_columns((100.0 * pl.col("mixed") / pl.col("num")).round(1, mode="half_away_from_zero").alias("pct_mixed"))
        .sort(KEYS)
    )


def buffer_table(labels: pl.DataFrame) -> pl.DataFrame:
    """Table 1: per (model, dataset) #Num problems, #Total samples, #Pos, #Neg and %Pos."""
    return _table1(_normalise(labels))


def mixed_table(labels: pl.DataFrame) -> pl.DataFrame:
    """Table 4: per (model, dataset) the problems whose samples mix correct and incorrect, count and %."""
    return _table4(_normalise(labels))


def k_ablation_table(labels: pl.DataFrame, ks: list[int]) -> pl.DataFrame:
    """Tables 9/10: Table 1 and Table 4 restricted to each problem's first k samples, one row per (model, dataset, k)."""
    s = _normalise(labels)
    parts = []
    for k in ks:
        first = s.filter(pl.col("sample_idx") < k)
        if first.height:
            parts.append(_table1(first).join(_table4(first).drop("num"), on=KEYS).with_columns(pl.lit(k).alias("k")))
    if not parts:
        raise ValueError(f"no samples with sample_idx below any of ks={ks}")
    return pl.concat(parts).select(*KEYS, "k", "num", "total", "pos", "neg", "pct_pos", "mixed", "pct_mixed").sort([*KEYS, "k"])


def to_markdown(frame: pl.DataFrame) -> str:
    """A frame as a GitHub markdown table (all rows, all columns, no dtypes)."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=65_000):
        return str(frame)
