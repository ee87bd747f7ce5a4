"""benchmarks/gpu_check.sh and benchmarks/gpu_table7.py: the one GPU check (paper Table 7), proven on the CPU.

The check asks a GPU machine for no polars, Dagster, math-verify or vLLM, so gpu_table7.py trains each method without
rift_core.trainer; these tests hold its copy (records, trainer settings) to the real trainer, and run
the whole script as a `--tiny` dry run, the wheels in gpu_wheels/ installed offline when that folder exists.
"""
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_table7  # noqa: E402
from bench_memory import batch_rows  # noqa: E402
from rift_core import methods  # noqa: E402
from rift_core.trainer import TrainConfig, _build_trainer  # noqa: E402

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
torch.set_num_threads(1)


def _results(path: Path) -> dict:
    return json.loads(re.search(r"```json\n(.*?)\n```", path.read_text(), re.S).group(1))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_dry_run_measures_every_method(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=880)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = (tmp_path / "gpu_check_tiny.log").read_text()
    if list((REPO / "gpu_wheels").glob("*.whl")):  # the offline install path, run here
        assert "installed offline from gpu_wheels" in log
        assert re.search(r"  trl 1\.16\.0  \(/\S+/site/trl/__init__\.py\)", log), log[:3000]
    results_file = tmp_path / "gpu_table7_tiny.md"
    runs = {r["method"]: r for r in _results(results_file)["runs"]}
    assert set(runs) == set(gpu_table7.METHODS)
    text = results_file.read_text()
    for method, r in runs.items():
        assert r["status"] == "ok", r
        assert r["steps"] == 3 and len(r["step_runs"]) == 2
        for key in ("peak_rss_delta", "step_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (method, key, r[key])
        assert re.search(rf"^\| {method} \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d{{3}} \|", text, re.M), method


def test_script_hides_what_the_gpu_machine_lacks():
    code = (
        "import importlib.util, sys; sys.path.insert(0, 'benchmarks'); import gpu_table7 as g\n"
        "g.hide_absent_packages()\n"
        "for name in ('polars', 'dagster', 'math_verify', 'vllm'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "for module in ('polars', 'rift_core.methods', 'rift_core.trainer'):\n"
        "    try:\n"
        "        __import__(module)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'{module} imported')\n"
        "import rift_core.losses, rift_core.prompts, rift_core.rift_trainer\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def _rows() -> list[dict]:
    rows = batch_rows(4, 100)
    return rows + [dict(rows[0]), {**rows[1], "reward": -1.0}]  # a repeated solution; another negative reward


@pytest.mark.parametrize("method", gpu_table7.METHODS)
def test_records_and_trainer_settings_match_rift_core(tiny_model, tmp_path, method):
    rows = _rows()
    record = methods.get(method)
    frame, _ = record.rows(pl.DataFrame(rows))
    expected = [record.record(r) for r in frame.iter_rows(named=True)]
    assert gpu_table7.records(method, rows) == expected

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    cfg = TrainConfig(method=method, model=str(tiny_model), output_dir=str(tmp_path / "out"), max_steps=3,
                      per_device_batch_size=4, global_batch_size=4, max_length=356, bf16=True)
    real = _build_trainer(cfg, record, AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer,
                          Dataset.from_list(expected), tmp_path / "real", [])
    copy = gpu_table7.build_trainer(method, AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, rows,
                                    str(tmp_path / "copy"), 3, 4, 356, bf16=True)
    a, b = real.args.to_dict(), copy.args.to_dict()
    allowed = {"output_dir", "save_strategy", "save_total_limit"}  # where the copy differs on purpose: it never saves
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} <= allowed
    assert copy.args.save_strategy == "no"
    assert real.train_dataset.to_list() == copy.train_dataset.to_list()
    assert type(real) is type(copy)


def test_wheel_pins_match_the_project():
    pins = dict(p.split("==") for p in re.search(r"WHEEL_PINS=\(([^)]*)\)", SCRIPT.read_text()).group(1).split())
    assert set(pins) == {"trl", "datasets", "dill", "multiprocess"}  # never torch or transformers: the machine's own
    project = dict(d.split("==") for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                   if "==" in d)
    assert pins["trl"] == project["trl"] and pins["datasets"] == project["datasets"]
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    for spec in requires("datasets"):  # the dill and multiprocess that datasets accepts
        req = Requirement(spec)
        if req.name in pins and not req.marker:
            assert req.specifier.contains(pins[req.name]), (req, pins[req.name])


def test_wheel_folder_if_prepared():
    folder = REPO / "gpu_wheels"
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        pytest.skip("no gpu_wheels/ here (make gpu-wheels)")
    assert all(w.name.endswith("-none-any.whl") for w in wheels)
    names = sorted(w.name.split("-")[0].lower() for w in wheels)
    assert names == ["datasets", "dill", "multiprocess", "trl"]
    assert sum(w.stat().st_size for w in wheels) < 16 * 2**20
