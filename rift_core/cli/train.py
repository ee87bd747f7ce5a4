"""`python -m rift_core train`: fine-tune a model with one of the methods on a data file."""
import json
import sys
from dataclasses import dataclass, field

from rift_core import trainer
from rift_core.cli import config_parser
from rift_core.trainer import TrainConfig


@dataclass
class _Data:
    data: str = field(metadata={"help": "Parquet or JSONL file (or folder of Parquet parts) with the method's columns."})
    wait_for_lock: bool = field(default=False, metadata={
        "help": "When another run is writing --output, wait for it to finish instead of failing at once."})


def main(argv: list[str]) -> None:
    cfg, args = build_parser().parse_args_and_config(argv)
    summary = trainer.train(cfg, args.data, wait_for_lock=args.wait_for_lock)
    if trainer.process_state().is_main_process:
        json.dump({k: v for k, v in summary.items() if k != "loss_history"}, sys.stdout, indent=1)
        print()


def build_parser():
    return config_parser([TrainConfig, _Data], prog="python -m rift_core train", description=trainer.__doc__.split("\n")[0])
