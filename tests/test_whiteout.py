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


def _tar_bytes(write, *args, **kw) -> bytes:  # type: ignore[no-untyped-def]
    import io

    buf = io.BytesIO()
    write(*args, buf, compression="uncompressed", **kw)
    return buf.getvalue()


@pytest.mark.root
@pytest.mark.parametrize("clamp", [None, 1_500_000_000])
def test_upper_records_frame_the_tar_upper_entries_give(tmp_path: Path, clamp: int | None) -> None:
    """The streamed walk (upper_records, in layer order) gives byte for byte the tar of
    upper_entries: whiteouts (device and xattr), an opaque dir, hard links across dirs, xattrs,
    symlinks, devices, a FIFO, long and non-ASCII names, names sorting around ``dir/``."""
    from builder.layer.tar import write_layer, write_records
    from builder.layer.whiteout import upper_records

    up = tmp_path / "u"
    (up / "a" / "deep").mkdir(parents=True)
    for name in ("a-b", "a.b", "a0", "a/x", "a/deep/y", "é-ü", "n" * 120, "a/" + "m" * 99):
        (up / name).write_text(name)
    os.mknod(up / "gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    (up / "a" / "xw").write_bytes(b"")
    os.setxattr(up / "a" / "xw", "trusted.overlay.whiteout", b"")
    (up / "o").mkdir()
    os.setxattr(up / "o", "trusted.overlay.opaque", b"y")
    (up / "o" / "kept").write_text("k")
    os.link(up / "a" / "x", up / "z-link")
    os.link(up / "a" / "x", up / "a" / "deep" / "again")
    os.setxattr(up / "a.b", "user.note", b"kept")
    os.symlink("a/x", up / "ln")
    os.symlink("t" * 150, up / "long-target")
    os.mknod(up / "tty", 0o620 | stat.S_IFCHR, os.makedev(5, 0))
    os.mkfifo(up / "pipe")
    os.utime(up / "a.b", (1_000, 1_700_000_000))
    streamed = _tar_bytes(write_records, upper_records(up, mtime_clamp=clamp))
    assert streamed == _tar_bytes(write_layer, list(upper_entries(up)), mtime_clamp=clamp)
    assert b".wh.gone" in streamed and b".wh.xw" in streamed and b".wh..wh..opq" in streamed


@pytest.mark.root
def test_upper_records_refuse_two_members_with_one_name(tmp_path: Path) -> None:
    from builder.layer.whiteout import NameClash, upper_records

    os.mknod(tmp_path / "x", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    (tmp_path / ".wh.x").write_text("a file named like the whiteout of x")
    with pytest.raises(NameClash):
        list(upper_records(tmp_path))
