"""The report's text and figures from small tables (rift_core.report), without running any step."""
from pathlib import Path

import polars as pl
import pytest

from rift_core.profiles import load_profile
from rift_core.report import TABLES, relative_name, report_figures, report_markdown, results_markdown

ABOUT = {"written": "2026-01-02 03:04:05 UTC", "machine": "host (x86_64, cpu, Python 3.11)",
         "profile_file": "configs/smoke.yaml", "base_model": "data/toy_policies/toy-base-0123",
         "base_model_hash": "feedbeef"}


@pytest.fixture(scope="module")
def profile():
    return load_profile("smoke")


def scores(models=("rift", "base"), seeds=(0, 1), k=4) -> pl.DataFrame:
    """Score rows: `base` at 20% / 30% Mean@k (seed 0 / 1) on both benchmarks, every other model 20 points above."""
    rows = [{"model": m, "benchmark": b, "seed": s, "k": k, "mean_at_k": (0.2 + 0.1 * s) + (0.0 if m == "base" else 0.2),
             "pass_at_k": 0.9} for m in models for s in seeds for b in ("gsm8k", "math500")]
    return pl.DataFrame(rows)


def nothing() -> dict:
    return dict.fromkeys(TABLES)


def test_a_report_of_nothing_names_every_protocol_still_to_run(profile):
    text = report_markdown(profile, nothing(), ABOUT)
    assert text.startswith(f"# RIFT report: profile `{profile.name}`\n")
    assert ("Profile file: `configs/smoke.yaml`. Base model: `data/toy_policies/toy-base-0123` (hash `feedbeef`)"
            in text)
    assert f"Replicate seeds: {profile.replicates}" in text and "on host (x86_64, cpu, Python 3.11)." in text
    for asset in ("lr_sweep", "collapse", "reward_scheme_scores", "efficiency", "k_scores", "second_round_scores"):
        assert f"materialise `{asset}` (group `experiments`)" in text, asset
    for absent in ("## Tables 2/3", "## Lineage", "## Wall time", "## Loss curves", "## Figure 1", "!["):
        assert absent not in text, absent


def test_tables_2_3_list_models_in_the_papers_order_with_their_seed_spread(profile):
    text = report_markdown(profile, {**nothing(), "scores": scores()}, ABOUT)
    section = text.split("## Tables 2/3: Mean@4 and Pass@4 (%, mean ± std over seeds)\n", 1)[1].split("\n## ", 1)[0]
    mean = section.split("Pass@4")[0]
    # base before rift although the rows list rift first; 20% and 30% over the two seeds: 25.0 ± 7.1
    assert mean.index("| base") < mean.index("| rift")
    assert "25.0 ± 7.1" in mean and "45.0 ± 7.1" in mean
    assert "90.0" in section.split("Pass@4")[1]
    assert "SQL: `SELECT * FROM scores`" in section
    assert results_markdown(scores())["mean_at_k"] in section


def test_table6_stands_beside_the_papers_numbers_and_links_its_figure_only_when_drawn(profile):
    variants = scores(models=("constant_-0.2",))
    tables = {**nothing(), "scores": scores(models=("base", "rft")), "table6": variants}
    without = report_markdown(profile, tables, ABOUT)
    assert "37.5 ± 1.06" in without  # the paper's Avg for constant r_neg -0.2
    assert "| rft" in without.split("## Table 6")[1]  # RFT for reference
    assert "table6_reward_schemes.png" not in without
    drawn = report_figures(tables, {})
    assert set(drawn) == {"table6_reward_schemes.png"}
    assert "![table6_reward_schemes.png](table6_reward_schemes.png)" in report_markdown(profile, tables, ABOUT, drawn)


def test_figures_are_drawn_only_from_tables_that_exist():
    assert report_figures(nothing(), {}) == {}
    assert set(report_figures(nothing(), {"rift": [1.0, 0.5, 0.25]})) == {"loss_curves.png"}


def test_lineage_lists_the_newest_hashes_per_asset_and_partition(profile):
    runs = pl.DataFrame({"asset": ["checkpoints", "checkpoints", "reward_labels"], "partition": ["rift|0"] * 2 + [""],
                         "checkpoint_hash": ["old", "new", None], "buffer_hash": ["b1", "b1", "b1"],
                         "materialized_at": ["2026-01-01T00:00:00", "2026-01-02T00:00:00", "2026-01-01T00:00:00"]})
    text = report_markdown(profile, {**nothing(), "runs": runs}, ABOUT)
    lineage = text.split("## Lineage")[1]
    assert "| new" in lineage and "old" not in lineage
    assert lineage.index("checkpoints") < lineage.index("reward_labels")


def test_a_report_names_paths_relative_to_the_project_or_the_data_folder(tmp_path):
    project, data = tmp_path / "project", tmp_path / "elsewhere" / "data"
    roots = {"": project, "<data_dir>/": data}
    assert relative_name(project / "configs" / "tiny.yaml", roots) == "configs/tiny.yaml"
    assert relative_name(project / "data" / "toy_policies" / "toy-base-1", roots) == "data/toy_policies/toy-base-1"
    assert relative_name(str(data / "toy_policies" / "toy-base-1"), roots) == "<data_dir>/toy_policies/toy-base-1"
    assert relative_name("Qwen/Qwen2.5-Math-1.5B", roots) == "Qwen/Qwen2.5-Math-1.5B"  # a hub id
    assert relative_name(Path("/models/qwen"), roots) == "/models/qwen"  # outside both: as given
