"""Outputs appear whole or not at all, and never replace a directory of someone else's files."""

from pathlib import Path

import pytest

from imo.errors import OutputDirError
from imo.fsutil import atomic_dir


def test_atomic_dir_replaces_a_previous_output_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for text in ("one", "two"):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text(text)
    assert (out / "a.txt").read_text() == "two"

    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("three")
        raise RuntimeError
    assert (out / "a.txt").read_text() == "two"

    (out / "mine.txt").write_text("not from an export")
    with pytest.raises(OutputDirError, match="refusing to replace"), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("four")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "mine.txt").exists() and (out / "a.txt").read_text() == "two"
