"""bench.archive_indexes at a toy size: every variant stores every row and gets its line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import archive_indexes


def test_every_variant_and_commit_size_is_measured(capsys: pytest.CaptureFixture[str]) -> None:
    assert archive_indexes.main(["--rows", "300", "--per-commit", "20,300", "--accounts", "5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(lines) == 1 + 2 * 6
    assert "| 300 | only archive_by_time |" in "\n".join(lines)


def test_a_variant_keeps_only_its_indexes(tmp_path: Path) -> None:
    inserting, committing, stored = archive_indexes.measure(tmp_path, 50, 20, 3, ("archive_by_with",))
    assert stored == 50 and inserting > 0 and committing >= 0
    (path,) = tmp_path.glob("*.db")
    conn = sqlite3.connect(path)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'archive'")}
    conn.close()
    assert "archive_by_with" in names and not names & {"archive_by_user", "archive_by_time", "archive_by_resource"}
