"""Which snapshot a step made last: ``<store>/cache/lineage/<key>`` holds a diff_id.

A hint, never a promise: the snapshot it names may have been pruned since (the reader checks)
and a lost or torn write only costs a slower step. The key is the caller's (a COPY's meaning
and its context directory, without the content digest: the step "as written"), so the next
run of the step finds the snapshot to take unchanged files from
(:mod:`builder.layer.linkunpack`). ``prune --all`` forgets them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..digest import Digest
from ..errors import StoreError

LINEAGE_DIR = "lineage"  # under <store>/cache


def _path(root: Path, key: str) -> Path:
    return Path(root) / "cache" / LINEAGE_DIR / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def last_snapshot(root: Path, key: str) -> Digest | None:
    """The diff_id recorded for ``key``, or None (none recorded, unreadable)."""
    try:
        return Digest.parse(_path(root, key).read_text().strip())
    except (OSError, ValueError):
        return None


def record_snapshot(root: Path, key: str, diff_id: Digest) -> None:
    """Record ``diff_id`` as the last snapshot of ``key`` (atomic; a failure is ignored)."""
    from .layout import write_file_atomic

    path = _path(root, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, (str(diff_id) + "\n").encode(), Path(root) / "tmp", durable=False)
    except (OSError, StoreError):
        pass
