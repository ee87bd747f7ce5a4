"""The Dagster code location (`dagster dev -w workspace.yaml`). `RIFT_PROFILE` and `RIFT_DATA_DIR` set
the defaults of the two resources; both stay editable per run in the Launchpad."""
import os

import dagster as dg

from rift_dagster.defs import evaluation, generation, iteration, problems, rewards, training
from rift_dagster.defs.resources import RiftStorage, RunProfile
from rift_dagster.defs.schedules import buffer_job, regeneration_job, regeneration_schedule

MODULES = [problems, generation, rewards, training, evaluation, iteration]


def resources(profile: str | None = None, data_dir: str | None = None, out_of_process: bool = True) -> dict:
    return {
        "rift": RunProfile(profile=profile or os.environ.get("RIFT_PROFILE", "tiny"), out_of_process=out_of_process),
        "storage": RiftStorage(data_dir=data_dir or os.environ.get("RIFT_DATA_DIR", "data")),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules(MODULES),
    jobs=[buffer_job, regeneration_job],
    schedules=[regeneration_schedule],
    resources=resources(),
)
