"""Refinement jobs: the runner that supervises them and the worker process that runs one.

Life of a job (rows of the ``jobs`` table, kind ``refine``):

1. ``POST /v1/refinements`` validates the request (and the uploaded file) and queues a
   job whose ``request`` is a :class:`RefinementRequest`.
2. The :class:`JobRunner` thread of an API process (`hyperprior.service.jobs.runner`)
   claims queued jobs, oldest first and at most ``max_running_jobs`` at a time. The
   claim takes the store lock ``job:<id>``, so API processes sharing a database never
   run a job twice. It marks the job ``running`` and starts a worker process for it:
   ``python -m hyperprior.service.jobs <job id>``, with the settings on its stdin.
3. The worker (:func:`run_job`, in `hyperprior.service.jobs.worker`) loads the data,
   asks for the top-k configs through the SDK's in-process `Client`, and runs
   :func:`hyperprior.training.refine.refine` with trials in their own processes under
   the time and memory limits. It writes progress after every trial and a heartbeat
   every ``job_heartbeat_s`` from a thread; it records every measured trial as a
   ``verification`` run (through the same client); it stores the result
   (``succeeded``) or the error (``failed``) and removes the uploaded file.
4. Nothing is left running forever: the runner fails a job at once when its worker
   exits without finishing it; every runner fails jobs whose heartbeat is older than
   ``job_grace_s`` (a worker on a machine that died, a runner that died with its
   workers); a worker whose refinement overran its budget by far stops heartbeating
   and exits. When the API process stops, it stops its workers (their jobs fail as
   interrupted) instead of orphaning them.

Finished jobs stay in the database, so a restarted service still answers for them.
"""

from __future__ import annotations

from hyperprior.service.jobs.request import JOB_KIND, RefinementRequest, refine_request_public
from hyperprior.service.jobs.runner import ORPHAN_SWEEP_S, JobRunner, describe_exit
from hyperprior.service.jobs.worker import (
    PROGRESS_INTERVAL_S,
    job_result,
    load_request_data,
    main,
    run_job,
    suggest_candidates,
)

__all__ = [
    "JOB_KIND",
    "ORPHAN_SWEEP_S",
    "PROGRESS_INTERVAL_S",
    "JobRunner",
    "RefinementRequest",
    "describe_exit",
    "job_result",
    "load_request_data",
    "main",
    "refine_request_public",
    "run_job",
    "suggest_candidates",
]
