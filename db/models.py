"""SQLAlchemy ORM classes (``Sql*``) for the run history.

The ORM classes are private to ``db/``: the store hands out frozen value objects
(see ``hyperprior.db.entities``), never these rows. Every constraint is named through the
metadata naming convention so Alembic migrations behave the same on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The allowed values of the CHECK constraints are the vocabulary's, re-exported here.
from hyperprior.vocabulary import (
    DIRECTIONS,
    JOB_KINDS,
    JOB_STATUSES,
    RUN_SOURCES,
    RUN_STATUSES,
    SURROGATE_STATUSES,
    TASKS,
)

__all__ = [
    "DIRECTIONS",
    "JOB_KINDS",
    "JOB_STATUSES",
    "JSONType",
    "RUN_SOURCES",
    "RUN_STATUSES",
    "SURROGATE_STATUSES",
    "TASKS",
    "Base",
    "SqlApiKey",
    "SqlDataset",
    "SqlFamily",
    "SqlJob",
    "SqlLock",
    "SqlRun",
    "SqlSurrogate",
    "UtcDateTime",
    "metadata",
    "utcnow",
]


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# JSON on SQLite (text), JSONB on PostgreSQL (indexable, compact, deduplicated keys).
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are
    stored as naive UTC (which also keeps their text form sortable) and come back
    as aware UTC datetimes. Naive inputs are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        else:
            value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the shared, naming-convention metadata."""

    metadata = metadata
    type_annotation_map = {
        dt.datetime: UtcDateTime(),
        dict[str, Any]: JSONType,
    }


class SqlDataset(Base):
    """A dataset: one record per (name, task, version), identified by its fingerprint.

    The fingerprint hashes name, task, version, n_rows and n_features (see
    ``hyperprior.db.store.datasets``); other meta-features are merged into the record.
    """

    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint(_in("task", TASKS), name="task"),
        # One record per name, task and version: other data under a taken name is a new version.
        Index("uq_datasets_name_task_version", "name", "task", "version", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    # sha256 of the data itself when the client sent one (the SDK's describe does).
    data_sha256: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(16))
    n_rows: Mapped[int] = mapped_column(BigInteger)
    n_features: Mapped[int] = mapped_column(Integer)
    n_classes: Mapped[int | None] = mapped_column(Integer)
    meta_features: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class SqlRun(Base):
    """One training run: a config of a family evaluated on a dataset at a fidelity.

    The primary key is the client-supplied UUID (as text), which makes ingestion
    idempotent; ``content_sha`` tells a harmless retry from a conflicting reuse.
    The indexes on ``dataset_id``, ``family`` and ``source`` end with
    ``(created_at, id)``, the listing order, so that a filtered page is read in
    order from the index instead of sorting every matching run.
    """

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("direction", DIRECTIONS), name="direction"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(_in("source", RUN_SOURCES), name="source"),
        CheckConstraint("fidelity > 0 AND fidelity <= 1", name="fidelity"),
        CheckConstraint("cost_seconds >= 0", name="cost_seconds"),
        CheckConstraint("score IS NOT NULL OR status = 'failed'", name="score"),
        Index("ix_runs_created_at_id", "created_at", "id"),
        Index("ix_runs_dataset_id_created_at_id", "dataset_id", "created_at", "id"),
        Index("ix_runs_family_created_at_id", "family", "created_at", "id"),
        Index("ix_runs_family_dataset_id", "family", "dataset_id"),
        Index("ix_runs_source_created_at_id", "source", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    family: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    score: Mapped[float | None] = mapped_column(Double())
    fidelity: Mapped[float] = mapped_column(Double())
    cost_seconds: Mapped[float] = mapped_column(Double())
    status: Mapped[str] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    content_sha: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Every metric measured besides the primary score; NULL when none was sent.
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSONType, nullable=True)


class SqlSurrogate(Base):
    """A fitted surrogate model (LightGBM text) and its registry status."""

    __tablename__ = "surrogates"
    __table_args__ = (
        CheckConstraint(_in("status", SURROGATE_STATUSES), name="status"),
        Index("ix_surrogates_family_status", "family", "status"),
        # At most one active surrogate per (family, target), enforced by the database.
        Index(
            "uq_surrogates_family_target_active",
            "family",
            "target",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    family: Mapped[str] = mapped_column(String(64))
    # What it predicts: '' for the family's primary metric of each task, else a metric
    # name from the runs' metrics map (log_loss, f1_macro, rmse ...).
    target: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    n_runs: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    model_text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType)
    sha256: Mapped[str] = mapped_column(String(64))


class SqlApiKey(Base):
    """An API key; only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class SqlJob(Base):
    """A background job (refine, retrain, bootstrap) and its progress."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType)
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class SqlLock(Base):
    """A named lease (e.g. the retrain lock) held by one owner until it expires."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class SqlFamily(Base):
    """A model family a user declared (``POST /v1/families``): its space, no estimator.

    ``params`` and ``defaults`` are the declaration's JSON, exactly as given;
    ``spec_sha256`` hashes them so that declaring the same space again is a no-op and
    another space under a taken name is a conflict.
    """

    __tablename__ = "families"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    params: Mapped[list[Any]] = mapped_column(JSONType)
    defaults: Mapped[dict[str, Any]] = mapped_column(JSONType)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
