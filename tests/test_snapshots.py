"""Snapshots (unpacked layers in overlay format) and RootView (merged view without mounting)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.errors import StoreError
from builder.layer.entries import Entry, EntryType
from builder.layer.extract import UnsafeArchiveError
from builder.layer.tar import write_layer
from builder.layer.walk import dir_entry, file_entry, symlink_entry
from builder.store.rootview import RootView, RootViewError
from builder.store.snapshots import Snapshots


def layer(entries: list[Entry], compression: str = "gzip") -> tuple[bytes, Digest]:
    out = io.BytesIO()
    info = write_layer(entries, out, compression=compression)
    return out.getvalue(), info.diff_id


def wh(name: str) -> Entry:
    return file_entry(name, b"")


class Opener:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.calls = 0

    def __call__(self) -> io.BytesIO:
        self.calls += 1
        return io.BytesIO(self.blob)


# --------------------------------------------------------------------------------- snapshots

def test_ensure_is_idempotent_and_lists(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    blob, diff_id = layer([dir_entry("etc"), file_entry("etc/hostname", b"box\n")])
    opener = Opener(blob)
    fs = snaps.ensure(diff_id, opener, "gzip")
    assert (fs / "etc" / "hostname").read_bytes() == b"box\n"
    assert snaps.ensure(diff_id, opener, None) == fs
    assert opener.calls == 1
    assert fs == tmp_path / "snapshots" / diff_id.hex[:12] / "fs"
    assert snaps.list() == [diff_id]
    assert snaps.get(diff_id) == fs
    assert snaps.usage() > 0
    assert not [p for p in snaps.dir.iterdir() if p.name.startswith("tmp-")]


def test_store_root_or_snapshot_dir_name_the_same_store(tmp_path: Path) -> None:
    assert Snapshots(tmp_path).dir == Snapshots(tmp_path / "snapshots").dir == tmp_path / "snapshots"


def test_ensure_concurrently(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    blob, diff_id = layer([file_entry(f"f{i}", os.urandom(2000)) for i in range(200)])
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(Snapshots(tmp_path).ensure(diff_id, Opener(blob), "gzip"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(os.listdir(results[0])) == 200
    assert [p.name for p in snaps.dir.iterdir()] == [diff_id.hex[:12]]


def test_publish_after_a_concurrent_writer_won(tmp_path: Path) -> None:
    """The race of test_ensure_concurrently made deterministic: a writer whose "is it there?"
    came before another writer's rename must find the winner's snapshot at the rename, not
    publish a second copy under the longer name; a prefix clash with another layer does move on."""
    snaps = Snapshots(tmp_path)
    blob, diff_id = layer([file_entry("a", b"a")])
    won = snaps.ensure(diff_id, Opener(blob), "gzip")
    late = snaps._tmp()  # what the losing writer unpacked meanwhile
    (late / "fs").mkdir()
    find = snaps._find
    snaps._find = lambda d: None  # type: ignore[method-assign]  # its look came before the win
    try:
        published = snaps._publish(late, diff_id)
    finally:
        snaps._find = find  # type: ignore[method-assign]
    assert published == won
    assert not late.exists() and [p.name for p in snaps.dir.iterdir()] == [diff_id.hex[:12]]

    other = Digest.parse("sha256:" + diff_id.hex[:12] + "0" * 52)  # same 12-character prefix
    tmp = snaps._tmp()
    (tmp / "fs").mkdir()
    assert snaps._publish(tmp, other) == snaps.dir / other.hex[:24] / "fs"
    assert snaps.get(diff_id) == won


def test_ensure_checks_diff_id_and_cleans_up(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    blob, _ = layer([file_entry("a", b"a")])
    wrong = Digest.of_bytes(b"something else")
    with pytest.raises(StoreError, match="does not match its diff_id"):
        snaps.ensure(wrong, Opener(blob), "gzip")
    assert snaps.list() == [] and list(snaps.dir.iterdir()) == []
    hostile = io.BytesIO()
    import tarfile
    with tarfile.open(fileobj=hostile, mode="w") as tf:
        ti = tarfile.TarInfo("../escape")
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(UnsafeArchiveError):
        snaps.ensure(Digest.of_bytes(hostile.getvalue()), Opener(hostile.getvalue()), None)
    assert list(snaps.dir.iterdir()) == []


def test_adopt_lowerdirs_remove(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    b1, d1 = layer([file_entry("one", b"1")])
    fs1 = snaps.ensure(d1, Opener(b1), "gzip")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "two").write_text("2")
    d2 = Digest.of_bytes(b"layer two")
    fs2 = snaps.adopt(d2, upper)
    assert not upper.exists() and (fs2 / "two").read_text() == "2"
    again = tmp_path / "again"
    again.mkdir()
    assert snaps.adopt(d2, again) == fs2 and not again.exists()
    assert snaps.lowerdirs([d1, d2]) == [fs2, fs1]
    assert snaps.lowerdirs([d1, d2], relative=True) == [Path(d2.hex[:12]) / "fs", Path(d1.hex[:12]) / "fs"]
    assert (snaps.dir / snaps.lowerdirs([d1], relative=True)[0] / "one").exists()
    assert sorted(snaps.list()) == sorted([d1, d2])
    assert snaps.remove(d1) is True and snaps.remove(d1) is False
    assert snaps.list() == [d2]
    with pytest.raises(StoreError, match="no snapshot"):
        snaps.lowerdirs([d1])
    with pytest.raises(StoreError, match="not a directory"):
        snaps.adopt(d1, tmp_path / "missing")


def test_adopt_existing_deferred_delete(tmp_path: Path) -> None:
    """With deferred deletes, adopting a dir whose snapshot exists moves it out of the way at
    once (a ``tmp-PID-`` name the stale sweep knows) and deletes it in the background; close()
    waits until it is gone."""
    snaps = Snapshots(tmp_path, deferred_deletes=True)
    d = Digest.of_bytes(b"layer")
    first = tmp_path / "first"
    (first / "sub").mkdir(parents=True)
    (first / "sub" / "f").write_text("1")
    fs = snaps.adopt(d, first)
    again = tmp_path / "again"
    (again / "sub").mkdir(parents=True)
    for i in range(200):
        (again / "sub" / f"f{i}").write_text("1")
    os.chmod(again / "sub", 0o500)  # read-only dirs are deleted too
    assert snaps.adopt(d, again) == fs and not again.exists()
    snaps.close()
    assert sorted(p.name for p in snaps.dir.iterdir()) == [d.hex[:12]]
    assert snaps.list() == [d] and (fs / "sub" / "f").read_text() == "1"
    snaps.close()  # again: nothing to wait for


def test_short_name_collision_uses_longer_key(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    a = Digest("sha256", "ab" * 6 + "0" * 52)
    b = Digest("sha256", "ab" * 6 + "1" * 52)
    for d in (a, b):
        p = tmp_path / f"up-{d.hex[-1]}"
        p.mkdir()
        snaps.adopt(d, p)
    assert snaps.get(a) == snaps.dir / a.hex[:12] / "fs"
    assert snaps.get(b) == snaps.dir / b.hex[:24] / "fs"
    assert sorted(snaps.list()) == [a, b]


@pytest.mark.root
def test_snapshot_is_in_overlay_format(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    blob, d = layer([dir_entry("d"), wh("d/.wh..wh..opq"), wh(".wh.gone")], compression="zstd")
    fs = snaps.ensure(d, Opener(blob), "zstd")
    st = os.lstat(fs / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(fs / "d", "trusted.overlay.opaque") == b"y"


# ---------------------------------------------------------------------------------- rootview

@pytest.fixture()
def three_layers(tmp_path: Path) -> RootView:
    snaps, dirs = _three_layer_snapshots(tmp_path)
    return RootView(snaps.lowerdirs(dirs))


def _three_layer_snapshots(tmp_path: Path) -> tuple[Snapshots, list[Digest]]:
    """bottom: /etc/{passwd,group}, /a/{x,y}, /b/{p,q}, /c/f, /gone, /link -> etc
    middle: whiteout /a/x, /b opaque with /b/r, /c replaced by a file, /new/z
    top:    whiteout /gone, /etc/passwd replaced, /a/w, whiteout /new (a dir)"""
    snaps = Snapshots(tmp_path)
    bottom = [dir_entry("etc"), file_entry("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
              file_entry("etc/group", b"root:x:0:\n"), dir_entry("a"), file_entry("a/x", b"x"),
              file_entry("a/y", b"y"), dir_entry("b"), file_entry("b/p", b"p"), file_entry("b/q", b"q"),
              dir_entry("c"), file_entry("c/f", b"f"), file_entry("gone", b"g"), symlink_entry("link", "etc")]
    middle = [dir_entry("a"), wh("a/.wh.x"), dir_entry("b"), wh("b/.wh..wh..opq"), file_entry("b/r", b"r"),
              file_entry("c", b"now a file"), dir_entry("new"), file_entry("new/z", b"z")]
    top = [wh(".wh.gone"), dir_entry("etc"), file_entry("etc/passwd", b"app:x:1000:1000::/app:/bin/sh\n"),
           dir_entry("a"), file_entry("a/w", b"w"), wh(".wh.new")]
    dirs = []
    for ents in (bottom, middle, top):
        blob, d = layer(ents)
        snaps.ensure(d, Opener(blob), "gzip")
        dirs.append(d)
    return snaps, dirs


@pytest.mark.root
def test_rootview_semantics(three_layers: RootView) -> None:
    v = three_layers
    assert v.listdir("/") == ["a", "b", "c", "etc", "link"]
    assert v.listdir("/a") == ["w", "y"]
    assert v.listdir("/b") == ["r"]
    assert v.listdir("/etc") == ["group", "passwd"]
    with v.open("/etc/passwd") as f:
        assert f.read().startswith(b"app:")
    with v.open("/etc/group") as f:
        assert f.read() == b"root:x:0:\n"
    assert v.lstat("/a/x") is None and v.lstat("/gone") is None
    assert v.lstat("/b/p") is None and v.lstat("/b/r") is not None
    st = v.lstat("/c")
    assert st is not None and stat.S_ISREG(st.st_mode)
    assert v.lstat("/c/f") is None
    assert v.lstat("/new") is None and v.lstat("/new/z") is None
    assert v.readlink("/link") == "etc"
    assert v.lstat("/link/passwd") is None  # the view does not follow symlinks
    lst = v.lstat("/link")
    assert lst is not None and stat.S_ISLNK(lst.st_mode)
    hp = v.host_path("/etc/group")
    assert hp is not None and hp.read_bytes() == b"root:x:0:\n"
    assert v.host_path("/a/x") is None
    assert v.lstat("/") is not None and v.lstat("/a/../etc/passwd") is not None
    with pytest.raises(RootViewError, match="/c: not a directory"):
        v.listdir("/c")
    with pytest.raises(RootViewError, match="no such"):
        v.listdir("/new")
    with pytest.raises(RootViewError, match="not a regular file"):
        v.open("/a")
    with pytest.raises(RootViewError, match="not a symbolic link"):
        v.readlink("/etc/passwd")


def test_rootview_without_whiteouts(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "d").mkdir(parents=True)
    (lower / "d" / "a").write_text("lower a")
    (lower / "d" / "b").write_text("lower b")
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "a").write_text("upper a")
    v = RootView([upper, lower])
    assert v.listdir("/d") == ["a", "b"]
    with v.open("/d/a") as f:
        assert f.read() == b"upper a"
    assert v.host_path("/d/b") == lower / "d" / "b"


@pytest.mark.root
@pytest.mark.overlay
def test_rootview_matches_a_real_overlay_mount(tmp_path: Path) -> None:
    """Mount the snapshots with the cwd trick (relative lowerdirs) and compare with RootView."""
    import subprocess

    snaps, dirs = _three_layer_snapshots(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lower = ":".join(str(p) for p in snaps.lowerdirs(dirs, relative=True))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(mnt)],
                   cwd=snaps.dir, check=True)
    try:
        view = RootView(snaps.lowerdirs(dirs))
        checked = 0
        stack = ["/"]
        while stack:
            d = stack.pop()
            real = sorted(os.listdir(str(mnt) + d))
            assert view.listdir(d) == real, d
            for name in real:
                p = d.rstrip("/") + "/" + name
                st_real = os.lstat(str(mnt) + p)
                st_view = view.lstat(p)
                assert st_view is not None and stat.S_IFMT(st_view.st_mode) == stat.S_IFMT(st_real.st_mode), p
                if stat.S_ISDIR(st_real.st_mode):
                    stack.append(p)
                elif stat.S_ISREG(st_real.st_mode):
                    with view.open(p) as f:
                        assert f.read() == (mnt / p.lstrip("/")).read_bytes(), p
                checked += 1
        assert checked >= 10
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.root
def test_implied_parents_take_the_lower_layers_attributes(tmp_path: Path) -> None:
    """A layer naming ``a/b/f`` but not ``a`` or ``a/b`` (as some tools write them) must not
    hide the lower layer's ``a`` once stacked: containerd's apply copies the attributes of
    missing parents from the lower snapshots (pkg/archive mkparent); Snapshots.stack puts a
    fixup dir with those attributes right above the layer. Removing the layer removes it."""
    snaps = Snapshots(tmp_path)
    low_blob, low_id = layer([Entry("a", EntryType.DIR, mode=0o700, uid=1000, gid=1001, mtime=5),
                              Entry("a/k", EntryType.DIR, mode=0o750, uid=7, gid=7, mtime=6)])
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("a/k/b/f")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    high_id = Digest.parse("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    low_fs = snaps.ensure(low_id, Opener(low_blob), "gzip")
    high_fs = snaps.ensure(high_id, Opener(raw.getvalue()), None)
    assert snaps.implied(high_fs) == ("a", "a/k", "a/k/b")
    assert snaps.implied(low_fs) == ()
    dirs = snaps.stack([low_id, high_id], [low_fs, high_fs])
    assert len(dirs) == 3 and dirs[1:] == [high_fs, low_fs]
    view = RootView(dirs)
    got = {p: view.lstat(p) for p in ("/a", "/a/k", "/a/k/b")}
    assert {p: (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) for p, st in got.items() if st} == {
        "/a": (1000, 1001, 0o700), "/a/k": (7, 7, 0o750), "/a/k/b": (0, 0, 0o755)}
    assert got["/a"] is not None and int(got["/a"].st_mtime) == 5
    assert snaps.stack([low_id, high_id], [low_fs, high_fs]) == dirs  # made once, reused
    assert snaps.stack([low_id], [low_fs]) == [low_fs]
    snaps.remove(high_id)
    assert not dirs[0].exists() and snaps.list() == [low_id]
