"""Results over replicate seeds: per-problem scores, the paper's Tables 2/3 with spread, and paired bootstrap
comparisons of methods.

Input is evaluation's score rows (`evaluate.evaluate`, one per model and benchmark) with a `seed` column, the
replicate seed (rows without one count as one replicate, seed 0): model, benchmark, seed, k, mean_at_k,
pass_at_k, problem_ids and scores (per problem, per sample correctness). Metrics are fractions in the rows and
percentages (or percentage points) in what this module returns.

    per_problem(scores)                    one row per (model, benchmark, seed, problem_id)
    seed_long(scores) / seed_table(scores) mean and std over seeds, long (for SQL) or as the paper's table
    paired_bootstrap(scores, "rift", "rft") Avg(a) - Avg(b) with a percentile interval
    comparisons(scores)                    rift against each baseline present, with a verdict
"""
import numpy as np
import polars as pl

from rift_core.evaluate import BENCHMARKS, PAPER_NAMES
from rift_core.metrics import mean_at_k, pass_at_k

METRICS = ("mean_at_k", "pass_at_k")
KEY = ["model", "benchmark", "seed"]


def _rows(scores: pl.DataFrame, k: int | None = None, need=("model", "benchmark", "k"), one_k: bool = True) -> pl.DataFrame:
    """Score rows with a seed column, restricted to `k`; fails on missing columns, duplicate rows, or (with
    `one_k`) several k."""
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ValueError(f"score rows lack column(s) {', '.join(missing)} (have {', '.join(scores.columns)})")
    if "seed" not in scores.columns:
        scores = scores.with_columns(pl.lit(0, dtype=pl.Int64).alias("seed"))
    if k is not None:
        scores = scores.filter(pl.col("k") == k)
        if scores.height == 0:
            raise ValueError(f"no score rows with k={k}")
    ks = scores["k"].unique().sort().to_list()
    if one_k and len(ks) > 1:
        raise ValueError(f"score rows hold several k ({ks}): pass k= to choose one")
    dup = scores.group_by(*KEY, "k").len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"several score rows for the same (model, benchmark, seed, k): {dup.select(*KEY, 'k').rows()[:5]}")
    return scores


def _benchmark_order(benchmarks) -> list[str]:
    present = list(dict.fromkeys(benchmarks))
    return [b for b in BENCHMARKS if b in present] + [b for b in present if b not in BENCHMARKS]


def per_problem(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, benchmark, seed, problem_id): k, n_samples, and the problem's mean_at_k (share of
    correct samples) and pass_at_k (metrics.pass_at_k of that problem alone; with k samples, any correct).
    Fractions, as in the score rows. Rows keep the score rows' order, problems in problem_ids order."""
    rows = _rows(scores, need=("model", "benchmark", "k", "problem_ids", "scores"), one_k=False)
    lengths = rows.select(pl.col("problem_ids").list.len().alias("p"), pl.col("scores").list.len().alias("s"))
    if (lengths["p"] != lengths["s"]).any():
        raise ValueError("score rows whose problem_ids and scores differ in length")
    long = rows.select(*KEY, "k", "problem_ids", "scores").explode("problem_ids", "scores")
    long = long.rename({"problem_ids": "problem_id", "scores": "samples"}).drop_nulls("problem_id")
    samples, ks = long["samples"].to_list(), long["k"].to_list()
    return long.select(*KEY, "problem_id", "k").with_columns(
        pl.Series("n_samples", [len(s) for s in samples], dtype=pl.Int64),
        pl.Series("mean_at_k", [mean_at_k([s]) for s in samples], dtype=pl.Float64),
        pl.Series("pass_at_k", [pass_at_k([s], k) for s, k in zip(samples, ks)], dtype=pl.Float64),
    )


def _models(present: list[str], models) -> list[str]:
    if models is None:
        return present
    models = list(models)
    absent = [m for m in models if m not in present]
    if absent:
        raise ValueError(f"model(s) {', '.join(absent)} not in the score rows (have {', '.join(present)})")
    return models


def seed_long(scores: pl.DataFrame, metric: str = "mean_at_k", models=None, k: int | None = None) -> pl.DataFrame:
    """Numeric long form of `seed_table`: one row per (model, benchmark), benchmarks in the paper's order then
    "Avg", models in first-seen order (or `models`' order; only those). Columns: model, benchmark (id, or "Avg"),
    label (the paper's column name), metric, k, mean and std (percent; std over seeds, ddof=1, null with one
    seed), n_seeds. A benchmark's cell is over the seeds evaluated on it; Avg averages every benchmark present in
    `scores` within each seed first, then takes mean and std over the model's seeds that cover them all (null,
    with n_seeds 0, when none does)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    rows = _rows(scores, k, need=("model", "benchmark", "k", metric))
    order = _benchmark_order(rows["benchmark"].to_list())
    models = _models(rows["model"].unique(maintain_order=True).to_list(), models)
    rows = rows.filter(pl.col("model").is_in(models)).with_columns((pl.col(metric).cast(pl.Float64) * 100).alias("v"))
    per_seed_avg = (rows.group_by("model", "seed")
                    .agg(pl.col("v").mean(), pl.col("benchmark").n_unique().alias("nb"))
                    .filter(pl.col("nb") == len(order)).with_columns(pl.lit("Avg").alias("benchmark")))
    both = pl.concat([rows.select("model", "benchmark", "v"), per_seed_avg.select("model", "benchmark", "v")])
    stats = both.group_by("model", "benchmark").agg(
        pl.col("v").mean().alias("mean"), pl.col("v").std(ddof=1).alias("std"), pl.len().cast(pl.Int64).alias("n_seeds"))
    grid = pl.DataFrame({"model": [m for m in models for _ in order + ["Avg"]],
                         "benchmark": [b for _ in models for b in order + ["Avg"]]})
    long = grid.join(stats, on=["model", "benchmark"], how="left", maintain_order="left")
    # a benchmark the model lacks: no row in the paper's sense, but kept (null) so every model has every column
    return long.select(
        "model", "benchmark",
        pl.col("benchmark").replace_strict(PAPER_NAMES, default=pl.col("benchmark")).alias("label"),
        pl.lit(metric).alias("metric"), pl.lit(int(rows["k"][0]), dtype=pl.Int64).alias("k"),
        "mean", "std", pl.col("n_seeds").fill_null(0),
    )


def _cell(mean, std, n) -> str | None:
    if mean is None or n == 0:
        return None
    if n == 1 or std is None:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def seed_table(scores: pl.DataFrame, metric: str = "mean_at_k", models=None, k: int | None = None) -> pl.DataFrame:
    """The paper's Table 2 (metric="mean_at_k") or 3 ("pass_at_k") with spread over replicate seeds: a row per
    model (first-seen order, or `models`' order), a column per benchmark (paper names and order, as
    `evaluate.results_tables`), then Avg and `seeds` (how many seeds the model was evaluated with). Each cell is
    a string "mean ± std" in percent, one decimal, std over seeds (sample std, ddof=1); a cell over a single
    seed shows just the mean ("40.0"), as no spread can be estimated from one. Avg is computed per seed first
    (the mean over benchmarks) and then summarised over seeds; null when no seed covers every benchmark.
    `seed_long` gives the same numbers as a plain long frame; with several k in `scores`, pass `k`."""
    long = seed_long(scores, metric, models, k)
    cells = long.with_columns(pl.struct("mean", "std", "n_seeds").map_elements(
        lambda r: _cell(r["mean"], r["std"], r["n_seeds"]), return_dtype=pl.String).alias("cell"))
    labels = cells["label"].unique(maintain_order=True).to_list()
    wide = cells.pivot(on="label", index="model", values="cell", aggregate_function="first").select("model", *labels)
    rows = _rows(scores, k, need=("model", "benchmark", "k"))
    seeds = rows.group_by("model").agg(pl.col("seed").n_unique().cast(pl.Int64).alias("seeds"))
    return wide.join(seeds, on="model", how="left", maintain_order="left")


# ------------------------------------------------------------------------------------------------ bootstrap


def _paired(scores: pl.DataFrame, a: str, b: str, metric: str, k: int | None) -> pl.DataFrame:
    """Per-problem rows of a and b joined on (benchmark, seed, problem_id), with d = a - b."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    if a == b:
        raise ValueError(f"compare two different models, not {a!r} with itself")
    rows = _rows(scores, need=("model", "benchmark", "k", "problem_ids", "scores"), one_k=False)
    present = rows["model"].unique(maintain_order=True).to_list()
    absent = [m for m in (a, b) if m not in present]
    if absent:
        raise ValueError(f"model(s) {', '.join(map(repr, absent))} not in the score rows (have {', '.join(present)})")
    rows = rows.filter(pl.col("model").is_in([a, b]))
    if k is not None:
        rows = rows.filter(pl.col("k") == k)
    for m in (a, b):
        ks = rows.filter(pl.col("model") == m)["k"].unique().sort().to_list()
        if len(ks) != 1:
            raise ValueError(f"model {m!r} has score rows with k in {ks}: pass k= to choose one")
    pp = per_problem(rows)
    keys = ["benchmark", "seed", "problem_id"]
    dup = pp.group_by("model", *keys).len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"problem ids repeated within a score row: {dup.select('model', *keys).rows()[:5]}")
    pa = pp.filter(pl.col("model") == a).select(*keys, "k", pl.col(metric).alias("a"))
    pb = pp.filter(pl.col("model") == b).select(*keys, pl.col("k").alias("k_b"), pl.col(metric).alias("b"))
    only_a, only_b = pa.join(pb, on=keys, how="anti"), pb.join(pa, on=keys, how="anti")
    if only_a.height or only_b.height:
        def where(f):
            return sorted(set(f.select("benchmark", "seed").rows()))[:5]
        raise ValueError(
            f"{a!r} and {b!r} were not scored on the same problems and seeds: {only_a.height} (benchmark, seed, "
            f"problem) only in {a!r} (e.g. in {where(only_a)}), {only_b.height} only in {b!r} (e.g. in {where(only_b)})")
    joined = pa.join(pb, on=keys, how="inner", maintain_order="left")
    if (joined["k"] != joined["k_b"]).any():
        raise ValueError(f"{a!r} and {b!r} were scored with different k")
    seeds = joined.group_by("benchmark").agg(pl.col("seed").unique().sort())
    if seeds["seed"].n_unique() > 1:
        raise ValueError(f"benchmarks were evaluated with different seeds: {dict(seeds.rows())}")
    return joined.with_columns((pl.col("a") - pl.col("b")).alias("d"))


def _counts(rng, n: int, size: int) -> np.ndarray:
    """`size` bootstrap resamples of n items as counts: an int array (size, n) whose rows sum to n."""
    idx = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)


def paired_bootstrap(scores: pl.DataFrame, a: str, b: str, metric: str = "mean_at_k", n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95, k: int | None = None) -> dict:
    """Avg(a) - Avg(b) in percentage points, with a paired bootstrap percentile interval.

    Avg is the mean over benchmarks of the benchmark's mean over seeds of the mean over problems (so `diff` is
    the difference of `seed_table`'s Avg means). Rows of a and b are matched on (benchmark, seed, problem_id);
    every resample draws the replicate seeds with replacement (shared by all benchmarks) and each benchmark's
    problems with replacement (the same problems for every seed when each seed scored the same problems, else
    drawn per seed), the same draws for a and b. Raises ValueError when a or b is missing, when they were not
    scored on the same problems and seeds, or when benchmarks differ in their seeds.

    Returns {a, b, metric, diff, lo, hi, level, n_boot, n_problems (distinct benchmark/problem pairs),
    n_benchmarks, n_seeds}."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, not {n_boot}")
    joined = _paired(scores, a, b, metric, k)
    seeds = sorted(joined["seed"].unique().to_list())
    s_index = {s: i for i, s in enumerate(seeds)}
    rng = np.random.default_rng(seed)
    w = _counts(rng, len(seeds), n_boot).astype(np.float64)  # (n_boot, S): seed draws, shared by benchmarks
    benches = _benchmark_order(joined["benchmark"].to_list())
    point, boot = [], np.zeros(n_boot)
    for bench in benches:
        part = joined.filter(pl.col("benchmark") == bench)
        by_seed = {s: part.filter(pl.col("seed") == s) for s in seeds}
        ids = {s: sorted(f["problem_id"].to_list()) for s, f in by_seed.items()}
        point.append(np.mean([f["d"].mean() for f in by_seed.values()]))
        if all(ids[s] == ids[seeds[0]] for s in seeds):  # crossed: one problem draw for every seed
            problems = ids[seeds[0]]
            wide = part.pivot(on="seed", index="problem_id", values="d").sort("problem_id")
            d = wide.select([str(s) for s in seeds]).to_numpy().T  # (S, P)
            v = _counts(rng, len(problems), n_boot).astype(np.float64)  # (n_boot, P)
            boot += ((w @ d) * v).sum(axis=1) / (len(seeds) * len(problems))
        else:  # nested: each seed scored its own problems, drawn on their own
            per_seed = np.empty((n_boot, len(seeds)))
            for s, f in by_seed.items():
                v = _counts(rng, f.height, n_boot).astype(np.float64)
                per_seed[:, s_index[s]] = v @ f["d"].to_numpy() / f.height
            boot += (w * per_seed).sum(axis=1) / len(seeds)
    boot = boot / len(benches) * 100
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"a": a, "b": b, "metric": metric, "diff": float(np.mean(point) * 100), "lo": float(lo), "hi": float(hi),
            "level": level, "n_boot": n_boot, "n_problems": joined.select("benchmark", "problem_id").n_unique(),
            "n_benchmarks": len(benches), "n_seeds": len(seeds)}


def verdict(result: dict) -> str:
    """"<a> better" when the interval lies above 0, "<b> better" when below, else "no difference at 95%"."""
    if result["lo"] > 0:
        return f"{result['a']} better"
    if result["hi"] < 0:
        return f"{result['b']} better"
    return f"no difference at {result['level']:.0%}"


def comparisons(scores: pl.DataFrame, against=("rft", "sft", "dft", "dpo", "naive"), method: str = "rift",
                metric: str = "mean_at_k", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                k: int | None = None) -> pl.DataFrame:
    """`method` against each baseline in `against` that the score rows hold (others are skipped): one row per
    comparison with comparison ("rift − rft"), method, baseline, metric, diff, lo, hi (percentage points, see
    `paired_bootstrap`), level, n_problems, n_seeds and verdict ("rift better" / "rft better" /
    "no difference at 95%")."""
    if "model" not in scores.columns:
        raise ValueError(f"score rows lack column model (have {', '.join(scores.columns)})")
    models = set(scores["model"].to_list())
    if method not in models:
        raise ValueError(f"model {method!r} not in the score rows (have {', '.join(sorted(models))})")
    out = []
    for base in against:
        if base not in models or base == method:
            continue
        r = paired_bootstrap(scores, method, base, metric, n_boot, seed, level, k)
        out.append({"comparison": f"{method} − {base}", "method": method, "baseline": base, "metric": metric,
                    "diff": r["diff"], "lo": r["lo"], "hi": r["hi"], "level": level, "n_problems": r["n_problems"],
                    "n_seeds": r["n_seeds"], "verdict": verdict(r)})
    schema = {"comparison": pl.String, "method": pl.String, "baseline": pl.String, "metric": pl.String,
              "diff": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "level": pl.Float64, "n_problems": pl.Int64,
              "n_seeds": pl.Int64, "verdict": pl.String}
    return pl.DataFrame(out, schema=schema)
