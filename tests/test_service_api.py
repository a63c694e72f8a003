"""The HTTP API in-process (httpx via TestClient): scoring, health, metrics, auth, limits, datasets,
experiment validation. No training starts here (``max_running_jobs=0``); test_service_training
trains through a real server process."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from service_support import TINY_CONFIG, finish_experiment, png_bytes, tiny_demo, zip_folder
from smokeseg.config.load import config_from_dict, load_config, resolve_paths
from smokeseg.data.rle import rle_decode
from smokeseg.service.app import create_app
from smokeseg.service.context import ServiceSettings
from smokeseg.service.jobs import JOB_CONFIG_NAME
from smokeseg.service.registry import QUEUED, Registry, experiments, metadata
from smokeseg.training import run


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    return tiny_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def model_dir(demo_folder: Path, tmp_path_factory) -> Path:
    """One epoch of a tiny model, trained in this process: a real checkpoint to score with."""
    raw = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "epochs": 1}}
    raw["dataset"] = {"train_dataframe": "train.pq", "data_folder": "images"}
    config = resolve_paths(config_from_dict(raw), demo_folder)
    out = tmp_path_factory.mktemp("model") / "run"
    run.train(config, out, progress=False)
    return out


def _client(workdir: Path, **settings) -> TestClient:
    settings.setdefault("max_running_jobs", 0)
    return TestClient(create_app(ServiceSettings(workdir=workdir, **settings)))


@pytest.fixture
def client(tmp_path: Path, model_dir: Path, demo_folder: Path):
    with _client(tmp_path / "work", model=model_dir, allowed_roots=(demo_folder.parent,)) as client:
        yield client


# --- scoring ------------------------------------------------------------------------------------------


def test_predict_multipart_gives_the_predict_fields_and_requested_images(client: TestClient):
    files = [
        ("files", ("a.png", png_bytes(48, 64, 0), "image/png")),
        ("files", ("b.jpg", png_bytes(40, 40, 1, "JPEG"), "image/jpeg")),
    ]
    response = client.post("/v1/predict", files=files, params={"images": ["masks", "overlays"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "default" and body["rle_order"] == "F"
    first, second = body["predictions"]
    assert (first["image_id"], first["height"], first["width"]) == ("a.png", 48, 64)
    assert second["image_id"] == "b.jpg"
    for field in (
        "smoke",
        "confidence",
        "smoke_fraction",
        "probability_max",
        "boxes",
        "rle_mask",
        "threshold",
    ):
        assert field in first
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(first["images"]["masks"]))))
    assert mask.shape == (48, 64)
    assert np.array_equal(mask > 127, rle_decode(first["rle_mask"], 48, 64, "F")), "mask PNG and RLE agree"
    overlay = Image.open(io.BytesIO(base64.b64decode(first["images"]["overlays"])))
    assert overlay.format == "JPEG" and overlay.size == (64, 48)


def test_predict_raw_body_and_threshold(client: TestClient):
    body = png_bytes(32, 32, 3)
    everything = client.post(
        "/v1/predict?threshold=0&name=cam1.png", content=body, headers={"Content-Type": "image/png"}
    )
    nothing = client.post("/v1/predict?threshold=1", content=body, headers={"Content-Type": "image/png"})
    assert everything.status_code == nothing.status_code == 200
    assert everything.json()["predictions"][0]["image_id"] == "cam1.png"
    assert everything.json()["predictions"][0]["smoke_fraction"] == 1.0
    assert nothing.json()["predictions"][0]["smoke_fraction"] == 0.0


def test_concurrent_requests_share_batches_and_metrics_count_them(client: TestClient):
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda seed: (
                    client.post(
                        "/v1/predict", content=png_bytes(seed=seed), headers={"Content-Type": "image/png"}
                    ).status_code
                ),
                range(24),
            )
        )
    assert codes == [200] * 24
    text = client.get("/metrics").text
    assert 'smokeseg_http_requests_total{method="POST",route="/v1/predict",status="200"} 24.0' in text
    assert "smokeseg_model_load_seconds_count 1.0" in text, "the model is loaded once"
    batches = _metric(text, "smokeseg_predict_batch_images_count")
    assert batches < 24, "images that arrive together go through the model together"
    assert _metric(text, "smokeseg_predict_queue_depth") == 0
    assert "smokeseg_http_request_seconds_bucket" in text


def test_an_image_the_decoder_chokes_on_fails_only_its_own_request(client: TestClient):
    bodies = [png_bytes(seed=seed) for seed in range(5)] + [png_bytes()[:300]]  # a truncated PNG

    def post(body: bytes) -> int:
        return client.post("/v1/predict", content=body, headers={"Content-Type": "image/png"}).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(post, bodies)) == [200] * 5 + [422]


def test_evicting_a_model_answers_what_it_accepted(tmp_path: Path, model_dir: Path, demo_folder: Path):
    """One model slot, two models asked for in turns: every request is answered, none hangs."""
    with _client(
        tmp_path, model=model_dir, model_cache_size=1, allowed_roots=(demo_folder.parent,)
    ) as client:
        dataset = client.post("/v1/datasets/import", json={"name": "d", "source": str(demo_folder)}).json()
        other = client.post("/v1/experiments", json={"name": "e", "dataset_id": dataset["id"]}).json()["id"]
        Registry.in_folder(tmp_path).update(experiments, other, status="succeeded", run_dir=str(model_dir))

        def post(index: int) -> int:
            model = "default" if index % 2 else other
            headers = {"Content-Type": "image/png"}
            return client.post(
                f"/v1/predict?model={model}", content=png_bytes(seed=index), headers=headers
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(post, range(16))) == [200] * 16
        assert _metric(client.get("/metrics").text, "smokeseg_model_load_seconds_count") >= 2
        assert len(client.get("/healthz").json()["models_loaded"]) == 1


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"content": b"not an image", "headers": {"Content-Type": "image/png"}}, 415, "not an image"),
        ({"content": b"", "headers": {"Content-Type": "image/png"}}, 415, "no image"),
        ({"json": {"image": "x"}}, 415, "multipart/form-data"),
        ({"content": png_bytes(image_format="GIF"), "headers": {"Content-Type": "image/gif"}}, 415, "GIF"),
        ({"content": png_bytes()[:300], "headers": {"Content-Type": "image/png"}}, 422, "truncated"),
        (
            {"content": png_bytes(), "headers": {"Content-Type": "image/png"}, "params": {"images": "x"}},
            422,
            "'masks', 'overlays' or 'probabilities'",
        ),
        (
            {"content": png_bytes(), "headers": {"Content-Type": "image/png"}, "params": {"threshold": 2}},
            422,
            "less than or equal",
        ),
        (
            {"content": png_bytes(), "headers": {"Content-Type": "image/png"}, "params": {"model": "nope"}},
            404,
            "No experiment",
        ),
    ],
)
def test_bad_predict_requests_are_4xx_with_a_reason(client: TestClient, request_kwargs, status, message):
    response = client.post("/v1/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.text
    assert client.get("/healthz").status_code == 200, "the server lives on"


def _blank_png(width: int, height: int) -> bytes:
    """Few bytes, many pixels: what a decompression bomb looks like."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decompression_bomb_and_size_limits(tmp_path: Path, model_dir: Path):
    with _client(
        tmp_path,
        model=model_dir,
        max_image_pixels=1_000_000,
        max_predict_bytes=600_000,
        max_upload_bytes=3_000_000,
    ) as client:
        over = client.post(
            "/v1/predict", content=_blank_png(2000, 1000), headers={"Content-Type": "image/png"}
        )
        assert (
            over.status_code == 413
            and "2000x1000 pixels, over this server's limit of 1 megapixels" in over.text
        )
        bomb = client.post(
            "/v1/predict", content=_blank_png(20000, 20000), headers={"Content-Type": "image/png"}
        )
        assert bomb.status_code == 413 and "too large to decode safely" in bomb.text
        big = client.post("/v1/predict", content=png_bytes(500, 500), headers={"Content-Type": "image/png"})
        assert big.status_code == 413 and "MB" in big.text
        huge = client.post("/v1/predict", content=b"x" * 3_100_000, headers={"Content-Type": "image/png"})
        assert huge.status_code == 413
        assert client.get("/v1/predict").status_code == 405


def test_too_many_files_in_one_request(tmp_path: Path, model_dir: Path):
    files = [("files", (f"{index}.png", png_bytes(seed=index))) for index in range(3)]
    with _client(tmp_path, model=model_dir, max_images_per_request=2) as client:
        response = client.post("/v1/predict", files=files)
    assert response.status_code == 400 and "Too many files" in response.text


def test_no_default_model_is_a_404_that_says_how(tmp_path: Path):
    with _client(tmp_path) as client:
        response = client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 404 and "--model" in response.text


def test_token_guards_every_call(tmp_path: Path, model_dir: Path):
    with _client(tmp_path, model=model_dir, token="s3cret") as client:
        for method, url in (
            ("GET", "/healthz"),
            ("GET", "/metrics"),
            ("GET", "/v1/datasets"),
            ("POST", "/v1/predict"),
        ):
            assert client.request(method, url).status_code == 401, url
        assert client.get("/v1/datasets", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/datasets", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/openapi.json").status_code == 200, "the schema itself holds no data"


def test_openapi_documents_the_api(client: TestClient):
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/predict",
        "/v1/datasets",
        "/v1/datasets/import",
        "/v1/experiments",
        "/v1/compare",
        "/v1/experiments/{experiment_id}/events",
        "/healthz",
        "/metrics",
    ):
        assert path in schema["paths"], path
    assert "ImageScore" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# --- datasets ---------------------------------------------------------------------------------------


def test_upload_demo_zip_then_list_show_delete(client: TestClient, demo_folder: Path, tmp_path: Path):
    archive = zip_folder(demo_folder, tmp_path / "demo.zip", inside="demo")
    with open(archive, "rb") as handle:
        response = client.post(
            "/v1/datasets", data={"name": "demo"}, files={"file": ("demo.zip", handle, "application/zip")}
        )
    assert response.status_code == 201, response.text
    dataset = response.json()
    train, test = dataset["summary"]["splits"]
    assert (train["name"], train["images"], train["with_masks"]) == ("train", 8, 8)
    assert test["images"] == 2 and train["common_sizes"] == [{"width": 64, "height": 64, "images": 8}]
    assert 0 < train["mean_smoke_fraction"] < 1 and dataset["summary"]["problems"] == []
    assert dataset["source"] == "upload:demo.zip"
    assert [row["id"] for row in client.get("/v1/datasets").json()] == [dataset["id"]]
    assert (
        client.get(f"/v1/datasets/{dataset['id']}")
        .json()["dataset_config"]["train_dataframe"]
        .endswith("train.pq")
    )
    duplicate = client.post(
        "/v1/datasets", data={"name": "demo"}, files={"file": ("demo.zip", archive.read_bytes())}
    )
    assert duplicate.status_code == 409
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 404


def test_upload_images_and_masks_zip_reports_problems(client: TestClient, toy_datasets, tmp_path: Path):
    folder = toy_datasets.folders("pairs", sub="")
    (folder / "masks" / "d.png").unlink()  # an image without a mask: listed as a problem
    archive = zip_folder(folder, tmp_path / "pairs.zip")
    response = client.post(
        "/v1/datasets", data={"name": "pairs"}, files={"file": ("pairs.zip", archive.read_bytes())}
    )
    assert response.status_code == 201, response.text
    summary = response.json()["summary"]
    assert (
        summary["splits"][0]["images"] == 3
        and len(summary["problems"]) == 1
        and "d.png" in summary["problems"][0]
    )


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("upload", "status", "message"),
    [
        (_zip_bytes({"../escape.txt": b"x"}), 422, "points outside"),
        (_zip_bytes({"/etc/evil.txt": b"x"}), 422, "points outside"),
        (b"plain text, not a zip", 415, "not a zip"),
        (_zip_bytes({"notes.txt": b"nothing to train on"}), 422, "no usable training image"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(
    client: TestClient, tmp_path: Path, upload, status, message
):
    response = client.post("/v1/datasets", data={"name": "bad"}, files={"file": ("x.zip", upload)})
    assert response.status_code == status, response.text
    assert message in response.text
    work = tmp_path / "work"
    assert not list((work / "datasets").glob("*")) if (work / "datasets").exists() else True
    assert not list((work / "uploads").glob("*"))
    assert client.get("/v1/datasets").json() == []


def test_zip_bomb_is_stopped_while_unpacking(tmp_path: Path):
    archive = _zip_bytes({"images/a.png": b"\0" * 5_000_000})  # compresses to a few kilobytes
    with _client(tmp_path, max_upload_bytes=1_000_000) as client:
        response = client.post("/v1/datasets", data={"name": "bomb"}, files={"file": ("b.zip", archive)})
    assert response.status_code == 413 and "unpacks to more than" in response.text


def test_missing_upload_fields_are_422(client: TestClient):
    assert client.post("/v1/datasets", data={"name": "x"}).status_code == 422
    assert (
        client.post("/v1/datasets", data={"name": "../x"}, files={"file": ("a.zip", b"PK")}).status_code
        == 422
    )


def test_server_path_import_is_confined_to_allowed_roots(
    client: TestClient, demo_folder: Path, tmp_path: Path
):
    allowed = client.post("/v1/datasets/import", json={"name": "local", "source": str(demo_folder)})
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["summary"]["splits"][0]["images"] == 8
    outside = client.post("/v1/datasets/import", json={"name": "etc", "source": "/etc"})
    assert outside.status_code == 403 and "outside the folders" in outside.text
    sneaky = client.post(
        "/v1/datasets/import", json={"name": "up", "source": f"{demo_folder}/../../../../etc"}
    )
    assert sneaky.status_code == 403
    missing = client.post("/v1/datasets/import", json={"name": "gone", "source": str(demo_folder / "nope")})
    assert missing.status_code == 422 and "does not exist" in missing.text
    scheme = client.post("/v1/datasets/import", json={"name": "ftp", "source": "ftp://host/x.zip"})
    assert scheme.status_code == 415 and "s3://" in scheme.text


def test_https_import_downloads_an_archive_and_hides_credentials(
    client: TestClient, demo_folder: Path, tmp_path: Path
):
    served = tmp_path / "served"
    served.mkdir()
    zip_folder(demo_folder, served / "demo.zip")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        url = f"http://user:pw@127.0.0.1:{port}/demo.zip"
        response = client.post("/v1/datasets/import", json={"name": "web", "source": url})
        missing = client.post(
            "/v1/datasets/import", json={"name": "web2", "source": f"http://127.0.0.1:{port}/no.zip"}
        )
        server.shutdown()
    closed = client.post(
        "/v1/datasets/import", json={"name": "web3", "source": f"https://u:pw@127.0.0.1:{port}/x.zip"}
    )
    assert closed.status_code == 422 and "Could not fetch https://127.0.0.1" in closed.text
    assert "pw" not in closed.text
    assert response.status_code == 201, response.text
    assert response.json()["source"] == f"http://127.0.0.1:{port}/demo.zip", "no password in the registry"
    assert missing.status_code == 422 and "404" in missing.text


# --- experiments (validation, queue states; training itself is in test_service_training) ------------


@pytest.fixture
def dataset_id(client: TestClient, demo_folder: Path) -> str:
    return client.post("/v1/datasets/import", json={"name": "demo", "source": str(demo_folder)}).json()["id"]


def test_experiment_config_errors_are_422_with_key_and_allowed_values(client: TestClient, dataset_id: str):
    def create(**body):
        return client.post("/v1/experiments", json={"name": "e", "dataset_id": dataset_id, **body})

    bad_value = create(config={"training": {"optimizer": "Adamw"}})
    assert (
        bad_value.status_code == 422
        and "training.optimizer" in bad_value.text
        and "'AdamW'" in bad_value.text
    )
    unknown = create(config_yaml="training:\n  epoch: 3\n")
    assert unknown.status_code == 422 and "Did you mean 'training.epochs'" in unknown.text
    assert create(config_yaml="training: [1").status_code == 422
    path = create(config={"dataset": {"data_folder": "/etc"}})
    assert path.status_code == 422 and "dataset.data_folder" in path.text
    size = create(config={"image": {"image_height": 100}})
    assert size.status_code == 422 and "use 96 or 128" in size.text
    assert client.post("/v1/experiments", json={"name": "e", "dataset_id": "nope"}).status_code == 404
    assert client.post("/v1/experiments", json={"dataset_id": dataset_id}).status_code == 422
    assert client.get("/v1/experiments").json() == []


def test_experiment_queue_cancel_delete_and_404s(client: TestClient, dataset_id: str, tmp_path: Path):
    created = client.post(
        "/v1/experiments", json={"name": "queued", "dataset_id": dataset_id, "config": TINY_CONFIG}
    )
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert experiment["status"] == QUEUED and experiment["metrics"] == {}
    detail = client.get(f"/v1/experiments/{experiment['id']}").json()
    assert "epochs: 2" in detail["config_yaml"] and detail["folds"] == [] and detail["report_url"] is None
    assert client.delete(f"/v1/experiments/{experiment['id']}").status_code == 409, "cancel first"
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 409, "an experiment uses it"
    assert client.get(f"/v1/experiments/{experiment['id']}/package").status_code == 404
    cancelled = client.post(f"/v1/experiments/{experiment['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/v1/experiments/{experiment['id']}/cancel").status_code == 409
    events = client.get(f"/v1/experiments/{experiment['id']}/events")
    assert "event: end" in events.text and "cancelled" in events.text
    assert client.get("/v1/compare", params={"ids": [experiment["id"]]}).status_code == 422
    assert client.get("/v1/compare", params={"ids": [experiment["id"], "nope"]}).status_code == 404
    assert client.delete(f"/v1/experiments/{experiment['id']}").status_code == 204
    for url in ("", "/report", "/package", "/events"):
        assert client.get(f"/v1/experiments/{experiment['id']}{url}").status_code == 404, url
    assert client.post(f"/v1/experiments/{experiment['id']}/cancel").status_code == 404


def test_an_experiment_starts_from_a_finished_one_by_id_never_by_path(
    client: TestClient, dataset_id: str, model_dir: Path, tmp_path: Path
):
    def create(name: str, init_from: str):
        architecture = {**TINY_CONFIG["architecture"], "init_from": init_from}
        return client.post(
            "/v1/experiments",
            json={
                "name": name,
                "dataset_id": dataset_id,
                "config": {**TINY_CONFIG, "architecture": architecture},
            },
        )

    source = client.post(
        "/v1/experiments", json={"name": "a", "dataset_id": dataset_id, "config": TINY_CONFIG}
    )
    source_id = source.json()["id"]
    queued = create("not-yet", f"experiment:{source_id}")
    assert queued.status_code == 422 and f"{source_id} (a)" in queued.text and "queued" in queued.text
    source_run = finish_experiment(client, source_id, model_dir)
    refused = {
        "experiment:nope": "no experiment with id 'nope'",
        str(source_run): "is not allowed",
        str(model_dir / "fold0" / "checkpoint.ckpt"): "is not allowed",
        "experiment:": "no experiment with id ''",
    }
    for init_from, message in refused.items():
        response = create("bad", init_from)
        assert response.status_code == 422, init_from
        detail = response.json()["detail"]
        assert "architecture.init_from" in detail and message in detail and "'experiment:<id>'" in detail
    empty = client.post(
        "/v1/experiments", json={"name": "e", "dataset_id": dataset_id, "config": TINY_CONFIG}
    )
    (tmp_path / "nothing").mkdir()
    finish_experiment(client, empty.json()["id"], tmp_path / "nothing")
    no_checkpoint = create("bad", f"experiment:{empty.json()['id']}")
    assert no_checkpoint.status_code == 422 and "holds no checkpoint.ckpt" in no_checkpoint.text

    created = create("b", f"experiment:{source_id}")
    assert created.status_code == 201, created.text
    detail = client.get(f"/v1/experiments/{created.json()['id']}").json()
    assert detail["started_from"] == source_id and f"init_from: {source_run}\n" in detail["config_yaml"]
    assert client.get(f"/v1/experiments/{source_id}").json()["started_from"] is None
    in_yaml = client.post(
        "/v1/experiments",
        json={
            "name": "c",
            "dataset_id": dataset_id,
            "config_yaml": f"architecture:\n  init_from: experiment:{source_id}\n",
        },
    )
    assert (
        in_yaml.status_code == 201
        and client.get(f"/v1/experiments/{in_yaml.json()['id']}").json()["started_from"]
    )

    # The job's config file trains from the source's first fold (one epoch here, in this process).
    job_config = Path(source_run).parent.parent / created.json()["id"] / JOB_CONFIG_NAME
    out = tmp_path / "b-run"
    run.train(load_config(job_config, ["training.epochs=1"]), out, progress=False)
    log = (out / "fold0" / "logs.log").read_text()
    assert f"init_from {source_run / 'fold0' / 'checkpoint.ckpt'}" in log

    # The source stays while an experiment that starts from it waits; after that it may go.
    assert client.delete(f"/v1/experiments/{source_id}").status_code == 409
    for experiment_id in (created.json()["id"], in_yaml.json()["id"]):
        client.post(f"/v1/experiments/{experiment_id}/cancel")
    assert client.delete(f"/v1/experiments/{source_id}").status_code == 204
    assert client.get(f"/v1/experiments/{created.json()['id']}").json()["started_from"] == source_id


def test_recover_marks_interrupted_jobs_failed_or_queues_them_to_resume(tmp_path: Path, demo_folder: Path):
    with _client(tmp_path, allowed_roots=(demo_folder.parent,)) as client:
        dataset = client.post("/v1/datasets/import", json={"name": "d", "source": str(demo_folder)}).json()
        ids = [
            client.post("/v1/experiments", json={"name": f"e{i}", "dataset_id": dataset["id"]}).json()["id"]
            for i in range(2)
        ]
    registry = Registry.in_folder(tmp_path)
    for experiment_id in ids:
        registry.update(experiments, experiment_id, status="running", pid=999_999_999)
    with _client(tmp_path):
        pass
    assert {row["status"] for row in registry.find(experiments)} == {"failed"}
    assert "--resume-jobs" in registry.get(experiments, ids[0])["error"]
    for experiment_id in ids:
        registry.update(experiments, experiment_id, status="running")
    with _client(tmp_path, resume_jobs=True):
        pass
    assert [(row["status"], row["resume"]) for row in registry.find(experiments)] == [(QUEUED, 1)] * 2


def test_registry_schema_is_portable_and_times_are_utc(tmp_path: Path, demo_folder: Path):
    """The tables compile for PostgreSQL (a team's server database); SQLite hands timestamps back in UTC."""
    dialect = postgresql.dialect()
    ddl = {table.name: str(CreateTable(table).compile(dialect=dialect)) for table in metadata.sorted_tables}
    assert "summary JSON" in ddl["datasets"] and "created_at TIMESTAMP WITH TIME ZONE" in ddl["experiments"]
    with _client(tmp_path, allowed_roots=(demo_folder.parent,)) as client:
        created = client.post("/v1/datasets/import", json={"name": "d", "source": str(demo_folder)}).json()
        listed = client.get("/v1/datasets").json()[0]
    assert created["created_at"].endswith("Z") and listed["created_at"] == created["created_at"]
