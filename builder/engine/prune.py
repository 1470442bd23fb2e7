"""Store housekeeping: ``pybuild prune`` and ``pybuild du``.

Never removes anything a tag still needs: blobs reachable from tags are kept by the store's own
garbage collector; here we decide which cache records survive and which unpacked layers
(snapshots) are still referenced.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import Digest

if TYPE_CHECKING:
    from ..store.layout import Store


def _tree_size(path: Path) -> int:
    """Bytes allocated under ``path``, a file with several links counted once (snapshots share
    the inodes of unchanged files, builder.layer.linkunpack)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _tagged_layers(store: Store) -> tuple[set[str], set[str]]:
    """(blob digests, diff_ids) reachable from tags."""
    blobs: set[str] = set()
    diff_ids: set[str] = set()
    for name, _desc in store.tags():
        try:
            img = store.image(name)
        except Exception:
            continue
        manifest = json.loads(img.manifest_raw)
        config = json.loads(img.config_raw)
        blobs.update(layer["digest"] for layer in manifest.get("layers", []))
        diff_ids.update(config.get("rootfs", {}).get("diff_ids", []))
    return blobs, diff_ids


def prune_store(store: Store, *, all_cache: bool = False, keep_storage: int | None = None,
                until: float | None = None) -> int:
    """Remove cache records and ``RUN --mount=type=cache`` directories (all of them with
    ``all_cache``; else dangling records, those last used more than ``until`` seconds ago,
    and the oldest beyond ``keep_storage`` bytes, records and mounts together as buildx
    prune does), then unreferenced blobs, snapshots and explanation records.
    Returns the bytes freed. Runs under the store's ``gc.lock``: what a running command
    pinned or wrote since it started (its lease) is kept. A record's last use is when it was
    written (a cache hit writes nothing); a mount's is when a RUN last mounted it. What dead
    processes left (temp dirs, mounts, leases) goes first."""
    from ..store.stale import sweep

    with store.collecting() as leases:
        try:
            sweep(store.root)
        except OSError:
            pass  # best effort: `pybuild store check --repair` reports what is left
        return _prune(store, leases, all_cache=all_cache, keep_storage=keep_storage, until=until)


def _pinned_diff_ids(store: Store, pinned: frozenset[str]) -> set[str]:
    """diff_ids a live lease needs: those pinned directly and those of pinned manifests."""
    out = set(pinned)
    for p in pinned:
        try:
            d = Digest.parse(p)
            if not store.blobs.has(d) or store.blobs.size(d) > (4 << 20):
                continue
            with store.blobs.open(d) as f:
                if f.read(1) != b"{":
                    continue
            doc = json.loads(store.blobs.read_bytes(d, limit=4 << 20))
            cfg = (doc.get("config") or {}).get("digest") if isinstance(doc, dict) else None
            if cfg:
                config = json.loads(store.blobs.read_bytes(Digest.parse(cfg), limit=16 << 20))
                out.update(config.get("rootfs", {}).get("diff_ids", []))
        except Exception:  # noqa: BLE001 - a pin that names nothing readable protects nothing more
            continue
    return out


def _prune(store: Store, leases: Any, *, all_cache: bool, keep_storage: int | None, until: float | None) -> int:
    import time

    from ..store.cache import CacheRecord, CacheStore
    from ..store.snapshots import Snapshots
    from .cachemounts import MountUsage, list_mounts, remove_mount
    from .explain import ExplainStore

    cache = CacheStore(store.root)
    records = list(cache.records())
    mounts = [m for m in list_mounts(store.root) if not leases.protects_time(m.last_used)]
    freed_memo = 0
    if all_cache:
        for r in records:
            cache.remove(r.key)
        records = []
        freed_memo = _forget_hash_memos(store.root / "cache") + sum(remove_mount(m) for m in mounts)
    else:
        if until is not None:
            cutoff = time.time() - until
            for r in records:
                path = cache._path(r.key)
                if path.exists() and path.stat().st_mtime < cutoff:
                    cache.remove(r.key)
            for m in [m for m in mounts if m.last_used < cutoff]:
                freed_memo += remove_mount(m)
                mounts.remove(m)
            records = list(cache.records())
        alive = []
        snapshots = Snapshots(store.root / "snapshots")
        for r in records:
            if r.layer is not None and not _layer_present(store, snapshots, r.layer):
                cache.remove(r.key)
            else:
                alive.append(r)
        records = alive
        if keep_storage is not None:
            tagged_blobs, _ = _tagged_layers(store)
            sized: list[tuple[float, int, CacheRecord | MountUsage]] = []
            for r in records:
                path = cache._path(r.key)
                mtime = path.stat().st_mtime if path.exists() else 0.0
                size = (0 if r.layer is None or r.layer.get("digest") in tagged_blobs
                        else int(r.layer.get("size", 0)))
                sized.append((mtime, size, r))
            sized.extend((m.last_used, m.size, m) for m in mounts)
            sized.sort(key=lambda t: t[0], reverse=True)  # newest first survive
            total = 0
            for _mtime, size, item in sized:
                total += size
                if size and total > keep_storage:  # records costing nothing (tagged or no layer) stay
                    if isinstance(item, CacheRecord):
                        cache.remove(item.key)
                    else:
                        freed_memo += remove_mount(item)
            records = [r for r in cache.records()]
    keep = {Digest.parse(r.layer["digest"]) for r in records if r.layer is not None and r.layer.get("digest")}
    freed_memo += ExplainStore(store.root).prune({r.key for r in records})
    freed: int = store.gc(keep) + freed_memo
    # snapshots: keep those of tagged images and surviving cache records (for a lazy record,
    # one without a blob, the snapshot is the layer)
    _, tagged_diffs = _tagged_layers(store)
    wanted = tagged_diffs | {r.layer["diff_id"] for r in records if r.layer is not None}
    wanted |= _pinned_diff_ids(store, leases.pinned)
    snaps = Snapshots(store.root / "snapshots")
    for diff_id in list(snaps.list()):
        if str(diff_id) not in wanted:
            snap = snaps.get(diff_id)  # (Snapshots has no .path: the freed size was always 0)
            try:
                if snap is not None and leases.protects_time(snap.parent.stat().st_mtime):
                    continue  # made while a command runs
            except FileNotFoundError:
                continue
            size = _tree_size(snap) if snap is not None and snap.exists() else 0
            snaps.remove(diff_id)
            freed += size
    return freed


def _layer_present(store: Store, snapshots: Any, layer: dict[str, Any]) -> bool:
    """A record's layer is usable: its blob is stored, or it is lazy (no digest: not made
    yet) and its snapshot is there."""
    if layer.get("digest"):
        return bool(store.blobs.has(Digest.parse(layer["digest"])))
    return snapshots.get(Digest.parse(layer["diff_id"])) is not None


def usage(store: Store) -> dict[str, int]:
    """Bytes used by tagged images' blobs, other blobs (cache), unpacked layers and temp files."""
    tagged_blobs, _ = _tagged_layers(store)
    images = other = 0
    blob_dir = store.root / "blobs" / "sha256"
    if blob_dir.is_dir():
        for p in blob_dir.iterdir():
            size = p.stat().st_size
            if f"sha256:{p.name}" in tagged_blobs:
                images += size
            else:
                other += size
    from .cachemounts import list_mounts

    return {
        "images": images,
        "cache": other,
        "cache-mounts": sum(m.size for m in list_mounts(store.root)),
        "snapshots": _tree_size(store.root / "snapshots") if (store.root / "snapshots").exists() else 0,
        "tmp": _tree_size(store.root / "tmp") if (store.root / "tmp").exists() else 0,
    }


def _forget_hash_memos(cache_dir: Path) -> int:
    """Remove the context content-hash memos (and the one-file memo of earlier versions) and
    the steps' last-snapshot hints (builder.store.lineage); returns the bytes freed."""
    from ..store.lineage import LINEAGE_DIR
    from .context import MEMO_DIR

    freed = 0
    files = [f for sub in (MEMO_DIR, LINEAGE_DIR) if (cache_dir / sub).is_dir() for f in (cache_dir / sub).iterdir()]
    for f in files + [cache_dir / "filehash.json"]:
        try:
            freed += f.stat().st_size
            f.unlink()
        except FileNotFoundError:
            continue
    return freed


@dataclass(frozen=True, slots=True)
class CacheItem:
    """One entry of ``pybuild du --verbose``: a cache record or a cache mount."""

    kind: str          # "record" | "mount"
    id: str            # record key, or the mount's id
    description: str   # the step's history text, or the mount's directory
    size: int          # layer blob bytes (0 when the layer is tagged or absent), or bytes on disk
    last_used: float   # epoch seconds
    shared: bool = False   # a record whose layer a tagged image also holds


def cache_items(store: Store) -> list[CacheItem]:
    """Every cache record and cache mount of ``store``, newest use first."""
    from ..store.cache import CacheStore
    from .cachemounts import list_mounts

    tagged_blobs, _ = _tagged_layers(store)
    cache = CacheStore(store.root)
    out: list[CacheItem] = []
    for r in cache.records():
        try:
            mtime = cache._path(r.key).stat().st_mtime
        except OSError:
            continue
        layer = r.layer
        size = 0
        if layer is not None and layer.get("digest") and store.blobs.has(Digest.parse(layer["digest"])):
            size = int(layer["size"])
        shared = layer is not None and layer.get("digest") in tagged_blobs  # lazy: no blob yet
        out.append(CacheItem("record", r.key, str(r.extra.get("created_by", "")), size, mtime, shared))
    for m in list_mounts(store.root):
        out.append(CacheItem("mount", m.id, str(m.path), m.size, m.last_used))
    out.sort(key=lambda i: i.last_used, reverse=True)
    return out
