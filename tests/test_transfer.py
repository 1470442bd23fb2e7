"""builder.transfer (copy_image, recompression, --output) and the OCI layout dir/tar classes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.errors import ReferenceError_, StoreError, UsageError
from builder.oci import mediatypes as mt
from builder.oci.dockerarchive import DockerArchiveWriter
from builder.oci.layoutdir import OciLayoutDir, OciLayoutTarReader, OciLayoutTarWriter, open_layout, parse_layout_ref
from builder.oci.models import Descriptor, Index, Platform, canonical_json, parse_json, ImageConfig
from builder.store.layout import ImageNotFound, Store
from builder.events import BlobProgress
from builder.transfer import (OutputSpec, TransferEvent, convert_compression, copy_image, export_image,
                              parse_output)
from builder.validate import check_image, validate_image
from ocireader import check_invariants, check_layout, flatten, read_layout
from test_store import put_image

LAYERS = [
    {"etc/": None, "etc/os-release": b"ID=test\n", "bin/": None, "bin/sh": b"#!fake\n", "gone/": None,
     "gone/a": b"a", "keep/": None, "keep/old": b"old"},
    {"etc/hello": b"hello\n", ".wh.gone": b"", "keep/.wh..wh..opq": b"", "keep/new": b"new",
     "bin/link": "->sh"},
]


@pytest.fixture
def src(tmp_path: Path) -> tuple[Store, Digest]:
    store = Store(tmp_path / "src")
    return store, put_image(store, LAYERS, ("app:1",))


def test_store_oci_dir_store_round_trip_keeps_digests(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = src
    events: list[TransferEvent | BlobProgress] = []
    layout = OciLayoutDir(tmp_path / "layout")
    assert copy_image(store, "app:1", layout, ("app:1",), on_event=events.append) == d
    assert [e.kind for e in events if isinstance(e, TransferEvent)] == ["copy", "copy", "copy", "manifest"]
    check_layout(tmp_path / "layout")
    img = read_layout(tmp_path / "layout", "1")
    check_invariants(img)
    entry = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"][0]
    assert entry["annotations"] == {mt.ANNOTATION_CONTAINERD_NAME: "docker.io/library/app:1",
                                    mt.ANNOTATION_REF_NAME: "1"}
    assert not (tmp_path / "layout" / ".pybuild-tmp").exists()
    back = Store(tmp_path / "back")
    for ref in ("1", "app:1", "docker.io/library/app:1", str(d)):
        assert copy_image(OciLayoutDir(tmp_path / "layout"), ref, back, ("copy",)) == d
    assert back.resolve("copy").digest == str(d)
    assert back.blobs.read_bytes(d) == store.blobs.read_bytes(d)
    assert check_image(back, d) == []
    events.clear()
    copy_image(store, "app:1", layout, ("app:2",), on_event=events.append)
    assert [e.kind for e in events if isinstance(e, TransferEvent)] == ["skip", "skip", "skip", "manifest"]
    index = read_layout(tmp_path / "layout", "2").index
    assert len(index["manifests"]) == 2


def test_oci_tar_round_trip(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = src
    path = tmp_path / "img.tar"
    with open(path, "wb") as f:
        w = OciLayoutTarWriter(f)
        copy_image(store, str(d), w, ("app:1",))
        w.close()
    check_layout(path)
    img = read_layout(path, "1")
    check_invariants(img)
    assert img.index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    with OciLayoutTarReader(path) as r:
        back = Store(tmp_path / "back")
        assert copy_image(r, "app:1", back, ("x",)) == d
    validate_image(back, d)
    src2 = open_layout(path)
    assert isinstance(src2, OciLayoutTarReader)
    src2.close()


def test_skopeo_style_bare_tag_and_errors(tmp_path: Path, src: tuple[Store, Digest]) -> None:
    store, d = src
    layout = tmp_path / "l"
    copy_image(store, "app:1", OciLayoutDir(layout), ())
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {mt.ANNOTATION_REF_NAME: "latest"}
    (layout / "index.json").write_text(json.dumps(index))
    assert copy_image(OciLayoutDir(layout), "latest", Store(tmp_path / "b"), ()) == d
    assert copy_image(OciLayoutDir(layout), "", Store(tmp_path / "c"), ()) == d
    with pytest.raises(ImageNotFound):
        OciLayoutDir(layout).get_manifest("nope")
    with pytest.raises(StoreError, match="not an OCI image layout"):
        OciLayoutDir(tmp_path / "missing").get_manifest("x")
    assert parse_layout_ref("/a/b:c") == (Path("/a/b"), "c")
    assert parse_layout_ref("/a:b/c") == (Path("/a:b/c"), "")
    assert parse_layout_ref(f"/a/b@{d}") == (Path("/a/b"), str(d))


def test_corrupt_blob_is_detected_and_not_stored(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = src
    img = store.image("app:1")
    layer = img.manifest.layers[0].digest_value
    p = store.blobs.path(layer)
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.chmod(0o644)
    p.write_bytes(bytes(data))
    dst = Store(tmp_path / "dst")
    with pytest.raises(StoreError, match="mismatch"):
        copy_image(store, "app:1", dst, ("x",))
    assert not dst.blobs.has(layer) and dst.tags() == []
    assert any("layer 0" in p for p in check_image(store, d))


def test_recompression_keeps_diff_ids(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = src
    img = store.image("app:1")
    diff_ids = img.config.rootfs.diff_ids
    raw, mtype = convert_compression(store.blobs, img.manifest_raw, img.config, "zstd")
    zd = Digest.of_bytes(raw)
    assert mtype == mt.OCI_MANIFEST and zd != d
    man = json.loads(raw)
    assert {layer["mediaType"] for layer in man["layers"]} == {mt.OCI_LAYER_ZSTD}
    assert man["config"]["digest"] == img.manifest.config.digest
    validate_image(store, zd)
    store.tag("app:zstd", Descriptor(mediaType=mtype, digest=str(zd), size=len(raw)))
    zimg = store.image("app:zstd")
    for target in ("gzip", "uncompressed"):
        raw2, _ = convert_compression(store.blobs, zimg.manifest_raw, zimg.config, target)
        validate_image(store, Digest.of_bytes(raw2))
        cfg_digest = Digest.parse(json.loads(raw2)["config"]["digest"])
        assert parse_json(ImageConfig, store.blobs.read_bytes(cfg_digest)).rootfs.diff_ids == diff_ids
    same, _ = convert_compression(store.blobs, img.manifest_raw, img.config, "gzip")
    assert same == img.manifest_raw  # nothing to do: bytes untouched
    # through an export, read back by the independent reader
    export_image(store, "app:1", parse_output(f"type=oci,dest={tmp_path / 'z.tar'},compression=zstd"))
    zi = read_layout(tmp_path / "z.tar", "1")
    check_invariants(zi)
    assert zi.config["rootfs"]["diff_ids"] == diff_ids


def test_index_copy_and_platform_selection(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    amd = put_image(store, [{"a": b"amd64"}])
    arm = put_image(store, [{"a": b"arm64"}])
    idx = Index(mediaType=mt.OCI_INDEX, manifests=[
        Descriptor(mediaType=mt.OCI_MANIFEST, digest=str(amd), size=store.blobs.size(amd),
                   platform=Platform(os="linux", architecture="amd64")),
        Descriptor(mediaType=mt.OCI_MANIFEST, digest=str(arm), size=store.blobs.size(arm),
                   platform=Platform(os="linux", architecture="arm64")),
    ])
    raw = canonical_json(idx)
    idx_d = store.put_manifest(raw, mt.OCI_INDEX, ("multi",))
    dst = Store(tmp_path / "d")
    assert copy_image(store, "multi", dst, ("one",), platform="linux/arm64") == arm
    assert not dst.blobs.has(amd)
    assert dst.image("one").digest == arm
    full = Store(tmp_path / "f")
    assert copy_image(store, "multi", full, ("all",)) == idx_d
    assert full.blobs.has(amd) and full.blobs.has(arm)
    assert full.image("all", Platform(os="linux", architecture="arm64")).digest == arm
    assert check_image(full, idx_d) == []
    # an index through an OCI layout dir and tar: children are read by digest from blobs/
    layout = OciLayoutDir(tmp_path / "layout")
    assert copy_image(store, "multi", layout, ("multi",)) == idx_d
    check_layout(tmp_path / "layout")
    again = Store(tmp_path / "again")
    assert copy_image(OciLayoutDir(tmp_path / "layout"), "multi", again, ("m",)) == idx_d
    assert check_image(again, idx_d) == []
    with open(tmp_path / "multi.tar", "wb") as f, OciLayoutTarWriter(f) as w:
        copy_image(store, "multi", w, ("multi",))
    with OciLayoutTarReader(tmp_path / "multi.tar") as r:
        assert copy_image(r, "multi", Store(tmp_path / "t"), (), platform="linux/amd64") == amd
    assert read_layout(tmp_path / "multi.tar", "latest", platform="linux/arm64").manifest_digest == str(arm)
    with pytest.raises(StoreError, match="s390x"):
        copy_image(store, "multi", dst, (), platform="linux/s390x")


OUTPUTS = [
    ("type=oci,dest=out.tar", OutputSpec("oci", "out.tar")),
    ("type=oci,dest=dir,tar=false", OutputSpec("oci", "dir", tar=False)),
    ("type=docker,dest=-", OutputSpec("docker", "-")),
    ("type=local,dest=rootfs", OutputSpec("local", "rootfs")),
    ("rootfs", OutputSpec("local", "rootfs")),
    ("-", OutputSpec("tar", "-")),
    ("type=tar,dest=fs.tar,compression=zstd", OutputSpec("tar", "fs.tar", compression="zstd")),
    ('type=image,"name=a:1,b:2"', OutputSpec("image", names=("a:1", "b:2"))),
    ("type=image,name=a,push=true", OutputSpec("image", names=("a",), push=True)),
    ("type=registry,name=localhost:5000/a", OutputSpec("registry", names=("localhost:5000/a",), push=True)),
    ("type=oci,dest=x,compression=gzip,compression-level=9,force-compression=true",
     OutputSpec("oci", "x", compression="gzip", compression_level=9, force_compression=True)),
]


@pytest.mark.parametrize("text,spec", OUTPUTS)
def test_parse_output(text: str, spec: OutputSpec) -> None:
    assert parse_output(text) == spec


@pytest.mark.parametrize("text,why", [
    ("type=oci", "needs dest"),
    ("type=nope,dest=x", "unknown type"),
    ("dest=x", "type= is required"),
    ("type=oci,dest=x,colour=red", "unknown key"),
    ("type=oci,dest=x,compression=lz4", "compression"),
    ("type=local,dest=-", "dest=-"),
    ("type=oci,dest=-,tar=false", "dest=-"),
    ("type=registry,dest=x", "takes no dest"),
    ("type=oci,dest=x,tar=maybe", "boolean"),
    ("type=oci,dest=x,compression-level=high", "integer"),
    ("", "empty"),
])
def test_parse_output_errors(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_output(text)


def test_parse_output_bad_name() -> None:
    with pytest.raises(ReferenceError_):
        parse_output("type=image,name=Bad")


def test_export_rootfs_tar_and_local(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, _ = src
    export_image(store, "app:1", parse_output(f"type=tar,dest={tmp_path / 'fs.tar'}"))
    with tarfile.open(tmp_path / "fs.tar") as t:
        names = sorted(t.getnames())
        assert t.extractfile("etc/hello").read() == b"hello\n"  # type: ignore[union-attr]
    assert names == ["bin", "bin/link", "bin/sh", "etc", "etc/hello", "etc/os-release", "keep", "keep/new"]
    expected = flatten(read_layout(store.root, "docker.io/library/app:1").layers)
    assert sorted(expected) == names
    out = tmp_path / "rootfs"
    export_image(store, "app:1", parse_output(f"type=local,dest={out}"))
    assert (out / "etc/hello").read_bytes() == b"hello\n"
    assert (out / "bin/link").is_symlink() and not (out / "gone").exists()
    assert sorted(p.name for p in (out / "keep").iterdir()) == ["new"]


def test_export_to_stdout_stream_and_image(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = src
    buf = io.BytesIO()
    assert export_image(store, "app:1", parse_output("type=oci,dest=-"), stdout=buf) == d
    (tmp_path / "o.tar").write_bytes(buf.getvalue())
    check_invariants(read_layout(tmp_path / "o.tar", "1"))
    with pytest.raises(UsageError, match="output stream"):
        export_image(store, "app:1", parse_output("type=oci,dest=-"))
    export_image(store, d.hex[:12], parse_output("type=image,name=renamed:7"))
    assert store.resolve("renamed:7").digest == str(d)


def test_failed_export_leaves_no_file(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, _ = src
    img = store.image("app:1")
    store.blobs.path(img.manifest.layers[1].digest_value).unlink()
    with pytest.raises(StoreError):
        export_image(store, "app:1", parse_output(f"type=oci,dest={tmp_path / 'x.tar'}"))
    assert list(tmp_path.glob("*x.tar*")) == []


def test_docker_archive_contents(src: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = src
    path = tmp_path / "d.tar"
    export_image(store, "app:1", parse_output(f"type=docker,dest={path}"))
    with tarfile.open(path) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        names = set(t.getnames())
    img = store.image("app:1")
    assert manifest == [{"Config": f"blobs/sha256/{img.manifest.config.digest_value.hex}",
                         "RepoTags": ["app:1"],
                         "Layers": [f"blobs/sha256/{layer.digest_value.hex}" for layer in img.manifest.layers]}]
    assert {"oci-layout", "index.json", "repositories", f"blobs/sha256/{d.hex}"} <= names
    check_invariants(read_layout(path, "1"))
    w = DockerArchiveWriter(io.BytesIO())
    with pytest.raises(StoreError, match="image manifests"):
        w.put_manifest(b"{}", mt.OCI_INDEX, ())


def test_flatten_matches_the_independent_reader(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    layers = [
        {"a/": None, "a/x": b"1", "a/sub/": None, "a/sub/y": b"2", "d/": None, "d/k": b"k", "f": b"file"},
        {"a/.wh.sub": b"", "a/sub/": None, "a/sub/new": b"3",   # whiteout + re-create in one layer
         "d": b"now a file",                                    # a file replaces a directory
         "f/": None, "f/inner": b"i"},                          # a directory replaces a file
        {"z": "->f/inner", "gone/": None, "gone/g": b"g"},
        {".wh.gone": b""},
    ]
    put_image(store, layers, ("edge",))
    out = tmp_path / "fs.tar"
    export_image(store, "edge", parse_output(f"type=tar,dest={out}"))
    with tarfile.open(out) as t:
        ours = {m.name: (t.extractfile(m).read() if m.isreg() else m.type) for m in t.getmembers()}  # type: ignore[union-attr]
    ref = flatten(read_layout(store.root, "docker.io/library/edge:latest").layers)
    theirs = {p: (m.data if m.type == "file" else {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[m.type])
              for p, m in ref.items()}
    assert ours == theirs
    assert sorted(ours) == ["a", "a/sub", "a/sub/new", "a/x", "d", "f", "f/inner", "z"]


def test_recompression_is_deterministic(src: tuple[Store, Digest]) -> None:
    store, _ = src
    img = store.image("app:1")
    for target in ("gzip", "zstd"):
        a, _ = convert_compression(store.blobs, img.manifest_raw, img.config, target, force=True)
        b, _ = convert_compression(store.blobs, img.manifest_raw, img.config, target, force=True)
        assert a == b
        validate_image(store, Digest.of_bytes(a))


def test_registry_output_without_name_uses_the_build_tags() -> None:
    spec = parse_output("type=registry")
    assert spec.type == "registry" and spec.push and spec.names == ()


class _Rendezvous:
    """An in-memory source whose blob reads wait until ``n`` of them are in flight at once."""

    concurrent_reads = True

    def __init__(self, blobs: dict[str, bytes], n: int) -> None:
        import threading

        self.blobs = blobs
        self.barrier = threading.Barrier(n, timeout=20)

    def open_blob(self, digest: Digest) -> io.BytesIO:
        self.barrier.wait()  # raises BrokenBarrierError unless n reads overlap
        return io.BytesIO(self.blobs[str(digest)])


class _MemoryDestination:
    concurrent_writes = True

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def has_blob(self, digest: Digest) -> bool:
        return str(digest) in self.blobs

    def put_blob(self, digest: Digest, size: int, stream: io.BytesIO) -> None:
        self.blobs[str(digest)] = stream.read()


def test_copy_blobs_runs_copies_side_by_side_and_checks_each() -> None:
    from builder.oci.models import Descriptor
    from builder.transfer import copy_blobs

    data = {f"layer {i}".encode() for i in range(4)}
    blobs = {str(Digest.of_bytes(d)): d for d in data}
    descs = [Descriptor(mediaType=mt.OCI_LAYER_GZIP, digest=k, size=len(v)) for k, v in blobs.items()]
    dst = _MemoryDestination()
    copy_blobs(_Rendezvous(blobs, 4), dst, descs, None, workers=4)   # 4 reads were in flight at once
    assert dst.blobs == blobs
    # a blob whose bytes do not match its digest fails the copy
    bad = Descriptor(mediaType=mt.OCI_LAYER_GZIP, digest=str(Digest.of_bytes(b"other")), size=len(b"layer 0"))
    src = _Rendezvous({str(bad.digest): b"layer 0"}, 1)
    with pytest.raises(StoreError, match="digest mismatch"):
        copy_blobs(src, _MemoryDestination(), [bad], None)
