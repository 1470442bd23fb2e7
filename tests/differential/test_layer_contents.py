"""The same COPY-only build in pybuild (with SOURCE_DATE_EPOCH) and in dockerd's BuildKit gives
the same layers: the same members in the same order with the same type, mode, owner, content,
link target and xattrs, layer by layer (not only the flattened result the case suite compares).

The tar *bytes* differ, and only where the format leaves room: header fields a reader does not
use for content (uname/gname, the PAX records each writer chooses, the magic of the format),
the end padding, and mtimes: of what the step itself created (destination directories) —
BuildKit v0.8 ignores SOURCE_DATE_EPOCH and stamps them with the build time, pybuild clamps
them to the epoch, as current BuildKit does with rewrite-timestamp — and of directories from
the context, which v0.8 leaves with the time their contents were written (current fsutil
copies a directory's times after its contents, as pybuild keeps them). Mtimes of files from
the context are kept by both.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from buildutil import run_cli_subprocess
from ocireader import Member, _members, read_layout
from snapshot import _maybe_gunzip

from peers import Dockerd, PeerBase

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.dockerd]

EPOCH = 1700000000
CONTEXT_MTIME = 1600000000
MADE_BY_THE_STEP = {"app", "srv", "srv/data"}  # destinations and their missing parents
DOCKERFILE = """FROM scratch
COPY app/ /app/
COPY --chown=1:2 data /srv/data
COPY one.txt /one.txt
"""


def _context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "app" / "lib" / "deep").mkdir(parents=True)
    (ctx / "app" / "empty").mkdir()
    (ctx / "app" / "bin.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(ctx / "app" / "bin.sh", 0o755)
    (ctx / "app" / "lib" / "a.txt").write_text("a\n" * 1000)
    (ctx / "app" / "lib" / "deep" / "b.bin").write_bytes(bytes(range(256)) * 64)
    os.link(ctx / "app" / "lib" / "a.txt", ctx / "app" / "a-hardlink")
    os.symlink("lib/a.txt", ctx / "app" / "link")
    os.setxattr(ctx / "app" / "lib" / "a.txt", "user.origin", b"context")
    (ctx / "data").mkdir()
    (ctx / "data" / "secret").write_text("s\n")
    os.chmod(ctx / "data" / "secret", 0o600)
    (ctx / "one.txt").write_text("one\n")
    for dirpath, dirnames, filenames in os.walk(ctx):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (CONTEXT_MTIME, CONTEXT_MTIME), follow_symlinks=False)
    (root / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _docker_layers(archive: Path) -> list[list[Member]]:
    import json

    with tarfile.open(archive) as tar:
        def read(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None
            return f.read()
        manifest = json.loads(read("manifest.json"))[0]
        return [_members(_maybe_gunzip(read(name))) for name in manifest["Layers"]]


def _content(m: Member) -> tuple[object, ...]:
    return (m.name.rstrip("/"), m.type, m.mode & 0o7777, m.uid, m.gid, m.size,
            m.data if m.type == "file" else None, m.linkname, tuple(sorted(m.xattrs.items())))


def test_copy_only_layers_have_the_same_contents(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    store = tmp_path / "store"
    run_cli_subprocess(["build", "-q", "-t", "localhost/copyonly:1", "-f", str(tmp_path / "Dockerfile"), str(ctx)],
                       store, env={"SOURCE_DATE_EPOCH": str(EPOCH)}).ok()
    ours = read_layout(store, "localhost/copyonly:1").layers
    dockerd.build(ctx, dockerfile=tmp_path / "Dockerfile", tag="copyonly:1",
                  build_args={"SOURCE_DATE_EPOCH": str(EPOCH)}).ok()
    theirs = _docker_layers(dockerd.save("copyonly:1", tmp_path / "peer.tar"))

    assert len(ours) == len(theirs) == 3
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert [_content(m) for m in a] == [_content(m) for m in b], f"layer {i}"
        for ma, mb in zip(a, b, strict=True):
            name = ma.name.rstrip("/")
            if name in MADE_BY_THE_STEP:  # the epoch in pybuild, the build time in v0.8
                assert ma.mtime == EPOCH and mb.mtime > EPOCH, (i, name, ma.mtime, mb.mtime)
            elif mb.type != "dir":  # from the context: kept by both
                assert ma.mtime == mb.mtime == CONTEXT_MTIME, (i, name, ma.mtime, mb.mtime)
            else:  # a context directory: kept by pybuild and current fsutil (its file info is
                # copied after its contents); v0.8 left the time its contents were written
                assert ma.mtime == CONTEXT_MTIME, (i, name, ma.mtime)
                assert mb.mtime == CONTEXT_MTIME if name == "app/empty" else mb.mtime > EPOCH, (i, name, mb.mtime)
    # the hardlink stays a hardlink to the first name in both
    links = {m.name: m.linkname for m in ours[0] if m.type == "hardlink"}
    assert links == {"app/lib/a.txt": "app/a-hardlink"} or links == {"app/a-hardlink": "app/lib/a.txt"}
