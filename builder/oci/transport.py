"""The two small interfaces every image location speaks: the store, an OCI layout directory,
a docker-archive tar and a registry. Pull, push and export are one ``copy_image``.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from ..digest import Digest


class ImageSource(Protocol):
    def get_manifest(self, ref: str) -> tuple[bytes, str]:
        """Raw manifest (or index) bytes and their media type for a tag or ``sha256:`` digest.

        Raises StoreError/RegistryError when ``ref`` names nothing. Never re-serialises."""

    def open_blob(self, digest: Digest) -> BinaryIO:
        """A readable stream of the blob; the caller closes it. The reader verifies nothing;
        copy routines verify the digest while streaming."""


class ImageDestination(Protocol):
    def has_blob(self, digest: Digest) -> bool:
        """True when the blob is already there (no upload needed)."""

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        """Store the blob read from ``stream`` (not closed here), verifying digest and size;
        nothing is stored on mismatch (raises). Idempotent."""

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...]) -> Digest:
        """Store the manifest bytes as given and point every tag at it; returns its digest."""
