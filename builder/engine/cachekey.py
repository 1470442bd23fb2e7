"""Cache keys: a hash chain (DESIGN.md "Cache key").

``k0 = H(version, base manifest digest, platform)``;
``kN = H(kN-1, step kind, the step's expanded meaning, content digest of its inputs)``.
Parts are length-prefixed so no two different part lists hash alike.
"""

from __future__ import annotations

import json
from typing import Any

from ..digest import small_hash

CACHE_VERSION = "pybuild-cache-1"


def _h(*parts: str) -> str:
    m = small_hash()
    for p in parts:
        b = p.encode("utf-8", "surrogateescape")
        m.update(len(b).to_bytes(8, "big"))
        m.update(b)
    return "sha256:" + m.hexdigest()


def base_key(base_digest: str, platform: str) -> str:
    """The first key of a stage: which base image, for which platform."""
    return _h(CACHE_VERSION, base_digest or "scratch", platform)


def step_key(parent: str, kind: str, meaning: Any, inputs: str = "") -> str:
    """The key of a step after ``parent``. ``meaning`` is any JSON-able value (canonicalised)."""
    text = meaning if isinstance(meaning, str) else json.dumps(meaning, sort_keys=True, separators=(",", ":"),
                                                              default=str)
    return _h(parent, kind, text, inputs)
