"""README's plan reference is rendered from the model, and every key the model accepts has a meaning."""

from __future__ import annotations

from commands import plan_reference


def test_every_plan_key_has_a_description() -> None:
    assert plan_reference.undescribed() == [], "add a description= to these plan fields"


def test_readme_reference_is_current() -> None:
    text = plan_reference.README.read_text()
    assert plan_reference.splice(text, plan_reference.render()) == text, (
        "README.md's plan reference is stale: run `uv run python -m commands.plan_reference`"
    )


def test_reference_names_every_section_and_the_keys_once_missing() -> None:
    reference = plan_reference.render()
    for needle in (
        "#### `[target_440]`",
        "#### `[migration_environment.truststore]`",
        "#### `[[cutover.gateway_groups.nodes]]`",
        "#### `[cutover.gateway_groups.nodes.replaces]`",
        "| `approval_timeout_seconds` | integer (≥ 10) | `3600` |",
        "| `expect_version` |",
        "| `source_dbscripts` | path | unset |",
        "| `copy` | table (`[copy]`) | (all defaults) |",
        '| `schema` | string | `"public"` |',
    ):
        assert needle in reference, needle
    assert "source_path" not in reference and "digest" not in reference  # computed, not plan keys


def test_check_mode_fails_on_a_stale_reference(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "README.md"
    stale.write_text(f"intro\n{plan_reference.BEGIN}\nold\n{plan_reference.END}\nrest\n")
    monkeypatch.setattr(plan_reference, "README", stale)
    assert plan_reference.main(["--check"]) == 1
    assert "FAILED:" in capsys.readouterr().out
    assert plan_reference.main([]) == 0
    assert plan_reference.main(["--check"]) == 0
    assert stale.read_text().startswith("intro\n") and stale.read_text().endswith("rest\n")
