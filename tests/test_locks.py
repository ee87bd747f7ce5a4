"""One writer per output (rift_core/locks.py): a second writer of the same output fails at once naming the holder,
or waits if asked; a holder killed with SIGKILL leaves no held lock, and its run resumes from its last checkpoint."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from rift_core import locks

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
torch.set_num_threads(1)  # tiny models; the machine is shared


def holder(target: Path, run_id: str | None = None, seconds: float = 60) -> subprocess.Popen:
    """Another process holding the lock on `target` for `seconds`; returns once it holds it."""
    code = ("import sys, time\nfrom rift_core.locks import hold\n"
            f"with hold({str(target)!r}, run_id={run_id!r}):\n    print('held', flush=True)\n    time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.01)
    return found


def test_a_second_writer_fails_at_once_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "checkpoints" / "rift"
    proc = holder(out, run_id="run-1234")
    try:
        start = time.monotonic()
        with pytest.raises(locks.OutputLocked) as refused:
            with locks.hold(out):
                pytest.fail("two writers held one output")
        assert time.monotonic() - start < 1.0  # at once, not after a timeout
        message = str(refused.value)
        assert str(out) in message and str(tmp_path / "checkpoints" / "rift.lock") in message
        assert "Dagster run run-1234" in message and f"pid {proc.pid}" in message and "wait_for_lock" in message
        assert not out.exists()  # the refused writer wrote nothing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    start = time.monotonic()
    with locks.hold(out) as lock:  # flock died with its holder: free at once, stale owner record or not
        assert time.monotonic() - start < 1.0 and lock == tmp_path / "checkpoints" / "rift.lock"
        record = json.loads(locks.owner_path(out).read_text())
        assert record["pid"] == os.getpid() and record["run_id"] is None
    assert not locks.owner_path(out).exists()


def test_wait_for_lock_queues_behind_the_holder(tmp_path):
    out = tmp_path / "rollouts.parquet"
    proc = holder(out, run_id="run-5678", seconds=1.0)
    try:
        lines, start = [], time.monotonic()
        with locks.hold(out, wait=True, log=lines.append, run_id="run-next"):
            assert time.monotonic() - start > 0.5  # it waited for the holder's second to end
            assert json.loads(locks.owner_path(out).read_text())["run_id"] == "run-next"
        assert len(lines) == 1 and "waiting for Dagster run run-5678" in lines[0] and str(out) in lines[0]
    finally:
        proc.kill()
        proc.wait()


def test_nested_holds_in_one_thread_are_one_hold_and_another_thread_is_another_writer(tmp_path):
    out = tmp_path / "eval"
    refused = []

    def other_thread():
        try:
            with locks.hold(out):
                pass
        except locks.OutputLocked as e:
            refused.append(e)

    with locks.hold(out):
        with locks.hold(out):  # the Pipes child and the rift_core function it calls both hold the output
            pass
        assert locks.owner_path(out).exists()  # the inner release left the outer hold alone
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(refused) == 1 and f"pid {os.getpid()}" in str(refused[0])
    with locks.hold(out):  # and once released, the next writer gets it
        pass


# ------------------------------------------------------------------------- real processes on one checkpoint


def buffer(n: int = 16) -> pl.DataFrame:
    """A labelled buffer in the labels frame's shape: even rows correct (+1), odd rows wrong (-0.2)."""
    return pl.DataFrame([{
        "problem_id": f"p{i}", "sample_idx": 0, "question": f"What is {i} + {i}?",
        "response": f"{i} + {i} = {2 * i + i % 2}. \\boxed{{{2 * i + i % 2}}}", "correct": i % 2 == 0,
        "reward": 1.0 if i % 2 == 0 else -0.2, "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}",
    } for i in range(n)])


def train_command(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rift_core", "train", "--method", "rift", "--model", str(model), "--data", str(data),
            "--output", str(out), "--global-batch-size", "8", "--per-device-batch-size", "4", "--max-steps", "4",
            "--learning_rate", "1e-3", "--max_length", "192", "--warmup-ratio", "0", *extra]


def tree(root: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.slow
def test_two_cli_runs_on_one_output_one_trains_the_other_is_refused_or_waits(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    data, out = tmp_path / "buffer.parquet", tmp_path / "ckpt"
    buffer().write_parquet(data)
    first = subprocess.Popen(train_command(tiny_model, data, out), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    waiter = None
    try:
        until(locks.owner_path(out).exists, 120, "owner record of the first run", first)
        first.send_signal(signal.SIGSTOP)  # frozen while it holds the lock: the second run surely overlaps it
        before = tree(tmp_path)
        waiter_log = tmp_path / "waiter.log"
        with open(waiter_log, "w") as log:
            waiter = subprocess.Popen(train_command(tiny_model, data, out, "--wait-for-lock"), cwd=REPO, env=ENV,
                                      stdout=subprocess.DEVNULL, stderr=log)
        second = subprocess.run(train_command(tiny_model, data, out), cwd=REPO, env=ENV, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode != 0
        error = second.stderr.strip().splitlines()[-1]
        assert error.startswith("rift_core.locks.OutputLocked: ") and str(out) in error
        assert f"lock {out}.lock" in error and f"pid {first.pid} on " in error and "--wait-for-lock" in error
        until(lambda: "waiting for" in waiter_log.read_text(), 120, "waiting line of the --wait-for-lock run", waiter)
        assert f"pid {first.pid}" in waiter_log.read_text()
        after = tree(tmp_path)
        after.pop(str(waiter_log))
        assert after == before  # neither the refused nor the waiting run wrote anything
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=120) == 0, first.stderr.read()[-3000:]
        assert waiter.wait(timeout=120) == 0, waiter_log.read_text()[-3000:]  # then trained after it
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    run = json.loads((out / "rift_run.json").read_text())
    assert run["steps"] == 4 and run["resumed_from"] is None
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0
    assert not Path(f"{out}.work").exists() and not locks.owner_path(out).exists()


# --------------------------------------------------------------------- a Dagster run killed mid-training

KILLED_RUN = """
import sys
from rift_dagster.demo import materialize_all
materialize_all(sys.argv[1], sys.argv[2], steps=[(["checkpoints"], [{"method": "rift", "seed": "0"}])],
                out_of_process=False)
"""


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_when_materialised_again_and_leaves_no_lock(tiny_model, tmp_path):
    import dagster as dg

    from rift_core.profiles import load_profile
    from rift_dagster.demo import materialize_all

    profile = tmp_path / "resume.yaml"  # smoke, checkpointing every 10 of 40 steps
    profile.write_text("extends: smoke\ntrain: {max_steps: 40, save_steps: 10, max_length: 192, warmup_ratio: 0}\n")
    data = tmp_path / "data"
    root = data / load_profile(str(profile)).name
    root.mkdir(parents=True)
    labels = buffer()
    labels.select("problem_id", "question", "solution", answer=pl.lit("0")).write_parquet(root / "problems.parquet")
    labels.write_parquet(root / "labels.parquet")
    (root / "base_model.json").write_text(json.dumps({"path": str(tiny_model), "hash": "tiny"}))
    out = root / "checkpoints" / "rift" / "seed=0"

    start = time.monotonic()
    killed = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(profile), str(data)], cwd=REPO, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        saved = until(lambda: sorted(Path(f"{out}.work").glob("checkpoint-*/trainer_state.json")), 180,
                      "first checkpoint", killed)
        killed.send_signal(signal.SIGKILL)  # the run's process, which trains (in-process Pipes client)
        killed.wait()
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
    print(f"killed run: {time.monotonic() - start:.1f} s")
    assert not out.exists()
    record = json.loads(locks.owner_path(out).read_text())  # left behind by the killed holder
    assert record["pid"] == killed.pid and record["run_id"]  # the run id came down from the Pipes context

    start = time.monotonic()
    with dg.instance_for_test() as instance:
        result, = materialize_all(str(profile), str(data), instance,
                                  steps=[(["checkpoints"], [{"method": "rift", "seed": "0"}])], out_of_process=False)
    print(f"rematerialised: {time.monotonic() - start:.1f} s")
    assert result.success
    run = json.loads((out / "rift_run.json").read_text())
    assert run["resumed_from"] == str(saved[0].parent) and run["steps"] == 40
    start = time.monotonic()
    with locks.hold(out):  # a third writer gets it at once: no stale lock
        assert time.monotonic() - start < 1.0
