"""Subcommands of the ``hyperprior`` CLI.

Each module listed in `COMMANDS` has ``register(subparsers)``, which adds one
top-level command and sets ``handler`` (a function of the parsed arguments returning
an exit status) with ``parser.set_defaults(handler=...)``. Modules in `DB_COMMANDS`
have ``register_db(subparsers)`` and add a ``hyperprior db`` subcommand the same way.
Keep heavy imports inside the handlers so that ``hyperprior --help`` stays fast.

Handlers raise `CommandError` for user errors (one line on stderr, exit status 2);
an unreachable database exits with status 3.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "DB_COMMANDS", "CommandError", "plural"]

COMMANDS: list[str] = [
    "hyperprior.service.commands.serve",
    "hyperprior.service.commands.db",
    "hyperprior.service.commands.bootstrap",
    "hyperprior.service.commands.retrain",
    "hyperprior.service.commands.suggest",
    "hyperprior.service.commands.keys",
    "hyperprior.service.commands.families",
    "hyperprior.service.commands.importers",
    "hyperprior.service.commands.bench",
]

DB_COMMANDS: list[str] = ["hyperprior.service.commands.seed"]


class CommandError(Exception):
    """A user error: printed as one line without a traceback, exit status 2."""


def plural(count: int, word: str) -> str:
    """``1 run``, ``2 runs``: counts in messages read as English."""
    return f"{count} {word}{'' if count == 1 else 's'}"
