"""The real web UI in headless Debian chromium (installed by `make browser`; never `playwright install`):
the lineage graph shows every asset in lineage order, and a materialisation launched from it succeeds.
Screenshots go to $RIFT_UI_SCREENSHOTS (default: the test's tmp dir)."""
import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from test_dagster_dev import PROFILE_NAME, dagster_dev  # noqa: F401  (the fixture)

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


def test_lineage_graph_shows_every_asset_in_order(dagster_dev, page, tmp_path):  # noqa: F811
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


def test_materialisation_launched_from_the_ui_succeeds(dagster_dev, page, tmp_path):  # noqa: F811
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


def test_the_loss_curve_is_an_image_in_the_checkpoints_metadata(dagster_dev, page, tmp_path):  # noqa: F811
    """A user opens checkpoints[rift] after training and sees the loss curve as a picture, not a table."""
    for job, assets, tags in (("buffer_job", None, None), ("__ASSET_JOB", ["checkpoints"], RIFT_SEED_0)):
        run_id = dagster_dev.launch(job, assets, tags=tags)
        assert dagster_dev.wait(run_id) == "SUCCESS", (dagster_dev.home.parent / "dagster_dev.log").read_text()[-3000:]
    page.goto(dagster_dev.url + "/assets/checkpoints", wait_until="networkidle")
    row = page.locator("tr", has_text="loss_curve").first
    row.wait_for(timeout=30_000)
    row.get_by_text("[Show Markdown]").click()
    image = page.locator("img[src^='data:image/png']").first
    image.wait_for(timeout=15_000)
    page.screenshot(path=shots(tmp_path) / "loss_curve.png")
    width, height = image.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    assert width > 200 and height > 100  # a decoded PNG, not a broken image
