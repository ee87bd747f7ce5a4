"""The accelerate configs in rift_core/configs/accelerate/ (package data): each parses with accelerate's own loader
into the set-up it names, and the DDP one trains on two CPU ranks (joined over gloo) that end with the same weights.
FSDP and ZeRO-3 need GPUs (and DeepSpeed) and are only parsed here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from rift_core.profiles import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
CONFIGS = CONFIG_DIR / "accelerate"
EXPECTED = {  # file -> (distributed_type, the launch flag accelerate derives from it)
    "ddp.yaml": ("MULTI_GPU", "multi_gpu"),
    "fsdp.yaml": ("FSDP", "use_fsdp"),
    "zero3.yaml": ("DEEPSPEED", "use_deepspeed"),
}


def test_the_expected_configs_are_there():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_config_parses_with_accelerates_loader(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = CONFIGS / name
    config = load_config_from_file(str(path))
    dist_type, flag = EXPECTED[name]
    assert config.distributed_type.value == dist_type
    assert config.num_processes == 8 and config.num_machines == 1
    assert config.mixed_precision == "no"  # precision comes from the profile's train.bf16

    # what `accelerate launch --config_file ... --num_processes 2` makes of it: the flag wins over the file
    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "--num_processes", "2", "-m", "rift_core", "train"])
    args = _validate_launch_command(args)[0]
    assert getattr(args, flag) is True and args.num_processes == 2
    if name == "fsdp.yaml":
        assert args.fsdp_version == 2 and args.fsdp_state_dict_type == "FULL_STATE_DICT"
    if name == "zero3.yaml":
        assert args.zero_stage == 3 and args.zero3_save_16bit_model is True


def buffer(n=16) -> pl.DataFrame:
    """A labelled buffer as tests/test_trainer.py builds it: even rows correct (+1), odd rows wrong (-0.2)."""
    return pl.DataFrame([
        {
            "question": f"What is {i} + {i}?",
            "response": f"{i} + {i} = {2 * i + i % 2}. \\boxed{{{2 * i + i % 2}}}",
            "reward": 1.0 if i % 2 == 0 else -0.2,
            "correct": i % 2 == 0,
            "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}",
        }
        for i in range(n)
    ])


@pytest.mark.slow
def test_ddp_config_trains_on_two_cpu_ranks_that_end_with_the_same_weights(tiny_model, tmp_path):
    data = tmp_path / "buffer.parquet"
    buffer().write_parquet(data)
    out = tmp_path / "ckpt"
    # On a machine without GPU the MULTI_GPU config still starts torchrun with two processes, and the trainer
    # joins them as CPU ranks over gloo (as the --multi_gpu test in tests/test_trainer.py does).
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
        "--num_processes", "2", "--dynamo_backend", "no",
        "-m", "rift_core", "train", "--method", "rift", "--model", str(tiny_model), "--data", str(data),
        "--output", str(out), "--max-steps", "2", "--global-batch-size", "8", "--per-device-batch-size", "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "rift_run.json").read_text())
    assert run["processes"] == 2 and run["steps"] == 2
    assert run["gradient_accumulation_steps"] == 2  # global 8 = 2 per device x 2 accumulation x 2 ranks
    hashes = run["weight_hash_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert (out / "model.safetensors").exists()
