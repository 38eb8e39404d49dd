"""Control-plane and gateway nodes on real stand-in homes (bin/api-manager.sh start/stop).

Every node is a real stand-in server started in the background by its own
api-manager.sh, on its own ``[server] offset``; the control planes read a sandbox
estate's databases. A finaliser stops every home and fails the test if any
process still names one of them. APIM_STANDIN_SPEED=20 keeps the pauses short.
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import signal
import socket
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

from apim_upgrade.plan import load_plan
from apim_upgrade.plan.nodes import GatewayGroup, NodeCommands
from apim_upgrade.postgres import db
from apim_upgrade.runtime import process
from apim_upgrade.wso2 import node_health, node_identity, nodes
from apim_upgrade.wso2.node_health import NodeError, NodeStatus
from sandbox.distribution import MigrationKit, build_distribution, build_migration_kit, unpack_distribution

JAVA_HOME = str(Path(os.path.realpath(shutil.which("java") or "/usr/bin/java")).parents[1])
SERVLET_PORT = 9763  # the stand-in serves HTTP on 9763 + [server] offset
GATEWAY = "-Dprofile=gateway-worker"
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], MigrationKit]:
    out = tmp_path_factory.mktemp("packs")
    zips = {version: build_distribution(version, out) for version in ("4.0.0", "4.4.0")}
    return zips, build_migration_kit(out / "kit")


@pytest.fixture(autouse=True)
def node_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the cutover's process would carry: JAVA_HOME, and no CARBON_HOME pointing elsewhere."""
    for name in list(os.environ):
        if name.startswith(("APIM_STANDIN_", "CARBON_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JAVA_HOME", JAVA_HOME)
    monkeypatch.setenv("APIM_STANDIN_SPEED", "20")


class Homes:
    """Stand-in homes made by one test; all stopped (and checked gone) at its end."""

    def __init__(self, root: Path, zips: dict[str, Path], kit: MigrationKit) -> None:
        self.root, self.zips, self.kit = root, zips, kit
        self.made: list[Path] = []
        self._ports: set[int] = set()

    def make(self, version: str, database: tuple[db.PgServer, str, str] | None = None) -> tuple[Path, int]:
        """Unpack a home on a free offset; ``database``: (server, apim db, shared db) instead of H2."""
        home = unpack_distribution(self.zips[version], self.root / f"home{len(self.made)}")
        self.made.append(home)
        port = self._free_port()
        conf_path = home / "repository/conf/deployment.toml"
        conf = tomllib.loads(conf_path.read_text())
        conf["server"]["offset"] = port - SERVLET_PORT
        if database is not None:
            pg, apim, shared = database
            shutil.copy(self.kit.jdbc_driver, home / "repository/components/lib")
            for key, name in (("apim_db", apim), ("shared_db", shared)):
                conf["database"][key] = {
                    "type": "postgre",
                    "url": f"jdbc:postgresql://{pg.host}:{pg.port}/{name}",
                    "username": pg.user,
                    "driver": "org.postgresql.Driver",
                }
                if pg.password is not None:
                    conf["database"][key]["password"] = "$env{APIM_NODES_TEST_PG_PASSWORD}"
        conf_path.write_text(tomli_w.dumps(conf))
        return home, port

    def _free_port(self) -> int:
        # Below the ephemeral range, so an outgoing connection cannot take it meanwhile.
        while True:
            port = SERVLET_PORT + 200 + secrets.randbelow(20000)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            if port not in self._ports:
                self._ports.add(port)
                return port

    def cleanup(self) -> list[str]:
        for home in self.made:
            process.run(["bash", home / "bin/api-manager.sh", "stop"], timeout=30, check=False)
        deadline = time.monotonic() + 15
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid, _ in left:  # the test fails below; never leave a server behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return [cmdline for _, cmdline in left]

    def processes(self) -> list[tuple[int, str]]:
        """Live processes whose command line names one of the homes (zombies have none)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(str(home) in cmdline for home in self.made):
                found.append((int(entry.name), cmdline))
        return found


@pytest.fixture
def homes(
    tmp_path: Path, packs: tuple[dict[str, Path], MigrationKit], pg: db.PgServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Homes]:
    if pg.password is not None:
        monkeypatch.setenv("APIM_NODES_TEST_PG_PASSWORD", pg.password.get_secret_value())
    made = Homes(tmp_path, *packs)
    yield made
    left = made.cleanup()
    assert not left, f"stand-in processes left running: {left}"


def script(home: Path, *args: str) -> list[str]:
    return ["bash", str(home / "bin/api-manager.sh"), *args]


def node(name: str, home: Path, port: int, *flags: str, version: str | None = None) -> NodeCommands:
    """A stand-in node as a plan expresses it: api-manager.sh start/stop and the /health URL."""
    return NodeCommands(
        name=name,
        start=script(home, "start", *flags),
        stop=script(home, "stop"),
        health_url=f"http://127.0.0.1:{port}/health",
        publisher_url=None,
        expect_version=version,
    )


def server_pid(home: Path) -> int:
    return int((home / "wso2carbon.pid").read_text().strip())


def alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())  # a zombie's is empty
    except OSError:
        return False


# --------------------------------------------------------------------------- control plane


def test_control_plane_start_stop_health_and_publisher_listing(
    homes: Homes, make_sandbox: Callable[..., Path], pg: db.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = load_plan(make_sandbox(scale=1))
    database = (pg, plan.databases.apim.source, plan.databases.shared.source)
    home400, port400 = homes.make("4.0.0", database)
    home440, port440 = homes.make("4.4.0", database)
    cp400, cp440 = node("cp-400", home400, port400), node("cp-440", home440, port440)

    # api-manager.sh start returns at once; the server comes up in the background, in its own session.
    started = time.monotonic()
    result = process.run(cp400.start, timeout=30)
    assert time.monotonic() - started < 3 and result.returncode == 0
    assert cp400.health_url is not None
    health = node_health.wait_until_healthy(cp400.health_url, TIMEOUT, 0.2, expect_version="4.0.0")
    pid = server_pid(home400)
    # The answer carries the node's identity: its home, its process, the databases it serves.
    assert health == {
        "status": "ok",
        "version": "4.0.0",
        "carbon_home": str(home400.resolve()),
        "pid": pid,
        "databases": {"apim_db": plan.databases.apim.source, "shared_db": plan.databases.shared.source},
    }
    assert alive(pid) and os.getsid(pid) == pid != os.getsid(0)
    assert process.run(cp400.start, timeout=30).tail == ("Process is already running",)
    assert server_pid(home400) == pid
    ok, detail = node_health.http_check(cp400.health_url)
    assert ok and '"version": "4.0.0"' in detail

    # The publisher listing equals AM_API, also when read page by page.
    with db.session(pg, plan.databases.apim.source, read_only=True) as conn:
        expected = sorted((str(n), str(v)) for n, v in db.fetch_all(conn, "SELECT api_name, api_version FROM am_api"))
    listing = f"http://127.0.0.1:{port400}/api/am/publisher/v4/apis"
    apis = node_health.publisher_apis(listing)
    assert sorted((a["name"], a["version"]) for a in apis) == expected and len(expected) > 3
    assert {"name", "version", "provider", "context"} <= set(apis[0])
    monkeypatch.setattr(node_health, "PAGE_SIZE", 3)
    assert node_health.publisher_apis(listing) == apis

    # The cutover: stop 4.0.0 (down afterwards), start 4.4.0 and tell it is the 4.4.0 that answers.
    nodes.stop_node(cp400, TIMEOUT)
    assert node_health.http_check(cp400.health_url) == (False, "connection refused")
    assert not alive(pid)
    assert "Shutdown hook triggered...." in (home400 / "repository/logs/wso2carbon.log").read_text()
    assert "INFO: Halting JVM" in (home400 / "repository/logs/wso2carbon-stdout.log").read_text()
    nodes.stop_node(cp400, TIMEOUT)  # stopping a stopped node is harmless
    health440 = nodes.start_node(cp440, TIMEOUT, expect_version="4.4.0")
    assert (health440["status"], health440["version"], health440["pid"]) == ("ok", "4.4.0", server_pid(home440))
    assert cp440.health_url is not None
    with pytest.raises(NodeError, match=r"answers version 4\.4\.0, expected 4\.0\.0.*old node is stopped"):
        node_health.wait_until_healthy(cp440.health_url, 1.0, 0.2, expect_version="4.0.0")
    apis440 = node_health.publisher_apis(f"http://127.0.0.1:{port440}/api/am/publisher/v4/apis")
    assert sorted((a["name"], a["version"]) for a in apis440) == expected

    # restart = stop + start: a new process, healthy again; then a plain stop.
    before = server_pid(home440)
    process.run(script(home440, "restart"), timeout=30)
    node_health.wait_until_healthy(cp440.health_url, TIMEOUT, 0.2, expect_version="4.4.0")
    assert server_pid(home440) != before and not alive(before)
    process.run(script(home440, "--stop"), timeout=30)
    node_health.wait_until_down(cp440.health_url, TIMEOUT, 0.2)
    with pytest.raises(NodeError, match=r"cp-440.*did not become healthy.*connection refused"):
        nodes.start_node(cp440.model_copy(update={"start": ["true"]}), 1.0)


# --------------------------------------------------------------------------- gateways


def test_gateway_restarts_stop_at_the_first_failure(homes: Homes) -> None:
    gateways = [homes.make("4.4.0") for _ in range(3)]
    gw1, gw2, gw3 = (
        node(f"gw{i + 1}", home, port, GATEWAY, version="4.4.0") for i, (home, port) in enumerate(gateways)
    )
    for gateway in (gw1, gw2, gw3):
        process.run(gateway.start, timeout=30)
    for gateway in (gw1, gw2, gw3):
        assert gateway.health_url is not None
        health = node_health.wait_until_healthy(gateway.health_url, TIMEOUT, 0.2, expect_version="4.4.0")
        assert {k: health[k] for k in ("status", "version", "profile")} == {
            "status": "ok",
            "version": "4.4.0",
            "profile": "gateway-worker",
        }
        assert health["databases"] == {"apim_db": None, "shared_db": None}  # H2: no PostgreSQL database
    home3, port3 = gateways[2]
    assert (
        "CarbonCoreActivator Server profile   : gateway-worker"
        in (home3 / "repository/logs/wso2carbon-stdout.log").read_text()
    )
    with pytest.raises(NodeError, match=r"HTTP 404"):  # a gateway has no publisher
        node_health.publisher_apis(f"http://127.0.0.1:{port3}/api/am/publisher/v4/apis")
    pids = [server_pid(home) for home, _ in gateways]

    # gw2's start command is broken: gw1 restarted, gw2 stopped and failed, gw3 never touched.
    reported: list[tuple[str, str]] = []

    def on_status(status: NodeStatus) -> None:
        reported.append((status.name, status.state))

    broken = gw2.model_copy(update={"start": ["false"]})
    with pytest.raises(NodeError) as caught:
        nodes.restart_group(GatewayGroup(name="external", nodes=[gw1, broken, gw3]), TIMEOUT, on_status)
    error = caught.value
    assert [(s.name, s.state) for s in error.statuses] == [("gw1", "healthy"), ("gw2", "failed"), ("gw3", "untouched")]
    message = str(error)
    for line in ("external/gw1: healthy", "external/gw2: failed (start failed: node 'gw2'", "external/gw3: untouched"):
        assert line in message
    assert "false ... exited with code 1" in message
    assert reported == [
        *(("gw1", state) for state in ("stopping", "stopped", "starting", "healthy")),
        *(("gw2", state) for state in ("stopping", "stopped", "starting", "failed")),
    ]
    assert pickle.loads(pickle.dumps(error)).statuses == error.statuses  # noqa: S301 - our own object
    assert server_pid(gateways[0][0]) != pids[0] and not alive(pids[0])
    assert not alive(pids[1])
    assert gw3.health_url is not None
    assert alive(pids[2]) and node_health.http_check(gw3.health_url)[0]
    with pytest.raises(NodeError, match=rf"127\.0\.0\.1:{port3}/health still answers .*HTTP 200"):
        node_health.wait_until_down(gw3.health_url, 1.0, 0.2)

    # Two groups, the first fails: the second group is left alone.
    first = GatewayGroup(name="first", nodes=[gw1.model_copy(update={"start": ["false"]})])
    second = GatewayGroup(name="second", nodes=[gw3])
    with pytest.raises(NodeError) as caught:
        nodes.rolling_restart([first, second], TIMEOUT)
    assert [(s.group, s.name, s.state) for s in caught.value.statuses] == [
        ("first", "gw1", "failed"),
        ("second", "gw3", "untouched"),
    ]
    assert alive(pids[2]) and server_pid(home3) == pids[2] and node_health.http_check(gw3.health_url)[0]

    # Both groups healthy: every node restarted in order.
    process.run(gw2.start, timeout=30)
    statuses = nodes.rolling_restart(
        [GatewayGroup(name="first", nodes=[gw1, gw2]), GatewayGroup(name="second", nodes=[gw3])], TIMEOUT
    )
    assert [(s.name, s.state) for s in statuses] == [("gw1", "healthy"), ("gw2", "healthy"), ("gw3", "healthy")]
    assert server_pid(home3) != pids[2] and not alive(pids[2])


def test_failing_commands_and_bad_urls_say_what_to_do() -> None:
    nowhere = "http://127.0.0.1:9/health"  # discard port: nothing listens
    with pytest.raises(NodeError, match=r"not an http\(s\) URL"):
        node_health.http_check("file:///etc/passwd")
    failing = NodeCommands(
        name="cp",
        start=["sh", "-c", "exit 3"],
        stop=["true"],
        health_url=nowhere,
        publisher_url=None,
        expect_version=None,
    )
    with pytest.raises(NodeError, match=r"node 'cp': start command `sh -c exit 3` failed: .*code 3.*Check the command"):
        nodes.start_node(failing, 5)
    nodes.stop_node(failing, 5)  # nothing answers: down at once
    with pytest.raises(NodeError, match=r"publisher listing .*connection refused; check that the control plane"):
        node_health.publisher_apis("http://127.0.0.1:9/api/am/publisher/v4/apis")


def test_identify_a_server_without_identity_by_its_process(tmp_path: Path, homes: Homes) -> None:
    """A health answer that says nothing about itself: the process behind the port names its home."""
    import subprocess
    import sys

    port = homes._free_port()
    home, other = tmp_path / "wso2am-4.4.0", tmp_path / "elsewhere"
    home.mkdir()
    server = subprocess.Popen(  # a real server that answers 200 and carries no identity
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        env={**os.environ, "CARBON_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        plain = node("cp", home, port).model_copy(update={"health_url": f"http://127.0.0.1:{port}/"})
        node_health.wait_until_healthy(plain.health_url, TIMEOUT, 0.2)
        ours = node_identity.identify(plain.model_copy(update={"carbon_home": str(home)}))
        assert (ours.identity_from, ours.carbon_home, ours.pid) == ("process", str(home), server.pid)
        assert ours.matches_plan and ours.line().startswith(f"cp: running (version not reported) (home {home}")
        theirs = node_identity.identify(plain.model_copy(update={"carbon_home": str(other)}))
        assert theirs.stray and f"it runs from {home}, the plan's home is {other}" in theirs.why
        with pytest.raises(NodeError, match=rf"answered by .*home {home}, pid {server.pid}.*nothing was stopped"):
            nodes.stop_checked(plain.model_copy(update={"carbon_home": str(other)}), 5)
        assert server.poll() is None  # never stopped
        down = node_identity.identify(node("cp", home, homes._free_port()))
        assert not down.answering and down.line() == "cp: down"
    finally:
        server.terminate()
        server.wait(10)
