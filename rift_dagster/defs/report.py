"""`report`: every table and figure of the paper's protocols in one README, written to
`<data_dir>/<profile>/report/README.md` with its PNG figures beside it (`make report PROFILE=...`). Each table is
also a SQL view (named in its section); the text is rift_core.report's, from those views' tables."""
import platform
import time
from pathlib import Path

import dagster as dg
from rift_core.report import COLLAPSE_FIGURE, FIGURE1, TABLES, relative_name, report_figures, report_markdown

from rift_dagster.defs import evaluation, experiments
from rift_dagster.defs.resources import VIEWS, RiftStorage, RunProfile, read_json, read_parquets

PROJECT = Path(__file__).resolve().parents[2]  # the folder holding rift_core and rift_dagster


@dg.asset(group_name="report", kinds={"markdown"},
          deps=[evaluation.results, experiments.lr_sweep, experiments.collapse, experiments.reward_scheme_scores,
                experiments.k_rollouts, experiments.k_scores, experiments.second_round_scores,
                experiments.round_scores, experiments.efficiency])
def report(context: dg.AssetExecutionContext, rift: RunProfile, storage: RiftStorage) -> dg.MaterializeResult:
    """`<data_dir>/<profile>/report/README.md`: Tables 2/3 with their spread and RIFT's intervals, the learning-rate
    sweep, the collapse, Tables 6-13 and Figure 1, with the lineage hashes of what produced them, the machine and
    the wall time of each step. A protocol not materialised yet is named, not skipped silently."""
    start = time.time()
    p = rift.load()
    root = storage.root(p.name)
    tables = {view: read_parquets(root, VIEWS[view][0]) for view in TABLES}
    loss_history = {method: summary.get("loss_history") or [] for method, seed, summary in storage.trained_runs(p.name)
                    if seed == p.replicates[0]}
    drawn = report_figures(tables, loss_history)
    figures = {*drawn, *(name for name in (COLLAPSE_FIGURE, FIGURE1) if (root / "report" / name).exists())}
    base = read_json(root / "base_model.json")
    roots = {"": PROJECT, "<data_dir>/": Path(storage.data_dir).resolve()}
    about = {
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}, Python "
                   f"{platform.python_version()})",
        "profile_file": relative_name(p.source, roots),
        "base_model": relative_name(base["path"], roots) if base else None,
        "base_model_hash": base.get("hash"),
    }
    text = report_markdown(p, tables, about, figures)
    storage.store(context, p.name, {"report/README.md": text, **{f"report/{name}": fig for name, fig in drawn.items()}})
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(root / "report" / "README.md")), "figures": ", ".join(sorted(figures)),
        "report": dg.MetadataValue.md(text[:60_000]), "duration_s": round(time.time() - start, 2),
    })
