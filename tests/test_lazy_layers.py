"""Lazy layers: a stage whose layers no output needs keeps snapshots and cache records, never
blobs; an output that needs them later (``--target``, a cache export) makes the blobs from the
snapshots, with the digests an eager build gives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from ocireader import read_layout

pytestmark = pytest.mark.root

# the build stage makes files (a RUN), takes one from the context (a COPY) and adds one more
# (a RUN on top of both); the final stage only COPYs --from it
DOCKERFILE = f"""FROM {BASE_TAG} AS build
RUN mkdir -p /out/small && for i in $(seq 1 50); do echo "file $i" > /out/small/f$i.txt; done
COPY data/ /out/data/
RUN cat /out/data/a.txt /out/small/f7.txt > /out/joined && ln /out/joined /out/joined.hard

FROM scratch AS final
COPY --from=build /out /out
"""

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "data" / "sub").mkdir(parents=True)
    (ctx / "data" / "a.txt").write_text("a\n")
    (ctx / "data" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4096)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def blobs(root: Path) -> set[str]:
    d = root / "blobs" / "sha256"
    return {"sha256:" + p.name for p in d.iterdir()} if d.is_dir() else set()


def image_blobs(root: Path, tag: str) -> set[str]:
    img = read_layout(root, tag)
    manifest = json.loads(img.manifest_raw)
    return {img.manifest_digest, manifest["config"]["digest"]} | {layer["digest"] for layer in manifest["layers"]}


def records(root: Path) -> list[dict]:
    d = root / "cache" / "records"
    return [json.loads(p.read_bytes()) for p in sorted(d.glob("*.json"))]


def build(root: Path, ctx: Path, tag: str, *args: str, env: dict[str, str] | None = None) -> str:
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], root, env={**EPOCH, **(env or {})}).ok()
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    written = [e for e in events if e["type"] == "ImageWritten"]
    assert len(written) == 1, r.err
    return str(written[0]["digest"])


def snapshot_diff_ids(root: Path) -> set[str]:
    d = root / "snapshots"
    return {(p / "diff_id").read_text().strip() for p in d.iterdir() if (p / "diff_id").is_file()}


def layer_digests(root: Path, tag: str) -> list[str]:
    return [layer["digest"] for layer in json.loads(read_layout(root, tag).manifest_raw)["layers"]]


def test_unneeded_stage_writes_no_blob_until_its_target_is_exported(tmp_path: Path) -> None:
    root = busybox_store(tmp_path)
    ctx = context(tmp_path)
    before = blobs(root)
    build(root, ctx, "t/lazy:final")
    # the store gained exactly the final image's blobs: none for the build stage's 3 layers
    assert blobs(root) - before == image_blobs(root, "docker.io/t/lazy:final") - before
    assert len(layer_digests(root, "docker.io/t/lazy:final")) == 1
    lazy = [r for r in records(root) if r["layer"] is not None and "digest" not in r["layer"]]
    assert len(lazy) == 3  # RUN, COPY, RUN of the build stage: diff_id only
    for r in lazy:
        snap = root / "snapshots" / r["layer"]["diff_id"].split(":")[1][:12]
        assert (snap / "fs").is_dir()

    # a fully cached rebuild (cache hits, COPY --from over the snapshots) needs no blob either
    count = len(blobs(root))
    build(root, ctx, "t/lazy:final")
    assert len(blobs(root)) == count

    # exporting the build stage writes its blobs (3 layers + config + manifest), records keep them
    build(root, ctx, "t/lazy:build", "--target", "build")
    made = blobs(root) - before
    want = image_blobs(root, "docker.io/t/lazy:build") - before
    assert want <= made and len(blobs(root)) == count + 5
    assert all("digest" in r["layer"] for r in records(root) if r["layer"] is not None)


@pytest.mark.parametrize("mode", ["auto", "all"])
def test_lazy_and_eager_layers_have_the_same_digests(tmp_path: Path, mode: str) -> None:
    ctx = context(tmp_path)
    eager_root = busybox_store(tmp_path / "eager")
    eager = build(eager_root, ctx, "t/e:build", "--target", "build", env={"PYBUILD_LAZY_LAYERS": "off"})
    eager_final = build(eager_root, ctx, "t/e:final", env={"PYBUILD_LAZY_LAYERS": "off"})

    lazy_root = busybox_store(tmp_path / "lazy")
    # "auto": the build stage is lazy while the final target is built, then materialized by
    # --target build; "all": even the target's own layers are lazy, made at the end
    lazy_final = build(lazy_root, ctx, "t/l:final", env={"PYBUILD_LAZY_LAYERS": mode})
    lazy = build(lazy_root, ctx, "t/l:build", "--target", "build", env={"PYBUILD_LAZY_LAYERS": mode})
    assert lazy == eager and lazy_final == eager_final
    assert layer_digests(lazy_root, "docker.io/t/l:build") == layer_digests(eager_root, "docker.io/t/e:build")
    # and with --no-cache, made lazily from scratch in one build
    assert build(lazy_root, ctx, "t/l:again", "--target", "build", "--no-cache",
                 env={"PYBUILD_LAZY_LAYERS": "all"}) == eager


def test_prune_keeps_lazy_records_and_their_snapshots(tmp_path: Path) -> None:
    root = busybox_store(tmp_path)
    ctx = context(tmp_path)
    build(root, ctx, "t/lazy:final")
    n_records = len(records(root))
    lazy_diffs = {r["layer"]["diff_id"] for r in records(root) if r["layer"] and "digest" not in r["layer"]}
    assert len(lazy_diffs) == 3
    run_cli(["prune"], root).ok()
    assert len(records(root)) == n_records
    assert lazy_diffs <= snapshot_diff_ids(root)
    count = len(blobs(root))
    build(root, ctx, "t/lazy:final")   # still fully cached: the lazy records are hits
    assert len(blobs(root)) == count
    run_cli(["prune", "--all"], root).ok()
    assert records(root) == []
    assert not lazy_diffs & snapshot_diff_ids(root)


def test_cache_export_makes_the_blobs_of_lazy_layers(tmp_path: Path) -> None:
    root = busybox_store(tmp_path)
    ctx = context(tmp_path)
    dest = tmp_path / "cache-out"
    build(root, ctx, "t/lazy:final", "--cache-to", f"type=local,dest={dest},mode=max")
    index = json.loads((dest / "index.json").read_text())
    man_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((dest / "blobs" / "sha256" / man_digest).read_bytes())
    # the final layer and the build stage's three, each blob present in the exported layout
    assert len(manifest["layers"]) == 4
    for layer in manifest["layers"]:
        assert (dest / "blobs" / "sha256" / layer["digest"].split(":")[1]).is_file()
    assert all("digest" in r["layer"] for r in records(root) if r["layer"] is not None)


def test_blob_made_from_an_eagerly_unpacked_snapshot_is_the_same(tmp_path: Path) -> None:
    """An eager COPY followed by a RUN is unpacked while it is written (by GNU tar as root);
    a later lazy build of the same layer reuses that snapshot and makes its blob from it: the
    same digests (a context file named like a whiteout keeps that layer off the fast path)."""
    ctx = context(tmp_path)
    (ctx / "data" / "sub" / "link").symlink_to("b.bin")
    os.link(ctx / "data" / "a.txt", ctx / "data" / "a-hard.txt")
    os.chmod(ctx / "data" / "sub", 0o750)
    root = busybox_store(tmp_path)
    eager = build(root, ctx, "t/g:eager", "--target", "build", env={"PYBUILD_LAZY_LAYERS": "off"})
    again = build(root, ctx, "t/g:lazy", "--target", "build", "--no-cache", env={"PYBUILD_LAZY_LAYERS": "all"})
    assert again == eager
    (ctx / "data" / ".wh.odd").write_text("not a whiteout in the context\n")
    eager = build(root, ctx, "t/g:eager2", "--target", "build", env={"PYBUILD_LAZY_LAYERS": "off"})
    again = build(root, ctx, "t/g:lazy2", "--target", "build", "--no-cache", env={"PYBUILD_LAZY_LAYERS": "all"})
    assert again == eager


@pytest.mark.parametrize("mode", ["auto", "all", "off"])
def test_run_layer_with_a_file_named_like_its_whiteout(tmp_path: Path, mode: str) -> None:
    """A RUN deleting /etc/group and creating /etc/.wh.group has two members of one name: the
    streamed walk refuses it and the layer is written from its entries, in every mode."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nRUN rm /etc/group && echo odd > /etc/.wh.group\n")
    root = busybox_store(tmp_path)
    build(root, ctx, "t/wh:x", "--no-cache", env={"PYBUILD_LAZY_LAYERS": mode})
    img = read_layout(root, "docker.io/t/wh:x")
    layer = json.loads(img.manifest_raw)["layers"][-1]["digest"].split(":")[1]
    import gzip
    import tarfile

    with tarfile.open(fileobj=gzip.open(root / "blobs" / "sha256" / layer)) as tf:
        assert tf.getnames().count("etc/.wh.group") == 1
