"""Secrets never leave memory: the one rule that says which values are masked, and how."""

from __future__ import annotations

from typing import Any

_SECRET_KEYS = ("password", "secret", "token_value", "passphrase", "private_key", "dsn")
MASK = "***"


def mask_secrets(data: Any) -> Any:
    """Copy of ``data`` with values under secret-looking keys replaced by ***."""
    if isinstance(data, dict):
        return {
            k: (MASK if _is_secret_key(str(k)) and v not in (None, "") else mask_secrets(v)) for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [mask_secrets(v) for v in data]
    return data


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    # *_env / *_block keys name where a secret lives, not the secret itself.
    return any(s in k for s in _SECRET_KEYS) and not k.endswith(("_env", "_block"))
