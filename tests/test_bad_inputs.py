"""The bad-input corpus: every bad input gets one FAILED line naming the thing and the fix.

Each case makes one bad input from a fresh sandbox (a rewritten copy of its plan, a broken
file beside it, a missing variable, a full filesystem), runs the CLI and checks: the
documented non-zero exit code, exactly one ``FAILED:`` line matching the case's regex (which
names the thing *and* the fix), no Python traceback, no secret in the output, and nothing
written to any database (a fingerprint of the server before and after: databases and their
comments, and for every sandbox database its catalogue and the row counts of its tables and
of ``apim_upgrade.*``). No target database may appear.

Two estates are built once for the module: ``fresh`` (stand-in packs and kit, no copies) and
``at420`` (copies brought to the 4.2.0 schema, one vendor script applied) for the SQL cases.
Most cases run in-process; a few through a real process to prove the exit code and stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, history, queries, schema_runner
from apim_upgrade.postgres.catalog import take_snapshot
from apim_upgrade.postgres.schema_diff import read_catalog
from apim_upgrade.postgres.sqlscript import load_script
from commands.cli import main
from sandbox.create import create_sandbox, sandbox_secrets
from sandbox.estate import drop_estate
from sandbox.roles import drop_node_role
from sandbox.schema_sync import copy_at_version
from tests.conftest import unique

ROOT = Path(__file__).resolve().parents[1]
COMPACT = ROOT / "sandbox" / "sql" / "compact"
HOSTILE = 'x"; DROP DATABASE postgres; --'
LEAKED = "hunter2-literal"  # a secret a bad plan holds: it must never be echoed
SYSTEM_DATABASES = {"postgres", "template0", "template1"}
LONG_TARGETS = ("é" * 32, HOSTILE + "x" * 40)  # 64 and 70 bytes: PostgreSQL would truncate them to 63
CORPUS_TARGETS = {HOSTILE, *LONG_TARGETS, *(t.encode()[:63].decode(errors="ignore") for t in LONG_TARGETS)}
ALL_DATABASES = "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database ORDER BY 1"
GOOD_SCRIPT = "-- stand-in vendor script\nALTER TABLE am_api ADD COLUMN bad_input_flag INTEGER;\n"
# The refused attempt of an in-flow case leaves its audit record and its stored "before"
# snapshot (by design: every step is recorded, reruns compare with the same "before").
FLOW_RECORDS = {"audit_log", "checkpoints"}


# --- the two estates ------------------------------------------------------------------------


@dataclass
class Estate:
    plan: Path
    names: dict[str, str]  # apim_source, apim_target, shared_source, shared_target

    @property
    def dir(self) -> Path:
        return self.plan.parent

    @property
    def text(self) -> str:
        return self.plan.read_text()


def _names(plan_path: Path) -> dict[str, str]:
    plan = load_plan(plan_path)
    return {
        f"{role}_{kind}": getattr(pair, kind)
        for role, pair in plan.databases.roles().items()
        for kind in ("source", "target")
    }


@pytest.fixture(scope="module")
def secrets_env(fresh: Estate) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in sandbox_secrets(fresh.dir).items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def fresh(pg: db.PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    """A 4.0.0 estate with its stand-in packs and kit; no copies made."""
    plan_path, _ = create_sandbox(tmp_path_factory.mktemp("fresh"), pg, prefix=unique("apim_bi"))
    names = _names(plan_path)
    role = load_plan(plan_path).section("migration_environment").db_username  # tests may break the plan later
    try:
        yield Estate(plan_path, names)
    finally:
        drop_estate(pg, *names.values())
        drop_node_role(pg, role)


@pytest.fixture(scope="module")
def at420(pg: db.PgServer, fresh: Estate) -> Iterator[Estate]:
    """The fresh estate's sources with other copies, brought to the 4.2.0 schema (as the JVM
    phases leave them), the 4.2.0->4.3.0 script applied and validated."""
    doc = tomllib.loads(fresh.text)
    del doc["schema_upgrade"]
    doc["work_dir"] = "work-420"
    for role in ("apim", "shared"):
        doc["databases"][role]["target"] += "_420"
    plan_path = fresh.dir / "plan-420.toml"
    plan_path.write_text(tomli_w.dumps(doc))
    estate = Estate(plan_path, _names(plan_path))
    plan = load_plan(plan_path)
    try:
        for role, ddl in (("apim", Path("apimgt") / "postgresql.sql"), ("shared", Path("postgresql.sql"))):
            pair = plan.databases.roles()[role]
            copy_at_version(pg, pair.source, pair.target, pair.owner, COMPACT / "4.2.0" / ddl)
        applied = estate.dir / "applied-4.2.0-to-4.3.0.sql"
        applied.write_text(GOOD_SCRIPT)
        pair = plan.databases.apim
        script = load_script(applied, "4.2.0", "4.3.0")
        schema_runner.apply_script(pg, pair.target, script, 1, run_as=pair.owner)
        history.mark_done(pg, pair.target, "schema-upgrade", "validated-4.3.0", None, {"script": applied.name})
        yield estate
    finally:
        drop_estate(pg, plan.databases.apim.target, plan.databases.shared.target)


# --- making bad inputs ------------------------------------------------------------------------


@dataclass
class Ctx:
    estate: Estate
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack  # undoes what a case set up (a mount) once it has run

    @property
    def n(self) -> dict[str, str]:
        return self.estate.names

    def plan(self, text: str) -> str:
        """Write a case's plan beside the original (relative paths keep resolving)."""
        path = self.estate.dir / f"case-{self.tmp.name}.toml"
        path.write_text(text)
        return str(path)


Maker = Callable[[Ctx], list[str]]


def _sub(text: str, old: str, new: str) -> str:
    assert old in text, f"the plan no longer contains {old!r}: the case would test nothing"
    return text.replace(old, new, 1)


def plan_check(*pairs: tuple[str, str]) -> Maker:
    """``plan check`` on the plan with text replaced ({apim_source} etc. are the estate's names)."""

    def make(ctx: Ctx) -> list[str]:
        text = ctx.estate.text
        for old, new in pairs:
            text = _sub(text, old.format(**ctx.n), new.format(**ctx.n))
        return ["plan", "check", ctx.plan(text)]

    return make


def _migration_env(ctx: Ctx, old: str, new: str) -> list[str]:
    """``run --phase migration-environment`` on the plan with one value replaced."""
    return ["run", ctx.plan(_sub(ctx.estate.text, old, new)), "--phase", "migration-environment"]


def _me_rewrite(old: str, new: str) -> Maker:
    return lambda ctx: _migration_env(ctx, old, new)


def _zip(make_zip: Callable[[Path], None]) -> Maker:
    """A bad pack written into the case's tmp dir, named by an absolute path."""

    def make(ctx: Ctx) -> list[str]:
        bad = ctx.tmp / "wso2am-4.2.0.zip"
        make_zip(bad)
        return _migration_env(ctx, "packs/wso2am-4.2.0.zip", str(bad))

    return make


def _pack(ctx_dir: Path) -> Path:
    return ctx_dir / "packs" / "wso2am-4.2.0.zip"


def _truncated(ctx: Ctx) -> list[str]:
    bad = ctx.tmp / "wso2am-4.2.0.zip"
    data = _pack(ctx.estate.dir).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return _migration_env(ctx, "packs/wso2am-4.2.0.zip", str(bad))


def _corrupt(ctx: Ctx) -> list[str]:
    """Flip bytes inside the compressed data of the pack's largest member (headers intact)."""
    bad = ctx.tmp / "wso2am-4.2.0.zip"
    data = bytearray(_pack(ctx.estate.dir).read_bytes())
    with zipfile.ZipFile(_pack(ctx.estate.dir)) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.compress_size // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    return _migration_env(ctx, "packs/wso2am-4.2.0.zip", str(bad))


def _not_a_pack(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("wso2am-4.2.0/README.txt", "a zip of something else\n")


def _two_tops(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("wso2am-4.2.0/bin/api-manager.sh", "#!/bin/sh\n")
        zf.writestr("patches/readme.txt", "unpacked beside, not inside\n")


def _text_jar(ctx: Ctx) -> list[str]:
    jar = ctx.tmp / "postgresql-42.7.4.jar"
    jar.write_text("<html>404 Not Found</html>\n")  # what a failed download leaves behind
    return _migration_env(ctx, "kit/postgresql-42.7.4.jar", str(jar))


def _env(then: Maker, **values: str | None) -> Maker:
    """Set (or, with None, unset) environment variables for the case, then make it."""

    def make(ctx: Ctx) -> list[str]:
        for name, value in values.items():
            if value is None:
                ctx.monkeypatch.delenv(name, raising=False)
            else:
                ctx.monkeypatch.setenv(name, value)
        return then(ctx)

    return make


@contextlib.contextmanager
def _full_filesystem(where: Path) -> Iterator[Path]:
    """A 1 MB tmpfs filled to the last byte (root only)."""
    where.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.decode().strip()}")
    try:
        with contextlib.suppress(OSError), open(where / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _disk_full(ctx: Ctx) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("mounting a full tmpfs for the work directory needs root")
    mount = ctx.stack.enter_context(_full_filesystem(ctx.tmp / "full"))
    text = _sub(ctx.estate.text, 'work_dir = "work"', f'work_dir = "{mount / "work"}"')
    return ["run", ctx.plan(text), "--phase", "prepare-databases"]


# --- SQL scripts (the at420 estate) -------------------------------------------------------------


def _scripts(*scripts: tuple[str, str, str | None], **extra: Any) -> Maker:
    """A [schema_upgrade] section of (from, to, script text or None for the applied file)."""

    def make(ctx: Ctx) -> list[str]:
        entries = []
        for i, (a, b, body) in enumerate(scripts):
            if body is None:
                path = ctx.estate.dir / "applied-4.2.0-to-4.3.0.sql"
            elif body.startswith("@"):
                path = Path(body[1:])
            else:
                path = ctx.tmp / f"script{i}-{a}-to-{b}.sql"
                path.write_text(body)
            entries.append({"from_version": a, "to_version": b, "path": str(path)})
        section = {
            "start_version": "4.2.0",
            "scripts": entries,
            "target_dbscripts": str(COMPACT / "4.4.0"),
            **extra,
        }
        text = ctx.estate.text + "\n" + tomli_w.dumps({"schema_upgrade": section})
        return ["run", ctx.plan(text), "--phase", "schema-upgrade"]

    return make


# --- the corpus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    make: Maker
    code: int
    message: str  # regex the one FAILED line must match: the thing and the fix
    estate: str = "fresh"
    subprocess: bool = False
    flow: bool = False  # runs a Prefect flow before failing (needs the API)
    forbid: tuple[str, ...] = ()  # must appear nowhere in the output (secrets)


def _plan_missing(ctx: Ctx) -> list[str]:
    return ["plan", "check", str(ctx.estate.dir / "no-such-plan.toml")]


def _not_utf8(ctx: Ctx) -> list[str]:
    path = ctx.estate.dir / f"case-{ctx.tmp.name}.toml"
    path.write_bytes(ctx.estate.text.encode().replace(b'name = "', b'name = "\xff', 1))
    return ["plan", "check", str(path)]


def _drop_shared_section(ctx: Ctx) -> list[str]:
    n = ctx.n
    block = (
        f'[databases.shared]\nsource = "{n["shared_source"]}"\ntarget = "{n["shared_target"]}"\nowner = "wso2_apim"\n'
    )
    return ["plan", "check", ctx.plan(_sub(ctx.estate.text, block, ""))]


def _cli(args: list[str]) -> Maker:
    def make(ctx: Ctx) -> list[str]:
        return [a.replace("PLAN", str(ctx.estate.plan)) for a in args]

    return make


CASES = [
    # --- the plan file (exit 2) ---
    Case(
        "plan-file-missing",
        _plan_missing,
        2,
        r"cannot read plan file .*no-such-plan\.toml: No such file or directory; check the path",
    ),
    Case("plan-not-utf8", _not_utf8, 2, r"case-.*\.toml is not UTF-8 text \(byte \d+\); save it as UTF-8"),
    Case(
        "toml-syntax-error",
        plan_check(('strategy = "side-by-side"', 'strategy = "side-by-side')),
        2,
        r"case-.*\.toml: not valid TOML: .*line \d+.*; fix the syntax",
        subprocess=True,
    ),
    Case(
        "missing-section",
        _drop_shared_section,
        2,
        r"the plan is invalid: databases\.shared: required key is missing; add it",
    ),
    Case(
        "missing-key",
        plan_check(('owner = "wso2_apim"\n', "")),
        2,
        r"the plan is invalid: databases\.apim\.owner: required key is missing; add it",
    ),
    Case(
        "unknown-key-top-level",
        plan_check(('strategy = "side-by-side"\n', 'strategy = "side-by-side"\ncolour = "red"\n')),
        2,
        r"the plan is invalid: colour: unknown key; remove it or fix its spelling",
    ),
    Case(
        "unknown-key-nested",
        plan_check(('alias = "serverCert"\n', 'alias = "serverCert"\npasswd_env = "X"\n')),
        2,
        r"the plan is invalid: migration_environment\.keystore_tls\.passwd_env: unknown key; remove it or fix "
        r"its spelling",
    ),
    Case(
        "misspelt-section",
        plan_check(("[postgres]\n", "[postgress]\n")),
        2,
        r"the plan is invalid: postgress: unknown key; remove it or fix its spelling",
    ),
    Case(
        "wrong-type-integer",
        plan_check(("port = 5432", 'port = "5432x"')),
        2,
        r"postgres\.port: Input should be a valid integer.* \(got '5432x'\); fix the value",
    ),
    Case(
        "wrong-type-boolean",
        plan_check(("terminate_connections = false", 'terminate_connections = "sometimes"')),
        2,
        r"copy\.terminate_connections: Input should be a valid boolean.* \(got 'sometimes'\); fix the value",
    ),
    Case(
        "wrong-type-list",
        plan_check(("jvm_timeout_seconds = 300", "jvm_timeout_seconds = [300]")),
        2,
        r"migration_environment\.jvm_timeout_seconds: Input should be a valid number.*; fix the value",
    ),
    Case(
        "bad-enum-strategy",
        plan_check(('strategy = "side-by-side"', 'strategy = "big-bang"')),
        2,
        r"strategy: Input should be 'side-by-side' or 'in-place' \(got 'big-bang'\); fix the value",
    ),
    Case(
        "bad-enum-copy-strategy",
        plan_check(('strategy = "default"', 'strategy = "rsync"')),
        2,
        r"copy\.strategy: Input should be 'default', 'wal_log' or 'file_copy' \(got 'rsync'\); fix the value",
    ),
    Case(
        "source-is-target",
        plan_check(('target = "{apim_target}"', 'target = "{apim_source}"')),
        2,
        r"databases\.apim: target '\w+' is the source itself; name a new database",
    ),
    Case(
        "target-is-other-source",
        plan_check(('target = "{shared_target}"', 'target = "{apim_source}"')),
        2,
        r"databases\.apim\.source and databases\.shared\.target are both '\w+'; .* must all differ: rename one",
    ),
    Case(
        "name-over-63-bytes",
        plan_check(('target = "{apim_target}"', f'target = "{LONG_TARGETS[0]}"')),  # 32 characters, 64 bytes
        2,
        r"databases\.apim: target name 'é+' is longer than PostgreSQL's 63-byte limit; shorten it",
    ),
    Case(
        "hostile-name-too-long",
        plan_check(('target = "{shared_target}"', f"target = '{LONG_TARGETS[1]}'")),
        2,
        r"databases\.shared: target name 'x\"; DROP DATABASE postgres; --x+' is longer than .*63-byte limit; "
        r"shorten it",
    ),
    Case(
        "nul-in-name",
        plan_check(('source = "{apim_source}"', 'source = "apim\\u0000db"')),
        2,
        r"databases\.apim\.source: .*contains a NUL byte, which PostgreSQL names cannot hold; remove it",
    ),
    Case(
        "empty-owner",
        plan_check(('owner = "wso2_apim"', 'owner = ""')),
        2,
        r"databases\.apim\.owner: String should have at least 1 character.*; fix the value",
    ),
    Case(
        "password-in-plan",
        plan_check(("[postgres]\n", f'[postgres]\npassword = "{LEAKED}"\n')),
        2,
        r"postgres\.password: unknown key; remove it or fix its spelling",
        forbid=(LEAKED,),
    ),
    Case(
        "literal-secret-in-gateway",
        plan_check(('password = "${{admin.password}}"', f'password = "{LEAKED}"')),
        2,
        r"gateway_environments\[0\]\.password holds a literal secret; use a \$env\{VAR\} or "
        r"\$\{admin\.password\} placeholder",
        forbid=(LEAKED,),
    ),
    Case(
        "unknown-phase",
        _cli(["run", "PLAN", "--phase", "upgrade-everything"]),
        2,
        r"unknown phase 'upgrade-everything'; choose one of: prepare-databases, ",
    ),
    Case(
        "from-after-until",
        _cli(["run", "PLAN", "--from", "cutover", "--until", "prepare-databases"]),
        2,
        r"--from cutover comes after --until prepare-databases; swap them",
    ),
    Case(
        "phase-section-missing",
        _cli(["run", "PLAN", "--phase", "schema-upgrade"]),
        2,
        r"phase schema-upgrade needs a \[schema_upgrade\] section in /.*\.toml; add it",
        estate="at420",
    ),
    # --- the server and the databases (exit 3, nothing connects for long) ---
    Case(
        "unreachable-server",
        plan_check(("port = 5432", "port = 1\nconnect_timeout = 3")),
        3,
        r"connectivity: cannot connect to database 'postgres' at postgres@127\.0\.0\.1:1: .*Connection refused\. "
        r"Check the \[postgres\] section of the plan, that the server is running",
        subprocess=True,
    ),
    Case(
        "unknown-host",
        plan_check(('host = "127.0.0.1"', 'host = "no-such-db-host.invalid"\nconnect_timeout = 3')),
        3,
        r"connectivity: cannot connect to database 'postgres' at postgres@no-such-db-host\.invalid:5432: .*"
        r"Check the \[postgres\] section of the plan",
    ),
    Case(
        "nonexistent-role",
        plan_check(('user = "postgres"', 'user = "apim_bi_no_such_role"')),
        3,
        r"connectivity: cannot connect .* role \"apim_bi_no_such_role\" does not exist\. Check the "
        r"\[postgres\] section",
    ),
    Case(
        "password-variable-unset",
        plan_check(("[postgres]\n", '[postgres]\npassword_env = "APIM_BI_UNSET_PG_PASSWORD"\n')),
        3,
        r"environment variable APIM_BI_UNSET_PG_PASSWORD \(postgres\.password_env\) is not set; export it",
    ),
    Case(
        "password-not-echoed",
        _env(
            plan_check(
                ('user = "postgres"', 'user = "apim_bi_no_such_role"\npassword_env = "APIM_BI_PG_PASSWORD"'),
            ),
            APIM_BI_PG_PASSWORD=LEAKED,
        ),
        3,
        r"connectivity: cannot connect to database 'postgres' at apim_bi_no_such_role@127\.0\.0\.1:5432: .*"
        r"Check the \[postgres\] section",
        forbid=(LEAKED,),
    ),
    Case(
        "hostile-source-name",
        plan_check(('source = "{apim_source}"', "source = '" + HOSTILE + "'")),
        3,
        r"apim source: database 'x\"; DROP DATABASE postgres; --' \(databases\.apim\.source\) does not exist; "
        r"fix the name",
    ),
    Case(
        "hostile-owner",
        plan_check(('owner = "wso2_apim"', "owner = '" + HOSTILE.replace("DATABASE", "ROLE") + "'")),
        3,
        r"role 'x\"; DROP ROLE postgres; --' \(databases\.apim\.owner\) does not exist; "
        r"CREATE ROLE \"x\"\"; DROP ROLE postgres; --\" or name an existing role",
    ),
    Case(
        "hostile-maintenance-db",
        plan_check(("[postgres]\n", "[postgres]\nmaintenance_db = '" + HOSTILE + "'\n")),
        3,
        r"cannot connect to database 'x\"; DROP DATABASE postgres; --' .*does not exist\. Check the "
        r"\[postgres\] section",
    ),
    Case(
        "missing-source",
        plan_check(('source = "{shared_source}"', 'source = "apim_bi_gone_db"')),
        3,
        r"shared source: database 'apim_bi_gone_db' \(databases\.shared\.source\) does not exist; fix the name",
    ),
    Case(
        "disk-full",
        _disk_full,
        3,
        r"work_dir: .*/full/work has 0 B free; .* need at least 64\.0 MB: free space or point work_dir elsewhere",
    ),
    # --- the 4.2.0 pack, driver, keystores, kit, secrets (exit 3, before anything is written) ---
    Case(
        "zip-missing-relative-path",
        _me_rewrite("packs/wso2am-4.2.0.zip", "packs/wso2am-4.2.0-patched.zip"),
        3,
        r"migration pack: distribution /.*/packs/wso2am-4\.2\.0-patched\.zip does not exist; "
        r"fix migration_environment\.distribution_zip",
    ),
    Case(
        "zip-truncated",
        _truncated,
        3,
        r"migration pack: .*wso2am-4\.2\.0\.zip is not a readable zip \(.+\); download the pack again",
    ),
    Case(
        "zip-corrupt", _corrupt, 3, r"migration pack: .*wso2am-4\.2\.0\.zip is corrupt \(.+\); download the pack again"
    ),
    Case(
        "zip-is-4.4.0",
        _me_rewrite("packs/wso2am-4.2.0.zip", "packs/wso2am-4.4.0.zip"),
        3,
        r"migration pack: .*wso2am-4\.4\.0\.zip is WSO2 API-M 4\.4\.0 \(carbon-apimgt 9\.30\.\d+\), not 4\.2\.0; "
        r"use the patched 4\.2\.0 pack",
        subprocess=True,
    ),
    Case(
        "zip-not-wso2",
        _zip(_not_a_pack),
        3,
        r"is not a WSO2 API Manager pack \(missing bin/api-manager\.sh, .*\); point "
        r"migration_environment\.distribution_zip at the API-M pack",
    ),
    Case(
        "zip-two-top-folders",
        _zip(_two_tops),
        3,
        r"has 2 top-level entries, a WSO2 pack has one wso2am-<version> folder; point "
        r"migration_environment\.distribution_zip",
    ),
    Case(
        "keystore-missing",
        _me_rewrite('"kit/keystore/tls-keystore.jks"', '"kit/keystore-prod/tls-keystore.jks"'),
        3,
        r"keystores: keystore file\(s\) not found: .*/kit/keystore-prod/tls-keystore\.jks; fix "
        r"migration_environment\.keystores",
    ),
    Case(
        "keystore-named-not-copied",
        _me_rewrite('file_name = "tls-keystore.jks"', 'file_name = "keystore-tls.jks"'),
        3,
        r"keystore_tls: migration_environment\.keystore_tls\.file_name 'keystore-tls\.jks' is not one of the keystores "
        r"copied into the home \(.*tls-keystore\.jks\); name the copied file or add it to "
        r"migration_environment\.keystores",
    ),
    Case(
        "jdbc-driver-missing",
        _me_rewrite("kit/postgresql-42.7.4.jar", "kit/postgresql-42.7.5.jar"),
        3,
        r"jdbc driver: JDBC driver .*/kit/postgresql-42\.7\.5\.jar does not exist; fix "
        r"migration_environment\.jdbc_driver",
    ),
    Case(
        "jdbc-driver-not-a-jar",
        _text_jar,
        3,
        r"JDBC driver .*postgresql-42\.7\.4\.jar is not a valid jar \(no manifest\); download the driver again",
    ),
    Case(
        "migration-kit-missing",
        _me_rewrite("org.wso2.carbon.is.migration-1.1.170.jar", "org.wso2.carbon.is.migration-1.1.171.jar"),
        3,
        r"migration kit: .*is\.migration-1\.1\.171\.jar does not exist; fix "
        r"migration_environment\.identity_migration_jar",
    ),
    Case(
        "jvm-secret-unset",
        _env(_cli(["run", "PLAN", "--phase", "migration-environment"]), APIM_SANDBOX_DB_PASSWORD=None),
        3,
        r"secrets: environment variable\(s\) APIM_SANDBOX_DB_PASSWORD \(named in \[migration_environment\]\) "
        r"are not set; "
        r"export them before running the JVM phases",
    ),
    # --- vendor SQL scripts (exit 8) ---
    Case(
        "script-syntax-error",
        _scripts(
            ("4.2.0", "4.3.0", None), ("4.3.0", "4.4.0", "ALTER TABLE am_api ADD COLUMN bad_col INTEGER;\nSELEC 1;\n")
        ),
        8,
        r"script1-4\.3\.0-to-4\.4\.0\.sql failed at statement 2 of 2 \(line 2: 'SELEC 1'\): "
        r"SQLSTATE 42601; syntax error at or near \"SELEC\"\. "
        r"The whole script was rolled back: the database is exactly as before it\. Fix the cause and rerun",
        estate="at420",
        flow=True,
        subprocess=True,
    ),
    Case(
        "script-edited-after-applied",
        _scripts(("4.2.0", "4.3.0", GOOD_SCRIPT + "-- edited after it was applied\n")),
        8,
        r"script\(s\) changed since they were applied to '\w+': script0-4\.2\.0-to-4\.3\.0\.sql recorded "
        r"sha256 [0-9a-f]{64}, "
        r"file now [0-9a-f]{64}\. Restore the applied file, or rerun with --rebaseline",
        estate="at420",
        flow=True,
        subprocess=True,
    ),
    Case(
        "psql-connect",
        _scripts(("4.2.0", "4.3.0", "\\connect other_db\nALTER TABLE am_api ADD COLUMN x INTEGER;\n")),
        8,
        r"script0-4\.2\.0-to-4\.3\.0\.sql:\d+: psql meta-command '\\connect other_db' cannot run through the "
        r"driver; remove it",
        estate="at420",
    ),
    Case(
        "psql-include",
        _scripts(("4.2.0", "4.3.0", "ALTER TABLE am_api ADD COLUMN x INTEGER;\n\\i more.sql\n")),
        8,
        r"script0-4\.2\.0-to-4\.3\.0\.sql:\d+: psql meta-command '\\i more\.sql' cannot run through the "
        r"driver; remove it",
        estate="at420",
    ),
    Case(
        "create-index-concurrently",
        _scripts(("4.2.0", "4.3.0", "CREATE INDEX CONCURRENTLY am_api_bi_idx ON am_api (api_name);\n")),
        8,
        r"script0-4\.2\.0-to-4\.3\.0\.sql:1: 'CREATE INDEX CONCURRENTLY am_api_bi_idx ON am_api "
        r"\(api_name\);?' cannot run inside "
        r"a transaction, .*; move it out of the script",
        estate="at420",
    ),
    Case(
        "vacuum-in-script",
        _scripts(("4.2.0", "4.3.0", "ALTER TABLE am_api ADD COLUMN x INTEGER;\n\nVACUUM ANALYZE am_api;\n")),
        8,
        r"script0-4\.2\.0-to-4\.3\.0\.sql:3: 'VACUUM ANALYZE am_api;?' cannot run inside a transaction, .*; "
        r"move it out of the script",
        estate="at420",
    ),
    Case(
        "scripts-out-of-order",
        _scripts(("4.3.0", "4.4.0", "SELECT 1;\n"), ("4.2.0", "4.3.0", None)),
        8,
        r"schema_upgrade\.scripts: script0-4\.3\.0-to-4\.4\.0\.sql upgrades from 4\.3\.0, but the previous "
        r"step ends at 4\.2\.0; "
        r"list the scripts in upgrade order without gaps",
        estate="at420",
    ),
    Case(
        "scripts-version-gap",
        _scripts(("4.2.0", "4.3.0", None), ("4.3.1", "4.4.0", "SELECT 1;\n")),
        8,
        r"script1-4\.3\.1-to-4\.4\.0\.sql upgrades from 4\.3\.1, but the previous step ends at 4\.3\.0; list "
        r"the scripts in upgrade order",
        estate="at420",
    ),
    Case(
        "script-file-missing",
        _scripts(("4.2.0", "4.3.0", "@scripts/4.2.0-to-4.3.0.sql")),
        8,
        r"cannot read SQL script /.*/scripts/4\.2\.0-to-4\.3\.0\.sql: No such file or directory; fix "
        r"schema_upgrade\.scripts",
        estate="at420",
    ),
    Case(
        "script-empty",
        _scripts(("4.2.0", "4.3.0", "-- nothing here yet\n")),
        8,
        r"script0-4\.2\.0-to-4\.3\.0\.sql holds no SQL statements; point schema_upgrade\.scripts at the vendor script",
        estate="at420",
    ),
    Case(
        "dbscripts-missing",
        _scripts(("4.2.0", "4.3.0", None), target_dbscripts="packs/wso2am-4.4.0/dbscripts"),
        3,
        r"dbscripts: .*/packs/wso2am-4\.4\.0/dbscripts is not a folder; fix schema_upgrade\.target_dbscripts",
        estate="at420",
    ),
]


# --- the fingerprint: nothing written to any database ---------------------------------------------


def fingerprint(pg: db.PgServer, estate: Estate, ignore: set[str]) -> dict[str, Any]:
    with db.session(pg, "postgres", read_only=True, autocommit=True) as conn:
        databases = db.fetch_all(conn, ALL_DATABASES)
    # Other test sessions share the server (one of them creates hostile names of its own):
    # watch this estate's names, the system databases and the targets the corpus's plans name.
    prefix = estate.names["apim_source"].removesuffix("_am_db")
    databases = [
        (name, comment)
        for name, comment in databases
        if name.startswith(prefix) or name in SYSTEM_DATABASES or name in CORPUS_TARGETS
    ]
    present = {name for name, _ in databases}

    def one(dbname: str) -> tuple[str, dict[str, int], dict[str, int]]:
        history_counts = take_snapshot(pg, dbname, queries.HISTORY_SCHEMA).row_counts
        return (
            read_catalog(pg, dbname).model_dump_json(),
            take_snapshot(pg, dbname).row_counts,
            {t: c for t, c in history_counts.items() if t not in ignore},
        )

    names = sorted(set(estate.names.values()) & present)
    with ThreadPoolExecutor(max_workers=4) as pool:  # one database per thread: a case costs less
        return {"databases": databases, **dict(zip(names, pool.map(one, names), strict=True))}


def _run_subprocess(args: list[str]) -> tuple[int, str, str]:
    env = dict(os.environ)
    if "PREFECT_API_URL" not in env:
        with contextlib.suppress(Exception):
            from prefect.settings import PREFECT_API_URL

            if PREFECT_API_URL.value():  # the test harness's API: no temporary server to start
                env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    proc = subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    request: pytest.FixtureRequest,
    pg: db.PgServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    estate: Estate = request.getfixturevalue(case.estate)
    request.getfixturevalue("secrets_env")
    if case.flow:
        request.getfixturevalue("prefect_api")
    ignore = FLOW_RECORDS if case.flow else set()
    plan_copy = estate.dir / f"case-{tmp_path.name}.toml"
    try:
        with contextlib.ExitStack() as stack:
            args = case.make(Ctx(estate, tmp_path, monkeypatch, stack))
            before = fingerprint(pg, estate, ignore)
            if case.subprocess:
                code, out, err = _run_subprocess(args)
            else:
                code = main(args)
                out, err = capsys.readouterr()
            after = fingerprint(pg, estate, ignore)
    finally:
        plan_copy.unlink(missing_ok=True)

    failed = [line for line in err.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1, f"expected exactly one FAILED line, got:\n{err}"
    assert re.search(case.message, failed[0]), f"{failed[0]!r}\n  does not match\n{case.message!r}"
    assert code == case.code != 0, f"exit code {code}, documented {case.code}\n{err}"
    assert "Traceback" not in err + out, f"a traceback reached the operator:\n{err}"
    for secret in case.forbid:
        assert secret not in err + out, "a secret from the plan was echoed"
    created = {d for d, _ in after["databases"]} - {d for d, _ in before["databases"]}
    assert not created, f"databases were created: {created}"
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert after == before, f"the failed run wrote to a database: {sorted(changed)}"


def test_corpus_covers_every_kind() -> None:
    """At least 32 cases, every exit code the corpus documents, a few real processes."""
    assert len(CASES) >= 32 and len({c.id for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {2, 3, 8}
    assert sum(c.subprocess for c in CASES) >= 3


def test_fingerprint_sees_a_created_target_and_a_written_row(pg: db.PgServer, fresh: Estate, at420: Estate) -> None:
    """The corpus's "nothing written" is only as good as its fingerprint: show it notices both."""
    before = fingerprint(pg, fresh, set())
    target = fresh.names["apim_target"]
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_database_from_template(target, "template0", "postgres", None))
    try:
        assert fingerprint(pg, fresh, set()) != before
    finally:
        drop_estate(pg, target)
    assert fingerprint(pg, fresh, set()) == before

    apim = at420.names["apim_target"]
    before = fingerprint(pg, at420, set())
    history.mark_done(pg, apim, "schema-upgrade", "fingerprint-probe", None, {})
    try:
        assert fingerprint(pg, at420, set()) != before
    finally:
        with db.session(pg, apim) as conn:
            db.execute(conn, queries.delete_completed_step(), ("schema-upgrade", "fingerprint-probe"))
    assert fingerprint(pg, at420, set()) == before
