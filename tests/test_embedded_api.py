"""Embedded mode: apim-upgrade's own ephemeral Prefect API answers, is lean, keeps the operator's settings
and leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# In a fresh interpreter: no API configured, one operator setting made explicitly.
PROBE = """
import json, os, urllib.request
from pathlib import Path
import prefect.settings as ps
from apim_upgrade.runtime.embedded_api import embedded_api

def server_env(port):
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\\0")
        except OSError:
            continue
        if b"uvicorn" in b" ".join(cmd) and str(port).encode() in cmd:
            pairs = (entry / "environ").read_bytes().split(b"\\0")
            return int(entry.name), dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
    return None, {}

with embedded_api() as url:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        health = response.status
    pid, env = server_env(port)
    client_url = ps.get_current_settings().api.url
print(json.dumps({"url": url, "client_url": client_url, "health": health, "pid": pid,
                  "triggers": env.get("PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"),
                  "timeout": env.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"),
                  "alive_after": Path(f"/proc/{pid}").exists()}))
"""


def test_embedded_api_is_lean_keeps_operator_settings_and_stops(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # Explicit operator settings; no database set-up keeps the test short (/health needs none).
    env.update(
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="77",
        PREFECT_API_DATABASE_MIGRATE_ON_START="false",
        PREFECT_API_BLOCKS_REGISTER_ON_START="false",
    )
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["health"] == 200
    assert report["client_url"] == report["url"]  # the flows talk to it
    assert report["pid"] is not None
    assert report["triggers"] == "False"  # no automation services in a throwaway API
    assert report["timeout"] == "77"  # the operator's explicit value, not ours (90)
    assert report["alive_after"] is False  # stopped with the block


def test_a_configured_api_is_left_alone(tmp_path: Path) -> None:
    probe = (
        "from apim_upgrade.runtime.embedded_api import embedded_api\n"
        "with embedded_api() as url:\n    print(repr(url))\n"
    )
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"), PREFECT_API_URL="http://127.0.0.1:9/api")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "None"
