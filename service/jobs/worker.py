"""The worker process of one refinement job: ``python -m hyperprior.service.jobs JOB_ID``.

Started by the runner (`hyperprior.service.jobs.runner`) with the settings as JSON on
its stdin, :func:`run_job` loads the data, asks for the top-k configs and records every
measured trial as a ``verification`` run, both through the SDK's in-process `Client`
(the same checks and retries as the API), and runs
:func:`hyperprior.training.refine.refine` with trials in their own processes under the
time and memory limits. It writes progress after every trial and a heartbeat every
``job_heartbeat_s`` from a thread; it stores the result (``succeeded``) or the error
(``failed``) and removes the uploaded file. A worker whose refinement overran its
budget by far stops heartbeating and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hyperprior.client.errors import HyperpriorWarning
from hyperprior.service.jobs.request import RefinementRequest
from hyperprior.service.settings import Settings
from hyperprior.vocabulary import finite_values

if TYPE_CHECKING:
    from hyperprior.client import Client
    from hyperprior.db.store import Store
    from hyperprior.training.refine import Candidate, RefineProgress, RefineResult
    from hyperprior.training.trials import TrialData

__all__ = [
    "PROGRESS_INTERVAL_S",
    "job_result",
    "load_request_data",
    "main",
    "run_job",
    "suggest_candidates",
]

log = logging.getLogger(__name__)

#: Seconds between progress writes (phase changes are always written).
PROGRESS_INTERVAL_S = 0.5


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
    client: Client, request: RefinementRequest, meta: Mapping[str, Any]
) -> tuple[list[Candidate], dict[str, Any]]:
    """The surrogate's top-k for the data (asked through ``client``), plus the request's
    own configs."""
    from hyperprior.client import Description
    from hyperprior.training.refine import Candidate, candidates_from_suggestions, fill_candidates

    answer = client.suggest(
        Description(name=request.dataset_name, task=request.task, meta_features=dict(meta)),
        None,
        request.family,
        n=request.n_candidates,
        seed=request.seed,
    )
    suggested = candidates_from_suggestions([s.to_json() for s in answer])
    # A cold start may suggest little beyond the default: explore the space instead.
    filled = fill_candidates(
        suggested, request.family, request.task, request.n_candidates, request.seed
    )
    candidates = [Candidate(dict(c), origin="user") for c in request.configs] + filled
    info = {
        "sampled": len(filled) - len(suggested),
        "surrogate": None
        if answer.surrogate is None
        else {"id": answer.surrogate["id"], "n_runs": answer.surrogate["n_runs"]},
        "count": len(answer),
        "warnings": list(answer.warnings),
    }
    return candidates, info


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
    from hyperprior.client import Client
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
    # Suggestions and recorded runs go through the SDK, with the API's checks and retries.
    client = Client.local(store=store)
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
        data, raw_meta = load_request_data(request, settings)
        meta = finite_values(raw_meta)
        progress.phase("suggesting")
        with warnings.catch_warnings():
            # An empty history is said in the result's suggestion warnings already.
            warnings.simplefilter("ignore", HyperpriorWarning)
            candidates, suggestions = suggest_candidates(client, request, meta)
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
            record=client.record,
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
