"""API tokens: random, shown once, stored only as a sha256 digest.

A token carries 256 bits of entropy, so a fast unsalted hash cannot be brute-forced and
lets authentication be a single indexed lookup on `annotators.token_hash`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache

from core.tables import Annotator, Role

TOKEN_BYTES = 32


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenOwner:
    """Who a valid token belongs to: the columns requests read, not a session-bound row."""

    id: int
    name: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, annotator: Annotator) -> TokenOwner:
        return cls(annotator.id, annotator.name, annotator.role, annotator.created_at)

    def as_annotator(self) -> Annotator:
        """A fresh transient Annotator per request, so no request shares a mutable row."""
        return Annotator(id=self.id, name=self.name, role=self.role, created_at=self.created_at)


TokenCache = TTLCache[str, TokenOwner]
"""Valid tokens checked in the last few seconds, by hash: saves a query per request."""


def make_token_cache(
    ttl_seconds: float, *, max_entries: int = 10_000, timer: Callable[[], float] = time.monotonic
) -> TokenCache | None:
    """A cache of valid tokens, or None when `ttl_seconds` <= 0 (check every request).

    Bounded in time and size: a token rotated or an annotator deleted elsewhere keeps working
    in this process for at most `ttl_seconds`. The caller caches only valid tokens, so a new
    token works at once. It is used from the event loop's thread alone (the auth dependency
    is async), so it needs no lock.
    """
    if ttl_seconds <= 0:
        return None
    return TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=timer)
