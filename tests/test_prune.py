"""``pybuild prune`` and ``pybuild du``: after builds, tags and rmi, prune keeps every tagged
image intact (every blob re-read and verified, re-exported to an OCI layout with the same
digest, usable as a base) and frees the rest (untagged layers, cache records, unpacked layers).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from ocireader import check_invariants, check_layout, flatten, read_layout

KEEP = f"""FROM {BASE_TAG}
COPY keep.txt /keep.txt
RUN echo kept > /kept && cat /proc/uptime > /when
"""

DROP = f"""FROM {BASE_TAG}
COPY drop.bin /drop.bin
RUN cat /drop.bin /drop.bin > /twice
"""


def build(store: Path, ctx: Path, dockerfile: str, tag: str, *args: str) -> str:
    (ctx / "Dockerfile").write_text(dockerfile)
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], store).ok()
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    return next(e["digest"] for e in events if e["type"] == "ImageWritten")


def blob_set(store: Path) -> set[str]:
    return {"sha256:" + p.name for p in (store / "blobs" / "sha256").iterdir()}


def manifest_layers(store: Path, digest: str) -> set[str]:
    """Layer digests of a manifest blob of the store (empty when the blob is gone)."""
    p = store / "blobs" / "sha256" / digest.split(":", 1)[1]
    return {layer["digest"] for layer in json.loads(p.read_bytes())["layers"]} if p.exists() else set()


def records(store: Path) -> list[dict]:
    d = store / "cache" / "records"
    return [json.loads(p.read_text()) for p in d.glob("*.json")] if d.is_dir() else []


def export(store: Path, name: str, dest: Path) -> str:
    """Re-export a stored image into an OCI layout dir (the store's own copy path); returns
    the manifest digest found there."""
    from builder.oci.layoutdir import OciLayoutDir
    from builder.store.layout import Store
    from builder.transfer import copy_image

    return str(copy_image(Store(store), name, OciLayoutDir(dest), tags=("latest",)))


def du(store: Path) -> dict[str, str]:
    out = run_cli(["du"], store).ok().out
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "keep.txt").write_text("keep\n")
    (ctx / "drop.bin").write_bytes(bytes(range(256)) * 4096)      # 1 MiB, incompressible-ish
    digests = {
        "keep": build(store, ctx, KEEP, "app/keep:1"),
        "drop": build(store, ctx, DROP, "app/drop:1"),
    }
    run_cli(["tag", "app/keep:1", "app/keep:alias"], store).ok()
    run_cli(["rmi", "app/keep:1"], store).ok()        # still tagged as alias
    run_cli(["rmi", "app/drop:1"], store).ok()        # now untagged: only cache records hold it
    return store, ctx, digests


def assert_intact(store: Path, tmp_path: Path, name: str, digest: str) -> None:
    img = read_layout(store, name)
    assert img.manifest_digest == digest
    check_invariants(img)       # every blob present, digests, diff_ids, schema
    out = tmp_path / f"export-{name.replace('/', '_').replace(':', '_')}"
    assert export(store, name, out) == digest
    check_layout(out)


@pytest.mark.root
def test_prune_all_keeps_tagged_images_and_frees_the_rest(tmp_path: Path, setup) -> None:
    store, ctx, digests = setup
    drop_img_layers = manifest_layers(store, digests["drop"])
    assert drop_img_layers
    before_blobs = blob_set(store)
    assert drop_img_layers <= before_blobs and records(store)
    snapshots_before = du(store)["snapshots"]

    r = run_cli(["prune", "--all"], store).ok()
    assert "reclaimed" in r.out

    after = blob_set(store)
    base_layers = {layer["digest"] for layer in read_layout(store, "localhost/busybox:latest").manifest["layers"]}
    assert not ((drop_img_layers - base_layers) & after), "the untagged image's layers were kept"
    assert digests["drop"] not in after
    assert records(store) == []
    assert len(after) < len(before_blobs)
    assert du(store)["snapshots"] != snapshots_before or snapshots_before == "0 B"

    assert_intact(store, tmp_path, "docker.io/app/keep:alias", digests["keep"])
    assert_intact(store, tmp_path, BASE_TAG, read_layout(store, BASE_TAG).manifest_digest)

    # the kept image still works as a base: its layers unpack again and its files are there
    child = build(store, ctx, "FROM app/keep:alias\nRUN cat /kept /keep.txt > /both\n", "app/child:1")
    fs = flatten(read_layout(store, "docker.io/app/child:1").layers)
    assert fs["both"].data == b"kept\nkeep\n"
    assert child != digests["keep"]

    # a rebuild after prune --all reruns the steps (no stale record survives)
    (ctx / "Dockerfile").write_text(KEEP)
    r = run_cli(["build", "--progress=rawjson", "-t", "app/keep:again", str(ctx)], store).ok()
    steps = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    assert any(e["type"] == "StepFinished" and e["text"].startswith("RUN") and not e["cached"] for e in steps)


@pytest.mark.root
def test_prune_without_all_keeps_a_usable_cache(tmp_path: Path, setup) -> None:
    store, ctx, digests = setup
    run_cli(["prune"], store).ok()
    assert_intact(store, tmp_path, "docker.io/app/keep:alias", digests["keep"])
    # records whose blobs survive keep the untagged image's build fully cached
    assert build(store, ctx, DROP, "app/drop:2") == digests["drop"]
    assert build(store, ctx, KEEP, "app/keep:2") == digests["keep"]


@pytest.mark.root
def test_prune_keep_storage_zero_drops_untagged_cache_only(tmp_path: Path, setup) -> None:
    store, ctx, digests = setup
    run_cli(["prune", "--keep-storage", "0"], store).ok()
    assert_intact(store, tmp_path, "docker.io/app/keep:alias", digests["keep"])
    assert not manifest_layers(store, digests["drop"]), "the untagged image's manifest outlived --keep-storage 0"
    # the tagged image's records (their layers are tagged, costing nothing) still hit
    assert build(store, ctx, KEEP, "app/keep:3") == digests["keep"]


def test_du_reports_each_area(tmp_path: Path) -> None:
    store = busybox_store(tmp_path)
    usage = du(store)
    assert set(usage) >= {"images", "cache", "snapshots", "tmp"}
    assert usage["images"] != "0 B"


def test_prune_all_forgets_the_context_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.engine.context import HashMemo

    monkeypatch.setattr(HashMemo, "RACY_NS", 0)  # files changed just now are normally not memoised
    store = tmp_path / "store"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data.txt").write_text("memo me\n")
    build(store, ctx, "FROM scratch\nCOPY data.txt /data.txt\n", "memo:1")
    from builder.engine.context import memo_path

    memo = memo_path(store, ctx)
    legacy = store / "cache" / "filehash.json"  # the one-file memo of earlier versions
    legacy.write_text("{}")
    run_cli(["prune"], store).ok()
    assert memo.exists()
    tagged = json.loads((store / "index.json").read_text())["manifests"]
    run_cli(["prune", "--all"], store).ok()
    assert not memo.exists() and not legacy.exists()
    assert json.loads((store / "index.json").read_text())["manifests"] == tagged
