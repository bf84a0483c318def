"""The engine: one policy per family, reloaded when the registry's active surrogate changes."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from hyperprior.db.entities import split_surrogate_key, surrogate_key
from hyperprior.training.compiled import TreeCompiler
from hyperprior.training.features import runs_for_target
from hyperprior.training.suggest.policy import PolicySettings, SuggestionPolicy
from hyperprior.training.suggest.portfolio import Portfolio
from hyperprior.training.suggest.protocols import (
    HistoryReader,
    SuggestionError,
    SuggestionRequest,
    SuggestionResult,
    SurrogateInfo,
    SurrogateRecord,
    SurrogateRegistry,
)
from hyperprior.training.surrogate import Surrogate, SurrogateIntegrityError, from_text

log = logging.getLogger(__name__)


def surrogate_from_record(record: SurrogateRecord) -> Surrogate:
    """Verify and load a registered surrogate (sha256 checked before parsing)."""
    if record.model_text is None:
        raise SurrogateIntegrityError(f"surrogate {record.id} came without its model text")
    return from_text(record.model_text, record.meta, sha256=record.sha256)


class SuggestionEngine:
    """Per-family suggestion policies over the registry's active surrogates.

    Policies are built lazily on first use and rebuilt by :meth:`refresh` when the
    active surrogate of a family changes (a cheap listing of the registry, no model
    text); the portfolio of a cold-start policy is rebuilt from the history at most
    every ``portfolio_ttl`` seconds.

    A newly active surrogate that cannot be loaded (its text does not match its
    sha256, or it needs features this version no longer builds) is refused and logged
    as an error, and the surrogate loaded before keeps serving; the refused one is
    tried again only after ``portfolio_ttl`` seconds or when another becomes active.
    Without a loaded surrogate to keep, the family answers cold start, with a warning.

    With a ``compiler``, each loaded surrogate predicts with compiled trees once they are
    ready (:mod:`hyperprior.training.compiled`: built in the background, LightGBM until
    then; the answers are the same either way).

    Args:
        reader: the run history.
        registry: the surrogates registry (None: always cold start).
        settings: the policies' knobs.
        portfolio_ttl: seconds a cold-start portfolio is reused.
        compiler: compiles the surrogates' trees (None: LightGBM predicts).
    """

    def __init__(
        self,
        reader: HistoryReader,
        registry: SurrogateRegistry | None,
        *,
        settings: PolicySettings | None = None,
        portfolio_ttl: float = 600.0,
        compiler: TreeCompiler | None = None,
    ) -> None:
        self.reader = reader
        self.compiler = compiler
        self.registry = registry
        self.settings = settings or PolicySettings()
        self.portfolio_ttl = portfolio_ttl
        self._policies: dict[str, tuple[int | None, float, SuggestionPolicy]] = {}
        # family -> (surrogate id, when) of a newly active model that was refused.
        self._refused: dict[str, tuple[int, float]] = {}
        self._build_lock = threading.Lock()
        # Registry keys with an active surrogate (family, or family@metric); None: unread.
        self._active_keys: set[str] | None = None

    def suggest(self, request: SuggestionRequest) -> SuggestionResult:
        """Answer with the family's current policy (built on first use).

        A request that names a metric other than its task's primary one is ranked by
        that metric's surrogate when one is active and loads; otherwise by the primary
        metric, with a warning that says so.
        """
        from hyperprior.training.families import PRIMARY_METRICS, TASK_METRICS

        primary = PRIMARY_METRICS.get(request.task)
        metric = request.metric
        # A metric of another task (rmse for a binary request) has no surrogate that
        # knows this task: the primary ranking answers, with its warning.
        if metric and primary and metric != primary and metric in TASK_METRICS[request.task]:
            key = surrogate_key(request.family, metric)
            if key in self._known_keys():
                policy = self.policy(key)
                if policy.surrogate is not None:
                    return replace(policy.suggest(request), ranked_by=metric)
        return replace(self.policy(request.family).suggest(request), ranked_by=primary)

    def ready(self, request: SuggestionRequest) -> bool:
        """Whether :meth:`suggest` answers ``request`` from loaded policies alone (no
        registry query, no model to load), so an event loop may run it inline."""
        from hyperprior.training.families import PRIMARY_METRICS

        if request.family not in self._policies:
            return False
        metric = request.metric
        if not metric or metric == PRIMARY_METRICS.get(request.task):
            return True
        keys = self._active_keys
        if keys is None:
            return False
        key = surrogate_key(request.family, metric)
        return key not in keys or key in self._policies

    def _known_keys(self) -> set[str]:
        # Refreshed with the policies (refresh()); one registry query on first use.
        if self._active_keys is None:
            self._active_keys = set(self._active_ids())
        return self._active_keys

    def policy(self, family: str) -> SuggestionPolicy:
        """The current policy of ``family`` (or of a registry key ``family@metric``).

        Raises:
            SuggestionError: an unknown family.
        """
        entry = self._policies.get(family)
        if entry is not None:
            return entry[2]
        from hyperprior.training.spaces import get_space

        try:
            get_space(split_surrogate_key(family)[0])
        except (KeyError, ValueError) as exc:
            raise SuggestionError(str(exc), field="family") from None
        with self._build_lock:
            entry = self._policies.get(family)
            if entry is None:
                active = self._active_ids().get(family)
                entry = self._build(family, active)
                self._policies[family] = entry
        return entry[2]

    def _active_ids(self) -> dict[str, int]:
        if self.registry is None:
            return {}
        # A registry may offer the ids alone (one tiny query); the listing carries every
        # version's metadata, which grows with each nightly retrain.
        fast = getattr(self.registry, "active_surrogate_ids", None)
        if callable(fast):
            return {str(k): int(v) for k, v in fast().items()}
        return {
            surrogate_key(s.family, getattr(s, "target", "")): int(s.id)
            for s in self.registry.list_surrogates()
            if s.status == "active"
        }

    def refresh(self) -> list[str]:
        """Reload the policies whose active surrogate changed; return those families."""
        changed = []
        active = self._active_ids()
        self._active_keys = set(active)
        now = time.monotonic()
        for family, entry in list(self._policies.items()):
            current, built, _ = entry
            wanted = active.get(family)
            stale = current is None and now - built > self.portfolio_ttl
            if wanted == current and not stale:
                continue
            refused = self._refused.get(family)
            if refused is not None and refused[0] == wanted:
                if now - refused[1] < self.portfolio_ttl:
                    continue  # refused and logged already; the loaded model keeps serving
            with self._build_lock:
                rebuilt = self._build(family, wanted, previous=entry)
                self._policies[family] = rebuilt
            if rebuilt is not entry:
                changed.append(family)
        return changed

    def active_surrogate_id(self, family: str) -> int | None:
        """Id of the surrogate the family's loaded policy uses (None: cold start)."""
        entry = self._policies.get(family)
        return None if entry is None else entry[0]

    def _build(
        self,
        key: str,
        active: int | None,
        *,
        previous: tuple[int | None, float, SuggestionPolicy] | None = None,
    ) -> tuple[int | None, float, SuggestionPolicy]:
        """Build the policy of registry ``key`` (a family, or ``family@metric``) on surrogate
        ``active`` (None: cold start).

        When ``active`` cannot be loaded and ``previous`` holds a loaded surrogate,
        ``previous`` itself is returned: a tampered or broken model never replaces a
        working one.
        """
        family, target = split_surrogate_key(key)
        notes: list[str] = []
        if active is not None and self.registry is not None:
            try:
                record = self.registry.get_surrogate(active)
                surrogate = surrogate_from_record(record)
                if not surrogate.compatible():
                    raise SurrogateIntegrityError(
                        "it was trained on features this version no longer builds; retrain it"
                    )
                portfolio_json = surrogate.metadata.get("portfolio")
                portfolio = (
                    Portfolio.from_json(family, portfolio_json)
                    if portfolio_json is not None
                    else self._history_portfolio(family, target)
                )
                info = SurrogateInfo(
                    id=int(record.id),
                    family=family,
                    # When the model was fitted, not when it was registered (shipped
                    # models are registered at install time).
                    trained_at=surrogate.metadata.get("trained_at")
                    or (record.created_at.isoformat() if record.created_at else None),
                    n_runs=int(record.n_runs),
                    sha256=record.sha256,
                )
                log.info("loaded %s surrogate %s (sha256 %s)", key, active, record.sha256[:12])
                if self.compiler is not None:
                    surrogate.use_compiled(
                        self.compiler, screen_fractions=(self.settings.screen_fraction,)
                    )
                policy = SuggestionPolicy(
                    family,
                    surrogate=surrogate,
                    portfolio=portfolio,
                    info=info,
                    settings=self.settings,
                    target=target,
                )
                self._refused.pop(key, None)
                return active, time.monotonic(), policy
            except (SurrogateIntegrityError, KeyError, ValueError) as exc:
                log.error("cannot load %s surrogate %s: %s", key, active, exc)
                self._refused[key] = (active, time.monotonic())
                if previous is not None and previous[2].surrogate is not None:
                    log.error(
                        "refused %s surrogate %s; surrogate %s keeps serving",
                        key,
                        active,
                        previous[0],
                    )
                    return previous
                notes.append(
                    f"the active {key} surrogate ({active}) could not be loaded ({exc}); "
                    "answering without it"
                )
        policy = SuggestionPolicy(
            family,
            surrogate=None,
            portfolio=self._history_portfolio(family, target),
            settings=self.settings,
            notes=notes,
            target=target,
        )
        return active, time.monotonic(), policy

    def _history_portfolio(self, family: str, target: str = "") -> Portfolio:
        try:
            frame = runs_for_target(self.reader.runs_frame(family=family, status="ok"), target)
        except Exception as exc:  # noqa: BLE001 - a history outage must not stop answers
            log.error("cannot read the %s history: %s", family, exc)
            return Portfolio(family, {})
        return Portfolio.from_frame(frame, family, per_dataset=self.settings.per_dataset)
