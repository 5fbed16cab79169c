"""Persistence: the SQLAlchemy models, engines and the Alembic entry point.

Only `service.store` reads or writes rows; everything else goes through it.
"""

from service.db.base import Base
from service.db.engine import make_engine, make_session_factory

__all__ = ["Base", "make_engine", "make_session_factory"]
