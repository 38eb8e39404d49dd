"""The phases that exist, in the order an upgrade runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.prepare_databases import prepare_databases

PHASES: dict[str, Callable[..., Any]] = {
    "prepare-databases": prepare_databases,
}
