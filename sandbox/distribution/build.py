"""Builds the stand-in WSO2 API-M packs (``wso2am-<version>.zip``) and the migration kit.

The real distribution cannot be downloaded here, so the sandbox builds a pack
with the real layout (bin/, repository/conf, components/{lib,dropins,plugins},
resources/security, logs, dbscripts/) whose ``bin/api-manager.sh`` checks and
echoes like the product's and then runs the Python stand-in server
(sandbox.distribution.server) instead of the JVM. The product identifies a pack
by its plugin jars, so those carry the real carbon-apimgt / kernel versions
(shared/wso2/README.md). Every pack says it is a stand-in: README-STANDIN.md, the
comment in bin/version.txt and the header of bin/api-manager.sh.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shlex
import shutil
import stat
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.runtime import process
from apim_upgrade.wso2.distribution import APIM_DDL, SHARED_DDL
from sandbox.distribution import pack_texts
from sandbox.distribution.migrations import FROM_DBSCRIPTS
from sandbox.errors import SandboxError

# Product version -> (carbon.apimgt.version, carbon.kernel.version), from product-apim's pom.xml.
PACKS: dict[str, tuple[str, str]] = {
    "4.0.0": ("9.0.174", "4.6.2"),
    "4.2.0": ("9.28.116", "4.8.1"),
    "4.4.0": ("9.30.67", "4.9.27"),
}
# JDK range the real script accepts (none checked at 4.0.0).
JDK_RANGE = {"4.2.0": ("11", "17", 1100, 1700), "4.4.0": ("11", "21", 1100, 2100)}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPACT_DBSCRIPTS = PROJECT_ROOT / "sandbox" / "sql" / "compact"
HERE = Path(__file__).resolve().parent

KEYSTORE_PASSWORD = "wso2carbon"  # the product's default keystores (wso2carbon.jks, client-truststore.jks)
JDBC_DRIVER_JAR = "postgresql-42.7.4.jar"
IDENTITY_JAR = "org.wso2.carbon.is.migration-1.1.170.jar"
API_JAR = "org.wso2.carbon.apimgt.migrate.client-4.2.0.67.jar"
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)  # fixed: the same inputs give the same zip


@dataclass(frozen=True)
class MigrationKit:
    """What WSO2 support hands out for a 4.0.0 -> 4.2.0 migration, stand-in versions."""

    root: Path
    jdbc_driver: Path  # postgresql-42.7.4.jar
    identity_resources: Path  # dir named migration-resources (migration-config.yaml)
    identity_jar: Path  # org.wso2.carbon.is.migration-1.1.170.jar
    api_resources: Path  # dir named migration-resources (API-M client resources)
    api_jar: Path  # org.wso2.carbon.apimgt.migrate.client-4.2.0.67.jar
    keystores: list[Path]  # client-truststore.jks, internal-keystore.jks, tls-keystore.jks
    # Store and key password of every kit keystore: random per process, like an estate's own
    # secret (a fixed word would also match file names in leak checks). Kept out of repr.
    store_password: str = field(default="", repr=False)


def build_distribution(
    version: str, out_dir: Path, *, dbscripts: Path | None = None, python: str | None = None
) -> Path:
    """Write ``out_dir/wso2am-<version>.zip`` (top folder ``wso2am-<version>/``) and return its path."""
    if version not in PACKS:
        raise SandboxError(f"no stand-in pack for WSO2 API-M {version!r}; choose one of {', '.join(PACKS)}")
    apimgt_version, kernel_version = PACKS[version]
    scripts = _dbscripts(version, dbscripts)
    top = f"wso2am-{version}"
    keystores = _default_keystores()
    files: dict[str, tuple[bytes, int]] = {
        "bin/api-manager.sh": (_startup_script(version, python or sys.executable).encode(), 0o755),
        "bin/version.txt": (_version_txt(version).encode(), 0o644),
        "repository/conf/deployment.toml": (
            (HERE / "defaults" / f"deployment-{version}.toml").read_bytes(),
            0o644,
        ),
        "repository/conf/log4j2.properties": (pack_texts.LOG4J2.encode(), 0o644),
        f"repository/components/plugins/org.wso2.carbon.apimgt.impl_{apimgt_version}.jar": (
            _jar("org.wso2.carbon.apimgt.impl", apimgt_version, "WSO2 Carbon - API Management Implementation"),
            0o644,
        ),
        f"repository/components/plugins/org.wso2.carbon.core_{kernel_version}.jar": (
            _jar("org.wso2.carbon.core", kernel_version, "WSO2 Carbon - Core"),
            0o644,
        ),
        "repository/resources/security/wso2carbon.jks": (keystores["wso2carbon.jks"], 0o644),
        "repository/resources/security/client-truststore.jks": (keystores["client-truststore.jks"], 0o644),
        "dbscripts/apimgt/postgresql.sql": (scripts[0], 0o644),
        "dbscripts/postgresql.sql": (scripts[1], 0o644),
        "README-STANDIN.md": (
            pack_texts.pack_readme(version, apimgt_version, kernel_version).encode(),
            0o644,
        ),
    }
    empty_dirs = [
        "repository/components/lib/",
        "repository/components/dropins/",
        "repository/deployment/server/",
        "repository/logs/",
        "tmp/",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{top}.zip"
    partial = target.with_name(target.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in [f"{top}/", *(f"{top}/{d}" for d in empty_dirs)]:
            _add(archive, folder, b"", 0o755, directory=True)
        for name, (data, mode) in sorted(files.items()):
            _add(archive, f"{top}/{name}", data, mode)
    partial.replace(target)  # a crash never leaves a half-written zip under the real name
    return target


def unpack_distribution(zip_path: Path, dest: Path) -> Path:
    """Extract a pack keeping file modes (zipfile.extractall drops them); returns the CARBON_HOME."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(dest)
        for info in archive.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                (dest / info.filename).chmod(mode)
    return dest / zip_path.name.removesuffix(".zip")


def build_migration_kit(out_dir: Path, *, from_dbscripts: Path | None = None) -> MigrationKit:
    """Stand-in migration resources, client jars, JDBC driver and estate keystores under ``out_dir``.

    ``from_dbscripts``: the DDL (pack-style folder) of the 4.0.0 estate the kit migrates, default our
    compact 4.0.0 schema; both resource folders carry it, and the clients drop only its objects
    (WSO2's clients drop what their scripts name, never a customer's own objects)."""
    root = out_dir
    identity_resources = root / "migration-resources"
    api_home = root / "migration-resources-am"
    api_resources = api_home / "migration-resources"
    keystore_dir = root / "keystore"
    for folder in (identity_resources, api_resources, api_home / "dropins", keystore_dir):
        folder.mkdir(parents=True, exist_ok=True)
    jdbc = root / JDBC_DRIVER_JAR
    jdbc.write_bytes(_postgres_driver_jar())
    (identity_resources / "migration-config.yaml").write_text(pack_texts.IDENTITY_CONFIG, encoding="utf-8")
    identity_jar = root / IDENTITY_JAR
    identity_jar.write_bytes(_jar("org.wso2.carbon.is.migration", "1.1.170", "WSO2 IS migration client"))
    for relative, text in pack_texts.API_RESOURCES.items():
        path = api_resources / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    from_scripts = _dbscripts("4.0.0", from_dbscripts)
    for resources in (identity_resources, api_resources):
        for ddl, data in zip((APIM_DDL, SHARED_DDL), from_scripts, strict=True):
            path = resources / FROM_DBSCRIPTS / ddl
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    api_jar = api_home / "dropins" / API_JAR
    api_jar.write_bytes(_jar("org.wso2.carbon.apimgt.migrate.client", "4.2.0.67", "WSO2 API-M migration client"))
    keystores = []
    store_password, files = _kit_keystores()
    for name, data in sorted(files.items()):
        path = keystore_dir / name
        path.write_bytes(data)
        keystores.append(path)
    (root / "README-STANDIN.md").write_text(
        pack_texts.kit_readme(JDBC_DRIVER_JAR, IDENTITY_JAR, API_JAR), encoding="utf-8"
    )
    return MigrationKit(root, jdbc, identity_resources, identity_jar, api_resources, api_jar, keystores, store_password)


# --------------------------------------------------------------------------- pack parts


def _dbscripts(version: str, folder: Path | None) -> tuple[bytes, bytes]:
    base = folder if folder is not None else COMPACT_DBSCRIPTS / version
    if folder is None and not base.is_dir():
        raise SandboxError(
            f"the compact schema for {version} is missing at {base} (sandbox/sql/compact/<version>/ with "
            f"{APIM_DDL} and {SHARED_DDL}); pass dbscripts= a pack-style dbscripts/{version} folder instead"
        )
    out = []
    for relative in (APIM_DDL, SHARED_DDL):
        path = base / relative
        try:
            out.append(path.read_bytes())
        except OSError as exc:
            raise SandboxError(
                f"cannot read {path}: {exc.strerror}; dbscripts must hold {APIM_DDL} (WSO2AM_DB) and "
                f"{SHARED_DDL} (WSO2_SHARED_DB) as a product pack's dbscripts/ folder does"
            ) from None
    return out[0], out[1]


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int, *, directory: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    kind = stat.S_IFDIR if directory else stat.S_IFREG
    info.external_attr = ((kind | mode) << 16) | (0x10 if directory else 0)
    info.compress_type = zipfile.ZIP_STORED if directory else zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _version_txt(version: str) -> str:
    return (
        f"WSO2 API Manager v{version}\n"
        "# STAND-IN distribution built by apim-upgrade's sandbox (sandbox/distribution/build.py):\n"
        "# not the WSO2 product. See README-STANDIN.md.\n"
    )


def _startup_script(version: str, python: str) -> str:
    low, high, low_num, high_num = JDK_RANGE.get(version, ("", "", 0, 0))
    jdk_check = (
        pack_texts.JDK_CHECK.replace("@LOW@", low)
        .replace("@HIGH@", high)
        .replace("@LOW_NUM@", str(low_num))
        .replace("@HIGH_NUM@", str(high_num))
        if low
        else ""
    )
    return (
        pack_texts.STARTUP_SCRIPT.replace("@VERSION@", version)
        .replace("@JDK_CHECK@", jdk_check)
        .replace("@PYTHON@", shlex.quote(python))
        .replace("@PROJECT_ROOT@", shlex.quote(str(PROJECT_ROOT)))
    )


def _manifest(symbolic_name: str, version: str, title: str, extra: dict[str, str] | None = None) -> bytes:
    headers = {
        "Manifest-Version": "1.0",
        "Created-By": "apim-upgrade sandbox (stand-in placeholder, not a WSO2 binary)",
        "Bundle-ManifestVersion": "2",
        "Bundle-Name": title,
        "Bundle-SymbolicName": symbolic_name,
        "Bundle-Version": version,
        **(extra or {}),
    }
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"


def _jar(symbolic_name: str, version: str, title: str, files: dict[str, bytes] | None = None) -> bytes:
    """A tiny but valid jar (a zip with META-INF/MANIFEST.MF) standing in for a real one."""
    path = Path(tempfile.mkstemp(suffix=".jar")[1])
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(
                zipfile.ZipInfo("META-INF/MANIFEST.MF", _ZIP_TIME), _manifest(symbolic_name, version, title)
            )
            archive.writestr(
                zipfile.ZipInfo("META-INF/STANDIN.txt", _ZIP_TIME),
                b"Stand-in placeholder built by apim-upgrade's sandbox; contains no WSO2 code.\n",
            )
            for name, data in (files or {}).items():
                archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _postgres_driver_jar() -> bytes:
    path = Path(tempfile.mkstemp(suffix=".jar")[1])
    extra = {
        "Implementation-Title": "PostgreSQL JDBC Driver",
        "Implementation-Vendor": "PostgreSQL Global Development Group",
        "Implementation-Version": "42.7.4",
        "Automatic-Module-Name": "org.postgresql.jdbc",
    }
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            manifest = _manifest("org.postgresql.jdbc", "42.7.4", "PostgreSQL JDBC Driver", extra)
            archive.writestr(zipfile.ZipInfo("META-INF/MANIFEST.MF", _ZIP_TIME), manifest)
            # How JDBC 4 finds a driver; the stand-in server looks for exactly this.
            archive.writestr(
                zipfile.ZipInfo("META-INF/services/java.sql.Driver", _ZIP_TIME), b"org.postgresql.Driver\n"
            )
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- keystores


@functools.cache
def _default_keystores() -> dict[str, bytes]:
    """The product's defaults: wso2carbon.jks (key ``wso2carbon``) and a truststore trusting it."""
    return _make_keystores(
        {"wso2carbon.jks": "wso2carbon"}, truststore="client-truststore.jks", password=KEYSTORE_PASSWORD
    )


@functools.cache
def _kit_keystores() -> tuple[str, dict[str, bytes]]:
    """The estate's keystores as the guide copies them (file and alias names from the guide)."""
    password = f"kit-{secrets.token_hex(8)}"
    keys = {"tls-keystore.jks": "serverCert", "internal-keystore.jks": "encryptkey"}
    return password, _make_keystores(keys, truststore="client-truststore.jks", password=password)


def _make_keystores(keys: dict[str, str], *, truststore: str, password: str) -> dict[str, bytes]:
    keytool = _keytool()
    if keytool is None:
        empty = _empty_jks(password)
        return {**dict.fromkeys(keys, empty), truststore: empty}
    with tempfile.TemporaryDirectory(prefix="standin-keystores-") as tmp:
        work = Path(tmp)
        common = ["-storepass", password, "-storetype", "JKS", "-noprompt"]
        try:
            for name, alias in keys.items():
                store = str(work / name)
                process.run(
                    [keytool, "-genkeypair", "-alias", alias, "-keyalg", "RSA", "-keysize", "2048",
                     "-validity", "3650", "-dname", "CN=localhost, O=apim-upgrade sandbox, C=US",
                     "-keypass", password, "-keystore", store, *common],
                    timeout=120,
                )  # fmt: skip
                cert = str(work / f"{alias}.crt")
                process.run([keytool, "-exportcert", "-alias", alias, "-file", cert, "-keystore", store, *common])
                process.run(
                    [keytool, "-importcert", "-alias", alias, "-file", cert,
                     "-keystore", str(work / truststore), *common],
                    timeout=120,
                )  # fmt: skip
        except ApimUpgradeError as exc:
            raise SandboxError(f"keytool could not build the stand-in keystores: {exc}") from None
        return {name: (work / name).read_bytes() for name in [*keys, truststore]}


def _keytool() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "keytool").is_file():
        return str(Path(java_home) / "bin" / "keytool")
    return shutil.which("keytool")


def _empty_jks(password: str) -> bytes:
    """A valid, empty JKS keystore: header, no entries, then the keyed SHA-1 integrity digest."""
    body = b"\xfe\xed\xfe\xed" + struct.pack(">II", 2, 0)
    digest = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body, usedforsecurity=False)
    return body + digest.digest()
