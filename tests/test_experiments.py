"""Every protocol of the `experiments` group and the report on the `smoke` graph (conftest's `smoke` fixture), in
process as `make report PROFILE=smoke` runs them: the report's sections and figures, one SQL view per table with a
seed column where replicates exist, and the numbers the tables are made of."""
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from rift_core.profiles import load_profile

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiments(smoke, tmp_path_factory):
    from rift_dagster.demo import PROTOCOLS, materialize_all

    root, _, _ = smoke
    with dg.instance_for_test() as instance:
        results = materialize_all("smoke", str(root.parent), instance, out_of_process=False, keep_going=True,
                                  protocols=[p for p in PROTOCOLS if p != "graph"])
    # a copy of the catalog: DuckDB hands this process the database the `smoke` fixture still has open for the
    # same path, i.e. the catalog before these views were published (its views read the same Parquet files)
    catalog = tmp_path_factory.mktemp("catalog") / "rift.duckdb"
    shutil.copy(root / "rift.duckdb", catalog)
    con = duckdb.connect(str(catalog), read_only=True)
    yield root, con, results
    con.close()


def test_every_protocol_succeeds(experiments):
    from rift_dagster.demo import failures

    _, _, results = experiments
    assert not failures(results)


def test_the_report_has_every_table_and_its_figures_are_pngs(experiments):
    root, _, _ = experiments
    text = (root / "report" / "README.md").read_text()
    for title in ("Table 6", "Table 7", "Table 8", "Table 11", "Figure 1", "Collapse", "Learning-rate sweep",
                  "Tables 2/3", "Lineage", "Wall time per step"):
        assert f"## {title}" in text, title
    assert "Not materialised yet" not in text
    pngs = sorted((root / "report").glob("*.png"))
    assert len(pngs) >= 4 and all(p.read_bytes().startswith(PNG) for p in pngs)
    for png in pngs:  # every figure is linked from the report
        assert f"({png.name})" in text, png.name


def test_the_report_names_files_relative_to_the_project_or_the_data_folder(experiments):
    from rift_dagster.defs.report import PROJECT

    root, _, _ = experiments
    line = (root / "report" / "README.md").read_text().splitlines()[2]
    profile_file = Path(load_profile("smoke").source).relative_to(PROJECT).as_posix()
    assert f"Profile file: `{profile_file}`. Base model: `<data_dir>/toy_policies/toy-base-" in line
    assert str(PROJECT) not in line and str(root.parent) not in line


def test_one_view_per_table_with_a_seed_column_where_replicates_exist(experiments):
    _, con, _ = experiments
    p = load_profile("smoke")
    seeds = p.experiment_seeds
    for view in ("table6", "table7", "table8", "table11", "table12_13", "lr_sweep", "collapse", "results", "scores"):
        columns = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
        assert "seed" in columns or view == "results", view
    rows = con.execute("SELECT model, count(DISTINCT seed), count(DISTINCT benchmark) FROM table6 GROUP BY model").fetchall()
    assert sorted(rows) == sorted((v, len(seeds), len(p.benchmarks)) for v in p.experiments.reward_variants)
    rows = con.execute("SELECT train_k, count(DISTINCT seed), max(k) FROM table8 GROUP BY train_k").fetchall()
    assert sorted(rows) == [(k, len(seeds), p.experiments.small_k) for k in sorted(p.experiments.ks)]
    models = {r[0] for r in con.execute("SELECT DISTINCT model FROM table11").fetchall()}
    assert models == {m for src in p.experiments.second_round_from for m in (src, f"{src} + RIFT")}
    assert con.execute("SELECT count(*) FROM table9_10").fetchone()[0] == len(p.experiments.ks)
    # Table 7: a row per method and seed, and the memory is where it came from
    rows = con.execute("SELECT count(DISTINCT method), count(DISTINCT seed), min(peak_memory_gb) FROM table7").fetchone()
    assert rows[0] == len(p.run_methods) and rows[1] == len(p.replicates) and rows[2] > 0


def test_the_sweep_chooses_one_rate_per_method_and_the_collapse_covers_every_epoch(experiments):
    _, con, _ = experiments
    p = load_profile("smoke")
    for method in p.experiments.lr_sweep_methods:
        rates = con.execute("SELECT learning_rate, chosen FROM lr_sweep WHERE method = ?", [method]).fetchall()
        assert len(rates) == len(p.experiments.lr_factors) and sum(chosen for _, chosen in rates) == 1
    assert con.execute("SELECT count(*) FROM lr_sweep WHERE method = 'base'").fetchone()[0] >= 1
    epochs = con.execute("SELECT method, count(*), min(epoch), max(epoch) FROM collapse GROUP BY method").fetchall()
    n = p.experiments.collapse_epochs
    assert sorted(epochs) == [("naive", n + 1, 0, n), ("rift", n + 1, 0, n)]


def test_regeneration_rounds_are_scored(experiments):
    _, con, _ = experiments
    assert con.execute("SELECT count(DISTINCT benchmark) FROM round_scores").fetchone()[0] == len(load_profile("smoke").benchmarks)
