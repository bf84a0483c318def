"""The job runner: a thread of the API process that claims queued refinement jobs and
supervises one worker process (`hyperprior.service.jobs.worker`) per job.

The claim takes the store lock ``job:<id>``, so API processes sharing a database never
run a job twice. The runner fails a job at once when its worker exits without finishing
it, fails jobs whose heartbeat is older than ``job_grace_s``, stops the workers of
cancelled jobs, and when the API process stops, stops its workers (their jobs fail as
interrupted) instead of orphaning them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hyperprior.service.jobs.request import JOB_KIND, RefinementRequest
from hyperprior.service.settings import Settings

if TYPE_CHECKING:
    from hyperprior.db.entities import Job
    from hyperprior.db.store import Store

__all__ = ["ORPHAN_SWEEP_S", "JobRunner", "describe_exit"]

log = logging.getLogger(__name__)

#: Seconds between sweeps for orphaned uploads.
ORPHAN_SWEEP_S = 30.0


def describe_exit(returncode: int | None) -> str:
    """``"exited with status 1"``, ``"was killed by SIGKILL"``..."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _in_memory(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    upload: str | None
    started: float


class JobRunner:
    """Claims queued refinement jobs and supervises one worker process per job.

    Args:
        store: The store (jobs, locks).
        settings: ``max_running_jobs``, ``job_poll_s``, ``job_grace_s``, ``data_dir``...;
            handed to every worker on its stdin.
        database_url: The database workers connect to (default: the store's own, which
            may differ from ``settings.database_url`` when a store was injected).
    """

    def __init__(
        self, store: Store, settings: Settings, *, database_url: str | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.database_url = database_url or store.engine.url.render_as_string(hide_password=False)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_orphan_sweep = 0.0

    @property
    def enabled(self) -> bool:
        """Whether jobs can run: workers need a database they can open themselves."""
        return not _in_memory(self.database_url)

    def workers(self) -> dict[str, int]:
        """Job id -> pid of the running workers of this runner."""
        with self._lock:
            return {job_id: w.process.pid for job_id, w in self._workers.items()}

    def start(self) -> None:
        """Poll for jobs in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        if not self.enabled:
            log.warning(
                "refinement jobs cannot run on an in-memory database (their worker processes "
                "could not see it); they stay queued"
            )
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for queued jobs now (a job was just submitted)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the thread
                log.exception("job runner poll failed; retrying")
            self._wake.wait(self.settings.job_poll_s)
            self._wake.clear()

    def poll_once(self) -> None:
        """Reap finished workers, stop cancelled ones, fail stale jobs, claim queued ones."""
        self._reap()
        self._stop_cancelled()
        failed = self.store.fail_stale_jobs(self.settings.job_grace_s)
        if failed:
            log.warning("failed %d job(s) whose worker stopped sending heartbeats", failed)
        now = time.monotonic()
        if failed or now - self._last_orphan_sweep > ORPHAN_SWEEP_S:
            self._last_orphan_sweep = now
            self._sweep_uploads()
        if not self._stop.is_set():
            self._claim()

    def _claim(self) -> None:
        with self._lock:
            free = self.settings.max_running_jobs - len(self._workers)
        if free <= 0:
            return
        queued = self.store.list_jobs(kind=JOB_KIND, status="queued", limit=1000)
        for job in sorted(queued, key=lambda j: j.created_at):
            if free <= 0:
                return
            lock = f"job:{job.id}"
            if not self.store.try_acquire_lock(lock, self.owner, ttl_seconds=60):
                continue
            try:
                current = self.store.get_job(job.id)
                if current.status != "queued":
                    continue
                self.store.update_job(job.id, status="running", progress={"phase": "starting"})
            finally:
                self.store.release_lock(lock, self.owner)
            self._spawn(current)
            free -= 1

    def _spawn(self, job: Job) -> None:
        from hyperprior.db.errors import InvalidStateError

        upload = RefinementRequest.from_json(job.request).upload if job.request else None
        settings = self.settings.model_dump(mode="json")
        settings["database_url"] = self.database_url
        env = dict(os.environ)
        # The worker imports this package from wherever this process did.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "hyperprior.service.jobs", str(job.id)],
                stdin=subprocess.PIPE,
                env=env,
                # Its own session: a Ctrl-C meant for the server reaches the worker through
                # stop(), which fails the job cleanly, not through the terminal.
                start_new_session=True,
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps(settings).encode())
            process.stdin.close()
        except OSError as exc:
            log.error("cannot start a worker for job %s: %s", job.id, exc)
            try:
                self.store.update_job(
                    job.id, status="failed", error=f"cannot start a worker process: {exc}"
                )
            except InvalidStateError:
                pass
            self._remove_upload(upload)
            return
        log.info("job %s: worker %d started", job.id, process.pid)
        with self._lock:
            self._workers[str(job.id)] = _Worker(process, upload, time.monotonic())

    def _reap(self) -> None:
        with self._lock:
            done = {
                job_id: w for job_id, w in self._workers.items() if w.process.poll() is not None
            }
            for job_id in done:
                del self._workers[job_id]
        for job_id, worker in done.items():
            self._finish_lost(job_id, worker, describe_exit(worker.process.returncode))

    def _stop_cancelled(self) -> None:
        # The worker would notice at its next heartbeat and stop before its next trial;
        # terminating it also ends the trial in flight (its executor kills the trials).
        with self._lock:
            workers = dict(self._workers)
        for job_id, worker in workers.items():
            if worker.process.poll() is not None:
                continue
            job = self.store.find_job(job_id)
            if job is not None and job.status == "cancelled":
                log.info("job %s was cancelled: stopping worker %d", job_id, worker.process.pid)
                worker.process.terminate()

    def _finish_lost(self, job_id: str, worker: _Worker, how: str) -> None:
        from hyperprior.db.errors import InvalidStateError, NotFoundError

        try:
            job = self.store.get_job(job_id)
            if not job.finished:
                self.store.update_job(
                    job_id,
                    status="failed",
                    error=f"the job's worker process {how} before finishing it",
                )
                log.error("job %s failed: its worker process %s", job_id, how)
        except (InvalidStateError, NotFoundError):
            pass
        self._remove_upload(worker.upload)

    def _remove_upload(self, name: str | None) -> None:
        from hyperprior.service.uploads import remove_upload

        remove_upload(self.settings, name)

    def _sweep_uploads(self) -> None:
        from hyperprior.service.uploads import remove_upload, sweep_orphans

        def files(status: str, limit: int) -> set[str]:
            names = set()
            for job in self.store.list_jobs(kind=JOB_KIND, status=status, limit=limit):
                source = (job.request or {}).get("source", {})
                if source.get("kind") == "upload":
                    names.add(str(source.get("file")))
            return names

        keep = files("queued", 1000) | files("running", 1000)
        # Jobs failed by the sweeper (their worker is gone) leave their file behind.
        for name in (files("failed", 100) | files("cancelled", 100)) - keep:
            remove_upload(self.settings, name)
        sweep_orphans(self.settings, keep, older_than_s=max(600.0, self.settings.job_grace_s))

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop claiming, stop this runner's workers (their jobs fail as interrupted)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        with self._lock:
            workers = dict(self._workers)
            self._workers.clear()
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + timeout
        for job_id, worker in workers.items():
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(timeout=5)
            self._finish_lost(job_id, worker, "was stopped with the service")
