"""Media type constants for OCI image-spec v1 and Docker image manifest v2 schema 2.

Only constants and small predicates live here; nothing is imported at module load.
"""

from __future__ import annotations

# OCI image spec v1
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"

# Docker image manifest v2, schema 2
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"  # seen in the wild (docker save)

# Annotations
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# layer media type -> compression name ("gzip", "zstd", "uncompressed")
_LAYER_COMPRESSION = {
    OCI_LAYER_TAR: "uncompressed",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST_TAR: "uncompressed",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
    DOCKER_LAYER_TAR: "uncompressed",
}
LAYERS = frozenset(_LAYER_COMPRESSION)
COMPRESSIONS = ("gzip", "zstd", "uncompressed")


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFESTS


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_layer(media_type: str) -> bool:
    return media_type in _LAYER_COMPRESSION


def layer_compression(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``uncompressed`` for a known layer media type; ValueError otherwise."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ValueError(f"unknown layer media type {media_type!r}") from None


def is_docker(media_type: str) -> bool:
    """True for Docker schema 2 media types (manifest, list, config, layers)."""
    return media_type.startswith("application/vnd.docker.")


def oci_layer_type(compression: str) -> str:
    """The OCI layer media type for ``gzip``/``zstd``/``uncompressed``."""
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "uncompressed": OCI_LAYER_TAR}[compression]


def docker_layer_type(compression: str) -> str:
    """The Docker layer media type; Docker schema 2 has no zstd type (raises ValueError)."""
    if compression == "gzip":
        return DOCKER_LAYER_GZIP
    if compression == "uncompressed":
        return DOCKER_LAYER_TAR
    raise ValueError(f"Docker schema 2 has no media type for {compression} layers")


def contradiction(body: bytes, media_type: str) -> str | None:
    """Why manifest/index ``body`` contradicts the ``media_type`` it was served or described
    as (its own ``mediaType`` field differs, or its shape is the other kind), else None. Types
    this module does not know as manifests or indexes are not judged."""
    if not (is_manifest(media_type) or is_index(media_type)):
        return None
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        return f"it is said to be {media_type} but is not JSON"
    if not isinstance(doc, dict):
        return f"it is said to be {media_type} but is not a JSON object"
    own = doc.get("mediaType")
    if isinstance(own, str) and own and own != media_type:
        return f"it is said to be {media_type} but its mediaType field says {own}"
    if is_index(media_type) and not isinstance(doc.get("manifests"), list):
        return f"it is said to be an index ({media_type}) but has no manifests list"
    if is_manifest(media_type) and ("manifests" in doc or not isinstance(doc.get("config"), dict)
                                    or not isinstance(doc.get("layers"), list)):
        return f"it is said to be a manifest ({media_type}) but lacks config and layers"
    return None
