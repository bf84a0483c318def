"""API keys: stored as hashes, looked up, revoked and touched."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Row, select, update

from hyperprior.db.entities import ApiKey
from hyperprior.db.errors import AlreadyExistsError, NotFoundError
from hyperprior.db.store.base import StoreBase, _api_keys


def _to_api_key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        name=m["name"],
        key_hash=m["key_hash"],
        scopes=tuple(m["scopes"]),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


class KeysMixin(StoreBase):
    """API keys, stored as hashes."""

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, name: str, key_hash: str, scopes: Iterable[str]) -> ApiKey:
        """Store a new API key (its hash only).

        Raises:
            AlreadyExistsError: When a key with this hash exists.
        """
        row = {
            "name": name,
            "key_hash": key_hash,
            "scopes": sorted(set(scopes)),
            "created_at": self._clock(),
        }

        def work(conn: Connection) -> ApiKey:
            new_id = conn.execute(_api_keys.insert().returning(_api_keys.c.id), row).scalar_one()
            return _to_api_key(
                conn.execute(select(_api_keys).where(_api_keys.c.id == new_id)).one()
            )

        try:
            return self._run(work, write=True)
        except AlreadyExistsError:
            raise AlreadyExistsError("an API key with this hash already exists") from None

    def find_api_key_by_hash(
        self, key_hash: str, *, include_revoked: bool = False
    ) -> ApiKey | None:
        """Return the key with this hash, or None (also for revoked keys, by default)."""

        def work(conn: Connection) -> ApiKey | None:
            stmt = select(_api_keys).where(_api_keys.c.key_hash == key_hash)
            if not include_revoked:
                stmt = stmt.where(_api_keys.c.revoked_at.is_(None))
            row = conn.execute(stmt).first()
            return None if row is None else _to_api_key(row)

        return self._run(work)

    def list_api_keys(self) -> list[ApiKey]:
        """List all keys, revoked ones included, oldest first."""

        def work(conn: Connection) -> list[ApiKey]:
            return [
                _to_api_key(r) for r in conn.execute(select(_api_keys).order_by(_api_keys.c.id))
            ]

        return self._run(work)

    def revoke_api_key(self, key_id: int) -> ApiKey:
        """Revoke a key (idempotent: the first revocation time is kept).

        Raises:
            NotFoundError: When there is no such key.
        """

        def work(conn: Connection) -> ApiKey:
            conn.execute(
                update(_api_keys)
                .where(_api_keys.c.id == key_id, _api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = conn.execute(select(_api_keys).where(_api_keys.c.id == key_id)).first()
            if row is None:
                raise NotFoundError(f"API key {key_id} not found")
            return _to_api_key(row)

        return self._run(work, write=True)

    def touch_api_key(self, key_id: int) -> None:
        """Record that a key was just used."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(_api_keys).where(_api_keys.c.id == key_id).values(last_used_at=self._clock())
            )

        self._run(work, write=True)
