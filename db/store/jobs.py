"""Background jobs (queue, transitions, heartbeats, stale-job failure) and the named
leases that keep one scheduler or worker on a task.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, delete, func, or_, select, update

from hyperprior.db.entities import Job
from hyperprior.db.errors import InvalidArgumentError, InvalidStateError, NotFoundError
from hyperprior.db.store.base import StoreBase, _jobs, _locks, _uuid
from hyperprior.vocabulary import JOB_KINDS, JOB_STATUSES

_JOB_TRANSITIONS = {
    "queued": {"queued", "running", "succeeded", "failed", "cancelled"},
    "running": {"running", "succeeded", "failed", "cancelled"},
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
}
# Final statuses are those a job cannot leave.
_FINAL_JOB_STATUSES = tuple(s for s, allowed in _JOB_TRANSITIONS.items() if not allowed)


def _to_job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=uuid.UUID(m["id"]),
        kind=m["kind"],
        status=m["status"],
        progress=dict(m["progress"]),
        request=dict(m["request"]),
        result=None if m["result"] is None else dict(m["result"]),
        error=m["error"],
        owner=m["owner_key_id"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        heartbeat_at=m["heartbeat_at"],
    )


class JobsMixin(StoreBase):
    """Jobs with their allowed transitions and heartbeats, and named leases."""

    # ------------------------------------------------------------------ jobs

    def create_job(self, kind: str, request: Mapping[str, Any], owner: int | None = None) -> Job:
        """Queue a job.

        Args:
            kind: ``"refine"``, ``"retrain"`` or ``"bootstrap"``.
            request: What to do (JSON-serialisable).
            owner: Id of the API key that asked for it, if any.

        Returns:
            The queued job.
        """
        if kind not in JOB_KINDS:
            raise InvalidArgumentError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
        row = {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "status": "queued",
            "progress": {},
            "request": dict(request),
            "result": None,
            "error": None,
            "owner_key_id": owner,
            "created_at": self._clock(),
        }

        def work(conn: Connection) -> Job:
            conn.execute(_jobs.insert(), row)
            return _to_job(conn.execute(select(_jobs).where(_jobs.c.id == row["id"])).one())

        return self._run(work, write=True)

    def find_job(self, job_id: uuid.UUID | str) -> Job | None:
        """Return the job, or None."""
        key = str(_uuid(job_id))

        def work(conn: Connection) -> Job | None:
            row = conn.execute(select(_jobs).where(_jobs.c.id == key)).first()
            return None if row is None else _to_job(row)

        return self._run(work)

    def get_job(self, job_id: uuid.UUID | str) -> Job:
        """Return the job.

        Raises:
            NotFoundError: When there is none.
        """
        found = self.find_job(job_id)
        if found is None:
            raise NotFoundError(f"job {job_id} not found")
        return found

    def list_jobs(
        self, *, kind: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Job]:
        """List jobs, newest first."""
        limit = self._check_limit(limit)

        def work(conn: Connection) -> list[Job]:
            stmt = select(_jobs).order_by(_jobs.c.created_at.desc(), _jobs.c.id).limit(limit)
            if kind is not None:
                stmt = stmt.where(_jobs.c.kind == kind)
            if status is not None:
                stmt = stmt.where(_jobs.c.status == status)
            return [_to_job(r) for r in conn.execute(stmt)]

        return self._run(work)

    def update_job(
        self,
        job_id: uuid.UUID | str,
        *,
        status: str | None = None,
        progress: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Job:
        """Change a job's status, progress, result or error.

        Moving to ``running`` sets ``started_at`` (first time) and the heartbeat;
        moving to ``succeeded``/``failed`` sets ``finished_at``. Any update of a
        running job counts as a heartbeat. ``progress`` replaces the previous one.

        Raises:
            NotFoundError: When there is no such job.
            InvalidStateError: When the job already finished, or the transition is
                not allowed.
        """
        key = str(_uuid(job_id))
        if status is not None and status not in JOB_STATUSES:
            raise InvalidArgumentError(f"job status must be one of {JOB_STATUSES}, got {status!r}")

        def work(conn: Connection) -> Job:
            current = conn.execute(select(_jobs).where(_jobs.c.id == key).with_for_update()).first()
            if current is None:
                raise NotFoundError(f"job {key} not found")
            job = _to_job(current)
            new_status = status or job.status
            if job.finished:
                raise InvalidStateError(f"job {key} already {job.status}")
            if new_status not in _JOB_TRANSITIONS[job.status]:
                raise InvalidStateError(f"job {key} cannot go from {job.status} to {new_status}")
            now = self._clock()
            values: dict[str, Any] = {"status": new_status}
            if progress is not None:
                values["progress"] = dict(progress)
            if result is not None:
                values["result"] = dict(result)
            if error is not None:
                values["error"] = error
            if new_status == "running":
                values["heartbeat_at"] = now
                if job.started_at is None:
                    values["started_at"] = now
            if new_status in _FINAL_JOB_STATUSES:
                values["finished_at"] = now
            conn.execute(update(_jobs).where(_jobs.c.id == key).values(**values))
            return _to_job(conn.execute(select(_jobs).where(_jobs.c.id == key)).one())

        return self._run(work, write=True)

    def heartbeat(self, job_id: uuid.UUID | str) -> None:
        """Record that the worker of a running job is alive.

        Raises:
            NotFoundError: When there is no such job.
            InvalidStateError: When the job is not running (e.g. it was failed as
                stale): the worker should stop.
        """
        key = str(_uuid(job_id))

        def work(conn: Connection) -> None:
            result = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == key, _jobs.c.status == "running")
                .values(heartbeat_at=self._clock())
            )
            if result.rowcount == 1:
                return
            status = conn.execute(
                select(_jobs.c.status).where(_jobs.c.id == key)
            ).scalar_one_or_none()
            if status is None:
                raise NotFoundError(f"job {key} not found")
            raise InvalidStateError(f"job {key} is {status}, not running")

        self._run(work, write=True)

    def fail_stale_jobs(self, grace_seconds: float) -> int:
        """Fail running jobs whose last heartbeat is older than ``grace_seconds``.

        Returns:
            How many jobs were failed.
        """
        now = self._clock()
        cutoff = now - dt.timedelta(seconds=grace_seconds)
        last_sign = func.coalesce(_jobs.c.heartbeat_at, _jobs.c.started_at, _jobs.c.created_at)

        def work(conn: Connection) -> int:
            result = conn.execute(
                update(_jobs)
                .where(_jobs.c.status == "running", last_sign < cutoff)
                .values(
                    status="failed",
                    finished_at=now,
                    error=f"worker lost: no heartbeat for more than {grace_seconds:g} s",
                )
            )
            return int(result.rowcount)

        return self._run(work, write=True)

    # ------------------------------------------------------------------ locks

    def try_acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take a named lease unless someone else holds an unexpired one.

        Acquiring a lock one already holds extends it.

        Returns:
            Whether ``owner`` now holds the lock.
        """
        now = self._clock()
        expires = now + dt.timedelta(seconds=ttl_seconds)

        def work(conn: Connection) -> bool:
            stmt = self._insert(_locks).values(name=name, owner=owner, expires_at=expires)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
                where=or_(_locks.c.expires_at <= now, _locks.c.owner == owner),
            ).returning(_locks.c.name)
            return conn.execute(stmt).first() is not None

        return self._run(work, write=True)

    def refresh_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend a lease held by ``owner``.

        Returns:
            False when ``owner`` does not hold the lock (any more).
        """
        now = self._clock()

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(_locks)
                .where(_locks.c.name == name, _locks.c.owner == owner)
                .values(expires_at=now + dt.timedelta(seconds=ttl_seconds))
            )
            return bool(result.rowcount)

        return self._run(work, write=True)

    def release_lock(self, name: str, owner: str) -> bool:
        """Give a lease up.

        Returns:
            False when ``owner`` did not hold it.
        """

        def work(conn: Connection) -> bool:
            result = conn.execute(
                delete(_locks).where(_locks.c.name == name, _locks.c.owner == owner)
            )
            return bool(result.rowcount)

        return self._run(work, write=True)
