"""The ``hyperprior`` command line.

Subcommands live in `hyperprior.service.commands` (one module each, see there for how to add
one). User errors print one line to stderr and exit with status 2; an unreachable
database exits with status 3. Output piped into a reader that stops early (``| head``)
ends quietly with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

try:
    from pydantic import ValidationError

    from hyperprior.db.errors import DatabaseUnavailableError, StoreError
    from hyperprior.service.commands import COMMANDS, CommandError
except ModuleNotFoundError as error:  # an SDK-only install: main() says which extra
    _IMPORT_ERROR: ModuleNotFoundError | None = error
else:
    _IMPORT_ERROR = None

__all__ = ["EXIT_DATABASE_UNAVAILABLE", "EXIT_USAGE", "SERVER_EXTRA", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_DATABASE_UNAVAILABLE = 3
SERVER_EXTRA = "the server needs its extra: pip install 'hyperprior[server]'"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="hyperprior",
        description="Hyperparameter suggestions learned from a history of training runs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hyperprior")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _quiet_broken_pipe() -> None:
    # The reader (`| head`) has what it wanted. Point stdout at /dev/null so that the
    # interpreter's final flush does not raise again at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _error(message: str) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"hyperprior: error: {first_line}", file=sys.stderr)


def _missing_server_extra() -> list[str]:
    """The server extra's distributions that are not installed (none in a checkout)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        requirements = requires("hyperprior") or []
    except PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name and re.search(r"extra\s*==\s*['\"]server['\"]", requirement):
            try:
                version(name.group())
            except PackageNotFoundError:
                missing.append(name.group())
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    try:
        return _main(argv)
    except ModuleNotFoundError:
        missing = _missing_server_extra()
        if not missing:
            raise
        more = f" and {len(missing) - 2} more" if len(missing) > 2 else ""
        _error(f"{SERVER_EXTRA} ({', '.join(missing[:2])}{more} not installed)")
        return EXIT_USAGE


def _main(argv: Sequence[str] | None) -> int:
    if _IMPORT_ERROR is not None:
        raise _IMPORT_ERROR
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad usage
    try:
        return int(args.handler(args) or 0)
    except DatabaseUnavailableError as error:
        _error(f"cannot reach the database: {error}")
        return EXIT_DATABASE_UNAVAILABLE
    except (CommandError, StoreError) as error:
        _error(str(error))
        return EXIT_USAGE
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        _error(f"invalid settings: {details}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
