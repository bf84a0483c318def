"""Service settings, read from ``HYPERPRIOR_*`` environment variables (or ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hyperprior.training.compiled import TreeCompiler

__all__ = ["Settings"]

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service and the CLI can be configured with.

    Each field is read from the environment variable ``HYPERPRIOR_<FIELD>``, e.g.
    ``HYPERPRIOR_DATABASE_URL=postgresql://user@db/hyperprior``.
    """

    model_config = SettingsConfigDict(
        env_prefix="HYPERPRIOR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Database
    database_url: str = Field(
        default="sqlite:///./hyperprior.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host/db.",
    )
    db_pool_size: int = Field(default=10, ge=1, description="Connections kept in the pool.")
    db_max_overflow: int = Field(default=20, ge=0, description="Extra connections under load.")
    db_pool_timeout_s: float = Field(default=30.0, gt=0, description="Wait for a connection.")
    db_busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="SQLite: how long a writer waits for the lock."
    )
    db_echo: bool = Field(default=False, description="Log every SQL statement.")

    # Requests
    max_body_bytes: int = Field(
        default=64 * MiB, gt=0, description="Largest accepted request body, in bytes."
    )
    max_runs_per_batch: int = Field(
        default=10_000, gt=0, description="Most runs accepted by one POST /v1/runs."
    )

    max_concurrent_jobs_per_key: int = Field(
        default=2,
        gt=0,
        description="Refinement jobs one API key may have queued or running at once "
        "(more are refused with 429 and Retry-After).",
    )

    # Access
    auth_enabled: bool = Field(
        default=True,
        description="Require API keys (``hyperprior keys create``). Turn off only on a "
        "trusted single-user machine.",
    )
    auth_reads: Literal["open", "key"] = Field(
        default="open",
        description="Whether reading (listing runs, suggestions) needs a key too; writes "
        "and admin routes always do.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API, comma-separated "
        "(e.g. https://ml.example.com); none by default.",
    )
    auth_cache_s: float = Field(
        default=10.0,
        ge=0,
        description="How long each API process trusts a verified API key: re-checked in the "
        "database after half this time, used from memory up to all of it while the database "
        "cannot be reached (so a revocation takes effect within it); 0 checks every request.",
    )

    # Server
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(default=1, ge=1, description="Server processes.")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    access_log: bool = Field(default=True, description="Log one line per request.")
    gc_tuning: bool = Field(
        default=True,
        description="After startup, freeze the heap out of the cyclic garbage collector "
        "and collect less often (halves the CPU time of large ingest requests).",
    )

    # Surrogates and retraining
    surrogate_poll_s: float = Field(
        default=30.0, gt=0, description="How often API processes check for a newly active model."
    )
    retrain_in_process: bool = Field(
        default=True, description="Run the nightly retrain scheduler inside the API process."
    )
    retrain_catch_up: bool = Field(
        default=True,
        description="With the in-process retrain (or `hyperprior retrain --schedule`): at "
        "start, fit the metric surrogates (log_loss, rmse, ...) whose runs are there but that "
        "were never trained, instead of waiting for the first nightly retrain (a newly seeded "
        "database: about 2 minutes of background CPU).",
    )
    retrain_cron: str = Field(
        default="0 3 * * *", description="When to retrain (cron expression, UTC)."
    )
    retrain_tolerance: float = Field(
        default=0.0,
        ge=0,
        description="Promote a candidate whose grouped-CV top-1 regret is at most this much "
        "worse than the active model's on the same data.",
    )
    retrain_lock_ttl_s: float = Field(
        default=600.0, gt=0, description="Lease of the retrain lock; a dead retrain frees it after."
    )
    compiled_trees: Literal["auto", "off"] = Field(
        default="auto",
        description="Predict with the surrogates' trees compiled to C (tl2cgen), built in the "
        "background when a surrogate loads and cached: auto uses them when tl2cgen imports "
        "and a C compiler is on the PATH (else LightGBM predicts, as with off); the answers "
        "are the same either way.",
    )
    suggest_inline: bool = Field(
        default=True,
        description="Answer a suggestion whose policy is loaded on the event loop, without a "
        "trip through the threadpool: more requests/s on cores the server has to itself. "
        "Where other CPU-bound work shares them (trials, a retrain), the threadpool (false) "
        "kept more throughput in the benchmark (benchmarks/suggest.py).",
    )
    compiled_cache_dir: Path | None = Field(
        default=None,
        description="Where compiled trees are kept (default: "
        "$XDG_CACHE_HOME/hyperprior/compiled, else ~/.cache/hyperprior/compiled).",
    )
    surrogate_keep_retired: int = Field(
        default=10,
        ge=0,
        description="Retired surrogates kept per family and target after a retrain activates "
        "a new one (the newest; older ones are deleted). Active and candidate ones are kept.",
    )

    # Refinement jobs
    data_dir: Path = Field(
        default=Path("./data"),
        description="Where uploaded datasets wait for their refinement job (under uploads/, "
        "with generated names; each is removed when its job ends).",
    )
    max_upload_bytes: int = Field(
        default=32 * MiB,
        gt=0,
        description="Largest accepted dataset upload, in bytes (uploads are also bounded by "
        "HYPERPRIOR_MAX_BODY_BYTES).",
    )
    max_upload_rows: int = Field(
        default=200_000, gt=0, description="Most rows accepted in an uploaded dataset."
    )
    min_upload_rows: int = Field(
        default=30, ge=4, description="Fewest rows (with a target) worth refining on."
    )
    refine_max_budget_s: float = Field(
        default=3600.0, gt=0, description="Largest budget_seconds a refinement may ask for."
    )
    refine_max_candidates: int = Field(
        default=27, ge=1, le=50, description="Most suggestions one refinement may verify."
    )
    refine_folds: int = Field(
        default=5, ge=2, le=10, description="Cross-validation folds of every verification trial."
    )
    refine_workers: int | None = Field(
        default=None,
        ge=1,
        description="Trial processes per refinement job (default: the number of CPUs).",
    )
    trial_memory_limit_mb: float = Field(
        default=4096.0,
        gt=0,
        description="Resident memory one trial's process may use; above it the trial is "
        "killed and recorded as a failed run.",
    )
    trial_time_limit_s: float = Field(
        default=600.0, gt=0, description="Wall-clock limit of one verification trial."
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Run verification trials on this Dask scheduler (tcp://host:8786) "
        "instead of local processes.",
    )
    jobs_in_process: bool = Field(
        default=True,
        description="Run refinement jobs from the API process (each in a worker process of "
        "its own); off, jobs wait for an API process that has it on.",
    )
    max_running_jobs: int = Field(
        default=1, ge=1, description="Refinement jobs one API process runs at once."
    )
    job_poll_s: float = Field(
        default=1.0, gt=0, description="How often the job runner looks for queued jobs."
    )
    job_heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often a job's worker reports that it is alive."
    )
    job_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="A running job without a heartbeat for this long is marked failed.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # One comma-separated environment variable reads better than a JSON list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                # "*" is refused on purpose: this is an allow-list.
                raise ValueError(
                    f"invalid CORS origin {origin!r} (expected scheme://host[:port], "
                    "e.g. https://ml.example.com)"
                )
        return [origin.rstrip("/") for origin in value]

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> Settings:
        if self.job_grace_s <= 2 * self.job_heartbeat_s:
            raise ValueError(
                f"job_grace_s ({self.job_grace_s:g}) must be more than twice job_heartbeat_s "
                f"({self.job_heartbeat_s:g}), or live jobs would be failed as lost"
            )
        return self

    @field_validator("retrain_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (expected e.g. '0 3 * * *')")
        return value

    def tree_compiler(self) -> TreeCompiler:
        """The compiler of the surrogates' trees these settings ask for (``compiled_*``)."""
        return TreeCompiler(self.compiled_trees, self.compiled_cache_dir)
