"""RIFT core: data, generation, rewards, losses, trainer and metrics. Never imports dagster.

`from rift_core import RIFTConfig, RIFTTrainer` imports TRL only then, so `import rift_core` stays light.
"""
_LAZY = {"RIFTConfig": "rift_core.rift_trainer", "RIFTTrainer": "rift_core.rift_trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rift_core' has no attribute {name!r}")
