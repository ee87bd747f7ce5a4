"""`report`: every table and figure of the paper's protocols in one README, written to
`<data_dir>/<profile>/report/README.md` with its PNG figures beside it (`make report PROFILE=...`). Each table is
also a SQL view (named in its section); the paper's own numbers stand beside ours where the protocol matches,
labelled as the paper's (Qwen2.5-Math-1.5B trained on MATH)."""
import platform
import time

import dagster as dg
from rift_core.stats import to_markdown

from rift_dagster.defs.evaluation import MODELS, read_scores, results
from rift_dagster.defs.experiments import (collapse, efficiency, k_rollouts, k_scores, lr_sweep,
                                           reward_scheme_scores, root, round_scores, second_round_scores)
from rift_dagster.defs.resources import RiftStorage, RunProfile, read_json, read_parquets

# The paper's own Avg figures (Qwen2.5-Math-1.5B, MATH), for the tables whose protocol we run
PAPER_TABLE6_AVG = {"gpg_mean": "35.3 ± 1.65", "gpg_scaled": "36.0 ± 1.75", "gaussian": "36.6 ± 1.73",
                    "constant_-0.2": "37.5 ± 1.06", "constant_-0.5": "36.8 ± 1.53", "constant_-0.8": "37.2 ± 1.58"}
PAPER_TABLE7 = {"sft": (17.95, 24.3), "dft": (26.90, 33.1), "rft": (18.12, 25.6), "dpo": (43.31, 31.0),
                "rift": (20.10, 37.0)}  # (peak memory GB, Avg Mean@8)
PAPER_TABLE8_AVG = {"base": (22.8, 38.3), 2: (29.3, 46.4), 4: (31.6, 48.2), 8: (37.5, 52.8), 16: (36.0, 49.8)}
PAPER_TABLE11_AVG = {"base": (22.8, 38.3), "sft": (27.1, 45.6), "sft + RIFT": (38.6, 52.3), "dft": (33.0, 44.4),
                     "dft + RIFT": (38.6, 52.9), "rift": (37.5, 52.8), "rift + RIFT": (38.7, 52.6)}


def section(title: str, body: str, view: str | None = None) -> str:
    where = f"\n\nSQL: `SELECT * FROM {view}`" if view else ""
    return f"## {title}\n\n{body}{where}\n"


def missing(asset: str) -> str:
    return f"_Not materialised yet: materialise `{asset}` (group `experiments`) for this table._"


def with_paper(table, column: str, paper: dict, key: str = "model"):
    import polars as pl

    return table.with_columns(pl.col(key).replace_strict(paper, default=None, return_dtype=pl.String).alias(column))


@dg.asset(group_name="report", kinds={"markdown"},
          deps=[results, lr_sweep, collapse, reward_scheme_scores, k_rollouts, k_scores, second_round_scores,
                round_scores, efficiency])
def report(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """`<data_dir>/<profile>/report/README.md`: Tables 2/3 with their spread and RIFT's intervals, the learning-rate
    sweep, the collapse, Tables 6-13 and Figure 1, with the lineage hashes of what produced them, the machine and
    the wall time of each step. A protocol not materialised yet is named, not skipped silently."""
    import polars as pl
    from rift_core.figures import bars_with_error, lines_per_k, loss_curves, save_png
    from rift_core.results import seed_long, seed_table

    start = time.time()
    p = rift.load()
    base = storage.root(p.name)
    out = base / "report"
    out.mkdir(parents=True, exist_ok=True)
    exp = root(storage, p)
    parts, figures = [], []

    def figure(fig, name: str) -> str:
        save_png(fig, out / name)
        figures.append(name)
        return f"![{name}]({name})"

    # Tables 2/3 and the comparisons
    scores = read_scores(storage, p)
    if scores is not None:
        models = [m for m in MODELS if m in set(scores["model"])]
        k = int(scores["k"].max())
        parts.append(section(f"Tables 2/3: Mean@{k} and Pass@{k} (%, mean ± std over seeds)",
                             f"Mean@{k}\n\n{to_markdown(seed_table(scores, models=models))}\n\nPass@{k}\n\n"
                             f"{to_markdown(seed_table(scores, 'pass_at_k', models=models))}", "scores"))
    if (base / "comparisons.parquet").exists():
        versus = pl.read_parquet(base / "comparisons.parquet")
        parts.append(section("RIFT against the baselines (Avg, percentage points, 95% paired bootstrap)",
                             to_markdown(versus.select("comparison", "diff", "lo", "hi", "n_problems", "n_seeds",
                                                       "verdict").with_columns(pl.col("diff", "lo", "hi").round(2))),
                             "comparisons"))
    curves = {method: summary.get("loss_history") or [] for method, seed, summary in storage.trained_runs(p.name)
              if seed == p.replicates[0]}
    if curves:
        parts.append(section("Loss curves (first replicate seed)", figure(loss_curves(curves), "loss_curves.png")))

    sweep = read_parquets(exp / "lr_sweep")
    if sweep is not None:  # each method's file repeats the base model's row
        sweep = sweep.unique(["method", "learning_rate"], keep="first", maintain_order=True)
    parts.append(section("Learning-rate sweep (validation split, Mean@k / Pass@k %)",
                         to_markdown(sweep.with_columns(pl.col("mean_at_k", "pass_at_k") * 100)) if sweep is not None
                         else missing("lr_sweep"), "lr_sweep"))

    if (exp / "collapse.parquet").exists():
        from rift_core.collapse import verdict

        table = pl.read_parquet(exp / "collapse.parquet")
        parts.append(section("Collapse: naive reward-weighted NLL against RIFT (paper Theorem 3.2)",
                             f"{verdict(table)}\n\n{to_markdown(table)}\n\n![collapse](collapse.png)", "collapse"))
        figures.append("collapse.png")
    else:
        parts.append(section("Collapse", missing("collapse")))

    # Table 6
    variants = read_parquets(exp / "reward_schemes" / "scores")
    if variants is not None and scores is not None:
        both = pl.concat([variants, scores.filter(pl.col("model") == "rft")], how="diagonal_relaxed")
        table = with_paper(seed_table(both), "paper Avg", PAPER_TABLE6_AVG)
        avg = seed_long(both).filter(pl.col("benchmark") == "Avg")
        body = (f"{to_markdown(table)}\n\n"
                + figure(bars_with_error(avg, "model", "mean", "std", "Table 6: Avg Mean@k by reward scheme"),
                         "table6_reward_schemes.png"))
        parts.append(section("Table 6: reward schemes (RIFT, Mean@k %, mean ± std over seeds; RFT for reference)",
                             body, "table6"))
    else:
        parts.append(section("Table 6: reward schemes", missing("reward_scheme_scores")))

    # Table 7 / Figure 1
    if (exp / "efficiency.parquet").exists():
        eff = pl.read_parquet(exp / "efficiency.parquet")
        summary = (eff.group_by("method").agg(pl.col("peak_memory_gb").mean().round(3),
                                              pl.col("step_seconds_median").mean().round(4),
                                              pl.col("avg_mean_at_k").mean().round(1).alias("avg_mean"),
                                              pl.col("avg_mean_at_k").std().round(1).alias("avg_std"),
                                              pl.col("peak_memory_source").first())
                   .sort(pl.col("method").cast(pl.Enum(MODELS))))
        summary = summary.with_columns(
            pl.col("method").replace_strict({m: f"{g} GB / {a}" for m, (g, a) in PAPER_TABLE7.items()}, default=None,
                                            return_dtype=pl.String).alias("paper (GPU GB / Avg)"))
        parts.append(section("Table 7: efficiency (peak training memory, step time, Avg Mean@k)",
                             to_markdown(summary), "table7"))
        parts.append(section("Figure 1: accuracy against peak training memory", "![Figure 1](figure1.png)"))
        figures.append("figure1.png")
    else:
        parts.append(section("Table 7 / Figure 1", missing("efficiency")))

    # Tables 8-10
    kscores = read_parquets(exp / "k" / "scores")
    if kscores is not None:
        order = [f"K={k}" for k in sorted(set(kscores["train_k"].to_list()))]
        table = seed_table(kscores, models=order)
        paper = {f"K={k}": f"{m} / {s}" for k, (m, s) in PAPER_TABLE8_AVG.items() if k != "base"}
        table = with_paper(table, "paper Avg Mean@3 / Pass@3", paper)
        body = f"Mean@{int(kscores['k'].max())}\n\n{to_markdown(table)}\n\nPass\n\n{to_markdown(seed_table(kscores, 'pass_at_k', models=order))}"
        if (exp / "k" / "buffer_stats.parquet").exists():
            stats = pl.read_parquet(exp / "k" / "buffer_stats.parquet")
            body += f"\n\nTables 9/10 (the buffer per K)\n\n{to_markdown(stats)}"
            avg = seed_long(kscores, models=order).filter(pl.col("benchmark") == "Avg").with_columns(
                pl.col("model").str.strip_prefix("K=").cast(pl.Int64).alias("k_train"))
            per_k = stats.select(pl.col("k").alias("k_train"), "pct_pos", "pct_mixed").join(
                avg.select("k_train", pl.col("mean").alias("avg_mean_at_small_k")), on="k_train", how="left")
            body += "\n\n" + figure(lines_per_k(per_k, ["pct_mixed", "pct_pos", "avg_mean_at_small_k"], x="k_train",
                                                title="Tables 8-10 per K"), "tables8_10_per_k.png")
        parts.append(section("Table 8: RIFT trained with K samples per problem (Mean@3 / Pass@3)", body, "table8"))
    else:
        parts.append(section("Table 8: K", missing("k_scores")))

    # Tables 11-13
    second = read_parquets(exp / "second_round" / "scores")
    if second is not None:
        order = [m for src in p.experiments.second_round_from for m in (src, f"{src} + RIFT")
                 if m in set(second["model"])]
        table = with_paper(seed_table(second, models=order), "paper Avg Mean@3 / Pass@3",
                           {m: f"{a} / {b}" for m, (a, b) in PAPER_TABLE11_AVG.items()})
        body = to_markdown(table)
        buffers = read_parquets(exp / "second_round" / "buffers")
        if buffers is not None:
            body += f"\n\nTables 12/13 (the second-round buffers)\n\n{to_markdown(buffers)}"
        parts.append(section("Table 11: a second round of RIFT from SFT, DFT and RIFT (Mean@3 %, mean ± std)", body,
                             "table11"))
    else:
        parts.append(section("Table 11: second round", missing("second_round_scores")))

    r = read_parquets(base / "rounds", "round=*/scores.parquet")
    if r is not None:
        parts.append(section("Regeneration rounds (Mean@k %)", to_markdown(seed_table(r)), "round_scores"))

    t = read_parquets(base / "timings")
    if t is not None:
        per_step = (t.group_by("step").agg(pl.len().alias("runs"), pl.col("seconds").sum().round(1),
                                           pl.col("finished_at").max().alias("last"))
                    .sort("last"))
        end = pl.col("finished_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%z")
        span = t.select((end.max() - (end - pl.duration(seconds=pl.col("seconds"))).min()).dt.total_seconds()).item()
        parts.append(section("Wall time per step (every `make` invocation so far; this report's own step is not in it)",
                             f"{to_markdown(per_step)}\n\nSum of the step times: {t['seconds'].sum() / 60:.1f} min; "
                             f"first start to last finish: {span / 60:.1f} min (steps run side by side with --jobs, "
                             "and separate invocations leave gaps)", "timings"))

    lineage = read_json(base / "base_model.json")
    steps = read_parquets(base / "runs")
    steps = pl.DataFrame() if steps is None else steps
    hashes = [c for c in ("buffer_hash", "checkpoint_hash", "base_model_hash") if c in steps.columns]
    header = (f"# RIFT report: profile `{p.name}`\n\nWritten {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on "
              f"{platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}, Python "
              f"{platform.python_version()}). Profile file: `{p.source}`. Base model: `{lineage.get('path')}` "
              f"(hash `{lineage.get('hash')}`). Replicate seeds: {p.replicates}; experiment seeds: "
              f"{p.experiment_seeds}. Regenerate: `make report PROFILE={p.name}`.\n")
    lineage_md = ""
    if hashes:
        lineage_md = section("Lineage (which inputs, by hash, made which output; view `runs`)", to_markdown(
            steps.select("asset", "partition", *hashes, "materialized_at").unique(["asset", "partition"], keep="last")
            .sort("asset", "partition")))
    text = "\n".join([header, *parts, lineage_md])
    (out / "README.md").write_text(text)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out / "README.md")), "figures": ", ".join(figures),
        "report": dg.MetadataValue.md(text[:60_000]), "duration_s": round(time.time() - start, 2),
    })
