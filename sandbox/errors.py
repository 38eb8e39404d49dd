"""The sandbox's own error: part of the harness, so it lives beside it."""

from __future__ import annotations

from apim_upgrade.errors import ApimUpgradeError


class SandboxError(ApimUpgradeError):
    """The sandbox estate could not be built."""
