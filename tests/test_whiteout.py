"""Unit tests of builder.layer.whiteout.upper_entries on hand-made overlay upper dirs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.layer.entries import Entry, EntryType
from builder.layer.whiteout import OPAQUE_MARKER, upper_entries, upper_is_empty


def _by_name(upper: Path, **kw) -> dict[str, Entry]:  # type: ignore[no-untyped-def]
    out: dict[str, Entry] = {}
    for e in upper_entries(upper, **kw):
        assert e.name not in out, f"duplicate entry {e.name}"
        out[e.name] = e
    return out


def test_plain_tree_metadata(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o750)
    f = tmp_path / "d" / "f"
    f.write_bytes(b"hello")
    os.chmod(f, 0o4755)
    os.utime(f, (1_000_000, 1_234_567))
    os.symlink("../x/y", tmp_path / "d" / "l")
    os.mkfifo(tmp_path / "p")
    got = _by_name(tmp_path)
    assert set(got) == {"d", "d/f", "d/l", "p"}
    assert got["d"].type is EntryType.DIR and got["d"].mode == 0o750
    assert got["d/f"] == Entry(name="d/f", type=EntryType.FILE, mode=0o4755, uid=os.getuid(), gid=os.getgid(),
                               mtime=1_234_567, size=5, source=str(f))
    assert got["d/l"].type is EntryType.SYMLINK and got["d/l"].linkname == "../x/y"
    assert got["p"].type is EntryType.FIFO


@pytest.mark.root
def test_whiteout_char_device_becomes_wh_file(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    os.mknod(tmp_path / "bin" / "cat", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.mknod(tmp_path / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    got = _by_name(tmp_path)
    assert set(got) == {"bin", "bin/.wh.cat", ".wh.gone"}
    wh = got["bin/.wh.cat"]
    assert wh.type is EntryType.FILE and wh.size == 0 and wh.mode == 0 and wh.source is None


@pytest.mark.root
def test_shared_whiteout_inode_is_not_a_hardlink(tmp_path: Path) -> None:
    """Overlay (5.8+) links all whiteouts to one inode: they must stay whiteouts."""
    os.mknod(tmp_path / "a", stat.S_IFCHR, os.makedev(0, 0))
    os.link(tmp_path / "a", tmp_path / "b")
    got = _by_name(tmp_path)
    assert set(got) == {".wh.a", ".wh.b"}
    assert all(e.type is EntryType.FILE for e in got.values())


@pytest.mark.root
def test_real_char_device_is_kept(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(tmp_path / "null", 0o666)  # mknod applies the umask
    e = _by_name(tmp_path)["null"]
    assert (e.type, e.devmajor, e.devminor, e.mode) == (EntryType.CHAR, 1, 3, 0o666)


@pytest.mark.root
def test_opaque_dir_gets_marker(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    (d / "f").write_bytes(b"x\n")
    os.setxattr(d, "trusted.overlay.opaque", b"y")
    got = _by_name(tmp_path)
    assert set(got) == {"etc", f"etc/{OPAQUE_MARKER}", "etc/f"}
    marker = got[f"etc/{OPAQUE_MARKER}"]
    assert marker.type is EntryType.FILE and marker.size == 0 and marker.mode == 0o755
    assert got["etc"].xattrs == ()  # overlay's private xattrs never reach the layer


@pytest.mark.root
def test_userxattr_opaque(tmp_path: Path) -> None:
    d = tmp_path / "o"
    d.mkdir()
    os.setxattr(d, "user.overlay.opaque", b"y")
    assert f"o/{OPAQUE_MARKER}" not in _by_name(tmp_path)
    assert f"o/{OPAQUE_MARKER}" in _by_name(tmp_path, userxattr=True)


@pytest.mark.root
def test_overlay_xattrs_dropped_others_kept(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    os.setxattr(f, "trusted.overlay.origin", b"\x00\x01")
    os.setxattr(f, "trusted.overlay.impure", b"y")
    os.setxattr(f, "user.note", b"kept")
    os.setxattr(f, "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16)
    names = [n for n, _ in _by_name(tmp_path)["f"].xattrs]
    assert names == sorted(names)
    assert "user.note" in names and "security.capability" in names
    assert not any(n.startswith("trusted.overlay.") for n in names)


def test_hardlinks_first_sorted_name_is_the_file(tmp_path: Path) -> None:
    (tmp_path / "z").write_bytes(b"data")
    os.link(tmp_path / "z", tmp_path / "a")
    (tmp_path / "m").mkdir()
    os.link(tmp_path / "z", tmp_path / "m" / "k")
    got = _by_name(tmp_path)
    assert got["a"].type is EntryType.FILE and got["a"].size == 4
    assert got["m/k"].type is EntryType.HARDLINK and got["m/k"].linkname == "a"
    assert got["z"].type is EntryType.HARDLINK and got["z"].linkname == "a"


def test_drop_removes_stub_and_below(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_bytes(b"")
    (tmp_path / "etc" / "keep").write_bytes(b"k")
    (tmp_path / "run" / "secrets").mkdir(parents=True)
    (tmp_path / "run" / "secrets" / "x").write_bytes(b"")
    got = _by_name(tmp_path, drop={"etc/hosts", "/run/secrets/"})
    assert set(got) == {"etc", "etc/keep", "run"}


def test_upper_is_empty(tmp_path: Path) -> None:
    assert upper_is_empty(tmp_path)
    (tmp_path / "proc").mkdir()
    assert upper_is_empty(tmp_path, {"proc"})
    assert not upper_is_empty(tmp_path)
