"""WSO2 API-M packs: identify, unpack and prepare a home.

A pack is identified the way WSO2 builds it: one top-level ``wso2am-<v>``
folder holding ``bin/api-manager.sh``, ``repository/conf/deployment.toml``
and the carbon-apimgt plugin whose version pins the product release
(9.28.x is API-M 4.2.0; see the table in shared/wso2/README.md).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.runtime.atomic import copy_atomically, copy_tree_atomically, replacing

# carbon.apimgt.version prefix of each API-M release.
APIMGT_RELEASES = {"4.0.0": "9.0.", "4.1.0": "9.20.", "4.2.0": "9.28.", "4.3.0": "9.29.", "4.4.0": "9.30."}
# Where a pack's dbscripts/ folder keeps each database's DDL: the API-M DB under apimgt/,
# the shared DB (registry, user store) at the root. The one statement of that rule.
DDL_FILES = {"apim": Path("apimgt") / "postgresql.sql", "shared": Path("postgresql.sql")}
APIM_DDL, SHARED_DDL = DDL_FILES["apim"], DDL_FILES["shared"]


def ddl_file(dbscripts: Path | str, role: str) -> Path:
    """The DDL of database ``role`` ("apim" or "shared") in a pack-style dbscripts folder."""
    return Path(dbscripts) / DDL_FILES[role]


_APIMGT_PLUGIN = re.compile(r"repository/components/plugins/org\.wso2\.carbon\.apimgt\.impl_(\d+\.\d+\.\d+)\.jar$")
SECURITY_DIR = Path("repository/resources/security")
LIB_DIR = Path("repository/components/lib")
DROPINS_DIR = Path("repository/components/dropins")
CONF_FILE = Path("repository/conf/deployment.toml")


class DistributionError(ApimUpgradeError):
    """The pack is not the expected WSO2 API-M distribution, or cannot be prepared."""


@dataclass(frozen=True)
class PackInfo:
    path: Path
    sha256: str
    top_dir: str
    product_version: str
    apimgt_version: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_pack(path: Path, expected_version: str) -> PackInfo:
    """Check that ``path`` is an intact WSO2 API-M pack of ``expected_version``."""
    if not path.is_file():
        raise DistributionError(f"distribution {path} does not exist; fix migration_environment.distribution_zip")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            try:
                bad = zf.testzip()
            except (zlib.error, EOFError) as exc:  # damaged compressed data, not just a CRC mismatch
                raise DistributionError(f"{path} is corrupt ({exc}); download the pack again") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DistributionError(f"{path} is not a readable zip ({exc}); download the pack again") from None
    if bad is not None:
        raise DistributionError(f"{path} is corrupt (CRC error in {bad}); download the pack again")
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if len(tops) != 1:
        raise DistributionError(
            f"{path} has {len(tops)} top-level entries, a WSO2 pack has one wso2am-<version> folder; "
            "point migration_environment.distribution_zip at the API-M pack"
        )
    top = tops.pop()
    rel = {n[len(top) + 1 :] for n in names}
    missing = [p for p in ("bin/api-manager.sh", str(CONF_FILE)) if p not in rel]
    versions = [m.group(1) for n in rel if (m := _APIMGT_PLUGIN.search(n))]
    if missing or not versions:
        raise DistributionError(
            f"{path} is not a WSO2 API Manager pack (missing "
            + ", ".join(missing + ([] if versions else ["the org.wso2.carbon.apimgt.impl plugin"]))
            + "); point migration_environment.distribution_zip at the API-M pack"
        )
    apimgt = versions[0]
    product = next((v for v, prefix in APIMGT_RELEASES.items() if apimgt.startswith(prefix)), "unknown")
    if product != expected_version:
        raise DistributionError(
            f"{path} is WSO2 API-M {product} (carbon-apimgt {apimgt}), not {expected_version}; "
            f"use the patched {expected_version} pack"
        )
    return PackInfo(path, sha256_file(path), top, product, apimgt)


def unpack(info: PackInfo, dest_parent: Path) -> Path:
    """Unpack into ``dest_parent/<top_dir>`` (replacing an earlier unpack), refusing unsafe paths."""
    dest_parent.mkdir(parents=True, exist_ok=True)
    staging = dest_parent / f".{info.top_dir}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with zipfile.ZipFile(info.path) as zf:
        for member in zf.infolist():
            target = (staging / member.filename).resolve()
            if not target.is_relative_to(staging.resolve()):
                raise DistributionError(f"{info.path} contains an unsafe path {member.filename!r}; refusing it")
            zf.extract(member, staging)
            mode = member.external_attr >> 16
            if mode & stat.S_IXUSR:
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    home = dest_parent / info.top_dir
    shutil.rmtree(home, ignore_errors=True)
    (staging / info.top_dir).rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    return home


def check_jdbc_driver(driver: Path) -> None:
    if not driver.exists():
        raise DistributionError(f"JDBC driver {driver} does not exist; fix migration_environment.jdbc_driver")
    if not driver.is_file() or not driver.name.endswith(".jar"):
        raise DistributionError(f"JDBC driver {driver} is not a jar file; fix migration_environment.jdbc_driver")
    try:
        with zipfile.ZipFile(driver) as zf:
            zf.getinfo("META-INF/MANIFEST.MF")
    except (zipfile.BadZipFile, KeyError, OSError):
        raise DistributionError(
            f"JDBC driver {driver} is not a valid jar (no manifest); download the driver again"
        ) from None


def install_jdbc_driver(home: Path, driver: Path) -> Path:
    check_jdbc_driver(driver)
    return copy_atomically(driver, home / LIB_DIR / driver.name)


def replace_keystores(home: Path, keystores: list[Path]) -> tuple[list[str], list[str]]:
    """Remove the pack's default *.jks and copy the estate's; returns (removed, copied)."""
    security = home / SECURITY_DIR
    missing = [str(k) for k in keystores if not k.is_file()]
    if missing:
        raise DistributionError(
            f"keystore file(s) not found: {', '.join(missing)}; fix migration_environment.keystores"
        )
    removed = sorted(p.name for p in security.glob("*.jks"))
    for ks in keystores:  # each whole or not at all; a pack default of the same name is replaced by the rename
        copy_atomically(ks, security / ks.name)
    for name in removed:
        if name not in {k.name for k in keystores}:
            (security / name).unlink()
    return removed, sorted(k.name for k in keystores)


def install_migration_kit(home: Path, resources: Path, jar: Path) -> list[str]:
    """Copy a migration-resources folder into the home and its jar into dropins."""
    if not resources.is_dir():
        raise DistributionError(f"migration resources {resources} is not a folder; fix the plan")
    if not jar.is_file():
        raise DistributionError(f"migration client {jar} does not exist; fix the plan")
    dest = home / "migration-resources"
    shutil.rmtree(dest, ignore_errors=True)
    copy_tree_atomically(resources, dest)
    copy_atomically(jar, home / DROPINS_DIR / jar.name)
    return [str(dest.relative_to(home)), str(DROPINS_DIR / jar.name)]


def remove_migration_kit(home: Path, jar_name: str) -> list[str]:
    """Undo install_migration_kit (the guide removes the identity files before the API steps)."""
    removed = []
    if (home / "migration-resources").exists():
        shutil.rmtree(home / "migration-resources")
        removed.append("migration-resources")
    jar = home / DROPINS_DIR / jar_name
    if jar.exists():
        jar.unlink()
        removed.append(str(DROPINS_DIR / jar_name))
    return removed


def archive_home(home: Path, dest: Path) -> Path:
    with replacing(dest) as tmp, tarfile.open(tmp, "w:gz") as tar:  # never half an archive under its name
        tar.add(home, arcname=home.name)
    return dest
