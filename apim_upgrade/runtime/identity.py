"""Who runs this process: the actor every audit record and script history row names."""

from __future__ import annotations

import getpass
import os
import socket


def default_actor() -> str:
    """Who ran it: APIM_UPGRADE_ACTOR if set, else user@host."""
    explicit = os.environ.get("APIM_UPGRADE_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"
