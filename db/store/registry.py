"""The surrogates registry: registration, activation (one active per family and
target, swapped in one transaction) and pruning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, delete, select, update

from hyperprior.db.entities import Surrogate, surrogate_key
from hyperprior.db.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from hyperprior.db.store.base import StoreBase, _chunks, _surrogates
from hyperprior.vocabulary import SURROGATE_STATUSES


def _to_surrogate(row: Row[Any]) -> Surrogate:
    m = row._mapping
    return Surrogate(
        id=m["id"],
        family=m["family"],
        created_at=m["created_at"],
        n_runs=m["n_runs"],
        metrics=dict(m["metrics"]),
        status=m["status"],
        meta=dict(m["meta"]),
        sha256=m["sha256"],
        model_text=m.get("model_text"),
        target=m["target"],
    )


class RegistryMixin(StoreBase):
    """The surrogates registry: one active surrogate per (family, target)."""

    # ------------------------------------------------------------------ surrogates

    _SURROGATE_INFO = [c for c in _surrogates.c if c.name != "model_text"]

    def add_surrogate(
        self,
        *,
        family: str,
        model_text: str,
        n_runs: int,
        metrics: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
        status: str = "candidate",
        target: str = "",
    ) -> Surrogate:
        """Register a fitted surrogate.

        Args:
            family: Model family it predicts for.
            target: What it predicts: ``""`` for the family's primary metric, else a
                metric name; activation is per (family, target).
            model_text: The model in LightGBM text format (never a pickle).
            n_runs: Number of runs it was trained on.
            metrics: Its grouped-CV quality.
            meta: Anything else needed to use it (feature names, encoders, versions).
            status: ``"candidate"`` (default), ``"active"`` (then the previous active
                one of the (family, target) is retired in the same transaction) or
                ``"retired"``.

        Returns:
            The stored surrogate, with ``model_text``.
        """
        if status not in SURROGATE_STATUSES:
            raise InvalidArgumentError(
                f"surrogate status must be one of {SURROGATE_STATUSES}, got {status!r}"
            )
        if not isinstance(target, str) or len(target) > 64:
            raise InvalidArgumentError(f"target must be a metric name, got {target!r}")
        row = {
            "family": family,
            "target": target,
            "created_at": self._clock(),
            "n_runs": int(n_runs),
            "metrics": dict(metrics),
            "status": "candidate" if status == "active" else status,
            "model_text": model_text,
            "meta": dict(meta or {}),
            "sha256": hashlib.sha256(model_text.encode()).hexdigest(),
        }

        def work(conn: Connection) -> Surrogate:
            new_id = conn.execute(
                _surrogates.insert().returning(_surrogates.c.id), row
            ).scalar_one()
            if status == "active":
                self._activate(conn, new_id, family, target)
            return _to_surrogate(
                conn.execute(select(_surrogates).where(_surrogates.c.id == new_id)).one()
            )

        return self._run(work, write=True)

    def list_surrogates(self, family: str | None = None) -> list[Surrogate]:
        """List surrogates (newest first) without their model text."""

        def work(conn: Connection) -> list[Surrogate]:
            stmt = select(*self._SURROGATE_INFO).order_by(_surrogates.c.id.desc())
            if family is not None:
                stmt = stmt.where(_surrogates.c.family == family)
            return [_to_surrogate(r) for r in conn.execute(stmt)]

        return self._run(work)

    def find_surrogate(self, surrogate_id: int) -> Surrogate | None:
        """Return the surrogate (with model text), or None."""

        def work(conn: Connection) -> Surrogate | None:
            row = conn.execute(select(_surrogates).where(_surrogates.c.id == surrogate_id)).first()
            return None if row is None else _to_surrogate(row)

        return self._run(work)

    def get_surrogate(self, surrogate_id: int) -> Surrogate:
        """Return the surrogate (with model text).

        Raises:
            NotFoundError: When there is none.
        """
        found = self.find_surrogate(surrogate_id)
        if found is None:
            raise NotFoundError(f"surrogate {surrogate_id} not found")
        return found

    def find_active_surrogate(self, family: str, target: str = "") -> Surrogate | None:
        """Return the active surrogate of a (family, target) (with model text), or None."""

        def work(conn: Connection) -> Surrogate | None:
            stmt = select(_surrogates).where(
                _surrogates.c.family == family,
                _surrogates.c.target == target,
                _surrogates.c.status == "active",
            )
            row = conn.execute(stmt).first()
            return None if row is None else _to_surrogate(row)

        return self._run(work)

    def active_surrogate_ids(self) -> dict[str, int]:
        """Return key -> id of each active surrogate; a cheap query for pollers.

        The key is the family for a primary-metric surrogate and ``family@target`` for
        another target (:func:`hyperprior.db.entities.surrogate_key`).
        """

        def work(conn: Connection) -> dict[str, int]:
            stmt = select(_surrogates.c.family, _surrogates.c.target, _surrogates.c.id).where(
                _surrogates.c.status == "active"
            )
            return {
                surrogate_key(str(family), str(target)): int(sid)
                for family, target, sid in conn.execute(stmt)
            }

        return self._run(work)

    def _activate(self, conn: Connection, surrogate_id: int, family: str, target: str) -> None:
        # Lock the family's rows so that concurrent activations queue up (PostgreSQL;
        # SQLite writers are serialized anyway). The partial unique index is the backstop.
        conn.execute(
            select(_surrogates.c.id)
            .where(_surrogates.c.family == family)
            .order_by(_surrogates.c.id)
            .with_for_update()
        ).all()
        conn.execute(
            update(_surrogates)
            .where(
                _surrogates.c.family == family,
                _surrogates.c.target == target,
                _surrogates.c.status == "active",
                _surrogates.c.id != surrogate_id,
            )
            .values(status="retired")
        )
        conn.execute(
            update(_surrogates).where(_surrogates.c.id == surrogate_id).values(status="active")
        )

    def activate_surrogate(self, surrogate_id: int) -> Surrogate:
        """Make a surrogate the active one of its (family, target), retiring the previous one.

        Both happen in one transaction: readers see either the old or the new active
        surrogate, never none or two.

        Raises:
            NotFoundError: When there is no such surrogate.
        """

        def work(conn: Connection) -> Surrogate:
            found = conn.execute(
                select(_surrogates.c.family, _surrogates.c.target).where(
                    _surrogates.c.id == surrogate_id
                )
            ).first()
            if found is None:
                raise NotFoundError(f"surrogate {surrogate_id} not found")
            self._activate(conn, surrogate_id, found.family, found.target)
            stmt = select(*self._SURROGATE_INFO).where(_surrogates.c.id == surrogate_id)
            return _to_surrogate(conn.execute(stmt).one())

        for attempt in range(3):
            try:
                return self._run(work, write=True)
            except AlreadyExistsError:
                # Lost a race with another activation on the unique index: redo.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def prune_retired_surrogates(self, family: str, target: str = "", *, keep: int) -> int:
        """Delete the retired surrogates of a (family, target) but the newest ``keep``.

        Newest is by registration (id). Active and candidate surrogates are never
        touched, nor those of other families or targets.

        Args:
            family: The model family.
            target: ``""`` for the primary metric, else the metric name.
            keep: How many retired ones to keep (0: delete them all).

        Returns:
            How many were deleted.

        Raises:
            InvalidArgumentError: When ``keep`` is negative.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise InvalidArgumentError(f"keep must be a count >= 0, got {keep!r}")

        def work(conn: Connection) -> int:
            retired = (
                (_surrogates.c.family == family)
                & (_surrogates.c.target == target)
                & (_surrogates.c.status == "retired")
            )
            kept = (
                select(_surrogates.c.id)
                .where(retired)
                .order_by(_surrogates.c.id.desc())
                .limit(keep)
                .scalar_subquery()
            )
            doomed = [
                int(i)
                for i in conn.execute(
                    select(_surrogates.c.id).where(retired, _surrogates.c.id.not_in(kept))
                ).scalars()
            ]
            deleted = 0
            for chunk in _chunks(doomed):
                # The status is checked again: a surrogate re-activated meanwhile stays.
                deleted += conn.execute(
                    delete(_surrogates).where(
                        _surrogates.c.id.in_(chunk), _surrogates.c.status == "retired"
                    )
                ).rowcount
            return deleted

        return self._run(work, write=True)
