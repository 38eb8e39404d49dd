"""The stand-in WSO2 API-M server: ``python -m sandbox.distribution.server --carbon-home H -D...``.

Started by the pack's ``bin/api-manager.sh`` (which ``exec``s it, so the pid in
wso2carbon.pid is this process). It goes through the product's startup in the
product's order (console-reference.md §3): kernel lines, configuration and
keystores, datasources, the identity migration client (bundle activation), the
console URLs, the API-M migration client (a startup observer), then
``WSO2 Carbon started in N sec``, and keeps running until SIGTERM/SIGINT, which
prints the shutdown lines. One process; HTTP is served from a daemon thread.
``-Dprofile=gateway-worker`` (or control-plane / traffic-manager) starts that
profile: said on the console and reported by /health; a gateway-worker has no
publisher or devportal.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.postgres import db
from sandbox.distribution import http_api, pool
from sandbox.distribution.api_client import api_client_present, run_api_migration
from sandbox.distribution.config import StartupError, check_jdbc_drivers, check_keystores, load_config
from sandbox.distribution.console import Console
from sandbox.distribution.identity_client import run_identity_migration
from sandbox.distribution.prevalidation import run_pre_migration
from sandbox.distribution.registry import guard
from sandbox.distribution.runtime import (
    HTTP_PORT_VARIABLE,
    SPEED_VARIABLE,
    Context,
    FailurePlan,
    ServerExit,
    ShutdownRequested,
    run_extra_sql,
)
from sandbox.errors import SandboxError

PRODUCT = "WSO2 API Manager"
HTTPS_PORT = 9443
# The profiles of API-M 4.x's profileSetup.sh.
PROFILES = ("control-plane", http_api.GATEWAY_PROFILE, "traffic-manager")
_http_server: http_api.ThreadingHTTPServer | None = None
_state: http_api.ServerState | None = None
# A real server takes seconds to stop, answering "stopping" meanwhile; scaled by APIM_STANDIN_SPEED.
SHUTDOWN_SECONDS = 1.0
_shutdown_pause = 0.0


def main(argv: list[str] | None = None) -> int:
    carbon_home, properties = _parse_arguments(sys.argv[1:] if argv is None else argv)
    logs = carbon_home / "repository" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    console = Console(logs / "wso2carbon.log")
    signal.signal(signal.SIGTERM, _request_shutdown)
    signal.signal(signal.SIGINT, _request_shutdown)
    try:
        return _run(carbon_home, properties, console)
    except ShutdownRequested:
        _shutdown(console)
        _halt()
    except StartupError as exc:
        console.error(exc.logger, exc.message)
        return 1
    except ServerExit as exc:
        return exc.exit_code
    except ApimUpgradeError as exc:
        console.error("CarbonServerManager", f"Cannot start {PRODUCT}: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - the JVM's uncaught-exception handler: one ERROR line, exit 1
        console.error("CarbonServerManager", f"Unexpected error while running the server: {type(exc).__name__}: {exc}")
        return 1


def _run(carbon_home: Path, properties: dict[str, str], console: Console) -> int:
    global _shutdown_pause
    started = time.monotonic()
    version = _pack_version(carbon_home)
    failure = FailurePlan.from_environ(dict(os.environ))
    speed = _speed()
    _shutdown_pause = SHUTDOWN_SECONDS / speed
    config = load_config(carbon_home)
    for secret in config.secrets:
        console.add_secret(secret)
    ctx = Context(carbon_home, version, console, config, properties, failure, speed, started)
    kind = _run_kind(ctx)
    profile = _profile(ctx)
    _kernel_lines(ctx)
    check_keystores(config, carbon_home)
    check_jdbc_drivers(config, carbon_home)
    if kind == "start" and (failure.at("start", "exit-early") or failure.at("start", "mid-migration")):
        console.error("CarbonServerManager", f"Cannot start {PRODUCT}: Carbon Core bundle failed to activate")
        raise ServerExit(1)
    _check_datasources(ctx)
    console.info("CarbonServerManager", f"Repository       : {carbon_home / 'repository' / 'deployment' / 'server'}")
    ctx.pause(0.4)
    if kind == "start" and failure.at("start", "hang"):
        ctx.hang()
    if kind == "identity":
        run_identity_migration(ctx)
    api_client = kind in ("api", "pre") and api_client_present(ctx)
    if api_client:
        console.info("APIMMigrationServiceComponent", "Activating ExtendedAPIMConfigService.")
        console.info("APIMMigrationServiceComponent", "Activated ExtendedAPIMConfigService.")
    if config.re_indexing is not None:
        console.info(
            "IndexingManager",
            f"Re-indexing of registry artifacts is triggered ([indexing] re_indexing = {config.re_indexing})",
        )
    if kind == "start" and profile != http_api.GATEWAY_PROFILE:
        for name, size in pool.open_pools((config.apim_db, config.shared_db)).items():
            console.info("DataSourceRepository", f"Connection pool of {name} initialised with {size} connection(s)")
    if kind == "start":
        _start_http(ctx, profile)
    _console_urls(ctx, profile)
    ctx.pause(0.4)
    if api_client and kind == "pre":
        run_pre_migration(ctx)
    elif api_client:
        run_api_migration(ctx)
    run_extra_sql(ctx, kind)
    if kind == "start" and failure.at("start", "errors"):
        console.error("CarbonServerManager", "Error while initializing the registry indexer: Lock obtain timed out")
    console.info("StartupFinalizerServiceComponent", f"Server           :  {PRODUCT}-{version}")
    if _state is not None:
        _state.status = "ok"  # before the marker line: whoever saw it finds /health ready
    console.info("StartupFinalizerServiceComponent", f"WSO2 Carbon started in {int(time.monotonic() - started)} sec")
    if failure.at(kind, "die-after-start"):
        ctx.pause(1.0)
        console.raw("#\n# A fatal error has been detected by the Java Runtime Environment:\n#")
        console.raw(f"#  SIGSEGV (0xb) at pc=0x0000000000000000, pid={os.getpid()}, tid={os.getpid()}\n#")
        return 1
    ctx.hang()


def _run_kind(ctx: Context) -> str:
    """Which run this is, in the names APIM_STANDIN_FAIL_STEP uses."""
    if not ctx.flag("migrate"):
        return "start"
    if "identity" in ctx.properties.get("component", "").split(","):
        return "identity"
    if ctx.properties.get("migrateFromVersion"):
        return "pre" if "runPreMigration" in ctx.properties else "api"
    return "start"


def _profile(ctx: Context) -> str | None:
    """The -Dprofile= of this run (None: the all-in-one default); an unknown one refuses to start."""
    profile = ctx.properties.get("profile")
    if profile is None:
        return None
    if profile not in PROFILES:
        raise StartupError(
            "CarbonServerManager",
            f"Cannot start {PRODUCT}: unknown profile -Dprofile={profile}; use one of {', '.join(PROFILES)}",
        )
    return profile


def _kernel_lines(ctx: Context) -> None:
    """CarbonCoreActivator's banner (console-reference §3.1), from this machine's facts."""
    java_home = os.environ.get("JAVA_HOME", "")
    release = _java_release(Path(java_home)) if java_home else {}
    machine = {"x86_64": "amd64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())
    java_version = release.get("JAVA_VERSION", "")
    lines = [
        "Starting WSO2 Carbon...",
        f"Operating System : {platform.system()} {platform.release()}, {machine}",
        f"Java Home        : {java_home}",
        f"Java Version     : {java_version}",
        f"Java VM          : OpenJDK 64-Bit Server VM {java_version},{release.get('IMPLEMENTOR', '')}",
        f"Carbon Home      : {ctx.carbon_home}",
        f"Java Temp Dir    : {ctx.carbon_home / 'tmp'}",
        f"User             : {_user()}, en-US, {time.tzname[0]}",
    ]
    for line in lines:
        ctx.console.info("CarbonCoreActivator", line)
    profile = ctx.properties.get("profile")
    if profile is not None:
        # Stand-in line (the product's profileSetup.sh output is not reproduced): says which profile runs.
        ctx.console.info("CarbonCoreActivator", f"Server profile   : {profile}")
    ctx.pause(0.3)


def _check_datasources(ctx: Context) -> None:
    for source in (ctx.config.apim_db, ctx.config.shared_db):
        if source.server is None or source.dbname is None:
            continue  # embedded H2: the stand-in runs without it
        try:
            with (
                guard(source, "connecting"),
                db.session(source.server, source.dbname, read_only=True) as conn,
            ):
                db.fetch_one(conn, "SELECT 1")
        except ApimUpgradeError as exc:
            # db.connect adds advice about the plan file, which means nothing to a server log.
            reason = str(exc).partition(" Check the [postgres]")[0]
            raise StartupError(
                "DataSourceRepository",
                f"Error in creating data source {source.name} ({source.url}): {reason}",
            ) from None


def _start_http(ctx: Context, profile: str | None) -> None:
    global _http_server, _state
    port_text = os.environ.get(HTTP_PORT_VARIABLE)
    port = int(port_text) if port_text else http_api.SERVLET_HTTP_PORT + ctx.config.offset
    databases = {source.key: source.dbname for source in (ctx.config.apim_db, ctx.config.shared_db)}
    _state = http_api.ServerState(
        ctx.version, profile, carbon_home=str(ctx.carbon_home.resolve()), pid=os.getpid(), databases=databases
    )
    try:
        _http_server = http_api.start_http(port, _state, ctx.config.apim_db)
    except OSError as exc:
        raise StartupError(
            "CarbonServerManager",
            f"Failed to start connector [Connector[HTTP/1.1-{port}]]: java.net.BindException: {exc.strerror}",
        ) from None


def _console_urls(ctx: Context, profile: str | None) -> None:
    base = f"https://{ctx.config.hostname}:{HTTPS_PORT + ctx.config.offset}/"
    ctx.console.info("CarbonUIServiceComponent", f"Mgt Console URL  : {base}carbon/")
    if profile == http_api.GATEWAY_PROFILE:
        return  # the gateway profile removes the publisher and devportal web apps
    ctx.console.info("CarbonUIServiceComponent", f"API Developer Portal Default Context : {base}devportal")
    ctx.console.info("CarbonUIServiceComponent", f"API Publisher Default Context : {base}publisher")


def _shutdown(console: Console) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one shutdown is enough
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    console.info("CarbonServerManager", "Shutdown hook triggered....")
    console.info("CarbonServerManager", f"Gracefully shutting down {PRODUCT}...")
    if _state is not None:
        # /health answers "stopping" until the process is gone; the port closes only when it
        # exits, so "connection refused" means the server is gone and may be started again.
        _state.status = "stopping"
    time.sleep(_shutdown_pause)
    pool.close_pools()
    console.info("CarbonServerManager", "Shutting down OSGi framework...")
    console.info("CarbonServerManager", "Stopping CarbonServerManager...")
    console.jul("org.wso2.carbon.core.init.CarbonServerManager$ShutdownHookThread run", "Shutdown complete")
    console.jul("org.wso2.carbon.core.init.CarbonServerManager$ShutdownHookThread run", "Halting JVM")


def _halt() -> NoReturn:
    """Runtime.halt(), as "Halting JVM" says: no interpreter teardown after the shutdown lines.

    Python's finalisation could garbage-collect the HTTP socket while the process still
    exists; exiting at once keeps the port open until the very end, so "connection
    refused" means the server is gone (and a start will not find it still running).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # nobody reads our output any more
    os._exit(0)


def _request_shutdown(signum: int, frame: FrameType | None) -> None:
    raise ShutdownRequested(signum)


def _parse_arguments(argv: list[str]) -> tuple[Path, dict[str, str]]:
    """``--carbon-home H`` then the script's arguments; ``-Dkey[=value]`` become properties."""
    carbon_home: Path | None = None
    properties: dict[str, str] = {}
    items = iter(argv)
    for item in items:
        if item == "--carbon-home":
            carbon_home = Path(next(items, "."))
        elif item.startswith("-D") and len(item) > 2:
            key, _, value = item[2:].partition("=")
            properties[key] = value
    if carbon_home is None:
        carbon_home = Path(os.environ.get("CARBON_HOME", "."))
    return carbon_home.resolve(), properties


def _pack_version(carbon_home: Path) -> str:
    path = carbon_home / "bin" / "version.txt"
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        raise StartupError("CarbonServerManager", f"Cannot read the product version from {path}") from None
    return first.rsplit("v", 1)[-1].strip()


def _speed() -> float:
    text = os.environ.get(SPEED_VARIABLE, "1")
    try:
        speed = float(text)
    except ValueError:
        speed = 0.0
    if speed <= 0:
        raise SandboxError(f"{SPEED_VARIABLE}={text!r} must be a number above 0 (sleeps are divided by it)")
    return speed


def _java_release(java_home: Path) -> dict[str, str]:
    try:
        text = (java_home / "release").read_text(encoding="utf-8")
    except OSError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines())
    return {key: value.strip().strip('"') for key, _, value in pairs if key}


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "")


if __name__ == "__main__":
    sys.exit(main())
