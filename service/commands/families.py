"""``hyperprior families``: declare a model family of your own, and list the families."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hyperprior.service.commands import CommandError
from hyperprior.service.commands.db import add_database_url_option, database_url, require_database


def register(subparsers: Any) -> None:
    """Add ``hyperprior families`` and its subcommands."""
    parser = subparsers.add_parser(
        "families",
        help="declare a model family of your own (by its search space), list the families",
        description=(
            "A declared family is known by its search space alone: its runs are validated "
            "against it, suggestions come from the portfolio of its runs and, once runs "
            "cover 10 datasets, from a surrogate of the nightly retrain. The service never "
            "trains it itself. Same as POST /v1/families."
        ),
    )
    families = parser.add_subparsers(dest="families_command", required=True, metavar="COMMAND")
    declare = families.add_parser(
        "declare",
        help="declare a family from a JSON file "
        '{"name": ..., "description": ..., "space": {"params": [...], "defaults": {...}}}',
    )
    declare.add_argument("file", type=Path, metavar="FILE.json", help="the declaration")
    declare.add_argument("--name", help="the family's name (default: the file's \"name\")")
    add_database_url_option(declare)
    declare.set_defaults(handler=run_declare)

    listing = families.add_parser("list", help="list the built-in and declared families")
    add_database_url_option(listing)
    listing.set_defaults(handler=run_list)


def _open_store(args: argparse.Namespace) -> Any:
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store

    url = database_url(args)
    require_database(url)
    migrate.verify_schema(url)
    return Store(make_engine(url))


def _read(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise CommandError(f"{path} is not JSON: {error}") from None
    if not isinstance(body, dict) or "space" not in body:
        raise CommandError(
            f'{path}: expected {{"name": ..., "space": {{"params": [...]}}}}, the body of '
            "POST /v1/families"
        )
    return body


def run_declare(args: argparse.Namespace) -> int:
    """Declare (idempotent for the same space)."""
    from hyperprior.db.errors import AlreadyExistsError
    from hyperprior.training.families.declared import (
        BuiltInNameError,
        DeclarationError,
        declare,
    )

    body = _read(args.file)
    name = args.name or body.get("name")
    if not isinstance(name, str):
        raise CommandError(f'{args.file} has no "name": add one, or pass --name')
    description = body.get("description", "")
    if not isinstance(description, str):
        raise CommandError(f'{args.file}: "description" must be a string')
    store = _open_store(args)
    try:
        _, created, family = declare(store, name, body["space"], description)
    except (BuiltInNameError, DeclarationError, AlreadyExistsError) as error:
        raise CommandError(str(error)) from None
    finally:
        store.engine.dispose()
    state = "declared" if created else "already declared with this space:"
    names = ", ".join(p.name for p in family.space.params)
    print(f"{state} {name} ({len(family.space.params)} parameters: {names})", flush=True)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print one line per family."""
    from hyperprior.training.families import FAMILIES
    from hyperprior.training.families.declared import is_declared

    store = _open_store(args)
    try:
        declared = store.list_families()
    finally:
        store.engine.dispose()
    for name in FAMILIES:
        if not is_declared(name):
            print(f"{name:20s} built-in")
    for record in declared:
        print(f"{record.name:20s} declared {record.created_at:%Y-%m-%d}  {record.description}")
    return 0
