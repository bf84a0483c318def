"""``hyperprior db seed`` and ``hyperprior db export-seed``: the shipped run history."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from hyperprior.service.commands import CommandError, plural
from hyperprior.service.commands.db import add_database_url_option, database_url, require_database


def register_db(subparsers: Any) -> None:
    """Add ``hyperprior db seed`` and ``hyperprior db export-seed``."""
    seed = subparsers.add_parser(
        "seed",
        help="load the shipped seed run history (and its surrogates) into the database",
        description=(
            "Load the run history shipped with hyperprior into the database, and register "
            "its surrogates when no surrogate of that family is active yet. A new database "
            "is created and migrated first. Idempotent: a second load adds nothing."
        ),
    )
    add_database_url_option(seed)
    seed.add_argument("--dir", type=Path, help="seed directory (default: the shipped one)")
    seed.add_argument("--no-progress", action="store_true", help="no progress bar")
    seed.set_defaults(handler=run_seed)

    export = subparsers.add_parser(
        "export-seed",
        help="write the database's bootstrap runs as a seed directory (maintainers)",
    )
    add_database_url_option(export)
    export.add_argument("--dir", type=Path, help="seed directory (default: the shipped one)")
    export.add_argument(
        "--command",
        default="",
        help="the bootstrap command line that produced the runs, for the manifest",
    )
    export.set_defaults(handler=run_export)


def _store(args: argparse.Namespace, *, create: bool = False) -> Any:
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store

    url = database_url(args)
    if not create:
        require_database(url)
    if create and migrate.current_revision(url) is None:
        # A new database: `db seed` is what error messages tell users to run, so it
        # creates the schema itself instead of sending them to `db upgrade` first.
        migrate.upgrade(url)
    migrate.verify_schema(url)
    return Store(make_engine(url))


def run_seed(args: argparse.Namespace) -> int:
    """Load the seed history."""
    from tqdm import tqdm

    from hyperprior.training.seed import SEED_DIR, load_seed, read_seed

    directory = args.dir or SEED_DIR
    if args.dir is not None and not directory.is_dir():
        raise CommandError(f"seed directory {directory} does not exist")
    store = _store(args, create=True)
    _, runs = read_seed(directory)
    if runs.empty:
        print(f"no seed history in {directory}; nothing loaded")
    else:
        with tqdm(total=len(runs), desc="seed", unit="run", disable=args.no_progress) as bar:
            result = load_seed(store, directory, progress=bar.update)
        print(
            f"seed: {plural(result.runs, 'run')} over {plural(result.datasets, 'dataset')}: "
            f"{result.inserted} inserted, {result.duplicates} already present"
        )
    surrogates = directory / "surrogates"
    if surrogates.is_dir():
        from hyperprior.training.retrain import install_shipped
        from hyperprior.training.surrogate import SurrogateIntegrityError

        # Registered only where a family has no active surrogate: never overrides a
        # model this database trained itself. The sha256 is checked before parsing.
        try:
            installed = install_shipped(store, surrogates)
        except SurrogateIntegrityError as error:
            raise CommandError(f"refusing the shipped surrogates: {error}") from None
        for family, new_id in sorted(installed.items()):
            state = f"registered as #{new_id} (active)" if new_id else "active one kept"
            print(f"surrogate {family}: {state}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export bootstrap runs as the seed."""
    from hyperprior.training.seed import SEED_DIR, export_seed

    manifest = export_seed(
        _store(args), args.dir or SEED_DIR, command=args.command or shlex.join(sys.argv)
    )
    print(
        f"exported {manifest['runs']} runs over {manifest['datasets']} datasets "
        f"to {args.dir or SEED_DIR}"
    )
    return 0
