"""The service's catalogue on a real PostgreSQL server, as a team runs it (``--database-url``): a server
started on loopback by the test (Debian's ``postgresql`` package, installed by ``make setup-postgres``),
a training job queued, claimed and finished through ``smokeseg serve``, and the registry's guarantees
(foreign keys, guarded transitions, UTC timestamps) checked on PostgreSQL itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import IntegrityError

from service_support import TINY_CONFIG, free_port, start_server, tiny_demo, wait_status
from smokeseg.service.auth import SignedOutSessions
from smokeseg.service.registry import QUEUED, RUNNING, SUCCEEDED, Registry, datasets, experiments, now

SERVER_USER = "postgres"  # initdb refuses to run as root: Debian's package makes this user


def _postgres_programs() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or in Debian's versioned folder."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install 'psycopg[binary]' (in .[dev])")
    programs = _postgres_programs()
    if programs is None:
        pytest.skip("PostgreSQL is not installed: `make setup-postgres` (apt-get install postgresql) adds it")
    # Not under pytest's tmp folder: the server's user must reach its data folder, and that one is private.
    folder = Path(tempfile.mkdtemp(prefix="smokeseg-postgres-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        try:
            shutil.chown(folder, SERVER_USER)
        except LookupError:
            shutil.rmtree(folder)
            pytest.skip(f"initdb refuses root, and there is no {SERVER_USER!r} user to run it as")
        as_server_user = ["runuser", "-u", SERVER_USER, "--"]
    data, port = folder / "data", free_port()
    # A server in another time zone than UTC: timestamps must still come back in UTC.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c timezone=Europe/Berlin"
    control = [*as_server_user, str(programs / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*as_server_user, str(programs / "initdb"), "-D", str(data), "-A", "trust", "-U", "smokeseg"],
            check=True,
            capture_output=True,
        )
        subprocess.run([*control, "-o", options, "-l", str(folder / "log"), "-w", "start"], check=True)
        yield f"postgresql+psycopg://smokeseg@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*control, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_training_job_is_queued_claimed_and_finished_with_the_catalogue_on_postgresql(
    database_url: str, tmp_path: Path
):
    demo = tiny_demo(tmp_path / "demo")
    port = free_port()
    server = start_server(
        tmp_path / "work", port, "--database-url", database_url, "--allow-root", str(tmp_path)
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        dataset = client.post("/v1/datasets/import", json={"name": "demo", "source": str(demo)})
        assert dataset.status_code == 201, dataset.text
        created = client.post(
            "/v1/experiments", json={"name": "pg", "dataset_id": dataset.json()["id"], "config": TINY_CONFIG}
        )
        assert created.status_code == 201, created.text
        finished = wait_status(client, created.json()["id"], {"succeeded", "failed"})
        assert finished["status"] == "succeeded", finished
        assert 0 <= finished["metrics"]["fold0"]["validation_IoU"] <= 1
        assert finished["created_at"].endswith("Z") and dataset.json()["created_at"].endswith("Z")
        assert not (tmp_path / "work" / "smokeseg.db").exists(), "the catalogue is the server's, not SQLite"
    finally:
        server.terminate()
        server.wait(30)
    # The rows themselves, read back from PostgreSQL.
    row = Registry(database_url).get(experiments, created.json()["id"])
    assert row is not None and row["status"] == SUCCEEDED
    assert row["started_at"].tzinfo == timezone.utc and row["started_at"] <= row["finished_at"]


def test_postgresql_keeps_the_registry_guarantees(database_url: str):
    registry = Registry(database_url)
    with pytest.raises(IntegrityError):  # an experiment must name a dataset that exists
        registry.insert(experiments, **_experiment("orphan", dataset_id="nope"))
    dataset = registry.insert(
        datasets,
        id="guarantees",
        name="guarantees",
        source="/data",
        path="/data",
        dataset_config={"data_folder": "/data"},
        summary={"images": 0},
        created_at=now(),
    )
    first = registry.insert(experiments, **_experiment("first", dataset["id"]))
    registry.insert(experiments, **_experiment("second", dataset["id"]))
    claimed = registry.claim_next_job()
    assert claimed is not None and claimed["id"] == first["id"], "the oldest queued job first"
    assert not registry.transition(first["id"], {QUEUED}, status="cancelled"), "already running"
    assert registry.transition(first["id"], {RUNNING}, status=SUCCEEDED, finished_at=now())
    assert [row["status"] for row in registry.find(experiments, dataset_id=dataset["id"])] == [
        SUCCEEDED,
        QUEUED,
    ]
    assert dataset["created_at"].tzinfo == timezone.utc
    assert dataset["dataset_config"] == {"data_folder": "/data"}, "JSON columns round-trip"


def test_sign_outs_are_kept_and_forgotten_on_postgresql(database_url: str):
    """Signing a cookie out twice keeps one row (the second insert's conflict is swallowed), and expiry is
    compared in UTC although the server's time zone is Berlin's."""
    signed_out = SignedOutSessions(Registry(database_url))
    signed_out.sign_out("100.a.mac", expires=200.0, now=100.0)
    signed_out.sign_out("100.a.mac", expires=200.0, now=150.0)
    assert "100.a.mac" in signed_out and "100.b.mac" not in signed_out
    signed_out.sign_out("300.c.mac", expires=400.0, now=200.5)  # half a second past the first's expiry
    assert "100.a.mac" not in signed_out and "300.c.mac" in signed_out


def _experiment(name: str, dataset_id: str) -> dict:
    return {
        "id": name,
        "name": name,
        "dataset_id": dataset_id,
        "config_yaml": "",
        "run_dir": f"/runs/{name}",
        "status": QUEUED,
        "created_at": now(),
    }
