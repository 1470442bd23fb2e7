"""``RUN --mount=type=cache`` contents in the exported build cache (issue 16).

A cache mount lives in ``<store>/cache/mounts/<name>`` (:func:`mount_dir`). With
``--cache-to ...,cache-mounts=true`` (or ``cache-mounts=ID1;ID2``) the mounts used by the
build's RUN steps are exported beside the records, each as one layer blob (a deterministic
tar of the directory, compressed like the build's layers) listed in the cache manifest, and
described in the cache config's ``"mounts"`` list as :class:`MountEntry` (id, sharing,
uid/gid/mode, the layer, file and byte counts). ``--cache-from`` restores a mount into a store
that does not have it, right before the first RUN that mounts it (:func:`restore_mount`).

Mount contents never enter an image, its history or a cache key: the RUN's key keeps only
the mount's id, target and sharing (step_run.run_meaning).

An unchanged mount is not tarred again: ``<store>/cache/mount-exports/<name>.json`` keeps
the fingerprint (names, types, modes, owners, sizes, mtimes) of what was last exported and
its layer; with the same fingerprint and the blob still in the store, that layer is reused,
and the destination's ``has_blob`` skips the upload.

``cache-mounts-max=SIZE`` caps the file bytes (uncompressed) exported for mounts: mounts are
taken in id order while they fit; a mount that does not fit is left out with a warning
naming it, its size and the cap (the records are still exported).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import Digest

if TYPE_CHECKING:
    from ..plan.steps import RunStep
    from .session import BuildSession, StageSession
    from ..store.layout import Store


def mount_dir(store_root: Path, cache_id: str) -> Path:
    """Where the store keeps the cache mount ``cache_id``."""
    name = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    return Path(store_root) / "cache" / "mounts" / name


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One exported cache mount (JSON in the cache config's ``"mounts"``)."""

    id: str
    sharing: str
    uid: int | None
    gid: int | None
    mode: int | None
    layer: dict[str, Any]       # {"digest","diff_id","size","media_type"}
    files: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, allowed_layers: set[str] | None) -> "MountEntry | None":
        """An entry from JSON, or None when malformed or its layer is not in the manifest."""
        from .remotecache import parse_layer

        try:
            layer = parse_layer(raw["layer"])
            if layer is None or (allowed_layers is not None and layer["digest"] not in allowed_layers):
                return None

            def opt(name: str) -> int | None:
                v = raw.get(name)
                return None if v is None else int(v)
            return cls(id=str(raw["id"]), sharing=str(raw.get("sharing", "shared")), uid=opt("uid"),
                       gid=opt("gid"), mode=opt("mode"), layer=layer, files=int(raw.get("files", 0)),
                       bytes=int(raw.get("bytes", 0)))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def parse_mounts(items: Any, allowed_layers: set[str] | None) -> dict[str, MountEntry]:
    out: dict[str, MountEntry] = {}
    for item in items if isinstance(items, list) else []:
        e = MountEntry.from_json(item, allowed_layers)
        if e is not None:
            out[e.id] = e
    return out


def note_used(session: StageSession | BuildSession, step: RunStep) -> None:
    """Remember the cache mounts of a RUN of this build (hit or not), for export."""
    used = getattr(session, "cache_mounts", None)
    if used is None:
        return
    for m in step.mounts:
        if m.type == "cache" and not getattr(m, "from_", None):
            used.setdefault(m.id or m.target, m)


# --------------------------------------------------------------------------------- restore

def restore_mount(session: StageSession | BuildSession, cache_id: str, path: Path) -> bool:
    """Fill the missing mount directory ``path`` from the first ``--cache-from`` source that
    exported ``cache_id``; True when restored. The layer blob is pulled into the store (digest
    verified) and extracted into a temp dir renamed into place, so a failure leaves no partial
    mount. A failure is a warning; the RUN then starts with an empty mount."""
    from ..errors import PybuildError

    for cache in getattr(session, "remote_caches", ()):
        mounts = cache.mounts() if hasattr(cache, "mounts") else {}
        entry = mounts.get(cache_id)
        if entry is None:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="mount-", dir=session.tmp))
        try:
            cache.fetch_layer(session.store, entry.layer)
            from ..layer.compress import compression_for_media_type
            from ..layer.extract import extract_layer

            with session.store.blobs.open(Digest.parse(entry.layer["digest"])) as f:
                extract_layer(f, tmp, mode="flatten", compression=compression_for_media_type(entry.layer["media_type"]),
                              expect_diff_id=Digest.parse(entry.layer["diff_id"]))
            os.chmod(tmp, entry.mode if entry.mode is not None else 0o755)
            if (entry.uid is not None or entry.gid is not None) and os.geteuid() == 0:
                os.chown(tmp, int(entry.uid or 0), int(entry.gid or 0))
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, path)
        except (PybuildError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if path.is_dir():
                return True   # a concurrent build restored it first
            msg = exc.render() if isinstance(exc, PybuildError) else str(exc)
            session.warn_once(f"cache mount {cache_id} from {cache.name} not restored: {msg}")
            continue
        session.note(f"restored cache mount {cache_id} from {cache.name} ({entry.files} files)")
        return True
    return False


# ---------------------------------------------------------------------------------- export

def fingerprint(path: Path) -> tuple[str, int, int]:
    """(digest of names, types, modes, owners, sizes and mtimes; file count; file bytes)."""
    h = hashlib.sha256(b"pybuild-mount-fp-1\0")
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = os.path.relpath(p, path)
            h.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\n"
                     .encode("utf-8", "surrogateescape"))
            if stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
    return "sha256:" + h.hexdigest(), files, total


def _memo_path(store_root: Path, cache_id: str) -> Path:
    return Path(store_root) / "cache" / "mount-exports" / (mount_dir(store_root, cache_id).name + ".json")


def mount_layer(session: StageSession | BuildSession, cache_id: str, path: Path) -> tuple[dict[str, Any], int, int]:
    """The layer of mount ``cache_id`` at ``path`` (reused when unchanged since the last
    export, else written into the store): (layer dict, files, bytes)."""
    from ..store.layout import write_file_atomic

    fp, files, total = fingerprint(path)
    memo = _memo_path(session.store.root, cache_id)
    try:
        old = json.loads(memo.read_bytes())
        if old.get("fingerprint") == fp and session.store.blobs.has(Digest.parse(old["layer"]["digest"])):
            return dict(old["layer"]), files, total
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from ..layer.tar import write_layer
    from ..layer.walk import entries_from_dir
    from .layers import layer_to_record, _layer_ref

    with session.store.blobs.ingest() as w:
        info = write_layer(entries_from_dir(path, include_root=False), w, compression=session.opts.compression)
    layer = layer_to_record(_layer_ref(info))
    assert layer is not None
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(memo, json.dumps({"id": cache_id, "fingerprint": fp, "layer": layer}).encode(),
                      session.store.root / "tmp", durable=False)
    return layer, files, total


def selected(session: StageSession | BuildSession, wanted: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The (id, MountSpec) of this build's cache mounts that ``wanted`` selects ("*": all;
    else ids or targets), in id order."""
    used: dict[str, Any] = getattr(session, "cache_mounts", None) or {}
    out = []
    for cid in sorted(used):
        m = used[cid]
        if "*" in wanted or cid in wanted or m.target in wanted:
            out.append((cid, m))
    return out


@dataclass(frozen=True, slots=True)
class MountExport:
    """The mounts to export: ``entries``, and for those passed through from a ``--cache-from``
    source (absent from this store: the RUNs that mount them were cached) that source by
    layer digest, to pull a blob from only if the destination lacks it (:meth:`fetch`)."""

    entries: list[MountEntry]
    sources: dict[str, Any]

    def fetch(self, store: Store, digest: Digest) -> None:
        """Bring the pass-through blob ``digest`` into ``store``; StoreError when unknown."""
        for e in self.entries:
            if e.layer["digest"] == str(digest) and str(digest) in self.sources:
                self.sources[str(digest)].fetch_layer(store, e.layer)
                return
        from ..errors import StoreError

        raise StoreError(f"cache mount blob {digest} is not available")


def export_entries(session: StageSession | BuildSession, wanted: tuple[str, ...], limit: int | None) -> MountExport:
    """Entries for the selected mounts: those in this store as layers written into it; one
    missing here but imported from a ``--cache-from`` source is passed through (its blob is
    pulled only if the destination lacks it). Mounts beyond ``limit`` file bytes are left
    out with a warning."""
    out: list[MountEntry] = []
    sources: dict[str, Any] = {}
    used = 0
    chosen = selected(session, wanted)
    for name in wanted:
        if name != "*" and not any(name in (cid, m.target) for cid, m in chosen):
            session.warn_once(f"cache-mounts={name}: no RUN of this build mounts a cache with that id or target")
    for cid, m in chosen:
        path = mount_dir(session.store.root, cid)
        entry: MountEntry | None = None
        if path.is_dir():
            layer, files, total = mount_layer(session, cid, path)
            entry = MountEntry(cid, m.sharing or "shared", m.uid, m.gid, m.mode, layer, files, total)
        else:
            for cache in getattr(session, "remote_caches", ()):
                e = cache.mounts().get(cid) if hasattr(cache, "mounts") else None
                if e is not None:
                    entry = e
                    sources[e.layer["digest"]] = cache
                    break
        if entry is None:
            continue
        if limit is not None and used + entry.bytes > limit:
            from ..units import human_size

            session.warn_once(f"cache mount {cid} ({human_size(entry.bytes)}) not exported: it would pass "
                              f"cache-mounts-max={human_size(limit)} ({human_size(used)} already taken)")
            continue
        used += entry.bytes
        out.append(entry)
    return MountExport(out, sources)


# --------------------------------------------------------------------------- housekeeping

@dataclass(frozen=True, slots=True)
class MountUsage:
    """One cache mount directory in the store (``du --verbose``, prune)."""

    id: str            # the mount id when known (from an export memo), else the directory name
    path: Path
    size: int          # bytes on disk
    last_used: float   # newest mtime of the directory or its memo


def list_mounts(store_root: Path) -> list[MountUsage]:
    from .prune import _tree_size

    root = Path(store_root) / "cache" / "mounts"
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith(".") or not d.is_dir():
            continue   # the ".<name>.id" files beside the mounts
        ids = _read_id(d)
        try:
            last = d.stat().st_mtime
        except OSError:
            continue
        out.append(MountUsage(ids or d.name, d, _tree_size(d), last))
    return out


def _read_id(d: Path) -> str:
    try:
        return str(json.loads((d.parent / f".{d.name}.id").read_text()))
    except (OSError, ValueError):
        return ""


def remember_id(path: Path, cache_id: str) -> None:
    """Write the id of the mount at ``path`` beside it and mark it used now (``du`` shows the
    id; prune's ``until`` filter looks at the time)."""
    side = path.parent / f".{path.name}.id"
    try:
        if not side.exists():
            side.write_text(json.dumps(cache_id))
        os.utime(path)
    except OSError:
        pass


def remove_mount(m: MountUsage) -> int:
    shutil.rmtree(m.path, ignore_errors=True)
    for p in (m.path.parent / f".{m.path.name}.id",
              m.path.parent.parent / "mount-exports" / f"{m.path.name}.json"):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    return m.size
