"""Row-count rows of a step's gate: labelled before/after, a declared change says why."""

from __future__ import annotations

from apim_upgrade.postgres.catalog import Snapshot
from tasks.gates import COUNT_CHANGE_REASONS, comparison_rows


def test_a_declared_change_is_labelled_and_explained() -> None:
    before = Snapshot.model_construct(row_counts={"reg_log": 175, "am_api": 3, "um_user": 2})
    after = Snapshot.model_construct(row_counts={"reg_log": 80, "am_api": 3, "um_user": 1})
    rows = comparison_rows(
        before, after, labels=("before_rows", "after_rows"), expected={"reg_log": COUNT_CHANGE_REASONS["reg_log"]}
    )
    by_table = {r["table"]: r for r in rows}
    assert by_table["reg_log"] == {
        "table": "reg_log",
        "before_rows": 175,
        "after_rows": 80,
        "status": "count changed as declared",
        "reason": COUNT_CHANGE_REASONS["reg_log"],
    }
    assert by_table["um_user"]["status"] == "count differs" and "reason" not in by_table["um_user"]
    assert "source_rows" not in by_table["am_api"]
    copy_rows = comparison_rows(before, after)  # the copy gate keeps its source/copy labels
    assert {"source_rows", "copy_rows"} <= set(copy_rows[0])
