"""Alembic environment: migrates the database named by the caller or the settings.

The URL comes, in order, from `config.attributes["url"]` (set by
`service.db.migrate.upgrade(url)`), from `alembic -x url=...`, and from the settings
(`GRADWATCH_DATABASE_URL`, default the SQLite file in `GRADWATCH_HOME`).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from service.config import settings
from service.db import models  # noqa: F401 - registers the tables on Base.metadata
from service.db.base import Base
from service.db.engine import make_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or settings.resolved_database_url
    )


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things: later revisions rebuild tables in batches.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
