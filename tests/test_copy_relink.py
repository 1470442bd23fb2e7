"""A COPY run again takes its unchanged files from the snapshot its last run made (hard links,
builder.layer.linkunpack): the new snapshot is exactly its layer (same tar when walked, same
tree as the blob extracted afresh), the old snapshot is untouched, and the images are those a
fresh store builds."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli

pytestmark = pytest.mark.root

DOCKERFILE = f"""FROM {BASE_TAG}
COPY . /app
RUN cat /app/a.txt /app/sub/c.txt && ls /app /app/sub
"""

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


def context(tmp_path: Path, general: bool = False) -> Path:
    """The context; ``general``: with a .dockerignore exception, which takes COPY off the
    single-source streaming path (step_copy._apply_single) onto the general one."""
    ctx = tmp_path / "ctx"
    (ctx / "sub" / "deep").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    if general:
        (ctx / ".dockerignore").write_text("ignored*\n!ignored-kept.txt\n")
        (ctx / "ignored.txt").write_text("never copied\n")
        (ctx / "ignored-kept.txt").write_text("copied\n")
    (ctx / "a.txt").write_text("a one\n")
    (ctx / "b.bin").write_bytes(bytes(range(256)) * 2000)
    (ctx / "sub" / "c.txt").write_text("c\n")
    (ctx / "sub" / "d.txt").write_text("d\n")
    (ctx / "sub" / "e.txt").write_text("e\n")
    (ctx / "sub" / "empty").write_bytes(b"")
    (ctx / "sub" / "deep" / ("long-name-" * 12 + ".txt")).write_text("needs a PAX path\n")
    (ctx / "sub" / "deep" / ("d" * 90)).mkdir()
    (ctx / "sub" / "deep" / ("d" * 90) / "f.txt").write_text("named with the ustar prefix field\n")
    (ctx / "sub" / "link").symlink_to("c.txt")
    os.link(ctx / "b.bin", ctx / "b-hard.bin")
    os.mkfifo(ctx / "sub" / "pipe")
    for p in [ctx, *ctx.rglob("*")]:
        if not p.is_symlink():
            os.utime(p, (1600000000, 1600000000))
    return ctx


def build(root: Path, ctx: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """(image digest, the RUN's output) of a build tagged t/r."""
    r = run_cli(["build", "--progress=rawjson", "-t", "t/r", *args, str(ctx)], root, env=env).ok()
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    digest = [e["digest"] for e in events if e["type"] == "ImageWritten"][0]
    output = "".join(e["line"] for e in events if e["type"] == "StepOutput")
    return str(digest), output


def copy_snapshot(root: Path) -> Path:
    """The fs dir of the COPY layer (the image's second) of t/r."""
    from builder.digest import Digest
    from builder.store.snapshots import Snapshots

    from ocireader import read_layout

    diff_id = read_layout(root, "docker.io/t/r:latest").config["rootfs"]["diff_ids"][1]
    fs = Snapshots(root / "snapshots").get(Digest.parse(diff_id))
    assert fs is not None, "the COPY layer has no snapshot"
    return fs


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (type and mode, owner, mtime, content or link target, xattrs, hardlink peers)."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra: object = f.read()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            else:
                extra = None
            xattrs = tuple(sorted(os.listxattr(p, follow_symlinks=False)))
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, extra, xattrs, st.st_ino)
    # inode numbers differ between trees: keep only which paths share one
    peers = {path: tuple(sorted(group)) for group in inodes.values() for path in group}
    return {k: v[:-1] + (peers.get(k, ()),) for k, v in out.items()}


def extracted_blob(root: Path, dest: Path) -> Path:
    """The COPY layer's blob extracted afresh into ``dest`` (overlay format)."""
    from builder.layer.extract import extract_layer

    from ocireader import read_layout

    layer = read_layout(root, "docker.io/t/r:latest").manifest["layers"][1]["digest"]
    dest.mkdir()
    with open(root / "blobs" / "sha256" / layer.split(":")[1], "rb") as f:
        extract_layer(f, dest, mode="overlay")
    return dest


def retarred(fs: Path) -> str:
    """The diff_id of the tar a snapshot gives when walked (what materialize checks)."""
    from builder.layer.tar import write_layer
    from builder.layer.whiteout import upper_entries

    class Discard:
        def write(self, data: bytes) -> int:
            return len(data)

    return str(write_layer(upper_entries(fs), Discard(), compression="uncompressed").diff_id)


@pytest.mark.parametrize("general", [False, True], ids=["single-source", "general"])
def test_changed_context_links_only_the_unchanged_files(tmp_path: Path, general: bool) -> None:
    ctx = context(tmp_path, general)
    root = busybox_store(tmp_path)
    build(root, ctx, env=EPOCH)
    first = copy_snapshot(root)
    before = tree(first)
    # content, mode-only and mtime-only changes, a file removed, one added, a file made a dir
    (ctx / "a.txt").write_text("a two, longer\n")
    os.utime(ctx / "a.txt", (1600000000, 1600000000))
    os.chmod(ctx / "sub" / "c.txt", 0o600)
    os.utime(ctx / "sub" / "d.txt", (1650000000, 1650000000))
    (ctx / "sub" / "e.txt").unlink()
    (ctx / "sub" / "e.txt").mkdir()
    (ctx / "sub" / "e.txt" / "inside").write_text("x\n")
    (ctx / "new.txt").write_text("new\n")
    digest, output = build(root, ctx, env=EPOCH)
    assert output.startswith("a two, longer\nc\n")
    second = copy_snapshot(root)
    assert second != first
    assert tree(first) == before  # the earlier snapshot is untouched

    ino = lambda fs, rel: os.lstat(fs / "app" / rel).st_ino  # noqa: E731
    for rel in ("b.bin", "b-hard.bin", "sub/empty", "sub/deep/" + "long-name-" * 12 + ".txt",
                "sub/deep/" + "d" * 90 + "/f.txt"):
        assert ino(second, rel) == ino(first, rel), rel
    if general:
        assert ino(second, "ignored-kept.txt") == ino(first, "ignored-kept.txt")
        assert not (second / "app" / "ignored.txt").exists()
    for rel in ("a.txt", "sub/c.txt", "sub/d.txt"):
        assert ino(second, rel) != ino(first, rel), rel
    assert stat.S_IMODE(os.lstat(first / "app" / "sub" / "c.txt").st_mode) == 0o644

    # the linked snapshot is its layer: walked it gives the layer's tar, extracted it is the blob
    diff_id = (second.parent / "diff_id").read_text().strip()
    assert retarred(second) == diff_id
    assert tree(second) == tree(extracted_blob(root, tmp_path / "fresh"))

    # and the image is the one a fresh store builds
    fresh = busybox_store(tmp_path / "other")
    assert build(fresh, ctx, env=EPOCH) == (digest, output)

    # `pybuild du` counts the shared inodes once
    from builder.engine.prune import usage
    from builder.store.layout import Store
    from builder.store.snapshots import Snapshots

    assert usage(Store(root))["snapshots"] == Snapshots(root).usage()

    # pruning the earlier snapshot (nothing refers to it any more) leaves the linked one whole
    run_cli(["prune", "--all"], root).ok()
    assert not first.exists() and second.is_dir()
    assert retarred(second) == diff_id
    assert tree(second) == tree(extracted_blob(root, tmp_path / "fresh-after-prune"))


@pytest.mark.parametrize("general", [False, True], ids=["single-source", "general"])
def test_no_cache_rerun_links_from_the_last_run(tmp_path: Path, general: bool) -> None:
    """Without SOURCE_DATE_EPOCH, the /app directory COPY makes carries the time of the run:
    a --no-cache run gives a new layer, whose snapshot is linked from the last one."""
    ctx = context(tmp_path, general)
    root = busybox_store(tmp_path)
    build(root, ctx)
    first = copy_snapshot(root)
    start = int(time.time())
    while int(time.time()) == start:  # the next run stamps another second
        time.sleep(0.05)
    _, output = build(root, ctx, "--no-cache")
    second = copy_snapshot(root)
    assert second != first and output.startswith("a one\nc\n")
    assert os.lstat(second / "app" / "b.bin").st_ino == os.lstat(first / "app" / "b.bin").st_ino
    assert retarred(second) == (second.parent / "diff_id").read_text().strip()
    assert run_cli(["store", "check"], root).ok()


def test_whiteout_named_file_keeps_the_layer_off_the_linker(tmp_path: Path) -> None:
    """A context file named like a whiteout cannot live in a snapshot: the linker stops, the
    snapshot is dropped and the RUN unpacks the blob, as without a previous run."""
    ctx = context(tmp_path)
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nCOPY . /app\nRUN cat /app/a.txt; ls -a /app/sub | wc -l\n")
    root = busybox_store(tmp_path)
    build(root, ctx, env=EPOCH)
    (ctx / "sub" / ".wh.odd").write_text("a context file\n")
    digest, output = build(root, ctx, env=EPOCH)
    fresh = busybox_store(tmp_path / "other")
    assert build(fresh, ctx, env=EPOCH) == (digest, output)


def test_prune_all_forgets_the_lineage(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    root = busybox_store(tmp_path)
    build(root, ctx, env=EPOCH)
    assert list((root / "cache" / "lineage").iterdir())
    run_cli(["prune", "--all"], root).ok()
    assert not list((root / "cache" / "lineage").iterdir())
    (ctx / "a.txt").write_text("after prune\n")
    assert build(root, ctx, env=EPOCH)[1].startswith("after prune\n")


def test_lazy_stage_copy_is_unpacked_and_linked_by_the_linker(tmp_path: Path) -> None:
    """A COPY in a stage no output needs keeps only its snapshot (lazy): the linker makes it
    (every file written the first time, the unchanged ones linked the next), and the layer
    exported later is the one an eager build writes."""
    ctx = context(tmp_path)
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG} AS build\nCOPY . /src\nRUN cat /src/a.txt > /out\n"
                                    "FROM scratch\nCOPY --from=build /out /out\n")
    root = busybox_store(tmp_path)

    def lazy_snapshot() -> Path:
        rec = [json.loads(p.read_bytes()) for p in (root / "cache" / "records").glob("*.json")]
        lazy = [r["layer"]["diff_id"] for r in rec if r["layer"] and "digest" not in r["layer"]
                and (root / "snapshots" / r["layer"]["diff_id"][7:19] / "fs" / "src").is_dir()]
        assert len(lazy) >= 1
        return root / "snapshots" / lazy[-1][7:19] / "fs"

    build(root, ctx, env=EPOCH)
    first = lazy_snapshot()
    assert retarred(first) == (first.parent / "diff_id").read_text().strip()
    (ctx / "a.txt").write_text("a, changed\n")
    build(root, ctx, env=EPOCH)
    second = [p for p in (root / "snapshots").glob("*/fs") if (p / "src").is_dir() and p != first]
    assert len(second) == 1
    assert os.lstat(second[0] / "src" / "b.bin").st_ino == os.lstat(first / "src" / "b.bin").st_ino
    assert retarred(second[0]) == (second[0].parent / "diff_id").read_text().strip()
    exported, _ = build(root, ctx, "--target", "build", env=EPOCH)
    eager = busybox_store(tmp_path / "eager")
    assert build(eager, ctx, "--target", "build", env={**EPOCH, "PYBUILD_LAZY_LAYERS": "off"})[0] == exported



def rewrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite ``path`` in place with ``data`` of its size, its mtime kept (an editor saving
    during a build): only its ctime tells."""
    st = os.stat(path)
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def edit_during_write(monkeypatch: pytest.MonkeyPatch, path: Path, data: bytes, when: str) -> list[str]:
    """Make the next layer written with a snapshot linked from the step's last one (or, with
    none, unpacked with a link index) rewrite ``path`` with ``data`` once its key is made:
    ``before-open``, before the layer writer opens any file; ``while-read``, once the writer
    has read the first part of ``path`` (all of a small file, up to the end of the writer's
    buffer for a large one). Returns a list that gets ``when`` when done."""
    from builder.engine.snapreuse import Linking
    from builder.layer.linkunpack import SnapshotLinker

    edited: list[str] = []

    def edit() -> None:
        if not edited:
            rewrite_in_place(path, data)
            edited.append(when)

    if when == "before-open":
        begin = Linking.begin

        def begin_then_edit(self: Linking, dest: Path, always: bool = False) -> SnapshotLinker | None:
            linker = begin(self, dest, always)
            edit()
            return linker

        monkeypatch.setattr(Linking, "begin", begin_then_edit)
    else:
        readv = os.readv

        def readv_then_edit(fd: int, buffers: Any) -> int:
            got = readv(fd, buffers)
            if not edited and os.readlink(f"/proc/self/fd/{fd}") == str(path):
                edit()
            return got

        monkeypatch.setattr(os, "readv", readv_then_edit)
    return edited


BIG = 3 << 19  # 1.5 MiB: more than the layer writer's buffer holds


@pytest.mark.parametrize("when,name", [("before-open", "a.txt"), ("while-read", "a.txt"), ("while-read", "big.bin")],
                         ids=["before-open", "while-read", "while-read-large"])
@pytest.mark.parametrize("general", [False, True], ids=["single-source", "general"])
def test_file_rewritten_after_the_cache_key_is_not_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          general: bool, when: str, name: str) -> None:
    """A context file rewritten after the cache key hashed it (same size, same mtime), before
    the layer writer opens it or while it reads it: the layer has the bytes read, and so has
    the COPY's snapshot (no link to the last run's file, whose content id the key still named:
    the file is written from the stream; a large file changed while read, whose first bytes
    were already passed on, drops the snapshot and the RUN unpacks the layer)."""
    ctx = context(tmp_path, general)
    (ctx / "big.bin").write_bytes(b"old!" * (BIG // 4))
    os.utime(ctx / "big.bin", (1600000000, 1600000000))
    root = busybox_store(tmp_path)
    build(root, ctx, env=EPOCH)
    first = copy_snapshot(root)
    (ctx / "new.txt").write_text("new\n")  # a cache miss; the file is as the last run saw it
    data = b"a ONE\n" if name == "a.txt" else b"new!" * (BIG // 4)
    edited = edit_during_write(monkeypatch, ctx / name, data, when)
    _, output = build(root, ctx, env=EPOCH)
    assert edited == [when]
    second = copy_snapshot(root)
    assert second != first
    assert (first / "app" / name).read_bytes() != data  # the last run's, untouched
    assert retarred(second) == (second.parent / "diff_id").read_text().strip()
    assert tree(second) == tree(extracted_blob(root, tmp_path / "fresh"))
    if name == "a.txt":  # only that file is written from the stream: the rest still linked
        # read before the edit (one read of a small file), the layer has the old bytes, and
        # the snapshot its own copy of them: the key no longer names what the file holds
        content = b"a ONE\n" if when == "before-open" else b"a one\n"
        assert output.startswith(content.decode()), output  # the RUN read the layer's bytes
        assert (second / "app" / "a.txt").read_bytes() == content
        assert os.lstat(second / "app" / "a.txt").st_ino != os.lstat(first / "app" / "a.txt").st_ino
        assert (second.parent / "links").is_file()
        assert os.lstat(second / "app" / "b.bin").st_ino == os.lstat(first / "app" / "b.bin").st_ino
    else:  # torn: the old bytes up to the end of the writer's buffer, the new ones after
        torn = (second / "app" / name).read_bytes()
        assert torn.startswith(b"old!") and torn.endswith(b"new!")
        assert not (second.parent / "links").exists()  # the RUN unpacked the layer
    # the old content back: the snapshot just made holds other bytes under that name, so its
    # index must not give the file the key of the content the cache key hashed (the old one)
    monkeypatch.undo()
    rewrite_in_place(ctx / name, (first / "app" / name).read_bytes())
    (ctx / "new.txt").write_text("NEW\n")
    build(root, ctx, env=EPOCH)
    third = copy_snapshot(root)
    assert (third / "app" / name).read_bytes() == (first / "app" / name).read_bytes()
    assert retarred(third) == (third.parent / "diff_id").read_text().strip()


def test_file_rewritten_in_a_first_run_gets_no_link_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first run of a COPY (no snapshot to link from: GNU tar unpacks it) with a file
    rewritten after its key was made: the snapshot's index has no key for that file, so the
    next run, the old content back, writes it rather than linking the other bytes."""
    import builder

    ctx = context(tmp_path)
    root = busybox_store(tmp_path)
    store = builder.open_store(root)
    edited = edit_during_write(monkeypatch, ctx / "a.txt", b"a ONE\n", "before-open")
    builder.build(ctx, tags=["t/r"], store=store)
    assert edited == ["before-open"]
    first = copy_snapshot(root)
    assert (first / "app" / "a.txt").read_bytes() == b"a ONE\n" and (first.parent / "links").is_file()
    monkeypatch.undo()
    rewrite_in_place(ctx / "a.txt", b"a one\n")
    (ctx / "new.txt").write_text("new\n")  # a cache miss (the first key named "a one" already)
    builder.build(ctx, tags=["t/r"], store=store)
    second = copy_snapshot(root)
    assert (second / "app" / "a.txt").read_bytes() == b"a one\n"
    assert os.lstat(second / "app" / "b.bin").st_ino == os.lstat(first / "app" / "b.bin").st_ino
    assert retarred(second) == (second.parent / "diff_id").read_text().strip()


@pytest.mark.parametrize("when,name", [("before-open", "a.txt"), ("while-read", "a.txt"), ("while-read", "big.bin")],
                         ids=["before-open", "while-read", "while-read-large"])
def test_file_rewritten_after_the_cache_key_in_a_lazy_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            when: str, name: str) -> None:
    """The same in a stage no output needs (its COPY layer is only a snapshot): rewritten
    before its bytes reach the unpacker, the file is written from the stream and the layer
    exported later is the one the snapshot gives; a large file rewritten while read (the
    layer's first bytes of it are gone), the build stops with an error naming the file and
    the store stays consistent."""
    import builder
    from builder.errors import PybuildError

    ctx = context(tmp_path)
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG} AS build\nCOPY . /src\nRUN cat /src/a.txt > /out\n"
                                    "FROM scratch\nCOPY --from=build /out /out\n")
    (ctx / "big.bin").write_bytes(b"old!" * (BIG // 4))
    root = busybox_store(tmp_path)
    store = builder.open_store(root)
    builder.build(ctx, tags=["t/r"], store=store)
    (ctx / "new.txt").write_text("new\n")
    data = b"a ONE\n" if name == "a.txt" else b"new!" * (BIG // 4)
    edited = edit_during_write(monkeypatch, ctx / name, data, when)
    if name == "big.bin":
        with pytest.raises(PybuildError, match="COPY failed: .*'src/big.bin': its source file changed while it was read"):
            builder.build(ctx, tags=["t/r"], store=store)
        assert edited == [when]
        assert run_cli(["store", "check"], root).ok()
        return
    builder.build(ctx, tags=["t/r"], store=store)
    assert edited == [when]
    content = b"a ONE\n" if when == "before-open" else b"a one\n"  # read before the edit
    assert any(p.read_bytes() == content for p in (root / "snapshots").glob("*/fs/out")), "the RUN saw other bytes"
    for fs in (root / "snapshots").glob("*/fs"):
        if (fs / "src").is_dir():
            assert retarred(fs) == (fs.parent / "diff_id").read_text().strip(), fs
    # exporting the stage (the file as the key saw it: a cache hit) makes the lazy layer's
    # blob from its snapshot, its diff_id checked
    monkeypatch.undo()
    rewrite_in_place(ctx / "a.txt", b"a one\n")
    builder.build(ctx, tags=["t/r"], target="build", store=store)
    second = copy_snapshot(root)
    assert (second / "src" / "a.txt").read_bytes() == content
    assert retarred(second) == (second.parent / "diff_id").read_text().strip()
    assert run_cli(["store", "check"], root).ok()
