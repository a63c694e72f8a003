"""The service's catalogue of datasets and experiments, in SQLAlchemy Core.

SQLAlchemy Core rather than the stdlib ``sqlite3``: the same tables and statements run on the embedded
SQLite file (the default, nothing to install) and on a team's PostgreSQL server, given its URL. Every
write is one transaction (``engine.begin()``). Only the catalogue lives here; the experiment folders
that training writes stay the source of truth for artefacts (checkpoints, charts, logs, metrics).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Connection

DATABASE_NAME = "smokeseg.db"

# Job states of an experiment; the last three are final.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that comes back in UTC from every database: SQLite keeps no time zone, PostgreSQL gives
    the session's (its server's ``timezone`` setting, say Europe/Berlin)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = MetaData()

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("source", Text, nullable=False),  # as given, with any credentials removed
    Column("path", Text, nullable=False),  # the imported files, under the work folder
    Column("dataset_config", JSON, nullable=False),  # the config's dataset section, paths absolute
    Column("summary", JSON, nullable=False),  # the `data check` report
    Column("created_at", UTCDateTime, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("dataset_id", String(32), ForeignKey("datasets.id"), nullable=False),
    Column("config_yaml", Text, nullable=False),  # the validated config the job trains on
    Column("run_dir", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("error", Text),
    Column("pid", Integer),  # the training process while running
    Column("resume", Integer, nullable=False, default=0),  # 1: the next start continues the run
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
)

# Session cookies signed out before they expired (service/auth.py), kept here so that a restart, or another
# server on the same database, still refuses them.
signed_out_sessions = Table(
    "signed_out_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the cookie, not the cookie itself
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Registry:
    """Row-level reads and transactional writes; rows come back as plain dicts."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    @classmethod
    def in_folder(cls, workdir: Path) -> Registry:
        return cls(f"sqlite:///{Path(workdir).resolve() / DATABASE_NAME}")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def insert(self, table: Table, **values: Any) -> dict[str, Any]:
        """Insert a row and return it whole, defaults included."""
        with self.transaction() as connection:
            connection.execute(table.insert().values(**values))
        return self.get(table, values["id"]) or {}

    def get(self, table: Table, row_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(table).where(table.c.id == row_id)).mappings().first()
        return dict(row) if row else None

    def find(self, table: Table, **equal: Any) -> list[dict[str, Any]]:
        query = select(table).order_by(table.c.created_at)
        for column, value in equal.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def update(self, table: Table, row_id: str, **values: Any) -> None:
        with self.transaction() as connection:
            connection.execute(table.update().where(table.c.id == row_id).values(**values))

    def transition(self, row_id: str, from_states: set[str], **values: Any) -> bool:
        """Update an experiment only while it is in one of ``from_states``: a cancel and a job's own end
        cannot overwrite each other."""
        with self.transaction() as connection:
            result = connection.execute(
                experiments.update()
                .where(experiments.c.id == row_id, experiments.c.status.in_(from_states))
                .values(**values)
            )
        return bool(result.rowcount)

    def delete(self, table: Table, row_id: str) -> None:
        with self.transaction() as connection:
            connection.execute(table.delete().where(table.c.id == row_id))

    def claim_next_job(self) -> dict[str, Any] | None:
        """Move the oldest queued experiment to running, in one transaction, and return it."""
        with self.transaction() as connection:
            row = (
                connection.execute(
                    select(experiments)
                    .where(experiments.c.status == QUEUED)
                    .order_by(experiments.c.created_at)
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            claimed = connection.execute(
                experiments.update()
                .where(experiments.c.id == row["id"], experiments.c.status == QUEUED)
                .values(status=RUNNING, started_at=now(), error=None)
            )
            return {**row, "status": RUNNING} if claimed.rowcount else None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL lets the API read while the job runner writes; foreign keys are off by default in SQLite."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
