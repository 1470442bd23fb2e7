"""A COPY --from layer's snapshot put down from its sources (builder.layer.linksnap): files of
immutable snapshots hard-linked when the member carries their metadata, copied otherwise. The
snapshot must read back as the very tar the layer is (what a lazy layer's blob is made from)
and hold what unpacking that tar gives."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from builder.engine.copy import copy_entries
from builder.layer.extract import extract_layer
from builder.layer.linksnap import link_snapshot
from builder.layer.tar import layer_order, write_layer
from builder.layer.whiteout import upper_entries
from builder.store.rootview import RootView

pytestmark = pytest.mark.root

OLD = 1_600_000_000  # mtimes of the source files (below the clamp used below)


def source_snapshot(tmp_path: Path) -> Path:
    """A snapshot-like tree: owners, modes, an xattr, a hard link pair, a symlink, a big file."""
    fs = tmp_path / "snapshots" / "0123456789ab" / "fs"
    sub = fs / "out" / "sub"
    sub.mkdir(parents=True)
    (fs / "out" / "a.txt").write_text("a\n")
    os.setxattr(fs / "out" / "a.txt", "user.note", b"kept")
    os.link(fs / "out" / "a.txt", fs / "out" / "a-hard.txt")
    (fs / "out" / "big.bin").write_bytes(bytes(range(256)) * 8192)
    (sub / "tool").write_text("#!/bin/sh\n")
    os.chmod(sub / "tool", 0o4750)
    os.chown(sub / "tool", 12, 34)
    (fs / "out" / "link").symlink_to("a.txt")
    os.chmod(sub, 0o750)
    for p in sorted(fs.rglob("*"), reverse=True):
        os.utime(p, (OLD, OLD), follow_symlinks=False)
    return fs


class Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def diff_id(entries: list, clamp: int | None) -> str:
    return str(write_layer(entries, Discard(), compression="uncompressed", mtime_clamp=clamp).diff_id)


def comparable(snapshot: Path, clamp: int | None) -> list[tuple]:
    return sorted((e.name, e.type, e.mode, e.uid, e.gid, min(e.mtime, clamp or e.mtime), e.size, e.linkname, e.xattrs)
                  for e in upper_entries(snapshot))


@pytest.mark.parametrize("case", ["linked", "chown", "clamped", "avoided"])
def test_snapshot_reads_back_as_the_layer_and_as_its_unpacked_tar(tmp_path: Path, case: str) -> None:
    fs = source_snapshot(tmp_path)
    clamp = OLD - 10 if case == "clamped" else OLD + 10
    entries = copy_entries(sources=["/out"], dest="/out", src_view=RootView([fs]), src_is_context=False,
                           context=None, dest_view=RootView([]), chown=(5, 6) if case == "chown" else None,
                           mtime_clamp=clamp)
    made = tmp_path / "made"
    made.mkdir()
    avoid = (str(fs) + "/",) if case == "avoided" else ()
    assert link_snapshot(layer_order(entries), str(made), immutable=str(tmp_path / "snapshots") + "/", avoid=avoid,
                         mtime_clamp=clamp)
    # the snapshot gives the layer's tar back (a lazy layer's blob is made from it)
    assert diff_id(list(upper_entries(made)), clamp) == diff_id(entries, clamp)
    # and is what unpacking that tar gives
    buf = io.BytesIO()
    write_layer(entries, buf, compression="uncompressed", mtime_clamp=clamp)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    buf.seek(0)
    extract_layer(buf, unpacked, mode="overlay", compression=None)
    assert comparable(made, clamp) == comparable(unpacked, clamp)
    assert (made / "out" / "big.bin").read_bytes() == (fs / "out" / "big.bin").read_bytes()
    # a member with its source's exact metadata is that inode; anything else is a copy
    same = os.stat(made / "out" / "big.bin").st_ino == os.stat(fs / "out" / "big.bin").st_ino
    assert same == (case == "linked")
    # the hard link pair stays one inode in the snapshot, as in the tar; a source with two
    # names is copied (a root holding both snapshots would show it under both)
    assert os.stat(made / "out" / "a.txt").st_ino == os.stat(made / "out" / "a-hard.txt").st_ino
    assert os.stat(made / "out" / "a.txt").st_ino != os.stat(fs / "out" / "a.txt").st_ino


def test_a_file_is_linked_only_to_its_own_path(tmp_path: Path) -> None:
    """Copied to another path, a file is copied: the two snapshots may meet in one root."""
    fs = source_snapshot(tmp_path)
    entries = copy_entries(sources=["/out/big.bin"], dest="/elsewhere/big.bin", src_view=RootView([fs]),
                           src_is_context=False, context=None, dest_view=RootView([]), mtime_clamp=OLD + 10)
    made = tmp_path / "made"
    made.mkdir()
    assert link_snapshot(layer_order(entries), str(made), immutable=str(tmp_path / "snapshots") + "/",
                         mtime_clamp=OLD + 10)
    assert (made / "elsewhere" / "big.bin").read_bytes() == (fs / "out" / "big.bin").read_bytes()
    assert os.stat(made / "elsewhere" / "big.bin").st_nlink == 1


def test_mutable_sources_and_whiteout_names_are_left_to_the_extractor(tmp_path: Path) -> None:
    fs = source_snapshot(tmp_path)
    entries = copy_entries(sources=["/out"], dest="/dst/", src_view=RootView([fs]), src_is_context=False,
                           context=None, dest_view=RootView([]))
    elsewhere = str(tmp_path / "other-place") + "/"
    assert not link_snapshot(layer_order(entries), str(tmp_path), immutable=elsewhere)
    (fs / "out" / ".wh.odd").write_text("x")
    entries = copy_entries(sources=["/out"], dest="/dst/", src_view=RootView([fs]), src_is_context=False,
                           context=None, dest_view=RootView([]))
    made = tmp_path / "made"
    made.mkdir()
    assert not link_snapshot(layer_order(entries), str(made), immutable=str(tmp_path / "snapshots") + "/")


DOCKERFILE = f"""FROM {BASE_TAG} AS build
RUN mkdir -p /out/sub && echo a > /out/a && ln /out/a /out/a-hard && seq 1 20000 > /out/sub/seq \\
    && ln -s a /out/link && touch -t 202001010000 /out/a /out/sub/seq

FROM build AS again
COPY --from=build /out/a /copy-of-a
RUN [ "$(stat -c %i /copy-of-a)" != "$(stat -c %i /out/a)" ]

FROM scratch AS final
COPY --from=build /out /out
COPY --from=build /out/a /again/a
"""


def build(root: Path, ctx: Path, tag: str, *args: str, env: dict[str, str]) -> str:
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], root,
                env={"SOURCE_DATE_EPOCH": "1700000000", **env}).ok()
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    return str(next(e for e in events if e["type"] == "ImageWritten")["digest"])


def test_copy_from_builds_match_the_unpacking_path(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    digests = {}
    for mode in ("off", "auto", "all"):
        root = busybox_store(tmp_path / mode)
        digests[mode] = (build(root, ctx, f"t/{mode}:final", env={"PYBUILD_LAZY_LAYERS": mode}),
                         build(root, ctx, f"t/{mode}:again", "--target", "again", env={"PYBUILD_LAZY_LAYERS": mode}))
        if mode == "auto":
            # the final stage's first COPY linked the build stage's files (touched below the clamp)
            seq = [p for p in (root / "snapshots").glob("*/fs/out/sub/seq")]
            assert len(seq) == 2 and all(p.stat().st_nlink == 2 for p in seq)
            assert seq[0].stat().st_ino == seq[1].stat().st_ino
    assert digests["off"] == digests["auto"] == digests["all"]


MEETING = f"""FROM {BASE_TAG} AS a
RUN echo f > /f && echo g > /g && ln /g /g2 && touch -t 202001010000 /f /g

FROM {BASE_TAG} AS b
COPY --from=a /f /f
COPY --from=a /f /f2
COPY --from=a /g /g

FROM b AS c
COPY --from=a /f /f3
COPY --from=b /f /f4
COPY --from=a /g2 /g2
RUN [ -z "$(ls -i /f /f2 /f3 /f4 /g /g2 | awk '{{print $1}}' | sort | uniq -d)" ]

FROM scratch AS final
COPY --from=c /f /f2 /f3 /f4 /g /g2 /out/
"""


def test_linked_snapshots_meeting_in_one_root_show_no_hard_link(tmp_path: Path) -> None:
    """Snapshots that share inodes (b's /f is a's) meet in c's root (b's layers, then COPYs of
    a's and b's files to other names, a's second name of a linked file): every name there is
    its own inode, as unpacking the tars gives, and a COPY out of c holds no hard link (same
    image as the unpacking path)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(MEETING)
    digests = {}
    for mode in ("off", "auto"):
        root = busybox_store(tmp_path / mode)
        digests[mode] = build(root, ctx, f"t/{mode}:final", env={"PYBUILD_LAZY_LAYERS": mode})
        if mode == "auto":  # b's COPY --from=a /f /f linked a's file (the one link made here)
            shared = [p for p in (root / "snapshots").glob("*/fs/f") if p.stat().st_nlink == 2]
            assert len(shared) == 2 and shared[0].stat().st_ino == shared[1].stat().st_ino
    assert digests["off"] == digests["auto"]
