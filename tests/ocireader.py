"""An independent, minimal OCI image layout reader and invariant checker for tests.

Deliberately shares no code with ``builder``: only json, hashlib, gzip, zstandard, tarfile
and jsonschema (against ../shared/conformance/oci-image-spec/schema). Everything is read
into memory: test images are small.

    img = read_layout(path, "latest")       # a layout directory or an OCI layout tar
    check_invariants(img)                   # AssertionError listing every problem
    fs = flatten(img.layers)                # {path: Member} with whiteouts applied
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(os.environ.get("PYBUILD_SHARED", Path(__file__).resolve().parent.parent.parent / "shared")) \
    / "conformance" / "oci-image-spec" / "schema"
_BASE = "https://opencontainers.org/schema/"
_ALIASES = {
    "config-schema.json": ["image/config"],
    "content-descriptor.json": ["descriptor", "image/content-descriptor.json"],
    "defs-descriptor.json": ["defs-descriptor.json", "image/defs-descriptor.json", "image/descriptor/mediaType"],
    "defs.json": ["defs.json", "image/defs.json", "image/descriptor/defs.json"],
    "image-index-schema.json": ["image/index"],
    "image-layout-schema.json": ["image/layout"],
    "image-manifest-schema.json": ["image/manifest"],
}

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "tar",
}


@dataclass(frozen=True)
class Member:
    """One tar member of a layer, with its content for regular files."""

    name: str
    type: str          # "file", "dir", "symlink", "hardlink", "char", "block", "fifo"
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str
    mtime: int
    data: bytes | None
    xattrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Image:
    layout: Path
    index: dict[str, Any]
    manifest_digest: str
    manifest_raw: bytes
    manifest: dict[str, Any]
    config_raw: bytes
    config: dict[str, Any]
    layers: list[list[Member]]
    blobs: dict[str, bytes]  # every blob read: digest -> bytes


class _Layout:
    """Read access to a layout directory or tar."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] | None = None
        if path.is_file():
            self.files = {}
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        f = tar.extractfile(m)
                        assert f is not None
                        self.files[m.name[2:] if m.name.startswith("./") else m.name] = f.read()

    def read(self, name: str) -> bytes:
        if self.files is not None:
            if name not in self.files:
                raise AssertionError(f"{self.path}: missing {name}")
            return self.files[name]
        p = self.path / name
        if not p.is_file():
            raise AssertionError(f"{self.path}: missing {name}")
        return p.read_bytes()

    def blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        return self.read(f"blobs/{algo}/{hexd}")


def _decompress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    return data


def _members(tar_bytes: bytes) -> list[Member]:
    out: list[Member] = []
    kinds = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for m in tar.getmembers():
            data = None
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                data = f.read()
            xattrs = {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            out.append(Member(m.name, kinds.get(m.type, repr(m.type)), m.mode, m.uid, m.gid, m.size,
                              m.linkname, int(m.mtime), data, xattrs))
    return out


def _pick(index: dict[str, Any], tag: str | None) -> dict[str, Any]:
    entries = index.get("manifests") or []
    if tag is None:
        assert len(entries) == 1, f"index has {len(entries)} entries; give a tag"
        return entries[0]
    if tag.startswith("sha256:"):
        hits = [e for e in entries if e["digest"] == tag]
    else:
        hits = [e for e in entries if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
        if not hits:
            hits = [e for e in entries if (e.get("annotations") or {}).get("io.containerd.image.name") == tag]
        if not hits:
            hits = [e for e in entries
                    if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name", "").endswith(":" + tag)]
    assert len(hits) == 1, f"tag {tag!r}: {len(hits)} matching entries in index.json"
    return hits[0]


def read_layout(path: Path | str, tag: str | None = None, *, platform: str = "linux/amd64") -> Image:
    """Read the image ``tag`` (ref.name, containerd name, ``:TAG`` suffix or digest) of a layout
    directory or tar. An index entry is resolved to ``platform``."""
    lay = _Layout(Path(path))
    index = json.loads(lay.read("index.json"))
    entry = _pick(index, tag)
    blobs: dict[str, bytes] = {}
    digest = entry["digest"]
    raw = lay.blob(digest)
    blobs[digest] = raw
    doc = json.loads(raw)
    while entry.get("mediaType") == OCI_INDEX or "manifests" in doc:
        os_, arch = platform.split("/")[:2]
        cands = [m for m in doc["manifests"] if (m.get("platform") or {}).get("os") == os_
                 and (m.get("platform") or {}).get("architecture") == arch]
        assert cands, f"no manifest for {platform}"
        entry = cands[0]
        digest = entry["digest"]
        raw = lay.blob(digest)
        blobs[digest] = raw
        doc = json.loads(raw)
    manifest = doc
    config_raw = lay.blob(manifest["config"]["digest"])
    blobs[manifest["config"]["digest"]] = config_raw
    layers = []
    for ld in manifest["layers"]:
        b = lay.blob(ld["digest"])
        blobs[ld["digest"]] = b
        layers.append(_members(_decompress(b, LAYER_TYPES.get(ld["mediaType"], "tar"))))
    return Image(Path(path), index, digest, raw, manifest, config_raw, json.loads(config_raw), layers, blobs)


# ---- schema validation -----------------------------------------------------------------------

_REGISTRY = None


def _validator(schema_file: str) -> Any:
    global _REGISTRY
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    if _REGISTRY is None:
        pairs = []
        for name, aliases in _ALIASES.items():
            res = Resource.from_contents(json.loads((SCHEMA_DIR / name).read_text()), default_specification=DRAFT4)
            pairs += [(_BASE + a, res) for a in aliases]
        _REGISTRY = Registry().with_resources(pairs)
    return Draft4Validator(json.loads((SCHEMA_DIR / schema_file).read_text()), registry=_REGISTRY)


def schema_errors(doc: Any, schema_file: str) -> list[str]:
    """Messages of every JSON-schema violation of ``doc`` against ``schema_file``."""
    return [f"{schema_file}: {'/'.join(map(str, e.path))}: {e.message}"
            for e in _validator(schema_file).iter_errors(doc)]


# ---- invariants --------------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def problems(img: Image) -> list[str]:
    """Every broken invariant of ``img`` (empty list when sound)."""
    out: list[str] = []
    man, cfg = img.manifest, img.config
    if _sha(img.manifest_raw) != img.manifest_digest:
        out.append("manifest digest mismatch")
    mtype = man.get("mediaType", OCI_MANIFEST)
    if mtype == OCI_MANIFEST:
        out += schema_errors(man, "image-manifest-schema.json")
        out += schema_errors(cfg, "config-schema.json")
    out += schema_errors(img.index, "image-index-schema.json")
    if man["config"]["digest"] != _sha(img.config_raw):
        out.append("config digest mismatch")
    if man["config"]["size"] != len(img.config_raw):
        out.append("config size mismatch")
    want_cfg = DOCKER_CONFIG if mtype == DOCKER_MANIFEST else OCI_CONFIG
    if man["config"]["mediaType"] != want_cfg:
        out.append(f"config media type {man['config']['mediaType']} in a {mtype}")
    diff_ids = cfg.get("rootfs", {}).get("diff_ids", [])
    if cfg.get("rootfs", {}).get("type") != "layers":
        out.append("rootfs.type is not 'layers'")
    if len(diff_ids) != len(man["layers"]):
        out.append(f"{len(man['layers'])} layers, {len(diff_ids)} diff_ids")
    for i, ld in enumerate(man["layers"]):
        blob = img.blobs[ld["digest"]]
        if _sha(blob) != ld["digest"]:
            out.append(f"layer {i}: digest mismatch")
        if len(blob) != ld["size"]:
            out.append(f"layer {i}: size mismatch")
        kind = LAYER_TYPES.get(ld["mediaType"])
        if kind is None:
            out.append(f"layer {i}: unknown media type {ld['mediaType']}")
            continue
        if (mtype == DOCKER_MANIFEST) != ld["mediaType"].startswith("application/vnd.docker."):
            out.append(f"layer {i}: media type {ld['mediaType']} in a {mtype}")
        if i < len(diff_ids) and _sha(_decompress(blob, kind)) != diff_ids[i]:
            out.append(f"layer {i}: diff_id mismatch")
    hist = cfg.get("history")
    if hist is not None:
        n = sum(1 for h in hist if not h.get("empty_layer"))
        if n != len(man["layers"]):
            out.append(f"{n} non-empty history entries for {len(man['layers'])} layers")
    return out


def check_invariants(img: Image) -> None:
    """AssertionError listing every broken invariant of ``img``."""
    found = problems(img)
    assert not found, "image invariants broken:\n  " + "\n  ".join(found)


def check_layout(path: Path | str) -> None:
    """The layout's oci-layout and index.json are schema-valid and every entry's blob exists."""
    lay = _Layout(Path(path))
    errs = schema_errors(json.loads(lay.read("oci-layout")), "image-layout-schema.json")
    index = json.loads(lay.read("index.json"))
    errs += schema_errors(index, "image-index-schema.json")
    for e in index.get("manifests", []):
        data = lay.blob(e["digest"])
        if _sha(data) != e["digest"] or len(data) != e["size"]:
            errs.append(f"index entry {e['digest']}: blob mismatch")
    assert not errs, "layout invalid:\n  " + "\n  ".join(errs)


# ---- file system view ------------------------------------------------------------------------

def _clean(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def flatten(layers: list[list[Member]]) -> dict[str, Member]:
    """The merged file system: path -> Member (bottom layer first; ``.wh.`` whiteouts and
    ``.wh..wh..opq`` opaque markers applied; a non-directory hides what lay below it)."""
    fs: dict[str, tuple[int, Member]] = {}
    for i, layer in enumerate(layers):
        for m in layer:
            name = _clean(m.name)
            if not name or name == ".":
                continue
            parent, _, base = name.rpartition("/")
            if base == ".wh..wh..opq":
                for p in [p for p, (li, _) in fs.items() if li < i and p.startswith(parent + "/" if parent else "")]:
                    del fs[p]
                continue
            if base.startswith(".wh."):
                target = (parent + "/" if parent else "") + base[4:]
                for p in [p for p, (li, _) in fs.items() if li < i and (p == target or p.startswith(target + "/"))]:
                    del fs[p]
                continue
            if m.type != "dir":
                for p in [p for p, (li, _) in fs.items() if li < i and p.startswith(name + "/")]:
                    del fs[p]
            fs[name] = (i, Member(name, m.type, m.mode, m.uid, m.gid, m.size, _clean(m.linkname)
                                  if m.type == "hardlink" else m.linkname, m.mtime, m.data, m.xattrs))
    return {p: m for p, (_, m) in sorted(fs.items())}


# ---- building test content (pure Python, no builder) -------------------------------------------

def make_layer_tar(files: dict[str, bytes | str | None], *, mode: int = 0o644) -> bytes:
    """An uncompressed layer tar: ``path -> bytes`` (a file), ``"->target"`` (a symlink) or
    None (a directory). Deterministic (mtime 0, root owner)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            if content is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            elif isinstance(content, str) and content.startswith("->"):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, content[2:], 0o777
                tar.addfile(ti)
            else:
                data = content.encode() if isinstance(content, str) else content
                ti.size, ti.mode = len(data), mode
                tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0)."""
    return gzip.compress(data, mtime=0)
