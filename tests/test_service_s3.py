"""Import from s3:// against a real S3-compatible server (moto's server mode) on loopback: a prefix with
per-import credentials through the API, a zip with the AWS_* variables through ``smokeseg data import``,
and the smoke-ht Hydrogen Torch layout. Credentials must reach neither the database nor the logs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service_support import free_port, tiny_demo, wait_for, zip_folder
from smokeseg.cli import app as cli_app
from smokeseg.service.app import create_app
from smokeseg.service.context import ServiceSettings
from smokeseg.service.registry import DATABASE_NAME, Registry, datasets

KEY, SECRET = "testing-key", "do-not-log-this-secret"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with a bucket holding the demo dataset as a prefix and as a zip."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(endpoint, server)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="smoke")
        demo = tiny_demo(tmp_path_factory.mktemp("demo"))
        for path in sorted(demo.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), "smoke", f"demo/{path.relative_to(demo).as_posix()}")
        client.upload_file(str(zip_folder(demo, demo.parent / "demo.zip")), "smoke", "archives/demo.zip")
        yield endpoint, client
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def test_prefix_import_with_per_import_credentials(s3, tmp_path: Path, caplog, monkeypatch):
    endpoint, _ = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    options = {"endpoint_url": endpoint, "access_key_id": KEY, "secret_access_key": SECRET}
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(ServiceSettings(workdir=tmp_path, max_running_jobs=0))) as client:
        response = client.post(
            "/v1/datasets/import", json={"name": "demo", "source": "s3://smoke/demo/", "s3": options}
        )
        missing = client.post(
            "/v1/datasets/import", json={"name": "x", "source": "s3://smoke/nothing/", "s3": options}
        )
        no_bucket = client.post(
            "/v1/datasets/import", json={"name": "y", "source": "s3://absent/demo/", "s3": options}
        )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["source"] == "s3://smoke/demo/"
    assert [split["images"] for split in dataset["summary"]["splits"]] == [8, 2]
    assert missing.status_code == 422 and "does not exist" in missing.text
    assert no_bucket.status_code == 422
    assert SECRET not in response.text and SECRET not in caplog.text
    assert SECRET.encode() not in (tmp_path / DATABASE_NAME).read_bytes()


def test_cli_imports_a_zip_with_the_aws_environment(s3, tmp_path: Path, monkeypatch):
    endpoint, _ = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    result = CliRunner().invoke(
        cli_app, ["data", "import", "s3://smoke/archives/demo.zip", "demo", "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "train: 8 images, 0 problems" in result.output
    (row,) = Registry.in_folder(tmp_path).find(datasets)
    assert row["name"] == "demo" and Path(row["dataset_config"]["train_dataframe"]).is_file()
    again = CliRunner().invoke(
        cli_app, ["data", "import", "s3://smoke/archives/demo.zip", "demo", "--workdir", str(tmp_path)]
    )
    assert again.exit_code != 0 and "exists already" in str(again.exception)


def test_smoke_ht_imports_from_s3(s3, smoke_ht_config_path: Path, tmp_path: Path, monkeypatch):
    endpoint, client = s3
    root = smoke_ht_config_path.parent
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "smoke", f"smoke-ht/{path.relative_to(root).as_posix()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with TestClient(create_app(ServiceSettings(workdir=tmp_path, max_running_jobs=0))) as api:
        response = api.post("/v1/datasets/import", json={"name": "smoke-ht", "source": "s3://smoke/smoke-ht"})
    assert response.status_code == 201, response.text
    train, test = response.json()["summary"]["splits"]
    assert (train["images"], test["images"]) == (64, 49), "the Hydrogen Torch YAML's tables and image folders"
    assert response.json()["dataset_config"]["data_folder"].endswith("gt_training")
