"""The reference-catalogue cache: shared across work directories, keyed, self-healing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.schema_diff import CACHE_FORMAT, reference_catalog, user_cache_dir

DDL = """
CREATE TABLE am_thing (id integer PRIMARY KEY, name varchar(10) NOT NULL);
CREATE INDEX am_thing_name ON am_thing (name);
"""


def _ddl(tmp_path: Path, text: str = DDL, name: str = "postgresql.sql") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("reference-*.json"))


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APIM_UPGRADE_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("APIM_UPGRADE_CACHE_DIR")
    assert user_cache_dir() == tmp_path / "xdg" / "apim-upgrade"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "apim-upgrade"


def test_shared_across_work_directories_and_keyed(
    pg: db.PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("APIM_UPGRADE_CACHE_DIR", str(cache))
    (tmp_path / "a").mkdir()
    first = reference_catalog(pg, _ddl(tmp_path / "a"))
    [entry] = _entries(cache)
    with db.session(pg, "postgres") as conn:
        major = int((db.fetch_one(conn, queries.SERVER_VERSION) or (0,))[0]) // 10000
    assert entry.name.startswith(f"reference-v{CACHE_FORMAT}-pg{major}-")
    assert first.tables["am_thing"].columns["name"].data_type == "character varying(10)"
    assert not list(cache.glob("*.tmp")), "the atomic write left its temporary file behind"

    # Another work directory, the same DDL bytes: the entry is read, not rebuilt. Proven by
    # tampering with the entry: a rebuild would not see the tampered type.
    data = json.loads(entry.read_text())
    data["tables"]["am_thing"]["columns"]["name"]["data_type"] = "text"
    entry.write_text(json.dumps(data))
    (tmp_path / "b").mkdir()
    second = reference_catalog(pg, _ddl(tmp_path / "b"))
    assert second.tables["am_thing"].columns["name"].data_type == "text"
    assert second.database == f"ddl:{tmp_path / 'b' / 'postgresql.sql'}"  # names this file, not the cached one

    # Different DDL bytes: a new key, a fresh load.
    third = reference_catalog(pg, _ddl(tmp_path / "b", DDL + "CREATE TABLE am_other (x int);\n", "other.sql"))
    assert set(third.tables) == {"am_thing", "am_other"}
    assert third.tables["am_thing"].columns["name"].data_type == "character varying(10)"
    assert len(_entries(cache)) == 2


def test_corrupt_entry_is_rebuilt(
    pg: db.PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("APIM_UPGRADE_CACHE_DIR", str(cache))
    ddl = _ddl(tmp_path)
    good = reference_catalog(pg, ddl)
    [entry] = _entries(cache)
    for corrupt in (b"{not json", b'{"database": "x"}', b"\xff\xfe"):
        entry.write_bytes(corrupt)
        with caplog.at_level(logging.WARNING, logger="apim_upgrade.postgres.schema_diff"):
            caplog.clear()
            assert reference_catalog(pg, ddl) == good
        assert "ignoring unreadable reference catalogue cache entry" in caplog.text
        assert json.loads(entry.read_text())["tables"].keys() == {"am_thing"}  # rewritten whole


def test_unwritable_cache_only_warns(
    pg: db.PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # mkdir below it fails even for root
    monkeypatch.setenv("APIM_UPGRADE_CACHE_DIR", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="apim_upgrade.postgres.schema_diff"):
        catalog = reference_catalog(pg, _ddl(tmp_path))
    assert catalog.tables["am_thing"].primary_key == ["id"]
    assert "cannot write reference catalogue cache entry" in caplog.text
    assert blocker.read_text() == "not a directory"
