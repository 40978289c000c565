"""Which store backend the configuration asks for, and what each one covers."""

from __future__ import annotations

from mailraven.config import Config, ConfigError

# Parts of the store that have a PostgreSQL implementation, and those not yet.
POSTGRES_PORTED = ("schema migrations",)
POSTGRES_NOT_PORTED = (
    "accounts",
    "aliases",
    "domains",
    "quotas",
    "mailboxes and messages",
    "folders",
    "search index",
    "outbound queue",
    "policy state",
)


def requireSupportedBackend(config: Config) -> None:
    """
    Refuse to start on a backend the server cannot run on yet, naming what
    is missing, rather than keep part of the data in SQLite unannounced.
    """
    if config["store.backend"] == "postgresql":
        raise ConfigError(
            "store.backend = postgresql is not supported yet: only "
            + ", ".join(POSTGRES_PORTED)
            + " run on PostgreSQL; not ported: "
            + ", ".join(POSTGRES_NOT_PORTED)
            + " (docs/postgresql.md)"
        )
