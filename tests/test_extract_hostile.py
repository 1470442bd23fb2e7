"""extract_layer against crafted hostile tars: nothing may land outside the destination."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.errors import PybuildError
from builder.layer.extract import (ExtractError, SizeLimitError, UnsafeArchiveError, extract_layer,
                                   extract_layers)


def make_tar(members: list[tuple], *, compress: str | None = None) -> io.BytesIO:
    """members: (kind, name, arg) with kind file/dir/sym/link/chr/fifo."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, arg in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if kind == "file":
                data = arg if isinstance(arg, bytes) else arg.encode()
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, arg if isinstance(arg, int) else 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, arg
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, arg[0], arg[1]
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti)
    data = raw.getvalue()
    if compress == "gzip":
        data = gzip.compress(data)
    return io.BytesIO(data)


@pytest.fixture()
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(root, sentinel): extraction goes to root; sentinel sits beside it and must stay empty."""
    root = tmp_path / "root"
    sentinel = tmp_path / "sentinel"
    root.mkdir()
    sentinel.mkdir()
    return root, sentinel


def outside_untouched(tmp_path: Path, sentinel: Path) -> None:
    assert list(sentinel.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "sentinel"]


def test_dotdot_is_refused(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    with pytest.raises(UnsafeArchiveError, match=r"\.\./sentinel/x"):
        extract_layer(make_tar([("file", "../sentinel/x", "pwned")]), root)
    with pytest.raises(UnsafeArchiveError, match="a/../../sentinel/y"):
        extract_layer(make_tar([("file", "a/../../sentinel/y", "pwned")]), root)
    outside_untouched(tmp_path, sentinel)


def test_absolute_names_stay_inside(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    target = str(sentinel / "abs")
    extract_layer(make_tar([("file", target, "inside"), ("file", "/etc/passwd", "root:x:0:0")]), root)
    assert (root / target.lstrip("/")).read_text() == "inside"
    assert (root / "etc" / "passwd").read_text() == "root:x:0:0"
    outside_untouched(tmp_path, sentinel)


def test_symlink_to_root_then_write_through_it(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    # a -> / ; then a/<abs path of sentinel>/file: resolved inside root, never on the host
    rel = str(sentinel).lstrip("/")
    extract_layer(make_tar([("sym", "a", "/"), ("file", f"a/{rel}/file", "x"),
                            ("sym", "b", str(sentinel)), ("file", "b/file2", "y")]), root)
    assert (root / rel / "file").read_text() == "x"
    assert (root / rel / "file2").read_text() == "y"
    assert os.readlink(root / "a") == "/"
    outside_untouched(tmp_path, sentinel)


def test_relative_symlink_escape_is_clamped(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    extract_layer(make_tar([("sym", "a", "../.."), ("file", "a/sentinel/x", "x"),
                            ("sym", "c", "../sentinel"), ("file", "c/y", "y")]), root)
    # ../.. from the root is the root itself
    assert (root / "sentinel" / "x").read_text() == "x"
    assert (root / "sentinel" / "y").read_text() == "y"
    outside_untouched(tmp_path, sentinel)


def test_final_component_symlink_is_replaced_not_followed(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    (sentinel / "victim").write_text("original")
    os.symlink(sentinel / "victim", root / "f")
    extract_layer(make_tar([("file", "f", "new")]), root)
    assert not (root / "f").is_symlink() and (root / "f").read_text() == "new"
    assert (sentinel / "victim").read_text() == "original"


def test_directory_replaced_by_symlink_keeps_target_mode(box: tuple[Path, Path]) -> None:
    root, _ = box
    extract_layer(make_tar([("dir", "t", 0o755), ("dir", "d", 0o700), ("sym", "d", "t")]), root)
    assert os.readlink(root / "d") == "t"
    assert stat.S_IMODE(os.stat(root / "t").st_mode) == 0o755


def test_symlink_loop_is_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    with pytest.raises(UnsafeArchiveError, match="too many symlinks"):
        extract_layer(make_tar([("sym", "l1", "l2"), ("sym", "l2", "l1"), ("file", "l1/x", "x")]), root)


def test_hardlink_outside_or_missing_is_refused(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    (sentinel / "secret").write_text("s")
    with pytest.raises(UnsafeArchiveError, match="'\\.\\.' in a path"):
        extract_layer(make_tar([("link", "h", "../../etc/shadow")]), root)
    with pytest.raises(UnsafeArchiveError, match="does not exist"):
        extract_layer(make_tar([("link", "h", str(sentinel / "secret"))]), root)
    with pytest.raises(UnsafeArchiveError, match="does not exist"):
        extract_layer(make_tar([("link", "h", "nope/secret")]), root)
    # through a symlink pointing out: resolved inside root, where it does not exist
    with pytest.raises(UnsafeArchiveError, match="does not exist"):
        extract_layer(make_tar([("sym", "s", str(sentinel)), ("link", "h2", "s/secret")]), root)
    assert os.stat(sentinel / "secret").st_nlink == 1
    assert [p.name for p in sentinel.iterdir()] == ["secret"]


def test_valid_hardlink(box: tuple[Path, Path]) -> None:
    root, _ = box
    stats = extract_layer(make_tar([("file", "a", "data"), ("link", "b", "a")]), root)
    assert os.stat(root / "a").st_ino == os.stat(root / "b").st_ino
    assert stats.hardlinks == 1 and stats.files == 1


@pytest.mark.parametrize("name", [".wh...", "d/.wh...", ".wh..", ".wh."])
def test_hostile_whiteout_names(tmp_path: Path, box: tuple[Path, Path], name: str) -> None:
    root, sentinel = box
    (root / "keep").write_text("k")
    for mode in ("flatten", "overlay"):
        with pytest.raises(UnsafeArchiveError, match="invalid whiteout"):
            extract_layer(make_tar([("file", name, "")]), root, mode=mode)  # type: ignore[arg-type]
    assert (root / "keep").read_text() == "k"
    outside_untouched(tmp_path, sentinel)


@pytest.mark.parametrize("mode", ["flatten", "overlay"])
def test_whiteout_names_used_as_directories_are_refused(box: tuple[Path, Path], mode: str) -> None:
    root, _ = box
    for members in ([("file", "d/.wh..wh..opq/x", "x")],
                    [("file", "d/.wh.a/b", "x")]):
        with pytest.raises(UnsafeArchiveError, match="whiteout name cannot be a directory"):
            extract_layer(make_tar(members), root, mode=mode)  # type: ignore[arg-type]
    assert not list(root.rglob("x")) and not list(root.rglob("b"))


def test_opaque_at_root_is_refused(box: tuple[Path, Path]) -> None:
    root, _ = box
    (root / "keep").write_text("k")
    for mode in ("flatten", "overlay"):
        with pytest.raises(UnsafeArchiveError, match="root directory cannot be made opaque"):
            extract_layer(make_tar([("file", ".wh..wh..opq", "")]), root, mode=mode)  # type: ignore[arg-type]
    assert (root / "keep").exists()


def test_whiteout_through_escaping_symlink_stays_inside(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    (sentinel / "precious").write_text("p")
    extract_layer(make_tar([("sym", "s", str(sentinel))]), root)
    extract_layer(make_tar([("file", "s/.wh.precious", ""), ("file", "s/.wh..wh..opq", "")]), root)
    assert (sentinel / "precious").read_text() == "p"


def test_size_limit(tmp_path: Path, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    with pytest.raises(SizeLimitError, match="'b'.*100 bytes"):
        extract_layer(make_tar([("file", "a", b"x" * 60), ("file", "b", b"y" * 60)]), root, size_limit=100)
    assert not (root / "b").exists()
    outside_untouched(tmp_path, sentinel)


def test_corrupt_archives_raise_pybuild_errors(box: tuple[Path, Path]) -> None:
    root, _ = box
    good = make_tar([("file", "a", b"x" * 5000)], compress="gzip").getvalue()
    for bad in (good[: len(good) // 2], b"\x1f\x8b" + b"garbage" * 100, b"not a tar at all" * 40):
        with pytest.raises(PybuildError):
            extract_layer(io.BytesIO(bad), root)


@pytest.mark.root
def test_overlay_mode_whiteouts_and_opaque(box: tuple[Path, Path]) -> None:
    root, _ = box
    stats = extract_layer(make_tar([("dir", "d", 0o755), ("file", "d/.wh..wh..opq", ""), ("file", "d/new", "n"),
                                    ("file", ".wh.gone", ""), ("file", "e/.wh.sub", "")], compress="gzip"),
                          root, mode="overlay")
    for p in (root / "gone", root / "e" / "sub"):
        st = os.lstat(p)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(root / "d", "trusted.overlay.opaque") == b"y"
    assert not (root / "d" / ".wh..wh..opq").exists()
    assert (root / "d" / "new").read_text() == "n"
    assert stats.whiteouts == 2 and stats.opaques == 1


def test_overlay_xattrs_from_a_layer_are_dropped(box: tuple[Path, Path]) -> None:
    root, _ = box
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("d")
        ti.type = tarfile.DIRTYPE
        ti.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.overlay.redirect": "/x"}
        tf.addfile(ti)
    raw.seek(0)
    extract_layer(raw, root, mode="overlay")
    for name in ("trusted.overlay.opaque", "user.overlay.redirect"):
        with pytest.raises(OSError):
            os.getxattr(root / "d", name)


def test_flatten_applies_whiteouts_and_opaque(box: tuple[Path, Path]) -> None:
    root, _ = box
    l1 = make_tar([("dir", "d", 0o755), ("file", "d/old", "o"), ("dir", "d/sub", 0o755), ("file", "d/sub/x", "x"),
                   ("file", "gone", "g"), ("dir", "tree", 0o755), ("file", "tree/f", "f"), ("file", "keep", "k")])
    l2 = make_tar([("dir", "d", 0o700), ("file", "d/.wh..wh..opq", ""), ("file", "d/new", "n"),
                   ("dir", "d/sub", 0o755), ("file", "d/sub/y", "y"),
                   ("file", ".wh.gone", ""), ("file", ".wh.tree", ""), ("file", ".wh.never-existed", "")],
                  compress="gzip")
    stats = extract_layers([(l1, None), (l2, "gzip")], root)
    assert sorted(os.listdir(root)) == ["d", "keep"]
    assert sorted(os.listdir(root / "d")) == ["new", "sub"]
    assert os.listdir(root / "d" / "sub") == ["y"]
    assert stat.S_IMODE(os.stat(root / "d").st_mode) == 0o700
    assert os.stat(root / "d").st_mtime == 1_600_000_000
    assert stats.whiteouts == 3 and stats.opaques == 1


def test_flatten_replaces_dir_with_file_and_back(box: tuple[Path, Path]) -> None:
    root, _ = box
    extract_layers([(make_tar([("dir", "x", 0o755), ("file", "x/in", "i"), ("file", "y", "file"),
                                ("file", "p/q/x/in", "i"), ("sym", "p/q/l", "x")]), None),
                    (make_tar([("file", "x", "now a file"), ("dir", "y", 0o755), ("file", "y/z", "z"),
                               ("file", "p/q/x", "file too"), ("dir", "p/q/l", 0o755), ("file", "p/q/l/m", "m")]),
                     None)], root)
    assert (root / "x").read_text() == "now a file"
    assert (root / "y" / "z").read_text() == "z"
    assert (root / "p" / "q" / "x").read_text() == "file too"
    assert not (root / "p" / "q" / "l").is_symlink() and (root / "p" / "q" / "l" / "m").read_text() == "m"


def test_devices_skipped_when_not_root_and_fifo_made(box: tuple[Path, Path]) -> None:
    root, _ = box
    stats = extract_layer(make_tar([("chr", "null", (1, 3)), ("fifo", "pipe", None)]), root)
    assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode)
    if os.geteuid() == 0:
        assert stat.S_ISCHR(os.lstat(root / "null").st_mode) and stats.devices == 1
    else:
        assert not (root / "null").exists() and stats.devices_skipped == 1


def test_diff_id_checked(box: tuple[Path, Path]) -> None:
    import hashlib

    from builder.digest import Digest

    root, _ = box
    data = make_tar([("file", "a", "x")]).getvalue()
    stats = extract_layer(io.BytesIO(gzip.compress(data)), root, expect_diff_id=Digest.of_bytes(data))
    assert stats.diff_id == Digest("sha256", hashlib.sha256(data).hexdigest())
    with pytest.raises(ExtractError, match="diff_id mismatch"):
        extract_layer(io.BytesIO(data), root, expect_diff_id=Digest.of_bytes(b"other"))


@pytest.mark.root
def test_roundtrip_with_owners_modes_xattrs_devices(tmp_path: Path) -> None:
    from builder.layer.entries import Entry, EntryType
    from builder.layer.tar import write_layer
    from builder.layer.walk import dir_entry, file_entry, symlink_entry

    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    entries = [
        dir_entry("bin", mode=0o555, mtime=111),
        Entry(name="bin/ping", type=EntryType.FILE, mode=0o4755, uid=1000, gid=1001, size=4, data=b"ping",
              mtime=222, xattrs=(("security.capability", cap),)),
        Entry(name="bin/alias", type=EntryType.HARDLINK, linkname="bin/ping"),
        symlink_entry("bin/sh", "busybox", uid=5, gid=6, mtime=333),
        Entry(name="dev/null", type=EntryType.CHAR, mode=0o666, devmajor=1, devminor=3),
        file_entry("home/u/.profile", b"export A=1\n", uid=1000, gid=1000, mode=0o600),
    ]
    out = io.BytesIO()
    info = write_layer(entries, out, compression="zstd")
    out.seek(0)
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = extract_layer(out, dest, mode="flatten")
    assert stats.diff_id == info.diff_id
    ping = os.lstat(dest / "bin" / "ping")
    assert (ping.st_uid, ping.st_gid, stat.S_IMODE(ping.st_mode), int(ping.st_mtime)) == (1000, 1001, 0o4755, 222)
    assert os.getxattr(dest / "bin" / "ping", "security.capability") == cap
    assert os.lstat(dest / "bin" / "alias").st_ino == ping.st_ino
    sh = os.lstat(dest / "bin" / "sh")
    assert (sh.st_uid, sh.st_gid, int(sh.st_mtime)) == (5, 6, 333)
    bindir = os.stat(dest / "bin")
    assert stat.S_IMODE(bindir.st_mode) == 0o555 and int(bindir.st_mtime) == 111
    null = os.lstat(dest / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert (dest / "home" / "u" / ".profile").read_text() == "export A=1\n"


@pytest.mark.parametrize("fmt,flag", [("gnu", "-z"), ("posix", "-J"), ("gnu", "-j")])
def test_gnu_tar_archives_extract(tmp_path: Path, fmt: str, flag: str) -> None:
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("GNU tar missing")
    src = tmp_path / "src"
    deep = src / ("a" * 90) / ("b" * 90)
    deep.mkdir(parents=True)
    (deep / ("c" * 120)).write_text("long")
    os.link(deep / ("c" * 120), src / "hard")
    os.symlink("a" * 90, src / "sym")
    blob = tmp_path / "layer"
    subprocess.run(["tar", f"--format={fmt}", flag, "-cf", str(blob), "-C", str(src), "."], check=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    with blob.open("rb") as f:
        stats = extract_layer(f, dest)
    assert (dest / ("a" * 90) / ("b" * 90) / ("c" * 120)).read_text() == "long"
    assert os.stat(dest / "hard").st_ino == os.stat(dest / ("a" * 90) / ("b" * 90) / ("c" * 120)).st_ino
    assert os.readlink(dest / "sym") == "a" * 90
    assert stats.files == 1 and stats.hardlinks == 1
