"""The image invariant checker every test (and ``pybuild`` itself, on demand) runs.

:func:`check_image` returns the list of problems (empty when the image is sound);
:func:`validate_image` raises StoreError listing them. Checked, for a manifest (an index is
checked entry by entry):

* the manifest bytes hash to the digest asked for; the config and every layer blob match
  their descriptor's digest and size (streamed, never read whole);
* each layer decompressed (by its media type) hashes to the config's ``rootfs.diff_ids[i]``,
  and there are as many diff_ids as layers;
* history entries without ``empty_layer`` number as many as the layers;
* media types are consistent: an OCI manifest names an OCI config and OCI layers, a Docker
  manifest Docker ones; layer media types are known.
"""

from __future__ import annotations

from typing import BinaryIO

from .digest import Digest, hash_stream
from .errors import PybuildError, StoreError
from .oci import mediatypes as mt
from .oci.models import ImageConfig, Index, Manifest, parse_json
from .oci.transport import ImageSource

_CHUNK = 1 << 20


def _hash_stream(stream: BinaryIO, algorithm: str = "sha256") -> tuple[str, int]:
    return hash_stream(stream, algorithm, _CHUNK)


def _read_all(source: ImageSource, d: Digest, limit: int = 16 << 20) -> bytes:
    with source.open_blob(d) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"blob {d} is too large for JSON")
    return data


def check_image(source: ImageSource, manifest_digest: Digest | str) -> list[str]:
    """Problems found in the image (manifest or index) ``manifest_digest`` of ``source``."""
    d = manifest_digest if isinstance(manifest_digest, Digest) else Digest.parse(manifest_digest)
    problems: list[str] = []
    try:
        data, media_type = source.get_manifest(str(d))
    except PybuildError as e:
        return [f"manifest {d}: cannot read: {e}"]
    if Digest.of_bytes(data) != d:
        problems.append(f"manifest {d}: bytes hash to {Digest.of_bytes(data)}")
    try:
        if mt.is_index(media_type):
            index = parse_json(Index, data, origin=f"index {d}")
            for child in index.manifests:
                if mt.is_manifest(child.mediaType) or mt.is_index(child.mediaType):
                    problems += check_image(source, child.digest)
            return problems
        _check_manifest(source, d, data, media_type, problems)
    except PybuildError as e:
        problems.append(str(e))
    return problems


def _check_manifest(source: ImageSource, d: Digest, data: bytes, media_type: str, problems: list[str]) -> None:
    man = parse_json(Manifest, data, origin=f"manifest {d}")
    if man.mediaType is not None and man.mediaType != media_type:
        problems.append(f"manifest {d}: mediaType {man.mediaType} but served as {media_type}")
    docker = media_type == mt.DOCKER_MANIFEST
    if docker and man.config.mediaType != mt.DOCKER_CONFIG:
        problems.append(f"manifest {d}: Docker manifest with config type {man.config.mediaType}")
    if not docker and mt.is_docker(man.config.mediaType):
        problems.append(f"manifest {d}: OCI manifest with Docker config type {man.config.mediaType}")
    cfg_d = man.config.digest_value
    cfg_raw = _read_all(source, cfg_d)
    if Digest.of_bytes(cfg_raw) != cfg_d:
        problems.append(f"config {cfg_d}: bytes hash to {Digest.of_bytes(cfg_raw)}")
    if len(cfg_raw) != man.config.size:
        problems.append(f"config {cfg_d}: size {len(cfg_raw)} but descriptor says {man.config.size}")
    config = parse_json(ImageConfig, cfg_raw, origin=f"config {cfg_d}")
    diff_ids = config.rootfs.diff_ids
    if config.rootfs.type != "layers":
        problems.append(f"config {cfg_d}: rootfs.type is {config.rootfs.type!r}, not 'layers'")
    if len(diff_ids) != len(man.layers):
        problems.append(f"manifest {d}: {len(man.layers)} layers but {len(diff_ids)} diff_ids")
    if config.history is not None:
        non_empty = sum(1 for h in config.history if not h.empty_layer)
        if non_empty != len(man.layers):
            problems.append(f"config {cfg_d}: {non_empty} non-empty history entries for {len(man.layers)} layers")
    for i, layer in enumerate(man.layers):
        if not mt.is_layer(layer.mediaType):
            problems.append(f"layer {i} {layer.digest}: unknown media type {layer.mediaType}")
            continue
        if docker != mt.is_docker(layer.mediaType):
            problems.append(f"layer {i} {layer.digest}: media type {layer.mediaType} in a "
                            f"{'Docker' if docker else 'OCI'} manifest")
        ld = layer.digest_value
        with source.open_blob(ld) as f:
            hexd, n = _hash_stream(f, ld.algorithm)
        if hexd != ld.hex:
            problems.append(f"layer {i} {ld}: bytes hash to {ld.algorithm}:{hexd}")
        if n != layer.size:
            problems.append(f"layer {i} {ld}: size {n} but descriptor says {layer.size}")
        if i < len(diff_ids):
            from .transfer import open_decompressed

            with source.open_blob(ld) as f:
                try:
                    raw = open_decompressed(f, mt.layer_compression(layer.mediaType))
                    diff_hex, _ = _hash_stream(raw)
                except (OSError, EOFError, ValueError) as e:
                    problems.append(f"layer {i} {ld}: cannot decompress: {e}")
                    continue
            if f"sha256:{diff_hex}" != diff_ids[i]:
                problems.append(f"layer {i} {ld}: diff_id sha256:{diff_hex} but config says {diff_ids[i]}")


def validate_image(source: ImageSource, manifest_digest: Digest | str) -> None:
    """Raise StoreError listing every problem :func:`check_image` finds; return None if sound."""
    problems = check_image(source, manifest_digest)
    if problems:
        raise StoreError(f"image {manifest_digest} is invalid:\n  " + "\n  ".join(problems))
