"""Declared families: a user's own model family, stored by its search space."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, Table, select

from hyperprior.db.errors import AlreadyExistsError
from hyperprior.db.models import SqlFamily
from hyperprior.db.store.base import StoreBase

__all__ = ["DeclaredFamily", "FamiliesMixin"]

_families: Table = SqlFamily.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class DeclaredFamily:
    """A stored declaration (a copy: changing it changes nothing stored).

    Attributes:
        name: The family name.
        description: One line, as declared.
        params: The parameters' JSON, as declared.
        defaults: Task -> parameter -> default, as declared.
        spec_sha256: Hash of params and defaults (same hash, same space).
        created_at: When it was first declared (aware UTC).
    """

    name: str
    description: str
    params: list[dict[str, Any]]
    defaults: dict[str, dict[str, Any]]
    spec_sha256: str
    created_at: dt.datetime


def _to_family(row: Row[Any]) -> DeclaredFamily:
    m = row._mapping
    return DeclaredFamily(
        name=m["name"],
        description=m["description"] or "",
        params=[dict(p) for p in m["params"]],
        defaults={str(k): dict(v) for k, v in (m["defaults"] or {}).items()},
        spec_sha256=m["spec_sha256"],
        created_at=m["created_at"],
    )


class FamiliesMixin(StoreBase):
    """Declared families. The store checks names and sameness, not the space itself
    (``hyperprior.training.families.declared`` does, before calling it)."""

    def declare_family(
        self,
        name: str,
        *,
        params: Sequence[Mapping[str, Any]],
        defaults: Mapping[str, Mapping[str, Any]],
        spec_sha256: str,
        description: str = "",
    ) -> tuple[DeclaredFamily, bool]:
        """Store a declaration; the same space again is a no-op.

        Returns:
            ``(declaration, created)``: ``created`` is False when ``name`` was declared
            already with the same ``spec_sha256`` (the stored one is returned).

        Raises:
            AlreadyExistsError: ``name`` is declared with another space.
        """
        row = {
            "name": name,
            "description": description,
            "params": [dict(p) for p in params],
            "defaults": {k: dict(v) for k, v in defaults.items()},
            "spec_sha256": spec_sha256,
            "created_at": self._clock(),
        }

        def work(conn: Connection) -> tuple[DeclaredFamily, bool]:
            found = conn.execute(select(_families).where(_families.c.name == name)).first()
            created = False
            if found is None:
                # Two processes declaring at once: the loser sees the winner's row below.
                insert = self._insert(_families).values(row).on_conflict_do_nothing()
                created = conn.execute(insert.returning(_families.c.name)).first() is not None
                found = conn.execute(select(_families).where(_families.c.name == name)).one()
            family = _to_family(found)
            if family.spec_sha256 != spec_sha256:
                raise AlreadyExistsError(
                    f"family {name!r} is declared already with another space (declared "
                    f"{family.created_at:%Y-%m-%d}); GET /v1/families/{name} shows it: "
                    "declare the new space under another name"
                )
            return family, created

        return self._run(work, write=True)

    def find_family(self, name: str) -> DeclaredFamily | None:
        """The declaration of ``name``, or None."""

        def work(conn: Connection) -> DeclaredFamily | None:
            row = conn.execute(select(_families).where(_families.c.name == name)).first()
            return None if row is None else _to_family(row)

        return self._run(work)

    def list_families(self) -> list[DeclaredFamily]:
        """Every declaration, oldest first."""

        def work(conn: Connection) -> list[DeclaredFamily]:
            stmt = select(_families).order_by(_families.c.created_at, _families.c.name)
            return [_to_family(r) for r in conn.execute(stmt)]

        return self._run(work)
