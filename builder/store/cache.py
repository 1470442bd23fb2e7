"""Cache records: cache key -> the layer a step produced (or "no layer").

Records live in ``<store>/cache/records/<hex>.json``; writes are atomic (temp + rename). A record
is only trusted when the blob it names is still in the store (checked by the caller).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """A cache record: the step's key, its layer (None: the step made none) and what else the step left."""

    key: str
    layer: dict[str, Any] | None     # {"digest","diff_id","size","media_type"} or None (no layer)
    extra: dict[str, Any]


class CacheStore:
    """Key/value records under ``root`` (created on demand). Not locked: records are immutable
    and written atomically, so concurrent writers of the same key write the same meaning."""

    def __init__(self, root: Path) -> None:
        self.root = root / "cache" / "records"
        self._tmp = root / "tmp"  # temp files of record writes (same file system; swept by PID)

    def _path(self, key: str) -> Path:
        return self.root / (key.split(":", 1)[-1] + ".json")

    def get(self, key: str) -> CacheRecord | None:
        try:
            data = json.loads(self._path(key).read_bytes())
        except (OSError, ValueError):
            return None
        return CacheRecord(key=key, layer=data.get("layer"), extra=data.get("extra", {}))

    def put(self, record: CacheRecord) -> None:
        from .layout import write_file_atomic

        body = json.dumps({"key": record.key, "layer": record.layer, "extra": record.extra},
                          sort_keys=True).encode()
        self.root.mkdir(parents=True, exist_ok=True)
        write_file_atomic(self._path(record.key), body, self._tmp, durable=False)

    def records(self) -> Iterator[CacheRecord]:
        if not self.root.is_dir():
            return
        for p in sorted(self.root.glob("*.json")):
            rec = self.get("sha256:" + p.stem)
            if rec is not None:
                yield rec

    def remove(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def clear(self) -> int:
        n = 0
        for rec in list(self.records()):
            self.remove(rec.key)
            n += 1
        return n
