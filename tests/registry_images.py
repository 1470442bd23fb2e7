"""Small test images built as raw blobs (tar layer, config JSON, manifest JSON) and OCI layouts.

No pybuild code is used to build them, so registry tests do not depend on the store or the
layer writer.
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

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(tar: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(tar, mtime=0)
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=3).compress(tar)
    raise ValueError(kind)


@dataclass
class RawImage:
    """An image as raw bytes: ``blobs`` maps digest -> bytes (config and layers)."""

    manifest: bytes
    config_digest: str
    layer_digests: list[str]
    blobs: dict[str, bytes] = field(default_factory=dict)
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_image(seed: str, *, arch: str = "amd64", variant: str | None = None, layers: int = 1,
               compression: str = "gzip", layer_bytes: int = 4096) -> RawImage:
    """A deterministic image whose layers hold ``layer_bytes`` of pseudo-random data each."""
    blobs: dict[str, bytes] = {}
    layer_descs, diff_ids, layer_digests = [], [], []
    for i in range(layers):
        content = b"".join(hashlib.sha256(f"{seed}/{i}/{c}".encode()).digest()
                           for c in range(-(-layer_bytes // 32)))
        tar = make_tar({f"data/{seed}-{i}.bin": content[:layer_bytes], f"etc/{seed}-{i}.txt": seed.encode()})
        blob = compress(tar, compression)
        d = sha256(blob)
        blobs[d] = blob
        diff_ids.append(sha256(tar))
        layer_digests.append(d)
        layer_descs.append({"mediaType": OCI_LAYER_GZIP if compression == "gzip" else OCI_LAYER_ZSTD,
                            "digest": d, "size": len(blob)})
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": f"test layer {i}"} for i in range(layers)]}
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    cd = sha256(config_bytes)
    blobs[cd] = config_bytes
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config_bytes)},
                "layers": layer_descs}
    return RawImage(json.dumps(manifest, separators=(",", ":")).encode(), cd, layer_digests, blobs)


def platform_of(img: RawImage) -> dict:
    cfg = json.loads(img.blobs[img.config_digest])
    p = {"architecture": cfg["architecture"], "os": cfg["os"]}
    if cfg.get("variant"):
        p["variant"] = cfg["variant"]
    return p


def make_index(images: list[RawImage]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": len(img.manifest), "platform": platform_of(img)}
        for img in images]}, separators=(",", ":")).encode()


def write_layout(root: Path, images: list[RawImage], tag: str, index: bytes | None = None) -> Path:
    """An OCI image layout with ``images`` and (when given) ``index`` tagged ``tag``; else the
    single image is tagged."""
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> str:
        d = sha256(data)
        (blobs_dir / d.split(":")[1]).write_bytes(data)
        return d

    for img in images:
        for data in img.blobs.values():
            put(data)
        put(img.manifest)
    if index is not None:
        top = {"mediaType": OCI_INDEX, "digest": put(index), "size": len(index)}
    else:
        top = {"mediaType": OCI_MANIFEST, "digest": images[0].digest, "size": len(images[0].manifest)}
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return root


def verify_layout_blobs(root: Path) -> int:
    """Check every blob of an OCI layout hashes to its name; returns how many were checked."""
    n = 0
    for path in (root / "blobs" / "sha256").iterdir():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for piece in iter(lambda: f.read(1 << 20), b""):
                h.update(piece)
        assert h.hexdigest() == path.name, f"corrupt blob {path}"
        n += 1
    return n


def verify_registry_storage(root: Path) -> int:
    """Check every blob stored by docker-registry's filesystem driver hashes to its name."""
    n = 0
    base = root / "docker" / "registry" / "v2" / "blobs" / "sha256"
    if not base.is_dir():
        return 0
    for data in base.glob("*/*/data"):
        h = hashlib.sha256()
        with open(data, "rb") as f:
            for piece in iter(lambda: f.read(1 << 20), b""):
                h.update(piece)
        assert h.hexdigest() == data.parent.name, f"registry holds a corrupt blob {data}"
        n += 1
    return n


def push(dest, img: RawImage, tags: tuple[str, ...]) -> str:
    """Push with an ImageDestination: blobs, then the manifest. Returns the manifest digest."""
    from builder.digest import Digest
    for d, data in img.blobs.items():
        dest.put_blob(Digest.parse(d), len(data), io.BytesIO(data))
    return str(dest.put_manifest(img.manifest, img.media_type, tags))


def read_all(stream) -> bytes:
    try:
        return stream.read()
    finally:
        stream.close()


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
