"""The wheel works outside the repository: built from the sources, installed into a fresh virtual environment and
run from an empty folder, it lists its commands, imports the trainer, loads the packaged profiles by name and trains.

The fresh environment gets only the wheel (`--no-deps`); its third-party dependencies (torch, TRL, transformers,
...) are the project venv's, made visible by one `.pth` line naming that venv's site-packages, because installing
them afresh takes minutes and needs the package index. A path line in a `.pth` file appends the folder to sys.path
without running that folder's own `.pth` files, so the project's editable install (a `.pth` hook there) stays out
and `rift_core` can only come from the wheel; the test checks that it does.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from rift_core.profiles import CONFIG_DIR

pytestmark = pytest.mark.slow

# what the build sees: the packages, and beside them folders that must stay out of the wheel
SOURCES = ("pyproject.toml", "README.md", "rift_core", "rift_dagster", "tests", "benchmarks")
PACKAGED = sorted(p.relative_to(CONFIG_DIR.parent.parent).as_posix() for p in CONFIG_DIR.rglob("*.yaml"))

TRAIN = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import rift_core
    from rift_core import RIFTConfig, RIFTTrainer
    from rift_core.profiles import load_profile

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model_dir, out = sys.argv[1], Path("checkpoint")
    Path("mine.yaml").write_text("extends: tiny\\nrewards: {r_neg: -0.5}\\n")
    tiny, mine = load_profile("tiny"), load_profile("mine.yaml")
    rows = [{"prompt": f"What is {i} + {i}? ", "completion": f"\\\\boxed{{{2 * i}}}",
             "reward": 1.0 if i % 2 == 0 else -0.2} for i in range(4)]
    args = RIFTConfig(output_dir=str(out), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3,
                      warmup_steps=0, bf16=False, save_strategy="no", report_to="none", use_cpu=True, seed=0,
                      dataloader_num_workers=0)
    trainer = RIFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                          train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()
    trainer.save_model()
    AutoModelForCausalLM.from_pretrained(out)  # the checkpoint loads back
    print(json.dumps({
        "rift_core": rift_core.__file__, "sys_path": sys.path,
        "editable_hooks": [m for m in sys.modules if m.startswith("__editable__")],
        "tiny": {"base_model": tiny.base_model, "source": tiny.source, "r_neg": tiny.rewards.r_neg},
        "mine": {"name": mine.name, "base_model": mine.base_model, "r_neg": mine.rewards.r_neg},
        "global_step": trainer.state.global_step,
        "checkpoint": sorted(p.name for p in out.iterdir()),
    }))
""")


def succeed(*command) -> str:
    """Run `command`; its stdout, or a failure that shows its stderr."""
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the wheel, the fresh venv's python, the fresh venv's folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so that the build's own folders (build/, *.egg-info) land outside the repository
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "out"))
        else:
            shutil.copy2(path, src / name)
    succeed(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", src,
            "-w", tmp / "dist")
    (wheel,) = (tmp / "dist").glob("rift-*.whl")

    venv = tmp / "venv"
    succeed(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    succeed(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    site = succeed(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "project_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    return wheel, python, venv


def run_outside(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python args...` from `cwd`, with no PYTHONPATH, so nothing of the repository is importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run([str(python), *args], cwd=cwd, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_the_packages_and_their_configs_and_nothing_else(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"rift_core", "rift_dagster", wheel.name.split("-py")[0] + ".dist-info"}
    assert "rift_core/configs/tiny.yaml" in PACKAGED and "rift_core/configs/accelerate/ddp.yaml" in PACKAGED
    assert sorted(n for n in names if n.endswith(".yaml")) == PACKAGED
    assert {"rift_core/__main__.py", "rift_dagster/definitions.py"} <= set(names)


def test_the_installed_wheel_runs_from_an_empty_folder(installed, tiny_model, tmp_path):
    _, python, venv = installed
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    cli = run_outside(python, ["-m", "rift_core", "--help"], cwd)
    assert cli.returncode == 0, cli.stderr
    assert all(command in cli.stdout + cli.stderr for command in ("train", "generate", "evaluate"))

    run = run_outside(python, ["-c", TRAIN, str(tiny_model)], cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    # rift_core is the wheel's, the dependencies the project venv's, and no editable hook ran
    assert Path(got["rift_core"]).is_relative_to(venv), got["rift_core"]
    assert sysconfig.get_paths()["purelib"] in got["sys_path"] and str(REPO) not in got["sys_path"]
    assert got["editable_hooks"] == []
    # profiles by name from the package, and a user's file that extends one
    assert got["tiny"]["base_model"] == "toy" and Path(got["tiny"]["source"]).is_relative_to(venv)
    assert got["tiny"]["r_neg"] == -0.2
    assert got["mine"] == {"name": "mine", "base_model": "toy", "r_neg": -0.5}
    assert got["global_step"] == 2 and "model.safetensors" in got["checkpoint"]
