"""Run the Alembic migrations from Python: `gradwatch up`, compose's `migrate`, tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"
MIGRATIONS = REPO_ROOT / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for `url` (default: the settings' database)."""
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # env.py reads the URL from here before falling back to `-x url=` and the settings;
    # passing it as an attribute avoids ConfigParser's %-interpolation of passwords.
    config.attributes["url"] = url
    # Programmatic runs keep the caller's logging (fileConfig would reset it).
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """`alembic upgrade head` on `url`; creates the schema in an empty database."""
    command.upgrade(alembic_config(url), revision)
