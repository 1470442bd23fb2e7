"""``pybuild store check [--repair]``: each injected corruption is found (exit 1, named), repair
fixes it, the store is clean afterwards and every tagged image that was not itself broken
exports with the digest it had; the next build succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from runutil import (
    REPO,
    build,
    export_digest,
    make_context,
    new_store,
    pybuild,
    tag_digest,
)

pytestmark = [pytest.mark.root, pytest.mark.overlay]

APP = "docker.io/library/app:latest"
TOOL = "docker.io/library/tool:latest"
DOCKERFILE = """\
FROM localhost/busybox:latest AS scratchpad
RUN echo only-in-the-cache > /cached.txt
FROM localhost/busybox:latest
COPY --from=scratchpad /cached.txt /from-stage.txt
RUN echo hello > /hello.txt
COPY data.txt /data.txt
"""
TOOL_DOCKERFILE = "FROM localhost/busybox:latest\nCOPY tool.txt /tool.txt\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store with app and tool built (RUN and COPY layers, cache records, snapshots) and
    the context of app (to rebuild)."""
    tmp = tmp_path_factory.mktemp("check")
    root = new_store(tmp)
    ctx = make_context(tmp / "ctx", DOCKERFILE, {"data.txt": "data\n"})
    # eager layers: the scratchpad stage's RUN must leave a blob only a cache record names
    # (by default that stage is lazy: a snapshot and a record without a blob)
    build(ctx, root, tag="app", env={"PYBUILD_LAZY_LAYERS": "off"}).ok()
    tctx = make_context(tmp / "tctx", TOOL_DOCKERFILE, {"tool.txt": "tool\n"})
    build(tctx, root, tag="tool").ok()
    assert pybuild(["store", "check"], root).ok()
    return root, ctx


def _copy(root: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(root), str(dest)], check=True)
    return dest


def _manifest(root: Path, ref: str) -> dict:
    d = tag_digest(root, ref)
    assert d is not None
    return json.loads((root / "blobs" / "sha256" / d.split(":")[1]).read_bytes())


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":")[1]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _cache_only_layer(root: Path) -> str:
    """A layer blob referenced only by a cache record (the scratchpad stage's RUN)."""
    tagged = {layer["digest"] for ref in (APP, TOOL) for layer in _manifest(root, ref)["layers"]}
    for p in (root / "cache" / "records").glob("*.json"):
        layer = json.loads(p.read_text())["layer"]
        if layer and layer["digest"] not in tagged and _blob(root, layer["digest"]).exists():
            return layer["digest"]
    raise AssertionError("no cache-only layer")


# -- the corruptions: each returns (problem kind expected, tags it breaks) -----------------------

def flip_cached_blob_byte(root: Path) -> tuple[str, set[str]]:
    p = _blob(root, _cache_only_layer(root))
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    return "blob-corrupt", set()


def flip_tagged_blob_byte(root: Path) -> tuple[str, set[str]]:
    p = _blob(root, _manifest(root, TOOL)["layers"][-1]["digest"])
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    return "blob-corrupt", {TOOL}


def missing_blob(root: Path) -> tuple[str, set[str]]:
    _blob(root, _manifest(root, TOOL)["config"]["digest"]).unlink()
    return "tag-broken", {TOOL}


def dangling_tag(root: Path) -> tuple[str, set[str]]:
    index = json.loads((root / "index.json").read_text())
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": "sha256:" + "ab" * 32, "size": 400,
                               "annotations": {"org.opencontainers.image.ref.name": "docker.io/library/ghost:1"}})
    (root / "index.json").write_text(json.dumps(index))
    return "tag-broken", {"docker.io/library/ghost:1"}


def record_to_missing_layer(root: Path) -> tuple[str, set[str]]:
    rec = {"key": "sha256:" + "cd" * 32, "extra": {},
           "layer": {"digest": "sha256:" + "ef" * 32, "diff_id": "sha256:" + "01" * 32, "size": 10,
                     "media_type": "application/vnd.oci.image.layer.v1.tar+gzip"}}
    (root / "cache" / "records" / ("cd" * 32 + ".json")).write_text(json.dumps(rec))
    return "record-dangling", set()


def cached_blob_deleted(root: Path) -> tuple[str, set[str]]:
    _blob(root, _cache_only_layer(root)).unlink()
    return "record-dangling", set()


def stale_mount(root: Path) -> tuple[str, set[str]]:
    d = root / "tmp" / f"build-{_dead_pid()}-x1"
    d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True)
    (d / "partial").write_text("left behind")
    return "stale-mount", set()


def stale_lock(root: Path) -> tuple[str, set[str]]:
    """A real process takes a lease (and a temp dir) on the store and is SIGKILLed."""
    code = ("import os,sys,time\n"
            "from pathlib import Path\n"
            "from builder.store.lease import Lease\n"
            "from builder.store.stale import owned_prefix\n"
            "root = Path(sys.argv[1])\n"
            "l = Lease(root); l.pin(['sha256:' + '12' * 32])\n"
            "(root / 'tmp' / (owned_prefix('blob') + 'x')).write_bytes(b'half a blob')\n"
            "print('ready', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    p.send_signal(signal.SIGKILL)
    p.wait()
    return "stale-lease", set()


def broken_snapshot(root: Path) -> tuple[str, set[str]]:
    snap = next(d for d in (root / "snapshots").iterdir() if not d.name.startswith("tmp-"))
    (snap / "diff_id").unlink()
    return "snapshot-broken", set()


def stray_blob_file(root: Path) -> tuple[str, set[str]]:
    (root / "blobs" / "sha256" / "half-written").write_bytes(b"xx")
    return "blob-stray", set()


CORRUPTIONS: list[Callable[[Path], tuple[str, set[str]]]] = [
    flip_cached_blob_byte, flip_tagged_blob_byte, missing_blob, dangling_tag, record_to_missing_layer,
    cached_blob_deleted, stale_mount, stale_lock, broken_snapshot, stray_blob_file,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_check_finds_and_repair_fixes(built: tuple[Path, Path], tmp_path: Path,
                                      corrupt: Callable[[Path], tuple[str, set[str]]]) -> None:
    src, ctx = built
    root = _copy(src, tmp_path / "store")
    before = {ref: tag_digest(root, ref) for ref in (APP, TOOL)}
    kind, broken = corrupt(root)

    found = pybuild(["store", "check"], root)
    assert found.rc == 1, found.out + found.err
    assert f"{kind}: " in found.out, found.out
    assert "Traceback" not in found.err

    fixed = pybuild(["store", "check", "--repair"], root)
    assert fixed.rc == 0, fixed.out + fixed.err
    assert f"{kind}: " in fixed.out and "(repaired)" in fixed.out
    assert pybuild(["store", "check"], root).ok().out.rstrip().endswith("clean")
    assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in m]

    # every tag that was not broken survives and exports with its digest
    for ref, digest in before.items():
        if ref in broken:
            assert tag_digest(root, ref) is None
            continue
        assert tag_digest(root, ref) == digest
        assert export_digest(root, ref, tmp_path / f"{ref.rsplit('/', 1)[1]}.tar") == digest
    # and the next build succeeds (rebuilding what repair removed), leaving the store clean
    # eager layers: the scratchpad stage's RUN must leave a blob only a cache record names
    # (by default that stage is lazy: a snapshot and a record without a blob)
    build(ctx, root, tag="app", env={"PYBUILD_LAZY_LAYERS": "off"}).ok()
    assert pybuild(["store", "check"], root).ok()


def test_check_json_report_counts(built: tuple[Path, Path]) -> None:
    root, _ = built
    out = pybuild(["store", "check", "--format", "json"], root).ok().out
    report = json.loads(out)
    assert report["clean"] is True and report["problems"] == []
    assert report["tags"] == 3 and report["blobs"] > 6 and report["records"] >= 4 and report["snapshots"] >= 3


def test_next_command_sweeps_what_a_dead_process_left(built: tuple[Path, Path], tmp_path: Path) -> None:
    """Stale temp dirs, mounts and leases go at the start of the next build, unasked."""
    src, ctx = built
    root = _copy(src, tmp_path / "store")
    stale_mount(root)
    stale_lock(root)
    assert pybuild(["store", "check"], root).rc == 1
    # eager layers: the scratchpad stage's RUN must leave a blob only a cache record names
    # (by default that stage is lazy: a snapshot and a record without a blob)
    build(ctx, root, tag="app", env={"PYBUILD_LAZY_LAYERS": "off"}).ok()
    assert pybuild(["store", "check"], root).ok()
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "leases") == []
