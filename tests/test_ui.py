"""The real web UI in headless Debian chromium (installed by `make browser`; never `playwright install`):
the lineage graph shows every asset in lineage order, and a materialisation launched from it succeeds.
Screenshots go to $RIFT_UI_SCREENSHOTS (default: the test's tmp dir)."""
import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from test_dagster_dev import PROFILE_NAME, RIFT_SEED_0, partition_tags

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LINEAGE = ["seed_problems", "base_model", "rollouts", "reward_labels", "buffer_stats"]
ASSETS = [*LINEAGE, "benchmarks", "checkpoints", "benchmark_scores", "round_rollouts", "round_labels", "round_checkpoint"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed (make browser)")]


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # playwright adds a fresh profile dir
        yield browser.new_page(viewport={"width": 1600, "height": 1000})
        browser.close()


def shots(tmp_path) -> Path:
    return Path(os.environ.get("RIFT_UI_SCREENSHOTS") or tmp_path)


def test_lineage_graph_shows_every_asset_in_order(dagster_dev, page, tmp_path):
    page.goto(dagster_dev.url + "/asset-groups", wait_until="networkidle")
    page.get_by_text("problems", exact=True).last.wait_for()
    page.keyboard.press("Alt+e")  # "Expand all groups" (the graph's settings menu); groups start collapsed
    page.get_by_text("seed_problems", exact=True).wait_for(timeout=15_000)
    page.screenshot(path=shots(tmp_path) / "lineage.png")
    boxes = {}
    for name in ASSETS:
        node = page.get_by_text(name, exact=True)
        assert node.count() == 1, f"{name} is not shown once in the lineage graph"
        boxes[name] = node.bounding_box()
    xs = [boxes[n]["x"] for n in LINEAGE]
    assert xs == sorted(xs), f"lineage not drawn left to right: {dict(zip(LINEAGE, xs))}"
    assert boxes["checkpoints"]["x"] > boxes["reward_labels"]["x"]
    assert boxes["benchmark_scores"]["x"] > boxes["checkpoints"]["x"]


def test_materialisation_launched_from_the_ui_succeeds(dagster_dev, page, tmp_path):
    page.goto(dagster_dev.url + "/assets/seed_problems", wait_until="networkidle")
    page.locator("button", has_text="Materialize").first.click()
    deadline, runs = time.time() + 120, []
    while time.time() < deadline:
        runs = dagster_dev.query("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert runs and runs[0]["status"] == "SUCCESS", runs
    page.reload(wait_until="networkidle")
    page.get_by_text("Latest materialization").wait_for()
    page.screenshot(path=shots(tmp_path) / "seed_problems.png")
    assert page.get_by_text("content_hash", exact=True).count() == 1  # the run's metadata is shown
    con = duckdb.connect(str(dagster_dev.data / PROFILE_NAME / "rift.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [runs[0]["runId"]]).fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM problems").fetchone()[0] > 0
    finally:
        con.close()


def test_the_loss_curve_is_an_image_in_the_checkpoints_metadata(dagster_dev, page, tmp_path):
    """A user opens checkpoints[rift] after training and sees the loss curve as a picture, not a table."""
    ensure(dagster_dev, BUFFER)
    ensure(dagster_dev, RIFT_CHECKPOINT)
    assert_metadata_image(page, dagster_dev.url + "/assets/checkpoints", "loss_curve", shots(tmp_path) / "loss_curve.png")


# (job, asset, partition tags) launched through the API where missing: what the UI tests build on
BUFFER = ("buffer_job", "reward_labels", None)
RIFT_CHECKPOINT = ("__ASSET_JOB", "checkpoints", RIFT_SEED_0)
RIFT_SCORES = ("__ASSET_JOB", "benchmark_scores", partition_tags(model="rift", seed="0"))
ROUND_1 = ("regeneration_job", "round_checkpoint", partition_tags(round="1"))


def materialised(dev, asset: str, partition: str | None = None) -> bool:
    out = dev.query("""query($k: AssetKeyInput!, $p: [String!]) { assetOrError(assetKey: $k) { ... on Asset {
        assetMaterializations(partitions: $p, limit: 1) { runId } } } }""",
                    {"k": {"path": [asset]}, "p": [partition] if partition else None})["assetOrError"]
    return bool(out and out.get("assetMaterializations"))


def ensure(dev, *launches) -> None:
    """Launch those of `launches` not materialised yet (test_dagster_dev.py may have run them), side by side, and
    wait until each has succeeded."""
    run_ids = [dev.launch(job, [asset] if job == "__ASSET_JOB" else None, tags=tags)
               for job, asset, tags in launches if not materialised(dev, asset, (tags or {}).get("dagster/partition"))]
    for run_id in run_ids:
        assert dev.wait(run_id) == "SUCCESS", (dev.home.parent / "dagster_dev.log").read_text()[-3000:]


def assert_metadata_image(page, url: str, entry: str, screenshot) -> None:
    """The asset page at `url` shows metadata entry `entry` (markdown with a data-URI PNG) as a decoded image."""
    page.goto(url, wait_until="networkidle")
    row = page.locator("tr", has_text=entry).first
    row.wait_for(timeout=30_000)
    row.get_by_text("[Show Markdown]").click()
    image = page.locator("img[src^='data:image/png']").first
    image.wait_for(timeout=15_000)
    page.wait_for_timeout(500)  # the dialog fades in
    page.screenshot(path=screenshot)
    width, height = image.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    assert width > 200 and height > 100  # a decoded PNG, not a broken image


# The `experiments` group on smoke (tests/ui_smoke.yaml: one collapse epoch, one sweep factor), from the UI. Every
# run through `dagster dev` here pays a run worker and Pipes children (~8 s of start-up each), and "Materialize all"
# on the group offers only a backfill of *all* partitions: ~40 runs, including partitions the profile does not
# select (they fail by design, `check_selected`). So: the unpartitioned assets the others read in one run
# ("Materialize selected" on the group's list), then collapse from its page and one partition (one the profile
# selects) of each partitioned asset from its launch dialog ("Launch 1 run"): six runs, two at a time (the test
# instance's two compute slots). round_scores scores a regeneration round: round 1 runs through the API first.
FIRST = ["validation_problems", "k_rollouts", "efficiency"]
PARTITIONS = {  # asset -> {dimension: key}, keys the profile selects
    "lr_sweep": {"lr_sweep": "rift"},
    "reward_scheme_scores": {"variant": "constant_-0.2", "seed": "0"},
    "k_scores": {"k": "2", "seed": "0"},
    "second_round_scores": {"source": "rift", "seed": "0"},
    "round_scores": {"round": "1"},
}


def run_ids(dev) -> set[str]:
    return {r["runId"] for r in dev.query("{ runsOrError { ... on Runs { results { runId } } } }")["runsOrError"]["results"]}


def wait_for_new_runs(dev, before: set[str], n: int, timeout: float = 600) -> list[dict]:
    """The runs launched since `before` once at least `n` exist and all have finished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [r for r in dev.query("""{ runsOrError { ... on Runs { results { runId status
            assetSelection { path } tags { key value } } } } }""")["runsOrError"]["results"] if r["runId"] not in before]
        if len(runs) >= n and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"runs launched from the UI did not finish in {timeout} s: {runs}")


def confirm_if_asked(page, done) -> None:
    """Dagster asks "Are you sure?" first when an upstream asset (or partition) was never materialised: confirm
    it, until `done()` (the launch dialog is open, or the run exists)."""
    confirm, deadline = page.get_by_role("button", name="Confirm"), time.time() + 30
    while not done():
        assert time.time() < deadline, "neither the launch nor Dagster's confirmation came"
        if confirm.is_visible():
            confirm.click()
        time.sleep(0.5)


def launch_one_partition(page, url: str, asset: str, keys: dict) -> None:
    """The asset's "Materialize…" dialog: pick one key per dimension, "Launch 1 run"."""
    page.goto(f"{url}/assets/{asset}", wait_until="networkidle")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    confirm_if_asked(page, dialog.is_visible)
    placeholder = page.get_by_text("Select a partition or create one")
    placeholder.first.wait_for()
    if len(keys) > 1:  # the dimensions in the order the dialog shows them; each pick removes its placeholder
        keys = dict(sorted(keys.items(), key=lambda kv: dialog.get_by_text(kv[0], exact=True).bounding_box()["y"]))
    for key in keys.values():
        placeholder.first.click()
        page.get_by_role("menuitem").filter(has=page.get_by_text(key, exact=True)).first.click()
        dialog.get_by_text("Launch runs to materialize").click()  # closes the menu (not "Partition selection": it folds)
    assert "1 partition" in dialog.inner_text()
    dialog.get_by_role("button", name="Launch 1 run").click()
    dialog.wait_for(state="hidden")


def group_assets(dev, group: str) -> set[str]:
    nodes = dev.query("""query($g: AssetGroupSelector!) { assetNodes(group: $g) { assetKey { path } } }""",
                      {"g": {"groupName": group, "repositoryName": "__repository__",
                             "repositoryLocationName": dev.location}})["assetNodes"]
    return {n["assetKey"]["path"][0] for n in nodes}


def add_round(dev, key: str) -> None:
    """The `round` partition `key`, as the regeneration schedule adds it."""
    out = dev.query("""mutation($r: RepositorySelector!, $k: String!) { addDynamicPartition(repositorySelector: $r,
        partitionsDefName: "round", partitionKey: $k) { __typename ... on PythonError { message } } }""",
                    {"r": {"repositoryName": "__repository__", "repositoryLocationName": dev.location}, "k": key})
    assert out["addDynamicPartition"]["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), out


def test_the_experiments_group_materialised_from_the_ui_shows_figure_1(dagster_dev, page, tmp_path):
    """A user materialises every asset of the `experiments` group from the UI (on the main graph's buffer,
    checkpoints[rift] and benchmark_scores[rift] at seed 0 and regeneration round 1, launched through the API)
    and opens `efficiency`: its runs succeed and Figure 1 is a picture in the metadata."""
    log = dagster_dev.home.parent / "dagster_dev.log"
    assert group_assets(dagster_dev, "experiments") == {*FIRST, "collapse", *PARTITIONS}
    add_round(dagster_dev, "1")
    ensure(dagster_dev, BUFFER)
    ensure(dagster_dev, RIFT_CHECKPOINT)
    ensure(dagster_dev, RIFT_SCORES, ROUND_1)

    # 1. what the others read: ticked in the group's list, "Materialize selected"
    before = run_ids(dagster_dev)
    page.goto(dagster_dev.url + "/locations/rift/asset-groups/experiments/list", wait_until="networkidle")
    for name in FIRST:
        page.locator("label").filter(has=page.get_by_test_id(f"checkbox-{name}")).click()
    page.get_by_role("button", name=f"Materialize selected ({len(FIRST)})").click()
    confirm_if_asked(page, lambda: run_ids(dagster_dev) - before)
    runs = wait_for_new_runs(dagster_dev, before, 1)
    assert [r["status"] for r in runs] == ["SUCCESS"], (runs, log.read_text()[-3000:])
    assert {a["path"][0] for a in runs[0]["assetSelection"]} == set(FIRST)

    # 2. collapse from its page, and one selected partition of each partitioned asset from its launch dialog
    before = run_ids(dagster_dev)
    page.goto(dagster_dev.url + "/assets/collapse", wait_until="networkidle")
    page.locator("button", has_text="Materialize").first.click()
    confirm_if_asked(page, lambda: run_ids(dagster_dev) - before)
    for asset, keys in PARTITIONS.items():
        launch_one_partition(page, dagster_dev.url, asset, keys)
    runs = wait_for_new_runs(dagster_dev, before, 1 + len(PARTITIONS))
    launched = {r["assetSelection"][0]["path"][0]: {t["key"]: t["value"] for t in r["tags"]} for r in runs}
    assert set(launched) == {"collapse", *PARTITIONS}
    for asset, keys in PARTITIONS.items():
        tags = launched[asset]
        assert (tags.get("dagster/partition") if len(keys) == 1 else
                {k: tags.get(f"dagster/partition/{k}") for k in keys}) == (
            next(iter(keys.values())) if len(keys) == 1 else keys), tags
    assert all(r["status"] == "SUCCESS" for r in runs), (runs, log.read_text()[-3000:])

    # 3. efficiency's page: Figure 1 behind the metadata's [Show Markdown]
    assert_metadata_image(page, dagster_dev.url + "/assets/efficiency", "figure1",
                          shots(tmp_path) / "efficiency_figure1.png")
