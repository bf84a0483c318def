"""``hyperprior keys``: create, list and revoke API keys.

Keys are created here, on the server's database, and nowhere else: the API has no
sign-up and no default key.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hyperprior.service.commands.db import add_database_url_option, database_url, require_database

_SCOPES = ("read", "write", "admin")


def register(subparsers: Any) -> None:
    """Add ``hyperprior keys`` and its subcommands."""
    parser = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description=(
            "API keys authorise clients (Authorization: Bearer KEY). Scopes nest: admin "
            "includes write, write includes read. Only a hash of each key is stored: a "
            "key is shown once, when it is created."
        ),
    )
    keys = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = keys.add_parser(
        "create", help="create a key and print it (on the last line, shown only once)"
    )
    create.add_argument(
        "--scope",
        required=True,
        choices=_SCOPES,
        help="read: query; write: also ingest runs and refine; admin: also manage surrogates",
    )
    create.add_argument("--name", help="what the key is for (default: '<scope> key')")
    add_database_url_option(create)
    create.set_defaults(handler=run_create)

    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    add_database_url_option(listing)
    listing.set_defaults(handler=run_list)

    revoke = keys.add_parser(
        "revoke",
        help="revoke a key (every API process refuses it within half of "
        "HYPERPRIOR_AUTH_CACHE_S; idempotent)",
    )
    revoke.add_argument("id", type=int, help="the key's id (see `hyperprior keys list`)")
    add_database_url_option(revoke)
    revoke.set_defaults(handler=run_revoke)


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Any]:
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store

    url = database_url(args)
    require_database(url)
    migrate.verify_schema(url)
    engine = make_engine(url)
    try:
        yield Store(engine)
    finally:
        engine.dispose()


def run_create(args: argparse.Namespace) -> int:
    """Create a key; the key itself is the last line of output."""
    from hyperprior.service.auth import issue_key
    from hyperprior.service.commands import CommandError

    name = args.name if args.name is not None else f"{args.scope} key"
    if not name.strip() or len(name) > 200:
        raise CommandError("--name must have 1 to 200 characters")
    with _store(args) as store:
        record, key = issue_key(store, args.scope, name=name)
    print(f"created API key {record.id} ({record.name!r}, scope {args.scope}).")
    print("Store it now: it is not shown again. Send it as 'Authorization: Bearer KEY'.")
    print(key, flush=True)
    return 0


def _when(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def run_list(args: argparse.Namespace) -> int:
    """Print every key, revoked ones included."""
    with _store(args) as store:
        records = store.list_api_keys()
    if args.json:
        rows = [
            {
                "id": r.id,
                "name": r.name,
                "scopes": list(r.scopes),
                "created_at": r.created_at.isoformat(),
                "last_used_at": None if r.last_used_at is None else r.last_used_at.isoformat(),
                "revoked_at": None if r.revoked_at is None else r.revoked_at.isoformat(),
            }
            for r in records
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not records:
        print("no API keys: create one with `hyperprior keys create --scope write`")
        return 0
    print(f"{'id':>4}  {'scope':6}  {'created':16}  {'last used':16}  {'revoked':16}  name")
    for r in records:
        print(
            f"{r.id:>4}  {','.join(r.scopes):6}  {_when(r.created_at):16}  "
            f"{_when(r.last_used_at):16}  {_when(r.revoked_at):16}  {r.name}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke a key (an unknown id is an error)."""
    with _store(args) as store:
        record = store.revoke_api_key(args.id)
    print(f"revoked API key {record.id} ({record.name!r}) at {_when(record.revoked_at)} UTC")
    return 0
