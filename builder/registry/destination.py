"""Writing images to a registry: :class:`RegistryDestination` (an ``ImageDestination``).

Blobs first (each skipped when present, mounted from another repository of the same
registry when one is known to hold it, else uploaded), the manifest last: that is the order
``copy_image`` calls these methods in, and the registry refuses a manifest whose blobs are
missing anyway."""

from __future__ import annotations

from typing import BinaryIO, Iterable

from ..digest import Digest
from ..errors import RegistryError
from ._reference import ImageRef
from .client import RegistryClient
from .locations import BLOB_LOCATIONS, note_blob_location
from .endpoint import RepositoryEndpoint


class RegistryDestination(RepositoryEndpoint):
    """An ``ImageDestination`` writing one repository of a registry.

    ``mount_from``: repositories of the same registry to try a cross-repo mount from, before
    those this process has seen holding the blob. ``chunk_size``: see
    :class:`RegistryClient`. ``stats`` counts blobs by outcome (exists/mounted/uploaded)."""

    concurrent_writes = True  # the client is safe to use from several threads

    def __init__(self, ref: str | ImageRef, *, client: RegistryClient | None = None,
                 insecure: bool | None = None, mount_from: Iterable[str] = (),
                 chunk_size: int | None = None) -> None:
        super().__init__(ref, client=client, insecure=insecure, chunk_size=chunk_size)
        self.mount_from = tuple(mount_from)
        self.stats: dict[str, int] = {"exists": 0, "mounted": 0, "uploaded": 0}

    def has_blob(self, digest: Digest) -> bool:
        """HEAD the blob in this repository."""
        found = self.client.has_blob(self.ref.repository, digest)
        if found:
            note_blob_location(self.client.registry, self.ref.repository, digest)
        return found

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        """Upload (or mount, or skip) the blob; ``stream`` is read, not closed. Raises
        RegistryError and commits nothing when the bytes do not match ``digest``/``size``."""
        if size < 0:
            raise RegistryError(f"blob {digest}: negative size {size}")
        candidates = list(self.mount_from) + BLOB_LOCATIONS.get(self.client.registry, digest)
        how = self.client.upload_blob(self.ref.repository, digest, size, stream, mount_from=candidates)
        self.stats[how] += 1
        note_blob_location(self.client.registry, self.ref.repository, digest)

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...] = ()) -> Digest:
        """PUT the manifest bytes unchanged under each tag, or by digest when ``tags`` is
        empty; returns their digest."""
        digest = Digest.of_bytes(data)
        refs = tags or (str(digest),)
        for ref in refs:
            self.client.put_manifest(self.ref.repository, ref, data, media_type)
        return digest
