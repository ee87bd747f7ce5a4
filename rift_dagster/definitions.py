"""The Dagster code location: everything in `rift_dagster/defs/` (one module per domain), with each asset
linked to its source. `dg dev`, `make ui` (`dagster dev -w workspace.yaml`) and the tests load this."""
import warnings
from pathlib import Path

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # code references are beta in 1.13


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    assets = list({id(a): a for a in loaded.assets}.values())  # modules import each other's assets
    return dg.Definitions(
        assets=dg.with_source_code_references(assets), asset_checks=loaded.asset_checks, jobs=loaded.jobs,
        schedules=loaded.schedules, sensors=loaded.sensors, resources=loaded.resources,
    )
