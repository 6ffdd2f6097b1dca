"""API tokens: random, shown once, stored only as a sha256 digest.

A token carries 256 bits of entropy, so a fast unsalted hash cannot be brute-forced and
lets authentication be a single indexed lookup on `annotators.token_hash`.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
