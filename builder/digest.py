"""The Digest value type: ``algorithm:hex``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

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
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


def hash_stream(stream: BinaryIO, algorithm: str = "sha256", chunk: int = 1 << 20) -> tuple[str, int]:
    """(hex digest, bytes read) of everything left in ``stream`` (read in bounded chunks, not
    closed)."""
    h = hashlib.new(algorithm)
    n = 0
    while True:
        piece = stream.read(chunk)
        if not piece:
            return h.hexdigest(), n
        h.update(piece)
        n += len(piece)
