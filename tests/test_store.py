"""builder.store: atomic blob writes, tags in index.json, resolve, concurrency, gc."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.errors import ReferenceError_, StoreError
from builder.oci import mediatypes as mt
from builder.oci.models import (ContainerConfig, Descriptor, History, ImageConfig, Manifest, RootFS,
                                canonical_json)
from builder.store.layout import ImageNotFound, Store, default_root
from builder.validate import check_image
from ocireader import check_layout, gzip_bytes, make_layer_tar, read_layout, check_invariants


def put_image(store: Store, layers: list[dict[str, bytes | str | None]], tags: tuple[str, ...] = (),
              *, cmd: tuple[str, ...] = ("sh",)) -> Digest:
    """A gzip-layered OCI image built by hand into ``store``; returns the manifest digest."""
    descs, diff_ids = [], []
    for files in layers:
        tar = make_layer_tar(files)
        gz = gzip_bytes(tar)
        d = store.blobs.put_bytes(gz)
        descs.append(Descriptor(mediaType=mt.OCI_LAYER_GZIP, digest=str(d), size=len(gz)))
        diff_ids.append(str(Digest.of_bytes(tar)))
    cfg = canonical_json(ImageConfig(architecture="amd64", os="linux",
                                     config=ContainerConfig(Cmd=list(cmd), Env=["PATH=/bin"]),
                                     rootfs=RootFS(diff_ids=diff_ids),
                                     history=[History(created_by=f"layer {i}") for i in range(len(layers))]))
    cd = store.blobs.put_bytes(cfg)
    man = canonical_json(Manifest(mediaType=mt.OCI_MANIFEST,
                                  config=Descriptor(mediaType=mt.OCI_CONFIG, digest=str(cd), size=len(cfg)),
                                  layers=descs))
    return store.put_manifest(man, mt.OCI_MANIFEST, tags)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _tmp_files(store: Store) -> list[Path]:
    return list(store.tmp_dir.iterdir())


def test_layout_is_a_valid_oci_layout(store: Store) -> None:
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    d = put_image(store, [{"etc/": None, "etc/hello": b"hi\n"}], ("app",))
    check_layout(store.root)
    img = read_layout(store.root, "docker.io/library/app:latest")
    check_invariants(img)
    assert img.manifest_digest == str(d)
    assert check_image(store, d) == []


def test_blob_roundtrip_and_paths(store: Store) -> None:
    d = store.blobs.put_bytes(b"hello")
    assert d == Digest.of_bytes(b"hello")
    assert store.blobs.path(d) == store.root / "blobs" / "sha256" / d.hex
    assert store.blobs.has(d) and store.blobs.size(d) == 5
    with store.blobs.open(d) as f:
        assert f.read() == b"hello"
    assert store.blobs.put_bytes(b"hello") == d  # idempotent
    with store.blobs.ingest(size=3) as w:
        w.write(b"a")
        w.write(b"bc")
    assert w.digest == Digest.of_bytes(b"abc") and w.size == 3
    assert _tmp_files(store) == []


def test_large_blob_is_handed_to_writeback_as_it_is_written(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.store import blobs

    monkeypatch.setattr(blobs, "WRITEBACK_STEP", 1 << 20)
    chunk = os.urandom(256 << 10)
    progress = []
    with store.blobs.ingest() as w:
        for _ in range(12):  # 3 MiB
            w.write(chunk)
            progress.append(w._synced)
    assert progress[2] == 0 and progress[3] == progress[6] == 1 << 20 and progress[-1] == 3 << 20
    assert w.size == 12 * len(chunk) and w.digest == Digest.of_bytes(chunk * 12)
    with store.blobs.open(w.digest) as f:
        assert f.read() == chunk * 12
    assert _tmp_files(store) == []


def test_failed_ingest_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.blobs.ingest() as w:
            w.write(b"partial")
            raise RuntimeError("boom")
    assert not store.blobs.has(Digest.of_bytes(b"partial"))
    assert _tmp_files(store) == []
    assert list(store.blobs) == []


def test_wrong_digest_or_size_is_rejected(store: Store) -> None:
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(StoreError, match="digest mismatch"):
        store.blobs.put_bytes(b"data", expected=wrong)
    with pytest.raises(StoreError, match="size mismatch"):
        with store.blobs.ingest(Digest.of_bytes(b"data"), size=5) as w:
            w.write(b"data")
    assert list(store.blobs) == [] and _tmp_files(store) == []
    with pytest.raises(StoreError, match="not in the store"):
        store.blobs.open(wrong)


def test_tags_resolve_and_untag(store: Store) -> None:
    d1 = put_image(store, [{"a": b"1"}], ("app", "app:1", "quay.io/x/y:z"))
    d2 = put_image(store, [{"a": b"2"}], ("other:2",))
    names = [n for n, _ in store.tags()]
    assert names == ["docker.io/library/app:1", "docker.io/library/app:latest",
                     "docker.io/library/other:2", "quay.io/x/y:z"]
    for text in ("app", "app:latest", "docker.io/library/app", "docker.io/library/app:1", "quay.io/x/y:z",
                 str(d1), d1.hex[:12], "sha256:" + d1.hex[:8], f"app@{d1}"):
        assert store.resolve(text).digest == str(d1), text
    assert store.resolve("other:2").digest == str(d2)
    # the IMAGE ID `pybuild images` shows (the config digest, as docker) names the image too
    config_hex = store.image("other:2").manifest.config.digest_value.hex
    for text in (config_hex[:12], "sha256:" + config_hex[:8]):
        assert store.resolve(text).digest == str(d2), text
    index = json.loads((store.root / "index.json").read_text())
    assert {m["annotations"][mt.ANNOTATION_REF_NAME] for m in index["manifests"]} == set(names)
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    # retag moves the name
    store.tag("app", store.resolve("other:2"))
    assert store.resolve("app").digest == str(d2)
    assert store.untag("app:1").digest == str(d1)
    with pytest.raises(ImageNotFound):
        store.resolve("app:1")
    with pytest.raises(ImageNotFound):
        store.untag("app:1")
    with pytest.raises(StoreError):  # ImageNotFound is both a StoreError...
        store.resolve("nothing")
    with pytest.raises(ReferenceError_):  # ...and a ReferenceError_
        store.resolve("nothing")
    with pytest.raises(ReferenceError_, match="lowercase"):
        store.resolve("Bad")
    with pytest.raises(StoreError, match="not in the store"):
        store.tag("x", Descriptor(mediaType=mt.OCI_MANIFEST, digest="sha256:" + "0" * 64, size=1))


def test_ambiguous_short_id(store: Store) -> None:
    digests = [put_image(store, [{"f": str(i).encode()}], (f"img{i}",)) for i in range(40)]
    first = {d.hex[0] for d in digests}
    clash = next(c for c in first if sum(d.hex[0] == c for d in digests) > 1)
    with pytest.raises(ReferenceError_, match="ambiguous"):
        store.resolve("sha256:" + clash)


def test_image_returns_models_and_raw_bytes(store: Store) -> None:
    d = put_image(store, [{"x": b"1"}, {"y": b"2"}], ("app",), cmd=("echo", "hi"))
    img = store.image("app")
    assert img.digest == d
    assert Digest.of_bytes(img.manifest_raw) == d
    assert Digest.of_bytes(img.config_raw) == img.manifest.config.digest_value
    assert img.config.config is not None and img.config.config.Cmd == ["echo", "hi"]
    assert len(img.manifest.layers) == 2


def test_put_manifest_requires_its_blobs(store: Store) -> None:
    man = canonical_json(Manifest(mediaType=mt.OCI_MANIFEST,
                                  config=Descriptor(mediaType=mt.OCI_CONFIG, digest="sha256:" + "1" * 64, size=2)))
    with pytest.raises(StoreError, match="missing"):
        store.put_manifest(man, mt.OCI_MANIFEST, ("x",))
    assert store.tags() == []


def _tag_many(root: str, prefix: str, digest: str, size: int, count: int) -> None:
    s = Store(Path(root))
    desc = Descriptor(mediaType=mt.OCI_MANIFEST, digest=digest, size=size)
    for i in range(count):
        s.tag(f"{prefix}:{i}", desc)


def test_concurrent_tagging_loses_nothing(store: Store) -> None:
    d = put_image(store, [{"a": b"x"}])
    size = store.blobs.size(d)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_tag_many, args=(str(store.root), p, str(d), size, 30)) for p in ("one", "two")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = {n for n, _ in store.tags()}
    assert len(names) == 60
    assert {f"docker.io/library/one:{i}" for i in range(30)} <= names
    assert {f"docker.io/library/two:{i}" for i in range(30)} <= names


def test_gc_keeps_tagged_and_kept(store: Store) -> None:
    tagged = put_image(store, [{"a": b"tagged"}], ("keep",))
    kept = put_image(store, [{"a": b"kept"}])
    dropped = put_image(store, [{"a": b"dropped"}])
    loose = store.blobs.put_bytes(b"loose blob")
    cache_blob = store.blobs.put_bytes(b"cache root")
    before = set(store.blobs)
    sizes = {d: store.blobs.size(d) for d in before}
    freed = store.gc({kept, cache_blob})
    after = set(store.blobs)
    assert loose not in after and dropped not in after
    assert {tagged, kept, cache_blob} <= after
    assert freed == sum(sizes[d] for d in before - after)
    assert check_image(store, tagged) == [] and check_image(store, kept) == []
    # the dropped image's unique layer and config went, shared nothing
    assert len(before - after) == 4  # manifest, config, layer of `dropped` + the loose blob


def test_gc_removes_old_temp_files_only(store: Store) -> None:
    old = store.tmp_dir / "blob-old"
    new = store.tmp_dir / "blob-new"
    old.write_bytes(b"x" * 10)
    new.write_bytes(b"y")
    os.utime(old, (0, 0))
    store.gc(set())
    assert not old.exists() and new.exists()


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "r"))
    assert default_root() == tmp_path / "r"
    monkeypatch.delenv("PYBUILD_ROOT")
    expected = Path("/var/lib/pybuild") if os.geteuid() == 0 else Path.home() / ".local/share/pybuild"
    assert default_root() == expected


def test_corrupt_index_is_a_store_error(store: Store) -> None:
    (store.root / "index.json").write_text("{oops")
    with pytest.raises(StoreError, match="index.json"):
        store.tags()


def test_tag_digest_writes_what_tag_writes(store: Store, tmp_path: Path) -> None:
    """The pydantic-free tagging path gives index.json byte for byte as the validating one."""
    d1 = put_image(store, [{"a": b"1"}], ("app:1", "z:9"))
    desc = store.resolve("app:1")
    store.tag_digest("new:1", desc.mediaType, desc.digest, desc.size)
    store.tag_digest("app:1", desc.mediaType, desc.digest, desc.size)  # unchanged: no write
    fast = (store.root / "index.json").read_bytes()
    other = Store(tmp_path / "other")
    put_image(other, [{"a": b"1"}], ("app:1", "z:9"))
    other.tag("new:1", Descriptor(mediaType=desc.mediaType, digest=desc.digest, size=desc.size))
    assert fast == (other.root / "index.json").read_bytes()
    assert store.resolve("new:1").digest == str(d1)
    with pytest.raises(StoreError, match="not in the store"):
        store.tag_digest("x:1", desc.mediaType, "sha256:" + "0" * 64, 1)


def test_new_store_files_are_the_canonical_json(tmp_path: Path) -> None:
    from builder.oci.models import Index, OciLayout, canonical_json

    store = Store(tmp_path / "s")
    assert (store.root / "oci-layout").read_bytes() == canonical_json(OciLayout())
    assert (store.root / "index.json").read_bytes() == canonical_json(Index(mediaType=mt.OCI_INDEX))
