"""The sandbox estate's running nodes: a 4.0.0 control plane, the 4.4.0 home, two gateway groups.

All are homes of the stand-in distribution, managed with their own ``bin/api-manager.sh
start|stop`` exactly like a real WSO2 node, so the cutover drives them through the plan's
commands. Ports: 9763 + each home's ``[server] offset``; the 4.4.0 control plane takes over
the 4.0.0 one's offset (same host, same ports) once 4.0.0 is stopped.

Gateways are side by side too, as the field guide installs 4.4.0 next to 4.0.0 and then
"shuts down and starts all gateway nodes to complete the migration to 4.4.0": each gateway
has a 4.0.0 home (what production runs before the cutover, the node's ``replaces``) and a
4.4.0 home on the same offset, which the cutover starts once the 4.0.0 one is down.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import tomli_w

from apim_upgrade.plan.nodes import CutoverSection, NodeCommands
from apim_upgrade.runtime import process
from apim_upgrade.runtime.atomic import write_atomically
from apim_upgrade.wso2.config_render import env, jdbc_url
from sandbox.distribution.build import unpack_distribution
from sandbox.errors import SandboxError
from sandbox.processes import processes_of

SERVLET_PORT = 9763
GATEWAYS = {"internal": ["gw-internal-1", "gw-internal-2"], "external": ["gw-external-1"]}
CUSTOM_JAR = "repository/components/lib/acme-auth-handler-1.0.0.jar"
CUSTOM_THEME = "repository/deployment/server/jaggeryapps/devportal/site/public/theme/acme"


def _free_offsets(count: int) -> list[int]:
    """Offsets whose servlet port is free now (each home gets its own)."""
    offsets: list[int] = []
    # A random start keeps two sandboxes built at the same moment from picking the same ports.
    candidate = random.randrange(100, 10000)  # noqa: S311 - not a secret, a port spread
    for _ in range(2000):
        if len(offsets) == count:
            break
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", SERVLET_PORT + candidate)) != 0:
                offsets.append(candidate)
        candidate = 100 + (candidate + 37) % 15000
    if len(offsets) < count:
        raise SandboxError("no free ports for the sandbox nodes; stop other sandboxes")
    return offsets


def _edit_toml(home: Path, update: dict[str, Any]) -> None:
    conf = home / "repository" / "conf" / "deployment.toml"
    doc = tomllib.loads(conf.read_text())
    for key, value in update.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    write_atomically(conf, tomli_w.dumps(doc))


def _node(
    name: str,
    home: Path,
    offset: int,
    version: str,
    java_home: Path,
    *,
    profile: str | None = None,
    publisher: bool = False,
) -> dict[str, Any]:
    # Like a systemd unit's Environment=JAVA_HOME=...: the command carries what the node needs.
    script = ["env", f"JAVA_HOME={java_home}", "bash", str(home / "bin" / "api-manager.sh")]
    extra = [f"-Dprofile={profile}"] if profile else []
    base = f"http://127.0.0.1:{SERVLET_PORT + offset}"
    node: dict[str, Any] = {
        "name": name,
        "start": [*script, "start", *extra],
        "stop": [*script, "stop"],
        "health_url": f"{base}/health",
        "expect_version": version,
        "carbon_home": str(home),
    }
    if publisher:
        node["publisher_url"] = f"{base}/api/am/publisher/v4/apis"
        node["log_file"] = str(home / "repository" / "logs" / "wso2carbon.log")
    return node


def build_nodes(
    directory: Path,
    *,
    sources: dict[str, str],
    host: str,
    port: int,
    db_user: str,
    db_password_env: str,
    jdbc_driver: Path,
    dbscripts: dict[str, Path | None],
    java_home: Path,
) -> dict[str, Any]:
    """Unpack the homes, configure them, and return the plan's [target_440] and [cutover] sections."""
    from sandbox.distribution.build import build_distribution

    nodes_dir = directory / "nodes"
    packs = {v: build_distribution(v, directory / "packs", dbscripts=dbscripts.get(v)) for v in ("4.0.0", "4.4.0")}
    gateway_names = [n for names in GATEWAYS.values() for n in names]
    offsets = _free_offsets(2 * (1 + len(gateway_names)))
    cp_offset, gateway_offsets = offsets[0], dict(zip(gateway_names, offsets[1:], strict=False))
    # The rehearsal's nodes: other homes on other ports, never production's (the plan refuses that).
    rehearsal_offsets = offsets[1 + len(gateway_names) :]
    rehearsal_cp_offset = rehearsal_offsets[0]
    rehearsal_gateway_offsets = dict(zip(gateway_names, rehearsal_offsets[1:], strict=True))

    old_home = unpack_distribution(packs["4.0.0"], nodes_dir / "cp-400")
    (old_home / "repository/components/lib" / jdbc_driver.name).write_bytes(jdbc_driver.read_bytes())
    _edit_toml(
        old_home,
        {
            "server": {"offset": cp_offset},
            "database": {
                key: {
                    "type": "postgre",
                    "url": jdbc_url(host, port, db),
                    "username": db_user,
                    "password": env(db_password_env),
                    "driver": "org.postgresql.Driver",
                    "validationQuery": "SELECT 1",
                }
                for key, db in (("apim_db", sources["apim"]), ("shared_db", sources["shared"]))
            },
        },
    )
    secrets = _secrets_to_placeholders(old_home)
    # The estate's own customisations, which the upgrade must carry over to 4.4.0.
    with zipfile.ZipFile(old_home / CUSTOM_JAR, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nBundle-SymbolicName: com.acme.auth\n")
    theme = old_home / CUSTOM_THEME
    theme.mkdir(parents=True, exist_ok=True)
    (theme / "defaultTheme.js").write_text(
        "const Configurations = { custom: { appBar: { background: '#0a3d62' } } };\n"
    )

    new_home = unpack_distribution(packs["4.4.0"], nodes_dir / "cp-440")
    nodes = {
        "control_plane_400": [_node("cp-400", old_home, cp_offset, "4.0.0", java_home, publisher=True)],
        "control_plane_440": [_node("cp-440", new_home, cp_offset, "4.4.0", java_home, publisher=True)],
        "gateway_groups": _gateways(packs, nodes_dir, gateway_offsets, java_home, ""),
    }
    # A staging 4.0.0 control plane of its own (not started by `sandbox start`: a rehearsal's stop
    # finds it down), the 4.4.0 home by its production path (a rehearsal runs its own copy of it,
    # moved to rehearsal_cp_offset by server_offset), and gateways of its own.
    rehearsal_400 = unpack_distribution(packs["4.0.0"], nodes_dir / "rehearsal" / "cp-400")
    _edit_toml(rehearsal_400, {"server": {"offset": rehearsal_cp_offset}})
    rehearsal = {
        "control_plane_400": [
            _node("cp-400-rehearsal", rehearsal_400, rehearsal_cp_offset, "4.0.0", java_home, publisher=True)
        ],
        "control_plane_440": [
            _node("cp-440-rehearsal", new_home, rehearsal_cp_offset, "4.4.0", java_home, publisher=True)
        ],
        "gateway_groups": _gateways(packs, nodes_dir / "rehearsal", rehearsal_gateway_offsets, java_home, "-rehearsal"),
        "server_offset": rehearsal_cp_offset,
    }
    return {
        "target_440": {
            "home": str(new_home),
            "old_home": str(old_home),
            "carry_over": [f"repository/components/lib/{jdbc_driver.name}", CUSTOM_JAR, CUSTOM_THEME],
            "db_username": db_user,
            "db_password_env": db_password_env,
        },
        "cutover": {**nodes, "rehearsal": rehearsal, "node_timeout_seconds": 120},
        "_secrets": secrets,
    }


def _gateways(
    packs: dict[str, Path], parent: Path, offsets: dict[str, int], java_home: Path, suffix: str
) -> list[dict[str, Any]]:
    """The gateway groups' nodes: per gateway a 4.4.0 home replacing a 4.0.0 one, both on its own offset."""
    groups = []
    for group, names in GATEWAYS.items():
        members = []
        for name in names:
            homes = {}
            for version, folder in (("4.0.0", f"{name}-400"), ("4.4.0", name)):
                homes[version] = unpack_distribution(packs[version], parent / folder)
                _edit_toml(homes[version], {"server": {"offset": offsets[name]}})
            old = _node(
                f"{name}-400{suffix}", homes["4.0.0"], offsets[name], "4.0.0", java_home, profile="gateway-worker"
            )
            new = _node(name + suffix, homes["4.4.0"], offsets[name], "4.4.0", java_home, profile="gateway-worker")
            members.append({**new, "replaces": old})
        groups.append({"name": group, "nodes": members})
    return groups


def _secrets_to_placeholders(home: Path) -> dict[str, str]:
    """A well-kept estate keeps no literal secret in deployment.toml: the sandbox's 4.0.0 home neither.

    Returns the variables (and their throwaway values) the node's environment must provide.
    """
    conf = home / "repository" / "conf" / "deployment.toml"
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{path}_{k}" if path else k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}_{i}") for i, v in enumerate(value)]
        key = path.rsplit("_", 1)[-1]
        if isinstance(value, str) and value and key.lower() in ("password", "secret") and not value.startswith("$"):
            name = "APIM_SANDBOX_" + re.sub(r"[^A-Za-z0-9]+", "_", path).upper()
            found[name] = value
            return env(name)
        return value

    write_atomically(conf, tomli_w.dumps(walk(tomllib.loads(conf.read_text()), "")))
    return found


def running_nodes(cutover: CutoverSection) -> list[NodeCommands]:
    """Every node of a [cutover] section, the 4.0.0 control plane first."""
    gateways = [n for g in cutover.gateway_groups for n in g.nodes]
    return [*cutover.control_plane_400, *cutover.control_plane_440, *gateways]


def production_nodes(cutover: CutoverSection) -> list[NodeCommands]:
    """What production runs before a cutover: the 4.0.0 control plane and each gateway's 4.0.0 node."""
    gateways = [n.replaces or n for g in cutover.gateway_groups for n in g.nodes]
    return [*cutover.control_plane_400, *gateways]


def start_estate(cutover: CutoverSection, timeout: float = 120) -> list[str]:
    """Start the 'production' nodes: the 4.0.0 control plane and every gateway (its 4.0.0 node)."""
    from apim_upgrade.wso2 import node_health, nodes

    started = []
    for node in production_nodes(cutover):
        ok, _ = node_health.http_check(node.health_url, timeout=2)
        if not ok:
            nodes.start_node(node, timeout, node.expect_version)
        started.append(node.name)
    return started


def stop_everything(directory: Path) -> list[str]:
    """Stop every stand-in server of this sandbox (its homes and its rehearsals' copies of them).

    Each home that has a pid file is stopped with its own ``api-manager.sh stop``; anything of the
    sandbox still running after that is terminated, so destroying a sandbox leaves no process. Its
    traffic generator goes first (its calls would only fail).
    """
    from sandbox.traffic import stop_traffic

    stop_traffic(directory)
    stopped = []
    for pid_file in sorted(directory.rglob("wso2carbon.pid")):
        home = pid_file.parent
        script = home / "bin" / "api-manager.sh"
        if script.exists():
            process.run(["bash", str(script), "stop"], timeout=60, check=False)
            stopped.append(str(home.relative_to(directory)))
    for pid in standin_processes(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return stopped


def standin_processes(directory: Path) -> list[int]:
    """PIDs of stand-in servers whose ``--carbon-home`` lies inside ``directory``."""
    return processes_of("sandbox.distribution.server", "--carbon-home", directory)
