"""``hyperprior db``: schema migrations."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from hyperprior.service.commands import DB_COMMANDS, CommandError


def add_database_url_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--database-url`` (default: ``HYPERPRIOR_DATABASE_URL`` or the settings')."""
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="database URL (default: $HYPERPRIOR_DATABASE_URL or sqlite:///./hyperprior.db)",
    )


def database_url(args: argparse.Namespace) -> str:
    """The database URL from the arguments, else from the settings."""
    if getattr(args, "database_url", None):
        return str(args.database_url)
    from hyperprior.service.settings import Settings

    return Settings().database_url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a malformed URL is reported where it is used
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def require_database(url: str) -> None:
    """Refuse a SQLite file that does not exist, instead of leaving an empty one behind.

    Connecting to SQLite creates the file: a command run in the wrong directory, or
    without ``--database-url``, would otherwise leave an empty ``hyperprior.db`` there
    and then complain that it has no schema.

    Raises:
        CommandError: Naming the missing file and the commands that create it.
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise CommandError(
            f"no hyperprior database at {path} ({url}): create it with `hyperprior db seed` "
            "(the shipped history) or `hyperprior db upgrade` (empty), or name the one to "
            "use with --database-url or $HYPERPRIOR_DATABASE_URL"
        )


def register(subparsers: Any) -> None:
    """Add ``hyperprior db`` and its subcommands."""
    parser = subparsers.add_parser("db", help="manage the database schema")
    db_subparsers = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    upgrade = db_subparsers.add_parser("upgrade", help="migrate the schema to the newest version")
    add_database_url_option(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=run_upgrade)

    current = db_subparsers.add_parser("current", help="show the schema version")
    add_database_url_option(current)
    current.add_argument(
        "--check", action="store_true", help="exit with status 1 unless the schema is at head"
    )
    current.set_defaults(handler=run_current)

    for module_name in DB_COMMANDS:
        importlib.import_module(module_name).register_db(db_subparsers)


def run_upgrade(args: argparse.Namespace) -> int:
    """Migrate the schema."""
    from hyperprior.db import migrate

    url = database_url(args)
    before = migrate.current_revision(url)
    migrate.upgrade(url, args.revision)
    after = migrate.current_revision(url)
    if before == after:
        print(f"database schema already at {after}")
    else:
        print(f"database schema upgraded from {before or 'nothing'} to {after}")
    return 0


def run_current(args: argparse.Namespace) -> int:
    """Print the schema version and whether it is the newest."""
    from hyperprior.db import migrate

    url = database_url(args)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        print(
            f"none (no database at {path}: run `hyperprior db upgrade` to create an empty "
            "one, or `hyperprior db seed` for the shipped history)"
        )
        return 1 if args.check else 0
    current = migrate.current_revision(url)
    head = migrate.head_revision()
    if current == head:
        print(f"{current} (head)")
        return 0
    print(f"{current or 'none'} (head is {head}: run `hyperprior db upgrade`)")
    return 1 if args.check else 0
