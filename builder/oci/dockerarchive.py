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

import json
from typing import BinaryIO

from ..digest import Digest
from ..errors import StoreError
from . import mediatypes as mt
from .layoutdir import OciLayoutTarWriter
from .models import Descriptor, Manifest, parse_json
from .reference import parse_reference

class DockerArchiveWriter(OciLayoutTarWriter):
    """ImageDestination producing a docker-archive tar on ``out``; see the module docstring.
    It is an OCI layout tar (blobs, ``index.json``, ``oci-layout``) plus Docker's own files."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self._images: list[dict[str, object]] = []
        self._repositories: dict[str, dict[str, str]] = {}

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...]) -> Digest:
        """Record an image manifest (its config and layers must already be put)."""
        if not mt.is_manifest(media_type):
            raise StoreError(f"a docker archive holds image manifests, not {media_type}")
        digest = super().put_manifest(data, media_type, tags)
        man = parse_json(Manifest, data, origin="manifest")
        familiar: list[str] = []
        for name in tags:
            ref = parse_reference(name)
            tag = ref.tag or "latest"
            familiar.append(f"{ref.familiar_name}:{tag}")
            if man.layers:
                self._repositories.setdefault(ref.familiar_name, {})[tag] = man.layers[-1].digest_value.hex

        def path(d: Descriptor) -> str:
            return f"blobs/{d.digest_value.algorithm}/{d.digest_value.hex}"

        self._images.append({"Config": path(man.config), "RepoTags": familiar or None,
                             "Layers": [path(layer) for layer in man.layers]})
        return digest

    def close(self) -> None:
        """Write manifest.json and repositories, then index.json and oci-layout; end the tar."""
        if self._closed:
            return
        self._w.add_file("manifest.json", json.dumps(self._images, separators=(",", ":")).encode())
        if self._repositories:
            self._w.add_file("repositories", json.dumps(self._repositories, separators=(",", ":"),
                                                        sort_keys=True).encode())
        super().close()
