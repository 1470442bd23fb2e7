"""The Digest value type: ``algorithm:hex``; :func:`small_hash`, the hasher for short inputs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

if TYPE_CHECKING:
    from hashlib import _Hash

SMALL = 1 << 20  # bytes up to which small_hash uses Python's own sha256/sha512


def small_hash(algorithm: str = "sha256", data: bytes = b"") -> _Hash:
    """A hasher of ``algorithm`` fed ``data``, for inputs that stay short (cache keys, names,
    configs, manifests: at most about :data:`SMALL` bytes in all). For sha256/sha512 it is
    Python's own implementation, whose module loads in ~0.3 ms, where ``hashlib`` loads
    OpenSSL's libcrypto (~2 ms, the largest import of a fully cached rebuild). Streams of
    layers, blobs and files use ``hashlib``, which is several times faster per byte here; the
    digests are the same. Raises ValueError for an unknown algorithm (as hashlib.new does)."""
    if len(data) <= SMALL:
        try:
            if algorithm == "sha256":
                from _sha256 import sha256  # type: ignore[import-not-found, unused-ignore]  # 3.11's module

                return cast("_Hash", sha256(data))
            if algorithm == "sha512":
                from _sha512 import sha512  # type: ignore[import-not-found, unused-ignore]

                return cast("_Hash", sha512(data))
        except ImportError:  # built without them (3.12 names the module _sha2): hashlib's
            pass
    import hashlib

    return hashlib.new(algorithm, data)

_DIGEST_RE = re.compile(r"^(sha256):([a-f0-9]{64})$|^(sha512):([a-f0-9]{128})$")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A content digest. Only sha256 and sha512 are accepted."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        """Parse ``sha256:<64 hex>``; raises ValueError on anything else."""
        m = _DIGEST_RE.match(text)
        if not m:
            raise ValueError(f"invalid digest {text!r}")
        algo, hexpart = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        return cls(algo, hexpart)

    @classmethod
    def of_bytes(cls, data: bytes) -> "Digest":
        return cls("sha256", small_hash("sha256", data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


def hash_stream(stream: BinaryIO, algorithm: str = "sha256", chunk: int = 1 << 20) -> tuple[str, int]:
    """(hex digest, bytes read) of everything left in ``stream`` (read in bounded chunks, not
    closed)."""
    import hashlib

    h = hashlib.new(algorithm)
    n = 0
    while True:
        piece = stream.read(chunk)
        if not piece:
            return h.hexdigest(), n
        h.update(piece)
        n += len(piece)
