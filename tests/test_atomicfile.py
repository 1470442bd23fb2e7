"""builder.atomicfile.write_atomic: the temp-file-and-rename writer of the store's records and
the parse and code caches."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.atomicfile import write_atomic


def test_writes_whole_file_of_the_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    target.write_bytes(b"old")
    write_atomic(target, b"new content", mode=0o600)
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    target = tmp_path / "cache" / "entry"
    target.parent.mkdir()
    target.symlink_to(victim)
    write_atomic(target, b"entry")
    assert victim.read_text() == "keep me\n"
    assert not target.is_symlink() and target.read_bytes() == b"entry"


def test_failure_raises_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    target.mkdir()  # a directory: the rename over it fails
    (target / "inside").write_text("x")
    with pytest.raises(OSError):
        write_atomic(target, b"data", tmp_dir=tmp_path, prefix="w-1-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    assert (target / "inside").read_text() == "x"


def test_durable_with_unlink_first_in_another_temp_dir(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    target = tmp_path / "index.json"
    target.write_text("{}")
    write_atomic(target, b'{"a": 1}', tmp_dir=tmp_path / "tmp", prefix="w-1-", suffix="", durable=True,
                 unlink_first=True)
    assert target.read_bytes() == b'{"a": 1}'
    assert list((tmp_path / "tmp").iterdir()) == []
    assert os.stat(target).st_nlink == 1
