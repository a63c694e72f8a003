"""The web pages in-process (TestClient, no browser, no training): each page renders from the registry,
the experiment form's fields come from the config schema, templates fill it, and the /ui data routes
(dataset tiles, downloads) answer or 404 clearly; one ``smokeseg serve`` process checks that the sign-in
options reach the server. The browser flow is in test_web_browser.py."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from service_support import TINY_CONFIG, finish_experiment, free_port, start_server, tiny_demo, zip_folder
from smokeseg.config.schema import AugmentationConfig, TrainingConfig
from smokeseg.service import pages as page_module
from smokeseg.service.app import create_app
from smokeseg.service.auth import SESSION_COOKIE, SignedOutSessions, SignInThrottle, session_value
from smokeseg.service.context import ServiceSettings
from smokeseg.service.pages import FORM_FIELDS, form_fields
from smokeseg.service.registry import Registry, datasets


@pytest.fixture(scope="module")
def demo_zip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    return zip_folder(tiny_demo(folder), folder / "demo.zip")


@pytest.fixture
def client(tmp_path: Path):
    # No job runs (max_running_jobs=0): the pages are read while experiments wait in the queue.
    app = create_app(ServiceSettings(workdir=tmp_path / "work", max_running_jobs=0))
    with TestClient(app) as client:
        yield client


def _dataset(client: TestClient, demo_zip: Path) -> dict:
    response = client.post("/v1/datasets", data={"name": "demo"}, files={"file": demo_zip.read_bytes()})
    assert response.status_code == 201, response.text
    return response.json()


def test_every_page_renders_with_navigation_and_static_files(client: TestClient, demo_zip: Path):
    dataset = _dataset(client, demo_zip)
    created = client.post(
        "/v1/experiments", json={"name": "a", "dataset_id": dataset["id"], "config": TINY_CONFIG}
    ).json()
    pages = [
        "/datasets",
        f"/datasets/{dataset['id']}",
        "/experiments",
        "/experiments/new",
        f"/experiments/{created['id']}",
        f"/compare?ids={created['id']}&ids={created['id']}",
        "/predict",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:500])
        assert 'lang="en"' in response.text and '<nav aria-label="Main">' in response.text
        assert 'aria-current="page"' in response.text, url
    assert client.get("/", follow_redirects=False).headers["location"] == "/experiments"
    for name in ("app.css", "app.js", "chart.js"):
        assert client.get(f"/static/{name}").status_code == 200
    # Pages stay out of the API's schema.
    assert not any(
        path.startswith(("/datasets", "/ui")) for path in client.get("/openapi.json").json()["paths"]
    )


def test_dataset_page_shows_counts_histograms_and_mask_tiles(client: TestClient, demo_zip: Path):
    dataset = _dataset(client, demo_zip)
    page = client.get(f"/datasets/{dataset['id']}").text
    assert "Smoke share per image" in page and "64\u00d764" in page
    assert "None: every image and mask decoded." in page
    tiles = re.findall(rf"/ui/datasets/{dataset['id']}/grid/(\d+)\.jpg", page)
    assert len(tiles) == 8
    tile = client.get(f"/ui/datasets/{dataset['id']}/grid/0.jpg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert client.get(f"/ui/datasets/{dataset['id']}/grid/99.jpg").status_code == 404
    missing = client.get("/datasets/nope")
    assert missing.status_code == 404 and "No dataset with id nope." in missing.text
    assert missing.headers["content-type"].startswith("text/html")


def test_a_dataset_with_extra_frames_lists_each_table_by_name(client: TestClient, tmp_path: Path):
    """The dataset's YAML names frames that only train: the import checks them as their own split, and the
    list still reads the test count from the test table, not from whichever table comes second."""
    folder = tiny_demo(tmp_path / "demo")
    train = pd.read_parquet(folder / "train.pq")
    train.iloc[:5].to_parquet(folder / "train.pq", index=False)
    train.iloc[5:].to_parquet(folder / "extra.pq", index=False)
    config = yaml.safe_load((folder / "smoke_demo.yaml").read_text())
    config["dataset"]["extra_train_dataframe"] = "extra.pq"
    (folder / "smoke_demo.yaml").write_text(yaml.safe_dump(config))
    archive = zip_folder(folder, tmp_path / "demo.zip")
    dataset = _dataset(client, archive)
    splits = {split["name"]: split["images"] for split in dataset["summary"]["splits"]}
    assert splits == {"train": 5, "extra": 3, "test": 2}
    listed = re.search(r"<tbody>(.*?)</tbody>", client.get("/datasets").text, re.S).group(1)
    assert re.findall(r'<td class="num">(\d+)</td>', listed)[:2] == ["5", "2"], "train, then test images"
    page = client.get(f"/datasets/{dataset['id']}").text
    assert '<th scope="row">extra</th><td class="num">3</td>' in page


def _histogram(page: str) -> list[int]:
    bars = re.search(r'<ul class="bars" aria-label="Smoke share histogram">(.*?)</ul>', page, re.S).group(1)
    return [int(count) for count in re.findall(r'<span class="bar-value">(\d+)</span>', bars)]


def test_smoke_share_histogram_comes_from_the_import(client: TestClient, demo_zip: Path, monkeypatch):
    dataset = _dataset(client, demo_zip)
    stored = dataset["summary"]["splits"][0]["smoke_share_histogram"]
    assert len(stored) == 10 and sum(stored) == 8
    # Stored at import: the page decodes no image for it.
    with monkeypatch.context() as patch:
        patch.setattr(
            page_module, "_smoke_fractions", lambda *_: pytest.fail("decoded images for the histogram")
        )
        page = client.get(f"/datasets/{dataset['id']}").text
    assert _histogram(page) == stored and "8 image(s) with masks)" in page
    # A dataset imported before the summary kept it: measured on the page, the same counts.
    registry = client.app.state.service.registry
    summary = registry.get(datasets, dataset["id"])["summary"]
    del summary["splits"][0]["smoke_share_histogram"]
    registry.update(datasets, dataset["id"], summary=summary)
    assert (
        client.get(f"/v1/datasets/{dataset['id']}").json()["summary"]["splits"][0]["smoke_share_histogram"]
        is None
    )
    assert _histogram(client.get(f"/datasets/{dataset['id']}").text) == stored


def test_form_fields_come_from_the_schema():
    fields = {(field["section"], field["key"]): field for field in form_fields({})}
    assert list(fields) == list(FORM_FIELDS)
    strategy = fields[("augmentation", "augmentations_strategy")]
    assert strategy["choices"] == ["None", "Soft", "Medium", "Hard", "Custom"]
    assert strategy["default"] == AugmentationConfig().augmentations_strategy
    assert strategy["description"] == AugmentationConfig.model_fields["augmentations_strategy"].description
    epochs = fields[("training", "epochs")]
    assert epochs["kind"] == "int" and epochs["bounds"] == {"ge": 1}
    assert epochs["default"] == TrainingConfig().epochs
    assert fields[("training", "learning_rate")]["bounds"] == {"gt": 0}
    assert fields[("dataset", "validation_strategy")]["choices"] == ["kfold", "custom", "automatic"]
    assert fields[("dataset", "folds")]["kind"] == "list" and fields[("dataset", "folds")]["value"] == "0"
    assert fields[("architecture", "pretrained")]["kind"] == "bool"


def test_new_experiment_form_fills_from_a_clone_or_a_recipe(client: TestClient, demo_zip: Path):
    dataset = _dataset(client, demo_zip)
    config = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "learning_rate": 0.0123}}
    config["prediction"] = {"probability_threshold": 0.4}
    created = client.post(
        "/v1/experiments", json={"name": "first", "dataset_id": dataset["id"], "config": config}
    ).json()
    page = client.get(f"/experiments/new?from={created['id']}").text
    assert 'value="0.0123"' in page and 'value="first-2"' in page
    assert f'<option value="{dataset["id"]}" selected>' in page
    # Everything the form does not show is in the YAML editor, without the server's paths.
    editor = re.search(r'<textarea id="f-yaml"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    assert "probability_threshold: 0.4" in editor and "train_dataframe" not in editor
    assert not re.search(r"^experiment_name:|^  learning_rate:", editor, re.M)
    recipe = client.get("/experiments/new?template=recipe%3Dfast").text
    assert 'value="fast"' in recipe and "efficientnet_lite0" in recipe
    assert "data_folder" not in re.search(r'<textarea id="f-yaml"[^>]*>(.*?)</textarea>', recipe, re.S).group(
        1
    )
    assert client.get("/experiments/new?recipe=nope").status_code == 404
    assert client.get("/experiments/new?from=nope").status_code == 404


def test_start_from_lists_finished_experiments_and_a_clone_keeps_its_choice(
    client: TestClient, demo_zip: Path, tmp_path: Path
):
    dataset = _dataset(client, demo_zip)

    def create(name: str, **architecture: str) -> str:
        config = {**TINY_CONFIG, "architecture": {**TINY_CONFIG["architecture"], **architecture}}
        response = client.post(
            "/v1/experiments", json={"name": name, "dataset_id": dataset["id"], "config": config}
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    run = tmp_path / "trained"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0" / "checkpoint.ckpt").write_bytes(b"")  # the form only looks for the file
    (run / "metrics.json").write_text(json.dumps({"fold0": {"validation_IoU": 0.25}}))
    finished = create("finished")
    create("still-queued")
    finish_experiment(client, finished, run)
    form = client.get("/experiments/new").text
    select = re.search(r'<select id="f-architecture-init_from".*?</select>', form, re.S).group(0)
    assert '<option value="">ImageNet / none</option>' in select and "still-queued" not in select
    assert f'<option value="experiment:{finished}">finished · demo · validation IoU 0.2500</option>' in select
    started = create("started", init_from=f"experiment:{finished}")
    clone = client.get(f"/experiments/new?from={started}").text
    assert f'<option value="experiment:{finished}" selected>' in clone
    assert (
        f'<option value="experiment:{finished}" selected>'
        not in client.get(f"/experiments/new?from={finished}").text
    )
    page = client.get(f"/experiments/{started}").text
    assert f'started from <a href="/experiments/{finished}" id="started-from">finished</a>' in page
    assert "started from" not in client.get(f"/experiments/{finished}").text


def test_ui_data_routes_404_before_training(client: TestClient, demo_zip: Path):
    dataset = _dataset(client, demo_zip)
    created = client.post(
        "/v1/experiments", json={"name": "q", "dataset_id": dataset["id"], "config": TINY_CONFIG}
    ).json()
    base = f"/ui/experiments/{created['id']}"
    config = client.get(f"{base}/config.yaml")
    assert config.status_code == 200 and "experiment_name: q" in config.text
    assert client.get(f"{base}/files").json() == {}
    assert client.get(f"{base}/files/0/checkpoint").status_code == 404
    assert client.get(f"{base}/gallery/0/x.png").status_code == 404
    assert client.get("/ui/experiments/nope/config.yaml").status_code == 404


def test_server_images_only_below_the_allowed_roots(tmp_path: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.png").write_bytes(b"\x89PNG not really")
    (frames / "notes.txt").write_text("not an image")
    settings = ServiceSettings(workdir=tmp_path / "work", max_running_jobs=0, allowed_roots=(frames,))
    with TestClient(create_app(settings)) as client:
        listing = client.get("/ui/server-images", params={"folder": str(frames)}).json()
        assert listing == {"folder": str(frames.resolve()), "images": ["a.png"], "total": 1}
        assert client.get("/ui/server-images/file", params={"path": str(frames / "a.png")}).status_code == 200
        assert (
            client.get("/ui/server-images/file", params={"path": str(frames / "notes.txt")}).status_code
            == 404
        )
        outside = client.get("/ui/server-images", params={"folder": str(tmp_path)})
        assert outside.status_code == 403 and "--allow-root" not in outside.json()["detail"]
        escape = client.get("/ui/server-images/file", params={"path": str(frames / ".." / "work")})
        assert escape.status_code == 403


def test_with_a_token_a_browser_signs_in_once_and_the_cookie_opens_pages_and_api(
    tmp_path: Path, demo_zip: Path
):
    """--token: pages send the browser to /login (the API and /ui answer 401), the right token sets an
    HttpOnly SameSite=Strict cookie that is not the token and opens pages and API; a change made with the
    cookie must come from the server's own origin; signing out closes it all again."""
    settings = ServiceSettings(workdir=tmp_path / "work", max_running_jobs=0, token="s3cret")
    with TestClient(create_app(settings)) as client:
        for url in ("/experiments", "/datasets?x=1", "/predict"):
            response = client.get(url, follow_redirects=False)
            assert response.status_code == 303, url
            assert response.headers["location"] == "/login?" + urlencode({"next": url})
        assert client.get("/ui/experiments/x/files").status_code == 401
        assert client.get("/v1/datasets").status_code == 401
        assert client.get("/static/app.js").status_code == 200  # holds no data
        assert client.get("/experiments", headers={"Authorization": "Bearer s3cret"}).status_code == 200

        login = client.get("/login", params={"next": "/datasets"})
        assert login.status_code == 200 and 'type="password"' in login.text and "Sign out" not in login.text
        wrong = client.post("/login", data={"token": "guess", "next": "/datasets"}, follow_redirects=False)
        assert wrong.status_code == 401 and "not the token" in wrong.text and not client.cookies

        signed = client.post("/login", data={"token": "s3cret", "next": "/datasets"}, follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/datasets"
        cookie = signed.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and "s3cret" not in cookie
        page = client.get("/datasets")
        assert page.status_code == 200 and "Sign out" in page.text
        assert client.get("/v1/datasets").status_code == 200

        upload = {"data": {"name": "demo"}, "files": {"file": demo_zip.read_bytes()}}
        assert client.post("/v1/datasets", **upload).status_code == 403  # no Origin: not from a page
        foreign = client.post("/v1/datasets", headers={"Origin": "http://127.0.0.1:9999"}, **upload)
        assert foreign.status_code == 403 and "Bearer" in foreign.json()["detail"]
        assert client.get("/v1/datasets").json() == []
        own = client.post("/v1/datasets", headers={"Origin": "http://testserver"}, **upload)
        assert own.status_code == 201, own.text

        copied = client.cookies[SESSION_COOKIE]
        client.post("/logout")
        assert not client.cookies
        assert client.get("/datasets", follow_redirects=False).status_code == 303
        assert client.get("/v1/datasets").status_code == 401
        signed_out = client.get("/v1/datasets", headers={"Cookie": f"{SESSION_COOKIE}={copied}"})
        assert signed_out.status_code == 401, "a copy of the cookie must not outlive the sign-out"


def test_a_sign_out_ends_only_its_own_session_and_outlives_a_restart(tmp_path: Path):
    """Two browsers signed in within one second hold different cookies, so signing one out leaves the
    other open; the sign-out is kept in the registry, so the same server started again still refuses it."""
    settings = ServiceSettings(workdir=tmp_path / "work", max_running_jobs=0, token="s3cret")

    def opens(client: TestClient, cookie: str) -> bool:
        return client.get("/v1/datasets", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}).status_code == 200

    app = create_app(settings)
    second = TestClient(app)  # the same server (its lifespan runs once, with the first)
    with TestClient(app) as first:
        cookies = []
        for browser in (first, second):
            browser.post("/login", data={"token": "s3cret"})
            cookies.append(browser.cookies[SESSION_COOKIE])
        assert cookies[0] != cookies[1]
        first.post("/logout")
        assert not opens(second, cookies[0]) and opens(second, cookies[1])
    with TestClient(create_app(settings)) as restarted:
        assert not opens(restarted, cookies[0]), "the restart forgot the sign-out"
        assert opens(restarted, cookies[1])


def test_a_session_cookie_expires_and_its_time_cannot_be_changed(tmp_path: Path):
    """The cookie holds its issue time under the HMAC: past --session-hours, or with the time edited to
    look younger, it opens nothing; a fresh one does."""
    settings = ServiceSettings(
        workdir=tmp_path / "work", max_running_jobs=0, token="s3cret", session_hours=12
    )
    now = int(time.time())
    with TestClient(create_app(settings)) as client:
        client.post("/login", data={"token": "s3cret"})
        issued, nonce, mac = client.cookies[SESSION_COOKIE].split(".")
        assert abs(int(issued) - now) <= 5 and client.get("/v1/datasets").status_code == 200

        client.cookies.clear()  # each check below sends its own cookie header, as a browser could

        def opens(cookie: str) -> bool:
            header = f"{SESSION_COOKIE}={cookie}".encode("latin-1")  # what a header can carry
            return client.get("/v1/datasets", headers={"Cookie": header}).status_code == 200

        assert opens(session_value("s3cret", now - 11 * 3600, nonce))
        assert not opens(session_value("s3cret", now - 13 * 3600, nonce)), "older than the session lifetime"
        assert not opens(f"{now - 60}.{nonce}.{mac}"), "an edited issue time no longer matches its HMAC"
        assert not opens(session_value("other", now, nonce)), "signed with another token"
        assert not opens(session_value("s3cret", now + 3600, nonce)), "issued in the future"
        for garbage in ("", "abc", "\u00b2.abc", "9" * 5000 + ".abc", f".{mac}", f"{issued}.{mac}"):
            assert not opens(garbage)
        old = f"{SESSION_COOKIE}={session_value('s3cret', now - 13 * 3600, nonce)}"
        expired = client.get("/datasets", headers={"Cookie": old}, follow_redirects=False)
        assert expired.status_code == 303 and expired.headers["location"].startswith("/login")


def test_wrong_tokens_are_throttled_per_client_address(tmp_path: Path):
    """After sign_in_attempts wrong tokens (bearer or form) an address gets 429 with Retry-After, the right
    token included; requests without a token are not guesses; other addresses are not held up."""
    settings = ServiceSettings(
        workdir=tmp_path / "work", max_running_jobs=0, token="s3cret", sign_in_attempts=3
    )
    app = create_app(settings)
    other = TestClient(app, client=("10.0.0.2", 1000))  # the same server (its lifespan runs once, below)
    with TestClient(app, client=("10.0.0.1", 1000)) as guesser:
        for _ in range(5):
            assert guesser.get("/v1/datasets").status_code == 401  # no token: not counted
        for guess in ("a", "b"):
            assert (
                guesser.get("/v1/datasets", headers={"Authorization": f"Bearer {guess}"}).status_code == 401
            )
        assert guesser.post("/login", data={"token": "c"}).status_code == 401
        held = guesser.get("/v1/datasets", headers={"Authorization": "Bearer s3cret"})
        assert held.status_code == 429 and 0 < int(held.headers["retry-after"]) <= 60
        form = guesser.post("/login", data={"token": "s3cret"}, follow_redirects=False)
        assert form.status_code == 429 and "Too many wrong tokens" in form.text and not guesser.cookies
        assert other.get("/v1/datasets", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serve_takes_the_sign_in_attempts_from_its_command_line(tmp_path: Path):
    port = free_port()
    server = start_server(tmp_path / "work", port, "--token", "s3cret", "--sign-in-attempts", "2")
    try:
        url = f"http://127.0.0.1:{port}/v1/datasets"
        statuses = [
            httpx.get(url, headers={"Authorization": f"Bearer {guess}"}).status_code
            for guess in ("a", "b", "s3cret")
        ]
        assert statuses == [401, 401, 429]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_signed_out_sessions_are_forgotten_once_they_would_have_expired(tmp_path: Path):
    signed_out = SignedOutSessions(Registry.in_folder(tmp_path))
    signed_out.sign_out("100.aa", expires=200.0, now=100.0)
    signed_out.sign_out("100.aa", expires=200.0, now=150.0)  # signed out twice: still one row, no error
    assert "100.aa" in signed_out and "100.bb" not in signed_out
    signed_out.sign_out("300.cc", expires=400.0, now=300.0)  # the first has expired by now: dropped
    assert "100.aa" not in signed_out and "300.cc" in signed_out


def test_the_throttle_lets_an_address_try_again_once_its_failures_age_out():
    throttle = SignInThrottle(attempts=2, window_s=1.0, max_clients=2)  # a busy runner's stall stays inside
    throttle.record_failure("a")
    assert throttle.retry_after("a") is None
    throttle.record_failure("a")
    assert throttle.retry_after("a") == 1  # rounded up to whole seconds
    time.sleep(1.05)
    assert throttle.retry_after("a") is None
    for client in ("b", "c", "d"):  # remembering more addresses than max_clients forgets the oldest
        throttle.record_failure(client)
    assert len(throttle._failures) <= 2 and "d" in throttle._failures


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", ""])
def test_signing_in_never_redirects_off_the_server(tmp_path: Path, target: str):
    settings = ServiceSettings(workdir=tmp_path / "work", max_running_jobs=0, token="s3cret")
    with TestClient(create_app(settings)) as client:
        response = client.post("/login", data={"token": "s3cret", "next": target}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/experiments"


def test_without_a_token_there_is_nothing_to_sign_in_to(client: TestClient):
    response = client.get("/login", params={"next": "/predict"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/predict"
    assert "Sign out" not in client.get("/experiments").text
