"""`dagster dev` as a user starts it (`make ui`): a run launched through the GraphQL API succeeds and
its output lands in the SQL catalog. Also the harness that test_ui.py drives the web UI with."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("RIFT_TEST_PROFILE", str(Path(__file__).with_name("ui_smoke.yaml")))
PROFILE_NAME = Path(PROFILE).stem


def partition_tags(**keys: str) -> dict:
    """The tags the UI's launch dialog gives a run of one partition (`keys`: dimension -> key); a multi-partition's
    key joins its dimensions' keys in the order of their names."""
    if len(keys) == 1:
        return {"dagster/partition": next(iter(keys.values()))}
    return {"dagster/partition": "|".join(keys[d] for d in sorted(keys)),
            **{f"dagster/partition/{d}": k for d, k in keys.items()}}


RIFT_SEED_0 = partition_tags(method="rift", seed="0")  # checkpoints[rift, seed 0]
UNPARTITIONED = ["seed_problems", "base_model", "rollouts", "reward_labels", "buffer_stats", "benchmarks"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """A `dagster dev` process on 127.0.0.1 with its own DAGSTER_HOME (nux and telemetry off)."""

    def __init__(self, root: Path, profile: str = PROFILE, compute_slots: int = 1):
        self.home, self.data, self.profile = root / "dagster_home", root / "data", profile
        self.home.mkdir(parents=True)
        settings = yaml.safe_load((REPO / ".dagster_home" / "dagster.yaml").read_text())
        settings["concurrency"]["pools"]["default_limit"] = compute_slots
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(settings))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "RIFT_PROFILE": profile, "RIFT_DATA_DIR": str(self.data)}
        self.log = open(root / "dagster_dev.log", "w")
        self.proc = subprocess.Popen(
            [str(REPO / ".venv/bin/dagster"), "dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 120
        while True:
            try:
                if self.query("{ version }")["version"]:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dagster dev did not start; log: {(root / 'dagster_dev.log').read_text()[-3000:]}")
            time.sleep(1)
        self.location = self.query("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")[
            "workspaceOrError"]["locationEntries"][0]["name"]

    def query(self, q: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": q, "variables": variables or {}}).encode()
        req = urllib.request.Request(self.url + "/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.load(r)
        if out.get("errors"):
            raise RuntimeError(out["errors"])
        return out["data"]

    def launch(self, job: str, assets: list[str] | None = None, tags: dict | None = None) -> str:
        selector = {"repositoryLocationName": self.location, "repositoryName": "__repository__", "jobName": job}
        if assets:
            selector["assetSelection"] = [{"path": [a]} for a in assets]
        params = {"selector": selector, "runConfigData": {},
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
        out = self.query("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
            ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }""",
                         {"p": params})["launchRun"]
        assert out["__typename"] == "LaunchRunSuccess", out
        return out["run"]["runId"]

    def wait(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.query("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                                {"id": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        return "TIMEOUT"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # dagster dev and the webserver/daemon it started
            try:  # idle, it ends in ~2 s; after runs it can sit out a 30 s shutdown timeout: its home is a temp dir
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


@pytest.mark.slow
def test_run_launched_through_graphql_fills_the_sql_tables(dagster_dev):
    run_id = dagster_dev.launch("buffer_job")
    assert dagster_dev.wait(run_id) == "SUCCESS", (dagster_dev.home.parent / "dagster_dev.log").read_text()[-3000:]
    con = duckdb.connect(str(dagster_dev.data / PROFILE_NAME / "rift.duckdb"), read_only=True)
    try:
        n_problems = con.execute("SELECT count(*) FROM problems").fetchone()[0]
        k = con.execute("SELECT max(sample_idx) + 1 FROM rollouts").fetchone()[0]
        assert n_problems > 0 and k > 0
        assert con.execute("SELECT count(*) FROM labels").fetchone()[0] == n_problems * k
        assert con.execute("SELECT count(*) FROM benchmark_problems").fetchone()[0] > 0
        launched = {r[0] for r in con.execute("SELECT asset FROM runs WHERE run_id = ?", [run_id]).fetchall()}
        assert launched == set(UNPARTITIONED)
    finally:
        con.close()
    # sampling (a Pipes child) and labelling (the step's own workers) both report progress into the run's log
    messages = [e.get("message") or "" for e in run_events(dagster_dev, run_id)]
    total = n_problems * k
    assert any(m.startswith(f"generate: {total}/{total} (100%)") for m in messages), messages
    assert any(m.startswith(f"label: {total}/{total} (100%)") for m in messages), messages


def run_events(dev: "DagsterDev", run_id: str) -> list[dict]:
    return dev.query("""query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
        __typename ... on MessageEvent { message timestamp } ... on MaterializationEvent { partition
        metadataEntries { label } } } } } } }""", {"id": run_id})["runOrError"]["eventConnection"]["events"]


@pytest.mark.slow
def test_training_runs_out_of_process_and_speaks_pipes(dagster_dev):
    """checkpoints[rift] launched as a user would (a partitioned run from the UI/API): trained by a Pipes
    child that streams its progress into the run's log and reports its own metadata and checks."""
    run_id = dagster_dev.launch("__ASSET_JOB", ["checkpoints"], tags=RIFT_SEED_0)
    assert dagster_dev.wait(run_id) == "SUCCESS", (dagster_dev.home.parent / "dagster_dev.log").read_text()[-3000:]
    events = run_events(dagster_dev, run_id)
    messages = [e.get("message") or "" for e in events]
    assert any("-m rift_dagster.worker" in m for m in messages)
    progress = [i for i, m in enumerate(messages) if re.match(r"train: \d+/\d+ \(\d+%\)\s+loss", m)]
    (mat_index,) = [i for i, e in enumerate(events) if e["__typename"] == "MaterializationEvent"]
    assert progress and progress[0] < mat_index  # logged while training, before the result came back
    labels = {m["label"] for m in events[mat_index]["metadataEntries"]}
    assert events[mat_index]["partition"] == "rift|0"
    assert {"checkpoint_hash", "buffer_hash", "base_model_hash", "loss_curve", "run/final_loss"} <= labels
    assert (dagster_dev.data / PROFILE_NAME / "checkpoints" / "rift" / "seed=0" / "rift_run.json").exists()
    checks = dagster_dev.query("""query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
        __typename ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } } }""",
                               {"id": run_id})["runOrError"]["eventConnection"]["events"]
    passed = {e["evaluation"]["checkName"]: e["evaluation"]["success"] for e in checks if e.get("evaluation")}
    assert passed == {"loss_finite": True, "checkpoint_loadable": True}


@pytest.mark.slow
def test_no_step_runs_without_pipes_messages(dagster_dev):
    """Every Pipes step of the runs so far (rollouts, training) spoke Pipes: Dagster's warning for a silent
    child never appears."""
    runs = dagster_dev.query("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    assert len(runs) >= 2 and all(r["status"] == "SUCCESS" for r in runs)
    for run in runs:
        assert not any("did not receive any messages" in (e.get("message") or "")
                       for e in run_events(dagster_dev, run["runId"]))
