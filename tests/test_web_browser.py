"""The web pages in a real browser: Playwright driving Debian's chromium (headless) against a
``smokeseg serve`` process on loopback. One flow, as a first-time user does it: import the demo zip,
read the dataset page, get a validation message from the form, start a training and watch its charts
grow while it runs, open the gallery, clone it into a second run, compare the two, score an uploaded
image. Each page is screenshotted at 1280x800 and 390x844 into the test's tmp folder (and into
$SMOKESEG_SCREENSHOTS when set), with no console errors and no sideways scrolling on the phone.

Chromium comes from the system (``apt-get install -y chromium``, as the README and .ci/run do): browser
downloads are not possible here, so Playwright is pointed at it with ``executable_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from service_support import TINY_CONFIG, free_port, png_bytes, start_server, tiny_demo, zip_folder

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # as conftest.py finds it
EXPERIMENT_URL = re.compile(r".*/experiments/[0-9a-f]+$")
EPOCHS = 4  # enough validation points to see the charts grow while the run goes on
SIZES = {"laptop": (1280, 800), "phone": (390, 844)}
# Seconds-long runs: from-scratch ResNet18 at 64x64 on eight images; no workers, no ONNX package.
ADVANCED_YAML = """\
environment:
  number_of_workers: 0
  seed: 7
  mixed_precision_training: false
training:
  build_scoring_pipelines: false
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on PATH: `make setup-browser` (apt-get install -y chromium, as .ci/run does)")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """A folder of frames on the server, for the predict page's server-folder mode."""
    folder = tmp_path_factory.mktemp("frames")
    for seed in range(2):
        (folder / f"frame{seed}.png").write_bytes(png_bytes(64, 80, seed=seed))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, frames: Path):
    folder = tmp_path_factory.mktemp("web")
    port = free_port()
    # The server may read the frames folder and the shared datasets (the smoke-ht test), nothing else.
    roots = ["--allow-root", str(frames)]
    roots += ["--allow-root", str(SHARED_DATASETS)] if SHARED_DATASETS.is_dir() else []
    process = start_server(folder / "work", port, *roots, log=folder / "server.log")
    yield f"http://127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    process.wait(30)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("SMOKESEG_SCREENSHOTS"):
        folders.append(Path(os.environ["SMOKESEG_SCREENSHOTS"]))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


class Session:
    """A page that records console errors and takes each screenshot at both sizes."""

    def __init__(self, browser, base: str, shots: list[Path]) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base)
        self.errors: list[str] = []
        self.page = self.new_page()
        self.shots = shots

    def new_page(self):
        page = self.context.new_page()
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def shoot(self, name: str, page=None) -> None:
        page = page or self.page
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at {width}x{height}"
            for folder in self.shots:
                page.screenshot(path=str(folder / f"{name}-{size}.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})


def _false_alarm_filter_keeps_only_flagged_frames(session: Session, experiment_id: str, tiles: int) -> None:
    """The trained model may put a false region on every validation frame or on none, where the filter
    shows nothing; so the page is fed the real detail with one frame's count set and the rest cleared."""

    def one_false_alarm(route) -> None:
        response = route.fetch()
        detail = response.json()
        rows = [row for fold in detail["folds"] for row in fold["validation_predictions"]]
        for row in rows:
            row["false_regions"] = 0
        rows[-1]["false_regions"] = 2
        route.fulfill(response=response, json=detail)
        marked.append(rows[-1]["image_id"])

    marked: list[str] = []
    page = session.new_page()
    page.route(f"**/v1/experiments/{experiment_id}", one_false_alarm)
    page.goto(f"/experiments/{experiment_id}")
    sync_api.expect(page.locator("#gallery figure")).to_have_count(tiles)
    page.check("#false-alarms-only")
    sync_api.expect(page.locator("#gallery figure")).to_have_count(1)
    caption = page.locator("#gallery figcaption")
    sync_api.expect(caption).to_contain_text(marked[-1])
    sync_api.expect(caption).to_contain_text("2 false regions ·")
    page.close()


def _images_loaded(page, selector: str) -> int:
    return page.eval_on_selector_all(
        selector, "images => images.filter(i => i.complete && i.naturalWidth > 0).length"
    )


def _points(page, chart: str) -> int:
    return int(page.get_attribute(f'[data-chart="{chart}"] svg', "data-points") or 0)


def _wait_finished(base: str, experiment_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = httpx.get(f"{base}/v1/experiments/{experiment_id}", timeout=30).json()
        if row["status"] in {"succeeded", "failed", "cancelled"}:
            return row
        time.sleep(0.5)
    raise TimeoutError(f"{experiment_id} still {row['status']}")


def _fill_form(page, name: str, epochs: int, learning_rate: str | None = None) -> None:
    page.fill("#f-name", name)
    page.fill("#f-architecture-backbone", "resnet18")
    page.uncheck("#f-architecture-pretrained")
    page.fill("#f-image-image_height", "64")
    page.fill("#f-image-image_width", "64")
    page.fill("#f-training-epochs", str(epochs))
    page.fill("#f-training-batch_size", "4")
    if learning_rate:
        page.fill("#f-training-learning_rate", learning_rate)


def test_import_train_watch_compare_and_score(
    browser, server: str, shots: list[Path], frames: Path, tmp_path: Path
):
    session = Session(browser, server, shots)
    page = session.page
    archive = zip_folder(tiny_demo(tmp_path / "demo"), tmp_path / "demo.zip")

    # Datasets: upload the demo zip, land on its page with counts, histograms and mask tiles.
    page.goto("/datasets")
    session.shoot("01-datasets-empty")
    page.fill("#ds-name", "demo")
    page.set_input_files("#ds-file", str(archive))
    page.click("#import-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/datasets/[0-9a-f]+$"))
    sync_api.expect(page.locator("h1")).to_have_text("Dataset demo")
    page.wait_for_function("document.querySelectorAll('#dataset-grid img').length === 8")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#dataset-grid img')).every(i => i.complete && i.naturalWidth)"
    )
    assert page.locator(".bars li").count() >= 11  # one size bar + ten smoke-share bins
    session.shoot("02-dataset")
    dataset_id = page.url.rsplit("/", 1)[1]

    # New experiment: a bad image size is refused next to its field, by the config layer's message.
    page.goto(f"/experiments/new?dataset={dataset_id}")
    _fill_form(page, "first", epochs=EPOCHS)
    page.fill("#f-image-image_height", "100")
    page.click("details.advanced summary")  # closed while the template has nothing beyond the form
    page.fill("#f-yaml", ADVANCED_YAML)
    page.click("#start-training")
    error = page.locator("#f-image-image_height-error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_contain_text("divisible by 32")
    assert page.get_attribute("#f-image-image_height", "aria-invalid") == "true"
    session.shoot("03-new-experiment-validation")
    page.fill("#f-image-image_height", "64")
    page.click("#start-training")
    page.wait_for_url(EXPERIMENT_URL)
    first_id = page.url.rsplit("/", 1)[1]

    # Experiment page: the validation charts gain points while the run is still running.
    seen_running_with_points = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = page.get_attribute("#experiment", "data-status")
        points = (
            _points(page, "validation_loss")
            if page.locator('[data-chart="validation_loss"] svg').count()
            else 0
        )
        if status == "running" and 2 <= points < EPOCHS:  # grown at least once
            seen_running_with_points = True
            session.shoot("04-experiment-running")
            break
        if status in {"succeeded", "failed", "cancelled"}:
            break
        page.wait_for_timeout(200)
    assert seen_running_with_points, "the charts never showed points while the training ran"
    # Meanwhile, in another tab, the experiments table shows the run's progress.
    table = session.new_page()
    table.goto("/experiments")
    sync_api.expect(table.locator(f'tr[data-id="{first_id}"] .status')).to_contain_text(
        re.compile(r"running epoch \d/\d"), timeout=15_000
    )
    session.shoot("06-experiments-running", table)
    table.close()
    sync_api.expect(page.locator("#status")).to_have_text("succeeded", timeout=120_000)
    page.wait_for_function(
        f"+document.querySelector('[data-chart=\"validation_loss\"] svg').dataset.points === {EPOCHS}"
    )
    assert _points(page, "train_loss") >= EPOCHS and _points(page, "learning_rate") >= EPOCHS
    assert _points(page, "validation_IoU") == EPOCHS
    assert f"Training Epoch: {EPOCHS} / {EPOCHS}" in page.inner_text("#log")
    metrics = page.locator("#metrics-table")
    sync_api.expect(metrics).to_contain_text("Validation Dice, mean per image")  # readable metric names
    assert "validation_mean_image_Dice" not in metrics.inner_text()
    assert metrics.locator("th[title=validation_mean_image_Dice]").count() == 1
    sync_api.expect(page.locator("#downloads")).to_contain_text("Checkpoint, fold 0")
    # Gallery: truth vs prediction tiles, worst loss first, filtered by IoU.
    page.wait_for_function("document.querySelectorAll('#gallery img').length > 0")
    tiles = page.locator("#gallery figure").count()
    page.locator("#gallery").scroll_into_view_if_needed()  # the tiles load lazily
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete && i.naturalWidth)"
    )
    losses = [
        float(text.rsplit("loss ", 1)[1]) for text in page.locator("#gallery figcaption").all_inner_texts()
    ]
    assert losses == sorted(losses, reverse=True)
    page.fill("#iou-max", "0")
    page.dispatch_event("#iou-max", "input")
    assert page.locator("#gallery figure").count() <= tiles
    page.fill("#iou-max", "1")
    page.dispatch_event("#iou-max", "input")
    # Only the false alarms: as many tiles as validation images with a false region, each one saying so.
    detail = httpx.get(f"{server}/v1/experiments/{first_id}").json()
    false_alarms = sum(r["false_regions"] > 0 for f in detail["folds"] for r in f["validation_predictions"])
    page.check("#false-alarms-only")
    sync_api.expect(page.locator("#gallery figure")).to_have_count(min(false_alarms, 48))
    captions = page.locator("#gallery figcaption").all_inner_texts()
    assert all(re.search(r"\d+ false regions? ·", text) for text in captions), captions
    if not false_alarms:
        sync_api.expect(page.locator("#gallery")).to_contain_text("No image with a false region")
    page.uncheck("#false-alarms-only")
    sync_api.expect(page.locator("#gallery figure")).to_have_count(tiles)
    session.shoot("05-experiment-finished")
    _false_alarm_filter_keeps_only_flagged_frames(session, first_id, tiles)
    checkpoint = httpx.get(server + page.get_attribute("#downloads a:has-text('Checkpoint')", "href"))
    assert checkpoint.status_code == 200 and len(checkpoint.content) > 1000

    # Clone into a second run with another learning rate, starting from the first run's weights; it
    # trains while we look at the table.
    page.click("text=Clone into a new form")
    page.wait_for_url("**/experiments/new?from=*")
    assert page.input_value("#f-training-epochs") == str(EPOCHS)
    assert page.input_value("#f-architecture-init_from") == ""
    page.fill("#f-name", "second")
    page.fill("#f-training-epochs", "1")
    page.fill("#f-training-learning_rate", "0.01")
    page.select_option("#f-architecture-init_from", f"experiment:{first_id}")
    page.click("#start-training")
    page.wait_for_url(EXPERIMENT_URL)
    second_id = page.url.rsplit("/", 1)[1]
    sync_api.expect(page.locator("#started-from")).to_have_text("first")
    second = _wait_finished(server, second_id)
    assert second["status"] == "succeeded" and second["started_from"] == first_id
    log = "\n".join(second["folds"][0]["log"])
    assert re.search(rf"Starting weights: init_from \S*/{first_id}/run/fold0/checkpoint\.ckpt", log), log
    page.goto(f"/experiments/new?from={second_id}")  # a clone keeps where its source started
    assert page.input_value("#f-architecture-init_from") == f"experiment:{first_id}"

    page.goto("/experiments")
    sync_api.expect(page.locator("#experiments-table tbody tr")).to_have_count(2)
    sync_api.expect(page.locator(f'tr[data-id="{first_id}"] .status')).to_have_text("succeeded")
    session.shoot("07-experiments")
    page.check(f'tr[data-id="{first_id}"] input.pick')
    page.check(f'tr[data-id="{second_id}"] input.pick')
    page.click("#compare-selected")
    page.wait_for_url("**/compare?ids=*")
    sync_api.expect(page.locator("#compare-config-table")).to_contain_text("training.learning_rate")
    sync_api.expect(page.locator("#compare-metrics-table")).to_contain_text("fold 0 · Validation IoU")
    assert page.locator('[data-chart="validation_loss"] path.series').count() == 2
    session.shoot("08-compare")

    # Predict: upload an image, score it with the first run, see its overlay and verdict.
    image = tmp_path / "frame.png"
    image.write_bytes(png_bytes(96, 128, seed=3))
    page.goto(f"/predict?model={first_id}")
    page.set_input_files("#p-files", str(image))
    page.click("#score")
    result = page.locator("#results figure")
    sync_api.expect(result).to_have_count(1, timeout=60_000)
    verdict = result.locator(".verdict").inner_text()
    assert verdict == ("smoke" if result.get_attribute("data-smoke") == "true" else "no smoke")
    assert "confidence" in result.inner_text()
    assert _images_loaded(page, "#results img") == 1
    sync_api.expect(page.locator("#predictions-csv")).to_be_visible()
    session.shoot("09-predict")
    # A folder on the server: its images go to /v1/predict as uploads do.
    page.fill("#p-folder", str(frames))
    page.click("#score")
    sync_api.expect(page.locator("#results figcaption b")).to_have_text(["frame0.png", "frame1.png"])

    # The remaining pages, and the datasets list with one dataset in it.
    page.goto("/datasets")
    session.shoot("10-datasets")
    page.goto("/experiments/new")
    session.shoot("11-new-experiment")
    # Chromium logs the one refused config (the 422 the form asked for) as a failed resource; nothing else.
    expected = "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    assert session.errors == [expected], session.errors


def test_keyboard_reaches_the_form_and_submits(browser, server: str, shots: list[Path]):
    """Tab from the top of the page reaches every form control in order; Enter on the button submits,
    and the API's refusal of the empty name shows next to the name field."""
    session = Session(browser, server, shots)
    page = session.page
    page.goto("/experiments/new")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = []
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
        if reached[-1] == "start-training":
            break
    expected = ["f-name", "f-dataset", "f-architecture-pretrained", "f-training-epochs", "SUMMARY"]
    assert set(expected) <= set(reached), reached
    assert [name for name in reached if name in expected] == expected  # in reading order
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#f-name-error")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "f-name"  # focus moves to the first error
    assert all("status of 422" in error for error in session.errors), session.errors


def test_with_a_token_the_browser_signs_in_follows_a_run_and_signs_out(
    browser, shots: list[Path], tmp_path: Path
):
    """A server started with --token: the browser is sent to sign in, a wrong token is refused beside
    the field, the right one lands on the page asked for; the signed-in pages then import a dataset
    (a POST), stream a run's log (an EventSource, which cannot send a header) and cancel it; signing
    out sends the browser back to the sign-in page."""
    port, token = free_port(), "a-long-random-token"
    process = start_server(tmp_path / "work", port, "--token", token, log=tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        session = Session(browser, base, shots)
        page = session.page
        page.goto("/datasets")
        page.wait_for_url(re.compile(r".*/login\?next=%2Fdatasets$"))
        page.fill("#login-token", "wrong")
        page.click("#login-form button[type=submit]")
        sync_api.expect(page.locator("#login-error")).to_contain_text("not the token")
        assert page.get_attribute("#login-token", "aria-invalid") == "true"
        session.shoot("20-sign-in-refused")
        page.fill("#login-token", token)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/datasets$"))

        archive = zip_folder(tiny_demo(tmp_path / "demo"), tmp_path / "demo.zip")
        page.fill("#ds-name", "demo")
        page.set_input_files("#ds-file", str(archive))
        page.click("#import-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/datasets/[0-9a-f]+$"))
        page.wait_for_function("document.querySelectorAll('#dataset-grid img').length === 8")
        dataset_id = page.url.rsplit("/", 1)[1]

        # A script starts a long run with the bearer token; the signed-in page follows it live.
        config = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "epochs": 500}}
        created = httpx.post(
            f"{base}/v1/experiments",
            json={"name": "long", "dataset_id": dataset_id, "config": config},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
        page.goto(f"/experiments/{created.json()['id']}")
        page.wait_for_function("document.querySelector('#log').textContent.length > 0", timeout=60_000)
        sync_api.expect(page.locator("#live")).to_have_text("· live")
        page.click("#cancel")
        page.wait_for_function(
            "['cancelled', 'failed'].includes(document.querySelector('#experiment').dataset.status)",
            timeout=60_000,
        )
        assert page.get_attribute("#experiment", "data-status") == "cancelled"
        session.shoot("21-signed-in-run-cancelled")

        page.click("nav .nav-button")
        page.wait_for_url(re.compile(r".*/login$"))
        page.goto("/experiments")
        page.wait_for_url(re.compile(r".*/login\?next=%2Fexperiments$"))
        # Chromium logs the refused sign-in (401) as a failed resource; nothing else.
        assert all("status of 401" in error for error in session.errors), session.errors
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.mark.shared
def test_smoke_ht_imports_from_a_server_path(browser, server: str, shots: list[Path], smoke_ht_config_path):
    """The shared Hydrogen Torch dataset, imported by its path on the server, on its dataset page."""
    session = Session(browser, server, shots)
    page = session.page
    page.goto("/datasets")
    page.fill("#ds-name", "smoke-ht")
    page.check("input[name=kind][value=source]")
    page.fill("#ds-source", str(smoke_ht_config_path.parent))
    page.click("#import-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/datasets/[0-9a-f]+$"), timeout=120_000)
    counts = page.locator("table").first.inner_text()
    assert "train\t64" in counts and "test\t49" in counts, counts
    page.locator("#dataset-grid").scroll_into_view_if_needed()
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#dataset-grid img')).every(i => i.complete && i.naturalWidth)",
        timeout=60_000,
    )
    assert page.locator("#dataset-grid img").count() == 24
    session.shoot("12-dataset-smoke-ht")
    assert session.errors == [], session.errors


@pytest.mark.slow
@pytest.mark.shared
def test_smoke_ht_trains_from_the_form(browser, server: str, shots: list[Path], smoke_ht_config_path):
    """Two quick epochs on smoke-ht (20 s to a minute on 2 cores), then the gallery of real smoke."""
    imported = httpx.post(
        f"{server}/v1/datasets/import",
        json={"name": "smoke-ht-train", "source": str(smoke_ht_config_path.parent)},
        timeout=120,
    )
    assert imported.status_code == 201, imported.text
    session = Session(browser, server, shots)
    page = session.page
    page.goto(f"/datasets/{imported.json()['id']}")
    page.click("text=Train on this dataset")
    page.wait_for_url("**/experiments/new?dataset=*")
    _fill_form(page, "ht-r18", epochs=2)
    page.fill("#f-image-image_height", "128")
    page.fill("#f-image-image_width", "128")
    page.fill("#f-training-batch_size", "8")
    page.click("details.advanced summary")
    page.fill("#f-yaml", ADVANCED_YAML)
    page.click("#start-training")
    page.wait_for_url(EXPERIMENT_URL)
    sync_api.expect(page.locator("#status")).to_have_text("succeeded", timeout=150_000)
    sync_api.expect(page.locator("#test-table")).to_contain_text("fold0")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 13")
    page.locator("#gallery").scroll_into_view_if_needed()
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete && i.naturalWidth)",
        timeout=60_000,
    )
    session.shoot("13-experiment-smoke-ht")
    assert session.errors == [], session.errors
