"""A field of an agent's JSON message as the shape we expect, or empty when it is not.

The CLIs' messages are untyped JSON: a field may be missing, null or of another shape in some
version. Reading it through these keeps that check in one place and gives the caller a type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dict_field(message: Mapping[str, Any], key: str) -> dict[str, Any]:
    """message[key] if it is a JSON object, else a new empty dict."""
    value = message.get(key)
    return value if isinstance(value, dict) else {}


def list_field(message: Mapping[str, Any], key: str) -> list[Any]:
    """message[key] if it is a JSON array, else a new empty list."""
    value = message.get(key)
    return value if isinstance(value, list) else []
