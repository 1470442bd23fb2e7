"""Which repositories of a registry are known to hold a blob: the hint that lets an upload
try a cross-repo mount instead of sending the bytes again. Process-wide, bounded, thread-safe."""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..digest import Digest
from .auth import normalize_registry


class _BlobLocations:
    """Which repositories of a registry are known to hold a blob (bounded LRU, thread-safe).

    Filled by pulls and pushes of this process; read by uploads to try a cross-repo mount."""

    def __init__(self, limit: int = 20000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._map: OrderedDict[tuple[str, Digest], list[str]] = OrderedDict()

    def note(self, registry: str, repository: str, digest: Digest) -> None:
        key = (normalize_registry(registry), digest)
        with self._lock:
            repos = self._map.pop(key, [])
            if repository in repos:
                repos.remove(repository)
            repos.insert(0, repository)
            self._map[key] = repos[:8]
            while len(self._map) > self._limit:
                self._map.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._map.clear()

    def get(self, registry: str, digest: Digest) -> list[str]:
        with self._lock:
            return list(self._map.get((normalize_registry(registry), digest), ()))


BLOB_LOCATIONS = _BlobLocations()


def note_blob_location(registry: str, repository: str, digest: Digest) -> None:
    """Record that ``registry/repository`` holds ``digest`` (enables a later cross-repo mount)."""
    BLOB_LOCATIONS.note(registry, repository, digest)
