"""Background work of an API process: reload surrogates, and the nightly retrain.

* :class:`SurrogateWatcher` polls the registry every ``surrogate_poll_s`` seconds (one
  cheap listing query without model texts) and reloads a family's policy when its
  active surrogate changed, verifying the model's sha256 before parsing it. A model
  activated anywhere (another process, ``hyperprior retrain``, the ``retrainer``
  service, ``POST /v1/surrogates/{id}/activate``) serves within one poll interval,
  without a restart.
* :class:`RetrainScheduler` runs :func:`~hyperprior.training.retrain.retrain_family` for every
  family at the times of a cron expression (``retrain_cron``, UTC, default ``0 3 * * *``). It runs
  in the API process (disable with ``HYPERPRIOR_RETRAIN_IN_PROCESS=false``) or alone in
  ``hyperprior retrain --schedule`` (the docker-compose ``retrainer`` service). Several
  schedulers may run at once: the store lock ``retrain:{family}`` lets one retrain a
  family at a time, and a scheduler skips a family whose newest surrogate was
  registered after the scheduled time (someone else already did tonight's work).
  Unless given a list, it retrains every family registered at that time plus every
  family declared in the store (``POST /v1/families``).
* :class:`BackgroundServices` also makes the families declared in the store known to
  this process: an unknown name is looked up in the store on first use (so a family
  declared through another API process is known at once), and each poll loads any new
  declarations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from hyperprior.service.settings import Settings
from hyperprior.training.families import FAMILIES, add_lookup, remove_lookup
from hyperprior.training.families.declared import load_declared, store_lookup
from hyperprior.training.retrain import RetrainResult, retrain_family, retrain_missing_targets
from hyperprior.training.suggest import SuggestionEngine
from hyperprior.training.surrogate import SurrogateParams

log = logging.getLogger(__name__)

# Every family registered when the scheduler is imported (declared ones are added at
# run time by a scheduler given no list).
DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


class SurrogateWatcher:
    """Reloads the engine's policies when the active surrogates change.

    Args:
        engine: the suggestion engine whose policies to refresh.
        interval_seconds: time between polls.
        store: when given, each poll also registers the families declared in it.
    """

    def __init__(
        self, engine: SuggestionEngine, interval_seconds: float = 30.0, *, store: Any = None
    ) -> None:
        self.engine = engine
        self.store = store
        self.interval = max(0.05, float(interval_seconds))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> list[str]:
        """Refresh now; returns the families that were reloaded."""
        if self.store is not None:
            try:
                for name in load_declared(self.store):
                    log.info("declared family %s is known now", name)
            except Exception as exc:  # noqa: BLE001 - retried at the next poll
                log.warning("could not read the declared families: %s", exc)
        try:
            changed = self.engine.refresh()
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the thread
            log.warning("could not poll the surrogates registry: %s", exc)
            return []
        for family in changed:
            log.info("reloaded %s: surrogate %s", family, self.engine.active_surrogate_id(family))
        return changed

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="surrogate-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()

    def stop(self) -> None:
        """Stop polling (waits for the thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def next_fire(cron: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that matches ``cron`` (UTC)."""
    from croniter import croniter

    base = after.astimezone(UTC) if after.tzinfo else after.replace(tzinfo=UTC)
    fire = croniter(cron, base).get_next(datetime)
    return fire if fire.tzinfo else fire.replace(tzinfo=UTC)


def validate_cron(cron: str) -> str:
    """Return ``cron`` if croniter accepts it, else raise ``ValueError`` saying why."""
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression {cron!r} (expected e.g. '0 3 * * *')")
    return cron


class RetrainScheduler:
    """Retrains every family at the times of a cron expression.

    Args:
        store: the store (history, registry, locks).
        cron: when to retrain (UTC), e.g. ``"0 3 * * *"``.
        families: which families (None: every registered family and every family
            declared in the store, read at each run).
        tolerance: promotion tolerance on top-1 regret (see
            :func:`hyperprior.training.retrain.retrain`).
        lock_ttl_seconds: lease length of the retrain lock.
        keep_retired: retired surrogates kept per (family, target) after an
            activation (None: all).
        params: the surrogate recipe (default :class:`SurrogateParams`).
        now: clock (tests inject a fake one).
        on_result: called with each family's result.
        catch_up: on start, before waiting for the first cron time, fit the metric
            surrogates that have data but were never trained
            (:func:`~hyperprior.training.retrain.retrain_missing_targets`).
    """

    def __init__(
        self,
        store: Any,
        *,
        cron: str = "0 3 * * *",
        families: Sequence[str] | None = None,
        tolerance: float = 0.0,
        lock_ttl_seconds: float = 600.0,
        keep_retired: int | None = None,
        params: SurrogateParams | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_result: Callable[[RetrainResult], None] | None = None,
        catch_up: bool = False,
    ) -> None:
        self.store = store
        self.catch_up = catch_up
        self.cron = validate_cron(cron)
        self.families = None if families is None else tuple(families)
        self.tolerance = tolerance
        self.lock_ttl_seconds = lock_ttl_seconds
        self.keep_retired = keep_retired
        self.params = params
        self.now = now
        self.on_result = on_result
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, scheduled_at: datetime | None = None) -> list[RetrainResult]:
        """Retrain every family now (skipping those already retrained since ``scheduled_at``)."""

        def work(family: str) -> list[RetrainResult]:
            if scheduled_at is not None and self._done_since(family, scheduled_at):
                log.info("retrain %s: already retrained since %s", family, scheduled_at)
                return []
            return retrain_family(self.store, family, **self._options())

        return self._each_family("retrain", work)

    def run_catch_up(self) -> list[RetrainResult]:
        """Fit every family's never-trained metric surrogates that have data, now."""
        return self._each_family(
            "catch-up retrain",
            lambda family: retrain_missing_targets(self.store, family, **self._options()),
        )

    def _options(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "params": self.params,
            "lock_ttl_seconds": self.lock_ttl_seconds,
            "keep_retired": self.keep_retired,
        }

    def _each_family(
        self, what: str, work: Callable[[str], list[RetrainResult]]
    ) -> list[RetrainResult]:
        results = []
        for family in self._families():
            if self._stop.is_set():
                break
            try:
                done = work(family)
            except Exception:  # noqa: BLE001 - one family failing must not stop the others
                log.exception("%s of %s failed; the active model keeps serving", what, family)
                continue
            for result in done:
                key = f"{family}@{result.target}" if result.target else family
                log.info("%s %s: %s (%s)", what, key, result.outcome, result.reason)
                results.append(result)
                if self.on_result is not None:
                    self.on_result(result)
        return results

    def _families(self) -> tuple[str, ...]:
        if self.families is not None:
            return self.families
        try:
            load_declared(self.store)
        except Exception as exc:  # noqa: BLE001 - the built-in families still retrain
            log.warning("could not read the declared families: %s", exc)
        return tuple(FAMILIES)

    def _done_since(self, family: str, when: datetime) -> bool:
        listed = self.store.list_surrogates(family)
        return bool(listed) and listed[0].created_at >= when

    def run_forever(self) -> None:
        """Block, retraining at every cron time, until :meth:`stop` (or Ctrl-C)."""
        if self.catch_up:
            self.run_catch_up()
        while not self._stop.is_set():
            fire = next_fire(self.cron, self.now())
            log.info("next retrain at %s", fire.isoformat())
            while not self._stop.is_set():
                left = (fire - self.now()).total_seconds()
                if left <= 0:
                    break
                # Wake at least every minute so a changed clock (suspend) is noticed.
                self._stop.wait(min(left, 60.0))
            if self._stop.is_set():
                return
            self.run_once(scheduled_at=fire)

    def start(self) -> None:
        """Run :meth:`run_forever` in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="retrain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the retrain in progress, if any (waits briefly for the thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class BackgroundServices:
    """The suggestion engine of an API process and its background threads.

    Args:
        store: the store (history reader, registry and locks).
        settings: the service settings (``surrogate_poll_s``, ``retrain_*``,
            ``compiled_*``).
    """

    def __init__(self, store: Any, settings: Settings) -> None:
        self.settings = settings
        # A family declared through another process is found in the store on first use.
        self._lookup = store_lookup(store)
        add_lookup(self._lookup)
        # The surrogates' trees compiled in the background (HYPERPRIOR_COMPILED_TREES).
        self.engine = SuggestionEngine(store, store, compiler=settings.tree_compiler())
        self.watcher = SurrogateWatcher(self.engine, settings.surrogate_poll_s, store=store)
        self.scheduler: RetrainScheduler | None = None
        if settings.retrain_in_process:
            self.scheduler = RetrainScheduler(
                store,
                cron=settings.retrain_cron,
                tolerance=settings.retrain_tolerance,
                lock_ttl_seconds=settings.retrain_lock_ttl_s,
                keep_retired=settings.surrogate_keep_retired,
                catch_up=settings.retrain_catch_up,
            )

    def start(self) -> None:
        """Start polling the registry and, if enabled, the nightly retrain."""
        self.watcher.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self) -> None:
        """Stop the background threads (and the store lookup of declared families)."""
        self.watcher.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        remove_lookup(self._lookup)
