"""The Dagster code location: everything in `rift_dagster/defs/` (one module per domain), with each asset
linked to its source. `dg dev`, `make ui` (`dagster dev -w workspace.yaml`) and the tests load this.

The folder is loaded module by module, and every Dagster object a module holds at its top level counts as one
of its definitions; so a module refers to another domain's assets through that module (`problems.base_model`),
never by importing them by name, which would define them twice."""
import warnings
from pathlib import Path

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # code references are beta in 1.13


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions(
        assets=dg.with_source_code_references(loaded.assets), asset_checks=loaded.asset_checks, jobs=loaded.jobs,
        schedules=loaded.schedules, sensors=loaded.sensors, resources=loaded.resources,
    )
