"""API tokens: random secrets, shown once, stored only as their SHA-256.

A token is `gw_` followed by 32 random bytes in URL-safe base64 (43 characters): the
prefix lets secret scanners and people recognise one in a log or a repository.

Why a plain SHA-256 and not a password hash (bcrypt, argon2): those are slow on purpose,
to make guessing a *low-entropy* password from a stolen hash expensive. A 256-bit random
secret cannot be guessed whatever the hash costs, so a fast hash loses nothing, and it
lets every request find its token with one indexed equality lookup (a salted slow hash
could only be checked row by row, at ~100 ms each).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import Enum

from sqlalchemy.orm import Session

from service import store

TOKEN_PREFIX = "gw_"
TOKEN_BYTES = 32
# Methods that change nothing: the only ones a `read` token may use.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Scope(str, Enum):
    """What a token may do: `read` only reads its owner's rows; `write` also creates,
    cancels and deletes them; `admin` reads and changes everyone's."""

    read = "read"
    write = "write"
    admin = "admin"


def new_token() -> tuple[str, str]:
    """A fresh secret and the hash to store: (token, sha256 hex)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, owner: str, scope: Scope | str, name: str) -> str:
    """Store a new token (its hash) and return its secret: the only time anyone sees it."""
    token, digest = new_token()
    store.create_token(session, digest, owner=owner, scope=Scope(scope).value, name=name)
    return token


@dataclass(frozen=True)
class Caller:
    """Who a request acts for: the token's owner and scope."""

    owner: str
    scope: Scope
    token_id: str | None  # None while GRADWATCH_AUTH=off

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.admin

    @property
    def sees(self) -> str | None:
        """The owner whose rows this caller may see; None for an admin (everyone's)."""
        return None if self.is_admin else self.owner

    def may(self, method: str) -> bool:
        return method.upper() in SAFE_METHODS or self.scope is not Scope.read
