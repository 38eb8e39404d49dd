"""Plan validation: every mistake is one line naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from apim_upgrade.errors import PlanError
from apim_upgrade.plan import load_plan
from apim_upgrade.plan.sections import Strategy

VALID = """
name = "prod"
work_dir = "work"
[postgres]
host = "db.example"
password_env = "PGPASS_FOR_TEST"
[databases.apim]
source = "wso2_am_db"
target = "wso2am_am"
owner = "wso2_apim"
[databases.shared]
source = "wso2_shared_db"
target = "wso2am_shared"
owner = "wso2_apim"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "plan.toml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(PlanError) as err:
        load_plan(write(tmp_path, text))
    return str(err.value)


def test_valid_plan_resolves_paths_and_defaults(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, VALID))
    assert plan.work_dir == (tmp_path / "work").resolve()
    assert plan.strategy is Strategy.SIDE_BY_SIDE
    assert plan.databases.apim.db_schema == "public"
    assert plan.copy_options.terminate_connections is False
    assert len(plan.digest) == 64


def test_unknown_keys_are_errors_at_every_level(tmp_path: Path) -> None:
    text = VALID.replace('name = "prod"', 'name = "prod"\nbogus = 1').replace(
        'owner = "wso2_apim"\n[databases.shared]', 'owner = "wso2_apim"\ncolour = "red"\n[databases.shared]'
    )
    msg = problems(tmp_path, text)
    assert "bogus: unknown key" in msg
    assert "databases.apim.colour: unknown key" in msg


def test_missing_key_and_same_source_target(tmp_path: Path) -> None:
    text = VALID.replace('target = "wso2am_am"', 'target = "wso2_am_db"').replace('target = "wso2am_shared"\n', "")
    msg = problems(tmp_path, text)
    assert "databases.apim: target 'wso2_am_db' is the source itself" in msg
    assert "databases.shared.target: required key is missing" in msg


def test_names_longer_than_63_bytes_refused(tmp_path: Path) -> None:
    msg = problems(tmp_path, VALID.replace('"wso2am_am"', '"' + "x" * 64 + '"'))
    assert "63-byte limit" in msg


def test_all_four_names_must_differ(tmp_path: Path) -> None:
    msg = problems(tmp_path, VALID.replace('target = "wso2am_shared"', 'target = "wso2am_am"'))
    assert "must all differ" in msg


def test_password_sources_exclusive_and_never_in_file(tmp_path: Path) -> None:
    msg = problems(
        tmp_path,
        VALID.replace('password_env = "PGPASS_FOR_TEST"', 'password_env = "A"\npassword_secret_block = "b"'),
    )
    assert "not both" in msg
    msg = problems(tmp_path, VALID.replace('password_env = "PGPASS_FOR_TEST"', 'password = "hunter2"'))
    assert "postgres.password: unknown key" in msg


def test_bad_strategy_and_port(tmp_path: Path) -> None:
    msg = problems(
        tmp_path,
        VALID.replace('name = "prod"', 'name = "prod"\nstrategy = "yolo"').replace(
            'host = "db.example"', 'host = "db.example"\nport = 70000'
        ),
    )
    assert "strategy:" in msg and "postgres.port:" in msg


def test_missing_password_variable_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASS_FOR_TEST", raising=False)
    plan = load_plan(write(tmp_path, VALID))
    with pytest.raises(PlanError, match=r"PGPASS_FOR_TEST .* is not set"):
        plan.server()
    monkeypatch.setenv("PGPASS_FOR_TEST", "s3cret")
    server = plan.server()
    assert server.password is not None and "s3cret" not in repr(server)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan file"):
        load_plan(tmp_path / "nope.toml")
    assert "not valid TOML" in problems(tmp_path, "name = ")


def test_cli_reports_plan_errors_with_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from commands.cli import main

    rc = main(["plan", "check", str(write(tmp_path, VALID + "\nextra = true\n"))])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("FAILED: ") and "extra: unknown key" in err


def _node(name: str, port: int, home: str) -> str:
    return (
        f'name = "{name}"\nstart = ["{home}/bin/api-manager.sh", "start"]\n'
        f'stop = ["{home}/bin/api-manager.sh", "stop"]\nhealth_url = "http://cp.example:{port}/health"\n'
    )


def _cutover(rehearsal_400: str, rehearsal_440: str) -> str:
    return (
        VALID
        + "[cutover]\n[[cutover.control_plane_400]]\n"
        + _node("cp-400", 9443, "/opt/wso2am-4.0.0")
        + "[[cutover.control_plane_440]]\n"
        + _node("cp-440", 9443, "/opt/wso2am-4.4.0")
        + "[[cutover.rehearsal.control_plane_400]]\n"
        + rehearsal_400
        + "[[cutover.rehearsal.control_plane_440]]\n"
        + rehearsal_440
    )


def test_rehearsal_nodes_may_never_be_production_nodes(tmp_path: Path) -> None:
    separate = _cutover(_node("stage-400", 19443, "/stage/4.0.0"), _node("stage-440", 19443, "/stage/4.4.0"))
    assert load_plan(write(tmp_path, separate)).cutover is not None

    same_url = problems(tmp_path, _cutover(_node("cp-400", 9443, "/opt/wso2am-4.0.0"), _node("s", 19443, "/s")))
    assert "cutover.rehearsal.control_plane_400[0] 'cp-400' shares its health URL, host:port" in same_url
    assert "with cutover.control_plane_400[0] 'cp-400'" in same_url and "a rehearsal would stop" in same_url
    # Another name and URL path, but the same host:port: it would still reach production's node.
    other_path = _node("stage-440", 9443, "/stage/4.4.0").replace("/health", "/status")
    assert "shares its host:port with cutover.control_plane_400[0]" in problems(
        tmp_path, _cutover(_node("stage-400", 19443, "/stage/4.0.0"), other_path)
    )
    # Another port, but production's own stop command.
    same_command = _node("stage-400", 19443, "/opt/wso2am-4.0.0")
    assert "shares its start command, stop command with cutover.control_plane_400[0]" in problems(
        tmp_path, _cutover(same_command, _node("stage-440", 19443, "/stage/4.4.0"))
    )
