"""Refinement jobs: the runner that supervises them and the worker process that runs one.

Life of a job (rows of the ``jobs`` table, kind ``refine``):

1. ``POST /v1/refinements`` validates the request (and the uploaded file) and queues a
   job whose ``request`` is a :class:`RefinementRequest`.
2. The :class:`JobRunner` thread of an API process claims queued jobs, oldest first
   and at most ``max_running_jobs`` at a time. The claim takes the store lock
   ``job:<id>``, so API processes sharing a database never run a job twice. It marks
   the job ``running`` and starts a worker process for it:
   ``python -m hyperprior.service.jobs <job id>``, with the settings on its stdin.
3. The worker (:func:`run_job`) loads the data, asks the suggestion engine for the
   top-k configs, and runs :func:`hyperprior.training.refine.refine` with trials in their own
   processes under the time and memory limits. It writes progress after every trial
   and a heartbeat every ``job_heartbeat_s`` from a thread; it records every measured
   trial as a ``verification`` run; it stores the result (``succeeded``) or the error
   (``failed``) and removes the uploaded file.
4. Nothing is left running forever: the runner fails a job at once when its worker
   exits without finishing it; every runner fails jobs whose heartbeat is older than
   ``job_grace_s`` (a worker on a machine that died, a runner that died with its
   workers); a worker whose refinement overran its budget by far stops heartbeating
   and exits. When the API process stops, it stops its workers (their jobs fail as
   interrupted) instead of orphaning them.

Finished jobs stay in the database, so a restarted service still answers for them.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperprior.service.settings import Settings

if TYPE_CHECKING:
    from hyperprior.db.entities import Job
    from hyperprior.db.store import Store
    from hyperprior.training.refine import Candidate, RefineProgress, RefineResult
    from hyperprior.training.trials import TrialData

__all__ = [
    "JobRunner",
    "RefinementRequest",
    "describe_exit",
    "main",
    "refine_request_public",
    "run_job",
    "HttpRecorder",
    "format_refinement",
    "refine_command",
    "refine_file",
    "run_json",
]

log = logging.getLogger(__name__)

JOB_KIND = "refine"
#: Seconds between progress writes (phase changes are always written).
PROGRESS_INTERVAL_S = 0.5
#: Seconds between sweeps for orphaned uploads.
ORPHAN_SWEEP_S = 30.0


@dataclass(frozen=True)
class RefinementRequest:
    """What a refinement job is asked to do (stored as the job's ``request``).

    Attributes:
        family: Model family.
        task: ``binary``, ``multiclass`` or ``regression`` (checked against the data).
        budget_seconds: Wall-clock budget of the verification trials.
        n_candidates: Suggestions to ask the surrogate for (the default comes on top).
        seed: Seeds the suggestions and every trial's folds.
        source: ``{"kind": "catalog", "dataset": NAME}`` or, for an upload, what
            :func:`hyperprior.service.uploads.describe_upload` says.
        dataset_name: How the recorded runs name the dataset.
        configs: Extra configs to verify alongside the suggestions.
    """

    family: str
    task: str
    budget_seconds: float
    n_candidates: int
    seed: int
    source: Mapping[str, Any]
    dataset_name: str
    configs: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "family": self.family,
            "task": self.task,
            "budget_seconds": self.budget_seconds,
            "n_candidates": self.n_candidates,
            "seed": self.seed,
            "source": dict(self.source),
            "dataset_name": self.dataset_name,
            "configs": [dict(c) for c in self.configs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefinementRequest:
        """Read the stored form back."""
        return cls(
            family=str(data["family"]),
            task=str(data["task"]),
            budget_seconds=float(data["budget_seconds"]),
            n_candidates=int(data["n_candidates"]),
            seed=int(data.get("seed", 0)),
            source=dict(data["source"]),
            dataset_name=str(data["dataset_name"]),
            configs=tuple(dict(c) for c in data.get("configs", ())),
        )

    @property
    def upload(self) -> str | None:
        """The stored upload's file name, if the data was uploaded."""
        if self.source.get("kind") == "upload":
            return str(self.source["file"])
        return None


def refine_request_public(request: Mapping[str, Any]) -> dict[str, Any]:
    """A job's request as the API shows it (no file names)."""
    source = {k: v for k, v in dict(request.get("source", {})).items() if k != "file"}
    shown = {k: v for k, v in request.items() if k != "source"}
    shown["source"] = source
    return shown


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


# ------------------------------------------------------------------ the runner


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
        root = str(Path(__file__).resolve().parents[1])
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


# ------------------------------------------------------------------ the worker


class _Interrupted(BaseException):
    """SIGTERM in a job worker: stop, fail the job as interrupted, clean up."""


def load_request_data(
    request: RefinementRequest, settings: Settings
) -> tuple[TrialData, dict[str, Any]]:
    """The data a request names, and its meta-features (for suggestions and the history)."""
    from hyperprior.training.metafeatures import compute_metafeatures
    from hyperprior.training.trials import TrialData

    if request.source.get("kind") == "catalog":
        from hyperprior.training.datasets import load_dataset

        loaded = load_dataset(str(request.source["dataset"]))
        X, y, task = loaded.X, loaded.y, loaded.task
    else:
        from hyperprior.service.uploads import read_upload

        X, y = read_upload(settings, dict(request.source))
        task = request.task
    meta = compute_metafeatures(X, y, task, seed=0)
    return TrialData(X, y, task, request.dataset_name), meta


def suggest_candidates(
    store: Any, request: RefinementRequest, meta: Mapping[str, Any]
) -> tuple[list[Candidate], dict[str, Any]]:
    """The surrogate's top-k for the data, plus the request's own configs."""
    from hyperprior.training.refine import Candidate, candidates_from_suggestions, fill_candidates
    from hyperprior.training.suggest import SuggestionEngine, SuggestionRequest

    answer = SuggestionEngine(store, store).suggest(
        SuggestionRequest(
            family=request.family,
            task=request.task,
            meta_features=_finite(meta),
            n=request.n_candidates,
            seed=request.seed,
            dataset_name=request.dataset_name,
        )
    )
    suggested = candidates_from_suggestions(answer.suggestions)
    # A cold start may suggest little beyond the default: explore the space instead.
    filled = fill_candidates(
        suggested, request.family, request.task, request.n_candidates, request.seed
    )
    candidates = [Candidate(dict(c), origin="user") for c in request.configs] + filled
    info = {
        "sampled": len(filled) - len(suggested),
        "surrogate": None
        if answer.surrogate is None
        else {"id": answer.surrogate.id, "n_runs": answer.surrogate.n_runs},
        "count": len(answer.suggestions),
        "warnings": list(answer.warnings),
    }
    return candidates, info


def _finite(meta: Mapping[str, Any]) -> dict[str, Any]:
    import math

    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in meta.items()
    }


class _Heartbeat:
    """Heartbeats from a thread; notices a job failed from outside; enforces a hard stop."""

    def __init__(self, store: Store, job_id: str, interval: float, hard_deadline: float) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self.hard_deadline = hard_deadline
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        from hyperprior.db.errors import DatabaseUnavailableError, InvalidStateError, NotFoundError

        while not self._stop.wait(self.interval):
            if time.monotonic() > self.hard_deadline:
                # The refinement should have ended long ago: something is stuck. Going
                # silent lets the sweeper fail the job; exiting frees the machine.
                log.error("job %s overran its budget by far; giving up", self.job_id)
                os._exit(70)
            try:
                self.store.heartbeat(self.job_id)
            except (InvalidStateError, NotFoundError):
                # Failed from outside (stale, service stopped): stop working on it.
                self.lost.set()
                return
            except DatabaseUnavailableError as exc:
                log.warning("job %s: heartbeat failed: %s", self.job_id, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_job(job_id: str, settings: Settings, *, store: Store | None = None) -> int:
    """Run one claimed refinement job to its end (the worker process's main function).

    Returns:
        The exit status: 0 when the job finished (succeeded or failed cleanly).
    """
    from hyperprior.db.engine import make_engine
    from hyperprior.db.errors import InvalidStateError
    from hyperprior.db.store import DatasetSpec, Store
    from hyperprior.training.refine import RefineSettings, make_refine_executor, refine

    if store is None:
        store = Store(
            make_engine(
                settings.database_url,
                pool_size=2,
                busy_timeout_ms=settings.db_busy_timeout_ms,
            )
        )
    job = store.get_job(job_id)
    if job.status != "running":
        log.warning("job %s is %s, not running: nothing to do", job_id, job.status)
        return 0
    request = RefinementRequest.from_json(job.request)
    started = time.monotonic()
    allowance = max(120.0, request.budget_seconds)
    heartbeat = _Heartbeat(
        store, job_id, settings.job_heartbeat_s, started + request.budget_seconds + 2 * allowance
    )
    heartbeat.start()

    def interrupted(signum: int, frame: Any) -> None:
        raise _Interrupted()

    previous = signal.signal(signal.SIGTERM, interrupted)
    progress = _ProgressWriter(store, job_id)
    executor = None
    refined: RefineResult | None = None
    summary: dict[str, Any] = {}
    error = "unknown error"
    try:
        progress.phase("loading")
        # Start the trial workers first: their imports overlap with loading the data.
        executor = make_refine_executor(
            request.family,
            workers=settings.refine_workers,
            memory_limit_mb=settings.trial_memory_limit_mb,
            dask_scheduler=settings.dask_scheduler,
        )
        data, meta = load_request_data(request, settings)
        progress.phase("suggesting")
        candidates, suggestions = suggest_candidates(store, request, meta)
        progress.phase("refining")
        prepared_seconds = time.monotonic() - started
        result = refine(
            data,
            request.family,
            candidates,
            budget_seconds=request.budget_seconds,
            executor=executor,
            settings=RefineSettings(
                folds=settings.refine_folds, trial_time_limit_seconds=settings.trial_time_limit_s
            ),
            seed=request.seed,
            dataset=DatasetSpec(name=request.dataset_name, task=data.task, meta_features=meta),
            record=store.ingest_runs,
            progress=progress.trial,
            should_stop=heartbeat.lost.is_set,
            refinement_id=job_id,
        )
        summary = job_result(result, suggestions, request, prepared_seconds)
        refined = result
    except _Interrupted:
        error = "interrupted: the service stopped while the job ran; submit it again"
    except Exception as exc:  # noqa: BLE001 - whatever it is, the job must end failed
        log.exception("job %s failed", job_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        # Clean up before the job shows as finished: whoever waits for it may rely on that.
        signal.signal(signal.SIGTERM, previous)
        if executor is not None:
            executor.close()
        from hyperprior.service.uploads import remove_upload

        remove_upload(settings, request.upload)
        heartbeat.stop()
    if heartbeat.lost.is_set():
        log.warning("job %s was failed or cancelled from outside; its outcome is dropped", job_id)
        return 0
    try:
        if refined is not None:
            store.update_job(
                job_id, status="succeeded", progress=progress.final(refined), result=summary
            )
            log.info("job %s succeeded: %s", job_id, _headline(refined))
        else:
            _fail(store, job_id, error)
    except InvalidStateError as exc:
        log.warning("job %s: %s", job_id, exc)
    return 0


def _fail(store: Store, job_id: str, error: str) -> None:
    from hyperprior.db.errors import InvalidStateError, NotFoundError

    try:
        store.update_job(job_id, status="failed", error=error[:4000])
    except (InvalidStateError, NotFoundError):
        pass


def _headline(result: RefineResult) -> str:
    if result.score is None:
        return "no config measured at full fidelity"
    return f"{result.metric} {result.score:.4g} (default {result.default_score})"


def job_result(
    result: RefineResult,
    suggestions: Mapping[str, Any],
    request: RefinementRequest,
    prepared_seconds: float,
) -> dict[str, Any]:
    """What a finished job stores as its result."""
    out = result.to_dict()
    out["dataset"] = request.dataset_name
    out["suggestions"] = dict(suggestions)
    out["preparation_seconds"] = round(prepared_seconds, 3)
    return out


class _ProgressWriter:
    """Writes a job's progress, at most every :data:`PROGRESS_INTERVAL_S` per trial."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.last = 0.0
        self.started = time.monotonic()

    def phase(self, name: str) -> None:
        self._write({"phase": name, "elapsed_seconds": round(time.monotonic() - self.started, 3)})

    def trial(self, progress: RefineProgress) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        self._write(progress.to_dict())

    def final(self, result: RefineResult) -> dict[str, Any]:
        return {
            "phase": "done",
            "rung": len(result.rungs) - 1,
            "rungs": len(result.rungs),
            "trials_done": len(result.trials),
            "trials_planned": len(result.trials),
            "elapsed_seconds": result.elapsed_seconds,
            "budget_seconds": result.budget_seconds,
            "best_score": result.score,
        }

    def _write(self, progress: Mapping[str, Any]) -> None:
        from hyperprior.db.errors import DatabaseUnavailableError

        try:
            self.store.update_job(self.job_id, progress=progress)
        except DatabaseUnavailableError as exc:
            log.warning("job %s: cannot write progress: %s", self.job_id, exc)


# ------------------------------------------------------------------ client side


class HttpRecorder:
    """Records verification runs to a service (``POST /v1/runs``), one trial at a time.

    A run that cannot be sent is kept and retried by :meth:`flush`; the refinement goes
    on either way (its result does not depend on the history).

    Args:
        client: An ``httpx.Client`` whose base URL is the service (and that carries
            the API key, which needs scope ``write``).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pending: list[dict[str, Any]] = []
        self.sent = 0
        self.errors: list[str] = []

    def __call__(self, runs: Sequence[Any]) -> None:
        self.pending.extend(run_json(run) for run in runs)
        self.flush()

    def flush(self) -> None:
        """Send what is pending; keep it if the service cannot be reached."""
        if not self.pending:
            return
        try:
            response = self.client.post("/v1/runs", json={"runs": self.pending})
        except Exception as exc:  # noqa: BLE001 - httpx raises many kinds; keep going
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code in (200, 201):
            self.sent += len(self.pending)
            self.pending = []
        else:
            self.errors.append(f"{response.status_code}: {response.text[:300]}")
            if response.status_code < 500 and response.status_code != 429:
                self.pending = []  # refused for good: retrying cannot help


def run_json(run: Any) -> dict[str, Any]:
    """A ``NewRun`` as the JSON of ``POST /v1/runs``."""
    import math

    dataset = run.dataset
    meta = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in dict(dataset.meta_features).items()
    }
    return {
        "id": str(run.id),
        "dataset": {"name": dataset.name, "task": dataset.task, "meta_features": meta},
        "family": run.family,
        "config": dict(run.config),
        "metric": run.metric,
        "direction": run.direction,
        "status": run.status,
        "score": run.score,
        "fidelity": run.fidelity,
        "cost_seconds": run.cost_seconds,
        "source": run.source,
        "error": run.error,
        "metrics": None if run.metrics is None else dict(run.metrics),
    }


def refine_file(
    path: Path,
    *,
    target: str,
    body: Mapping[str, Any],
    answer: Mapping[str, Any],
    budget_seconds: float,
    record: Callable[[Sequence[Any]], Any] | None,
    seed: int = 0,
    workers: int | None = None,
    memory_limit_mb: float | None = 4096.0,
    folds: int = 5,
    progress: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """``hyperprior suggest --refine``: verify an answer's suggestions on a local file.

    The data never leaves this machine: trials run in local worker processes under the
    memory limit, and only the measured runs (configs, scores, the meta-features the
    suggestion request already sent) go to ``record``.

    Args:
        path: The CSV or Parquet file (its type is sniffed from its bytes).
        target: The target column.
        body: The ``POST /v1/suggestions`` body built for the file (family, task,
            dataset name and meta-features).
        answer: The suggestions (as the API answers them).
        budget_seconds: Budget of the trials.
        record: Where measured trials go, or None.
        seed: Seeds the folds.
        workers: Trial processes (default: the number of CPUs).
        memory_limit_mb: Resident memory per trial process.
        folds: Cross-validation folds.
        progress: Called with a ``RefineProgress`` after each trial (the CLI's bar).

    Returns:
        The refinement summary (``config``, ``score``, ``metric``, ``trials``, the
        default's and the zero-shot pick's scores, notes).
    """
    from hyperprior.db.entities import DatasetSpec
    from hyperprior.service.uploads import read_frame, sniff, split_target
    from hyperprior.training.refine import (
        RefineSettings,
        candidates_from_suggestions,
        fill_candidates,
        make_refine_executor,
        refine,
    )
    from hyperprior.training.trials import TrialData

    with path.open("rb") as handle:
        head = handle.read(4096)
        handle.seek(max(0, path.stat().st_size - 4))
        tail = handle.read(4)
    kind = sniff(head, tail)
    if kind not in ("csv", "parquet"):
        raise ValueError(f"{path} is {kind}, not a CSV or Parquet file")
    X, y = split_target(read_frame(path, kind), target)  # type: ignore[arg-type]
    family, task = str(body["family"]), str(body["task"])
    dataset = DatasetSpec(
        name=str(body["dataset"]["name"]),
        task=task,
        meta_features=dict(body["dataset"]["meta_features"]),
    )
    suggested = candidates_from_suggestions(answer.get("suggestions", []))
    candidates = fill_candidates(suggested, family, task, int(body.get("n", 5)), seed)
    executor = make_refine_executor(family, workers=workers, memory_limit_mb=memory_limit_mb)
    try:
        result = refine(
            TrialData(X, y, task, dataset.name),
            family,
            candidates,
            budget_seconds=budget_seconds,
            executor=executor,
            settings=RefineSettings(folds=folds),
            seed=seed,
            dataset=dataset,
            record=record,
            progress=progress,
        )
    finally:
        executor.close()
    return result.to_dict()


def refine_command(
    args: Any,
    body: Mapping[str, Any],
    answer: Mapping[str, Any],
    progress: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """What ``hyperprior suggest ... --refine`` adds to its answer (as ``"refined"``).

    Runs :func:`refine_file` on ``args.data`` and records the runs where the
    suggestions came from: the service of ``args.url`` (``POST /v1/runs``, with
    ``args.api_key``), else the local database.
    """
    import httpx

    from hyperprior.service.commands import CommandError

    if not args.budget > 0:
        raise CommandError("--budget must be a positive number of seconds")
    client = None
    store = None
    record: Callable[[Sequence[Any]], Any]
    if args.url:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        client = httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=30.0)
        recorder = HttpRecorder(client)
        record = recorder
    else:
        from hyperprior.db.engine import make_engine
        from hyperprior.db.store import Store
        from hyperprior.service.commands.db import database_url

        store = Store(make_engine(database_url(args)))
        record = store.ingest_runs
    try:
        refined = refine_file(
            args.data,
            target=args.target,
            body=body,
            answer=answer,
            budget_seconds=args.budget,
            record=record,
            seed=args.seed or 0,
            progress=progress,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if client is not None:
            recorder.flush()
            client.close()
        if store is not None:
            store.engine.dispose()
    measured = sum(1 for t in refined["trials"] if t["status"] != "cut")
    if client is not None:
        refined["recorded"] = {"to": args.url, "runs": recorder.sent}
        if recorder.errors:
            print(
                f"hyperprior: warning: {measured - recorder.sent} of {measured} runs not "
                f"recorded to {args.url}: {recorder.errors[-1]}",
                file=sys.stderr,
            )
    else:
        refined["recorded"] = {"to": "local database", "runs": measured}
    return refined


def format_refinement(refined: Mapping[str, Any]) -> str:
    """Human-readable lines for a refinement summary (the CLI's table output)."""

    def score(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    zero = refined.get("zero_shot") or {}
    lines = [
        f"refined on your data ({refined['metric']}, {len(refined['trials'])} trials, "
        f"{refined['elapsed_seconds']:.1f} of {refined['budget_seconds']:g} s):",
        f"  library default    {score(refined['default_score'])}",
        f"  top suggestion     {score(zero.get('score'))}",
        f"  refined            {score(refined['score'])}",
    ]
    if refined.get("config") is not None:
        lines.append(
            "  config  "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in refined["config"].items()
            )
        )
    lines += [f"  note: {note}" for note in refined.get("notes", [])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hyperprior.service.jobs JOB_ID`` with the settings as JSON on stdin."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(
            "usage: python -m hyperprior.service.jobs JOB_ID  (settings as JSON on stdin)",
            file=sys.stderr,
        )
        return 2
    settings = Settings(**json.loads(sys.stdin.read() or "{}"))
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        format=f"%(asctime)s job {args[0][:8]} %(levelname)s %(name)s: %(message)s",
    )
    return run_job(args[0], settings)


if __name__ == "__main__":
    sys.exit(main())
