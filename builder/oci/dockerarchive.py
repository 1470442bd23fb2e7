"""A ``docker load`` tar, written in one stream, as Docker 25+ ``docker save`` lays it out.

Members: ``blobs/sha256/<hex>`` for layers, configs and manifests; ``manifest.json`` (a list of
``{"Config", "RepoTags", "Layers"}`` with blob paths and familiar tags); ``repositories`` (the
legacy map name -> tag -> top layer id, kept for old loaders); and ``oci-layout`` + ``index.json``
so the same tar is also an OCI layout (``index.json`` entries annotated with
``io.containerd.image.name`` = full name and ``org.opencontainers.image.ref.name`` = tag).

:class:`DockerArchiveWriter` is an ImageDestination; only image manifests (not indexes) can be
put. :meth:`~DockerArchiveWriter.close` writes the JSON files and ends the tar; the output
stream is not closed. Errors raise StoreError; a tar that raised mid-way must be discarded.
"""

from __future__ import annotations

import io
import json
from types import TracebackType
from typing import BinaryIO

from ..digest import Digest
from ..errors import StoreError
from . import mediatypes as mt
from .layoutdir import TarBlobWriter, _merge_entry, tag_annotations
from .models import Descriptor, ImageConfig, Index, Manifest, OciLayout, canonical_json, parse_json
from .reference import parse_reference

_SMALL = 1 << 20


class DockerArchiveWriter:
    """ImageDestination producing a docker-archive tar on ``out``; see the module docstring."""

    def __init__(self, out: BinaryIO) -> None:
        self._w = TarBlobWriter(out)
        self._small: dict[Digest, bytes] = {}
        self._images: list[dict[str, object]] = []
        self._entries: list[Descriptor] = []
        self._repositories: dict[str, dict[str, str]] = {}
        self._closed = False

    def has_blob(self, digest: Digest) -> bool:
        return self._w.has_blob(digest)

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        if size <= _SMALL and not self._w.has_blob(digest):
            data = stream.read(size + 1)
            self._w.put_blob(digest, size, io.BytesIO(data))
            if data[:1] == b"{":
                self._small[digest] = data
            return
        self._w.put_blob(digest, size, stream)

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...]) -> Digest:
        """Record an image manifest (its config and layers must already be put)."""
        if not mt.is_manifest(media_type):
            raise StoreError(f"a docker archive holds image manifests, not {media_type}")
        man = parse_json(Manifest, data, origin="manifest")
        for child in [man.config, *man.layers]:
            if not self._w.has_blob(child.digest_value):
                raise StoreError(f"manifest names blob {child.digest} that was not written")
        platform = None
        cfg_raw = self._small.get(man.config.digest_value)
        if cfg_raw is not None:
            try:
                platform = parse_json(ImageConfig, cfg_raw, origin="config").platform
            except StoreError:
                platform = None
        digest = self._w.put_bytes(data)
        familiar: list[str] = []
        base = Descriptor(mediaType=media_type, digest=str(digest), size=len(data), platform=platform)
        for name in tags:
            ref = parse_reference(name)
            tag = ref.tag or "latest"
            familiar.append(f"{ref.familiar_name}:{tag}")
            self._entries = _merge_entry(self._entries, base.model_copy(update={"annotations": tag_annotations(name)}))
            if man.layers:
                self._repositories.setdefault(ref.familiar_name, {})[tag] = man.layers[-1].digest_value.hex
        if not tags:
            self._entries = _merge_entry(self._entries, base)

        def path(d: Descriptor) -> str:
            return f"blobs/{d.digest_value.algorithm}/{d.digest_value.hex}"

        self._images.append({"Config": path(man.config), "RepoTags": familiar or None,
                             "Layers": [path(layer) for layer in man.layers]})
        return digest

    def abort(self) -> None:
        """Stop after an error without finishing the tar (the caller discards the output)."""
        self._closed = True
        self._w.abort()

    def close(self) -> None:
        """Write index.json, manifest.json, oci-layout, repositories; end the tar."""
        if self._closed:
            return
        self._closed = True
        self._w.add_file("index.json", canonical_json(Index(mediaType=mt.OCI_INDEX, manifests=self._entries)))
        self._w.add_file("manifest.json", json.dumps(self._images, separators=(",", ":")).encode())
        self._w.add_file("oci-layout", canonical_json(OciLayout()))
        if self._repositories:
            self._w.add_file("repositories", json.dumps(self._repositories, separators=(",", ":"),
                                                        sort_keys=True).encode())
        self._w.finish()

    def __enter__(self) -> "DockerArchiveWriter":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()
