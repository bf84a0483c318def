"""A dataset is identified by (name, task, version) and its core shape, not by every meta-feature.

Before, the fingerprint hashed every meta-feature sent, so one dataset described twice
(with and without ``n_classes``, or by the SDK's richer ``describe``) became several
records. Upgrading merges the records of one (name, task) whose core shapes agree
(n_rows, n_features, and n_classes where both know it) into the oldest one: its
meta-features gain the ones it lacks and the runs of the others move to it. Records of
the same name with another shape are kept as versions 2, 3 ... No run is deleted.

The fingerprint becomes the sha256 of name, task, version, n_rows and n_features, and
each run's ``content_sha`` (which hashes its dataset's fingerprint) is recomputed, so
that re-sending a stored run stays a harmless duplicate.

Revision ID: 0005_dataset_identity
Revises: 0004_surrogate_target
Create Date: 2026-12-06
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005_dataset_identity"
down_revision: str | None = "0004_surrogate_target"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_datasets = sa.table(
    "datasets",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("task", sa.String),
    sa.column("version", sa.Integer),
    sa.column("fingerprint", sa.String),
    sa.column("n_rows", sa.BigInteger),
    sa.column("n_features", sa.Integer),
    sa.column("n_classes", sa.Integer),
    sa.column("meta_features", _JSON),
)
_runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("dataset_id", sa.Integer),
    sa.column("family", sa.String),
    sa.column("config", _JSON),
    sa.column("metric", sa.String),
    sa.column("direction", sa.String),
    sa.column("score", sa.Double),
    sa.column("fidelity", sa.Double),
    sa.column("cost_seconds", sa.Double),
    sa.column("status", sa.String),
    sa.column("error", sa.Text),
    sa.column("source", sa.String),
    sa.column("content_sha", sa.String),
)


# Frozen copies of the store's serialisations at this revision: a migration must not
# change when the application code does later.
def _canonical(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _new_fingerprint(row: Mapping[str, Any]) -> str:
    payload = {
        "name": row["name"],
        "task": row["task"],
        "version": int(row["version"]),
        "n_rows": int(row["n_rows"]),
        "n_features": int(row["n_features"]),
    }
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def _old_fingerprint(row: Mapping[str, Any]) -> str:
    meta = {
        key: None if value is None else float(f"{float(value):.10g}")
        for key, value in sorted(row["meta_features"].items())
    }
    payload = {"name": row["name"], "task": row["task"], "meta_features": meta}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def _content_sha(fingerprint: str, run: Mapping[str, Any]) -> str:
    body = repr(
        (
            run["family"],
            run["metric"],
            run["direction"],
            run["score"],
            float(run["fidelity"]),
            float(run["cost_seconds"]),
            run["status"],
            run["error"],
            run["source"],
        )
    )
    digest = hashlib.sha256(f"{body}\x00{_canonical(run['config'])}".encode()).digest()
    return hashlib.sha256(fingerprint.encode() + digest).hexdigest()


def _same_shape(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a["n_rows"] != b["n_rows"] or a["n_features"] != b["n_features"]:
        return False
    return a["n_classes"] is None or b["n_classes"] is None or a["n_classes"] == b["n_classes"]


def _merged_meta(kept: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    # As the store fills a matching record: values it lacks, never a null.
    merged = dict(kept)
    for key, value in other.items():
        if merged.get(key) is None and value is not None:
            merged[key] = value
    return merged


def _refingerprint(conn: sa.Connection, fingerprint: Callable[[Mapping[str, Any]], str]) -> None:
    rows = [dict(r._mapping) for r in conn.execute(sa.select(_datasets))]
    # Two passes through unique placeholders: a new fingerprint may equal another
    # record's old one while both are being rewritten.
    for row in rows:
        conn.execute(
            _datasets.update()
            .where(_datasets.c.id == row["id"])
            .values(fingerprint=f"tmp-{row['id']}")
        )
    fingerprints = {row["id"]: fingerprint(row) for row in rows}
    for id_, value in fingerprints.items():
        conn.execute(_datasets.update().where(_datasets.c.id == id_).values(fingerprint=value))
    # Read and write runs by dataset, so memory stays one dataset's runs.
    for id_, value in fingerprints.items():
        runs = conn.execute(sa.select(_runs).where(_runs.c.dataset_id == id_)).all()
        updates = [{"run_id": r.id, "sha": _content_sha(value, dict(r._mapping))} for r in runs]
        if updates:
            conn.execute(
                _runs.update()
                .where(_runs.c.id == sa.bindparam("run_id"))
                .values(content_sha=sa.bindparam("sha")),
                updates,
            )


def _merge_duplicates(conn: sa.Connection) -> None:
    rows = [dict(r._mapping) for r in conn.execute(sa.select(_datasets).order_by(_datasets.c.id))]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        row["meta_features"] = dict(row["meta_features"] or {})
        kept = groups.setdefault((row["name"], row["task"]), [])
        into = next((k for k in kept if _same_shape(k, row)), None)
        if into is None:
            row["version"] = len(kept) + 1
            kept.append(row)
            continue
        into["meta_features"] = _merged_meta(into["meta_features"], row["meta_features"])
        if into["n_classes"] is None:
            into["n_classes"] = row["n_classes"]
        into["changed"] = True
        conn.execute(
            _runs.update().where(_runs.c.dataset_id == row["id"]).values(dataset_id=into["id"])
        )
        conn.execute(_datasets.delete().where(_datasets.c.id == row["id"]))
    for kept in groups.values():
        for row in kept:
            if row.get("changed") or row["version"] != 1:
                conn.execute(
                    _datasets.update()
                    .where(_datasets.c.id == row["id"])
                    .values(
                        version=row["version"],
                        n_classes=row["n_classes"],
                        meta_features=row["meta_features"],
                    )
                )


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index: SQLite needs no table rebuild, which would
    # drop a table that runs reference while foreign keys are enforced.
    op.add_column(
        "datasets",
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.add_column("datasets", sa.Column("data_sha256", sa.String(length=64), nullable=True))
    if not context.is_offline_mode():  # offline SQL has no rows to rewrite
        conn = op.get_bind()
        _merge_duplicates(conn)
        _refingerprint(conn, _new_fingerprint)
    op.create_index(
        "uq_datasets_name_task_version", "datasets", ["name", "task", "version"], unique=True
    )


def downgrade() -> None:
    # Merged records stay merged (their runs are not split again); versions > 1 keep
    # their own rows, told apart by the old fingerprint over their meta-features (two
    # versions with equal meta-features, which only an explicit version of the same
    # description makes, stop the downgrade at the unique fingerprint).
    op.drop_index("uq_datasets_name_task_version", table_name="datasets")
    if not context.is_offline_mode():
        _refingerprint(op.get_bind(), _old_fingerprint)
    op.drop_column("datasets", "data_sha256")
    op.drop_column("datasets", "version")
