"""The report of a profile's run, from its tables: every table and figure of the paper's protocols in one markdown
text, the paper's own numbers beside ours where the protocol matches, labelled as the paper's (Qwen2.5-Math-1.5B
trained on MATH). Frames in, text and figures out; reading the tables and writing the files is the caller's.

    report_markdown(profile, tables, about, figures)  the report's text; a protocol not run yet is named, not skipped
    report_figures(tables, loss_history)               the figures the report draws itself, by file name
    results_markdown(scores)                           Tables 2/3 over the models scored so far
    relative_name(path, roots)                         a path as a report names it: relative to the project or data

`tables` maps the SQL view names (`TABLES`) to frames, None where nothing is materialised yet.
"""
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import polars as pl

from rift_core.collapse import verdict
from rift_core.figures import bars_with_error, lines_per_k, loss_curves
from rift_core.methods import METHODS
from rift_core.results import seed_long, seed_table
from rift_core.stats import to_markdown

MODELS = ["base", *METHODS]  # the row order of the results tables
TABLES = ("scores", "comparisons", "lr_sweep", "collapse", "table6", "table7", "table8", "table9_10", "table11",
          "table12_13", "round_scores", "timings", "runs")  # the views the report reads
# Figures drawn by the protocols' own assets, which the report links
COLLAPSE_FIGURE, FIGURE1 = "collapse.png", "figure1.png"

# The paper's own Avg figures (Qwen2.5-Math-1.5B, MATH), for the tables whose protocol we run
PAPER_TABLE6_AVG = {"gpg_mean": "35.3 ± 1.65", "gpg_scaled": "36.0 ± 1.75", "gaussian": "36.6 ± 1.73",
                    "constant_-0.2": "37.5 ± 1.06", "constant_-0.5": "36.8 ± 1.53", "constant_-0.8": "37.2 ± 1.58"}
PAPER_TABLE7 = {"sft": (17.95, 24.3), "dft": (26.90, 33.1), "rft": (18.12, 25.6), "dpo": (43.31, 31.0),
                "rift": (20.10, 37.0)}  # (peak memory GB, Avg Mean@8)
PAPER_TABLE8_AVG = {"base": (22.8, 38.3), 2: (29.3, 46.4), 4: (31.6, 48.2), 8: (37.5, 52.8), 16: (36.0, 49.8)}
PAPER_TABLE11_AVG = {"base": (22.8, 38.3), "sft": (27.1, 45.6), "sft + RIFT": (38.6, 52.3), "dft": (33.0, 44.4),
                     "dft + RIFT": (38.6, 52.9), "rift": (37.5, 52.8), "rift + RIFT": (38.7, 52.6)}


def scored_models(scores: pl.DataFrame) -> list[str]:
    """The models of `scores`, in the results tables' order (`MODELS`)."""
    present = set(scores["model"].to_list())
    return [m for m in MODELS if m in present]


def results_markdown(scores: pl.DataFrame) -> dict[str, str]:
    """Tables 2/3 over the models scored so far: mean ± std over replicate seeds, in %, by metric."""
    models = scored_models(scores)
    return {metric: to_markdown(seed_table(scores, metric, models=models)) for metric in ("mean_at_k", "pass_at_k")}


def relative_name(path: str | os.PathLike, roots: Mapping[str, Path]) -> str:
    """`path` as a report names it, so that it reads the same on every machine: relative to the first of `roots`
    ({prefix: folder}, e.g. {"": the project, "<data_dir>/": the data folder}) that holds it, behind that root's
    prefix; a relative path or a hub id (`Qwen/Qwen2.5-Math-1.5B`) as given."""
    target = Path(path)
    if not target.is_absolute():
        return str(path)
    for prefix, root in roots.items():
        if target.is_relative_to(root):
            return prefix + target.relative_to(root).as_posix()
    return target.as_posix()


def section(title: str, body: str, view: str | None = None) -> str:
    where = f"\n\nSQL: `SELECT * FROM {view}`" if view else ""
    return f"## {title}\n\n{body}{where}\n"


def missing(asset: str) -> str:
    return f"_Not materialised yet: materialise `{asset}` (group `experiments`) for this table._"


def with_paper(table: pl.DataFrame, column: str, paper: dict, key: str = "model") -> pl.DataFrame:
    return table.with_columns(pl.col(key).replace_strict(paper, default=None, return_dtype=pl.String).alias(column))


def image(name: str, figures: Collection[str], alt: str | None = None) -> str:
    """The markdown link of figure `name` if it is among `figures`, else nothing."""
    return f"![{alt or name}]({name})" if name in figures else ""


def _table6_rows(tables: Mapping) -> pl.DataFrame | None:
    """The reward schemes' score rows with RFT's for reference, or None before both exist."""
    if tables.get("table6") is None or tables.get("scores") is None:
        return None
    return pl.concat([tables["table6"], tables["scores"].filter(pl.col("model") == "rft")], how="diagonal_relaxed")


def _k_order(kscores: pl.DataFrame) -> list[str]:
    return [f"K={k}" for k in sorted(set(kscores["train_k"].to_list()))]


def _per_k(tables: Mapping) -> pl.DataFrame | None:
    """Tables 8-10 per K: %Pos and %Mixed of the buffer and RIFT's Avg Mean@small-k, or None before both exist."""
    kscores, stats = tables.get("table8"), tables.get("table9_10")
    if kscores is None or stats is None:
        return None
    avg = seed_long(kscores, models=_k_order(kscores)).filter(pl.col("benchmark") == "Avg").with_columns(
        pl.col("model").str.strip_prefix("K=").cast(pl.Int64).alias("k_train"))
    return stats.select(pl.col("k").alias("k_train"), "pct_pos", "pct_mixed").join(
        avg.select("k_train", pl.col("mean").alias("avg_mean_at_small_k")), on="k_train", how="left")


def report_figures(tables: Mapping[str, pl.DataFrame | None], loss_history: Mapping[str, list]) -> dict:
    """The figures the report draws itself ({file name: matplotlib figure}), where their tables exist:
    `loss_history` is {method: loss per step} of the first replicate seed."""
    figures = {}
    if loss_history:
        figures["loss_curves.png"] = loss_curves(dict(loss_history))
    rows = _table6_rows(tables)
    if rows is not None:
        avg = seed_long(rows).filter(pl.col("benchmark") == "Avg")
        figures["table6_reward_schemes.png"] = bars_with_error(avg, "model", "mean", "std",
                                                               "Table 6: Avg Mean@k by reward scheme")
    per_k = _per_k(tables)
    if per_k is not None:
        figures["tables8_10_per_k.png"] = lines_per_k(per_k, ["pct_mixed", "pct_pos", "avg_mean_at_small_k"],
                                                      x="k_train", title="Tables 8-10 per K")
    return figures


def header(profile, about: Mapping) -> str:
    """The report's title and where it came from: `about` holds `written` (when), `machine`, `profile_file`,
    `base_model` and `base_model_hash`, with the paths as `relative_name` gives them."""
    return (f"# RIFT report: profile `{profile.name}`\n\nWritten {about['written']} on {about['machine']}. "
            f"Profile file: `{about['profile_file']}`. Base model: `{about['base_model']}` "
            f"(hash `{about['base_model_hash']}`). Replicate seeds: {profile.replicates}; experiment seeds: "
            f"{profile.experiment_seeds}. Regenerate: `make report PROFILE={profile.name}`.\n")


def main_results(tables: Mapping, figures: Collection[str]) -> list[str]:
    """Tables 2/3, RIFT against the baselines, the loss curves."""
    parts = []
    scores = tables.get("scores")
    if scores is not None:
        k, models = int(scores["k"].max()), scored_models(scores)
        parts.append(section(f"Tables 2/3: Mean@{k} and Pass@{k} (%, mean ± std over seeds)",
                             f"Mean@{k}\n\n{to_markdown(seed_table(scores, models=models))}\n\nPass@{k}\n\n"
                             f"{to_markdown(seed_table(scores, 'pass_at_k', models=models))}", "scores"))
    versus = tables.get("comparisons")
    if versus is not None:
        parts.append(section("RIFT against the baselines (Avg, percentage points, 95% paired bootstrap)",
                             to_markdown(versus.select("comparison", "diff", "lo", "hi", "n_problems", "n_seeds",
                                                       "verdict").with_columns(pl.col("diff", "lo", "hi").round(2))),
                             "comparisons"))
    if "loss_curves.png" in figures:
        parts.append(section("Loss curves (first replicate seed)", image("loss_curves.png", figures)))
    return parts


def validation_protocols(tables: Mapping, figures: Collection[str]) -> list[str]:
    """The learning-rate sweep and the collapse, both on the validation split."""
    sweep = tables.get("lr_sweep")
    if sweep is not None:  # each method's file repeats the base model's row
        sweep = sweep.unique(["method", "learning_rate"], keep="first", maintain_order=True)
    parts = [section("Learning-rate sweep (validation split, Mean@k / Pass@k %)",
                     to_markdown(sweep.with_columns(pl.col("mean_at_k", "pass_at_k") * 100)) if sweep is not None
                     else missing("lr_sweep"), "lr_sweep")]
    table = tables.get("collapse")
    if table is not None:
        parts.append(section("Collapse: naive reward-weighted NLL against RIFT (paper Theorem 3.2)",
                             f"{verdict(table)}\n\n{to_markdown(table)}\n\n"
                             f"{image(COLLAPSE_FIGURE, figures, 'collapse')}".rstrip(), "collapse"))
    else:
        parts.append(section("Collapse", missing("collapse")))
    return parts


def table6(tables: Mapping, figures: Collection[str]) -> str:
    rows = _table6_rows(tables)
    if rows is None:
        return section("Table 6: reward schemes", missing("reward_scheme_scores"))
    table = with_paper(seed_table(rows), "paper Avg", PAPER_TABLE6_AVG)
    body = f"{to_markdown(table)}\n\n{image('table6_reward_schemes.png', figures)}".rstrip()
    return section("Table 6: reward schemes (RIFT, Mean@k %, mean ± std over seeds; RFT for reference)", body,
                   "table6")


def table7(tables: Mapping, figures: Collection[str]) -> list[str]:
    eff = tables.get("table7")
    if eff is None:
        return [section("Table 7 / Figure 1", missing("efficiency"))]
    summary = (eff.group_by("method").agg(pl.col("peak_memory_gb").mean().round(3),
                                          pl.col("step_seconds_median").mean().round(4),
                                          pl.col("avg_mean_at_k").mean().round(1).alias("avg_mean"),
                                          pl.col("avg_mean_at_k").std().round(1).alias("avg_std"),
                                          pl.col("peak_memory_source").first())
               .sort(pl.col("method").cast(pl.Enum(MODELS))))
    summary = with_paper(summary, "paper (GPU GB / Avg)", {m: f"{g} GB / {a}" for m, (g, a) in PAPER_TABLE7.items()},
                         key="method")
    parts = [section("Table 7: efficiency (peak training memory, step time, Avg Mean@k)", to_markdown(summary),
                     "table7")]
    if FIGURE1 in figures:
        parts.append(section("Figure 1: accuracy against peak training memory", image(FIGURE1, figures, "Figure 1")))
    return parts


def table8(tables: Mapping, figures: Collection[str]) -> str:
    kscores = tables.get("table8")
    if kscores is None:
        return section("Table 8: K", missing("k_scores"))
    order = _k_order(kscores)
    paper = {f"K={k}": f"{m} / {s}" for k, (m, s) in PAPER_TABLE8_AVG.items() if k != "base"}
    table = with_paper(seed_table(kscores, models=order), "paper Avg Mean@3 / Pass@3", paper)
    body = (f"Mean@{int(kscores['k'].max())}\n\n{to_markdown(table)}\n\nPass\n\n"
            f"{to_markdown(seed_table(kscores, 'pass_at_k', models=order))}")
    if tables.get("table9_10") is not None:
        body += f"\n\nTables 9/10 (the buffer per K)\n\n{to_markdown(tables['table9_10'])}"
        body = f"{body}\n\n{image('tables8_10_per_k.png', figures)}".rstrip()
    return section("Table 8: RIFT trained with K samples per problem (Mean@3 / Pass@3)", body, "table8")


def table11(tables: Mapping, second_round_from: list[str]) -> str:
    second = tables.get("table11")
    if second is None:
        return section("Table 11: second round", missing("second_round_scores"))
    present = set(second["model"].to_list())
    order = [m for src in second_round_from for m in (src, f"{src} + RIFT") if m in present]
    table = with_paper(seed_table(second, models=order), "paper Avg Mean@3 / Pass@3",
                       {m: f"{a} / {b}" for m, (a, b) in PAPER_TABLE11_AVG.items()})
    body = to_markdown(table)
    if tables.get("table12_13") is not None:
        body += f"\n\nTables 12/13 (the second-round buffers)\n\n{to_markdown(tables['table12_13'])}"
    return section("Table 11: a second round of RIFT from SFT, DFT and RIFT (Mean@3 %, mean ± std)", body, "table11")


def wall_time(t: pl.DataFrame) -> str:
    per_step = (t.group_by("step").agg(pl.len().alias("runs"), pl.col("seconds").sum().round(1),
                                       pl.col("finished_at").max().alias("last"))
                .sort("last"))
    end = pl.col("finished_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%z")
    span = t.select((end.max() - (end - pl.duration(seconds=pl.col("seconds"))).min()).dt.total_seconds()).item()
    return section("Wall time per step (every `make` invocation so far; this report's own step is not in it)",
                   f"{to_markdown(per_step)}\n\nSum of the step times: {t['seconds'].sum() / 60:.1f} min; "
                   f"first start to last finish: {span / 60:.1f} min (steps run side by side with --jobs, "
                   "and separate invocations leave gaps)", "timings")


def lineage(runs: pl.DataFrame | None) -> str:
    """Which inputs, by hash, made which output: the newest lineage row per asset and partition."""
    columns = [] if runs is None else runs.columns
    hashes = [c for c in ("buffer_hash", "checkpoint_hash", "base_model_hash") if c in columns]
    if not hashes:
        return ""
    return section("Lineage (which inputs, by hash, made which output; view `runs`)", to_markdown(
        runs.select("asset", "partition", *hashes, "materialized_at").unique(["asset", "partition"], keep="last")
        .sort("asset", "partition")))


def report_markdown(profile, tables: Mapping[str, pl.DataFrame | None], about: Mapping,
                    figures: Collection[str] = ()) -> str:
    """The report of `profile` (a rift_core.profiles.Profile) over `tables` ({view name: frame or None}), with the
    header facts `about` (see `header`) and links to the PNG `figures` beside it (file names)."""
    parts = [
        *main_results(tables, figures),
        *validation_protocols(tables, figures),
        table6(tables, figures),
        *table7(tables, figures),
        table8(tables, figures),
        table11(tables, profile.experiments.second_round_from),
    ]
    if tables.get("round_scores") is not None:
        parts.append(section("Regeneration rounds (Mean@k %)", to_markdown(seed_table(tables["round_scores"])),
                             "round_scores"))
    if tables.get("timings") is not None:
        parts.append(wall_time(tables["timings"]))
    return "\n".join([header(profile, about), *parts, lineage(tables.get("runs"))])
