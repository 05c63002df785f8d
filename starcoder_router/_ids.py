"""Unique ids for requests and reservations: 128 random bits as hex, like a UUID4, without
importing `uuid` (which pulls in `platform` and more at import time)."""

from __future__ import annotations

import os

__all__ = ["new_id"]


def new_id() -> str:
    return os.urandom(16).hex()
