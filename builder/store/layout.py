"""The local image store: an OCI image layout at ``root`` plus private directories beside it.

Layout::

    root/oci-layout            {"imageLayoutVersion": "1.0.0"}
    root/index.json            OCI index; one manifests[] entry per tag, annotated with
                               org.opencontainers.image.ref.name = full normalised name
                               (docker.io/library/app:latest)
    root/blobs/sha256/<hex>    content-addressed blobs (see builder.store.blobs)
    root/tmp/                  temp files of in-progress writes (same file system)
    root/index.lock            flock()ed while index.json is read-modified-written or gc runs
    root/snapshots/, cache/    owned by the engine, never touched here

Contracts: index.json is only rewritten under the exclusive lock, atomically (temp file,
fsync, rename), so concurrent pybuild processes never lose each other's tags; readers need no
lock. Image IDs are manifest digests. Names that name nothing raise :class:`ImageNotFound`
(a StoreError and a ReferenceError_); malformed names raise ReferenceError_.
:class:`Store` implements ImageSource and ImageDestination (builder.oci.transport).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator

from ..digest import Digest
from ..errors import ReferenceError_, StoreError, no_space
from ..oci import mediatypes as mt

if TYPE_CHECKING:  # pydantic models are imported lazily: a fully cached rebuild never needs them
    from ..oci.models import Descriptor, ImageConfig, Index, Manifest, Platform

from ..oci.reference import parse_reference
from .blobs import BlobStore, fsync_dir
from .lease import Lease, LiveLeases, gc_lock, live_leases
from .lock import FileLock
from .stale import owned_prefix


_HEX_PREFIX_RE = re.compile(r"^[a-f0-9]{1,64}$")
MIN_SHORT_ID = 4
_JSON_LIMIT = 16 << 20


class ImageNotFound(StoreError, ReferenceError_):
    """A name, digest or ID names no image in the store."""


def default_root() -> Path:
    """``$PYBUILD_ROOT``; else ``/var/lib/pybuild`` as root; else ``~/.local/share/pybuild``."""
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/pybuild")
    return Path.home() / ".local" / "share" / "pybuild"


def write_file_atomic(path: Path, data: bytes, tmp_dir: Path, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in ``tmp_dir`` (same filesystem) and a rename:
    readers see the old or the new content, never a part. ``durable`` also fsyncs the file and
    the directory (index.json); caches that can be rebuilt skip that, and there the old file is
    removed before the rename (a reader may then find none for a moment, or after a crash an
    empty one: a cache miss): ext4 makes a rename over an existing file start writing the new
    one's data back (``auto_da_alloc``), 0.1 to 0.7 ms per cache record, explanation and
    lineage hint a step writes, against 0.02 ms. Errors propagate; the temp file never
    survives (:func:`builder.atomicfile.write_atomic`)."""
    from ..atomicfile import write_atomic

    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, tmp_dir=tmp_dir, prefix=owned_prefix("w"), suffix="", durable=durable,
                     unlink_first=not durable)
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        full = no_space(exc, f"writing {path.name}", path.parent)
        if full is None:
            raise
        raise full from exc


def init_layout(root: Path, tmp_dir: Path) -> None:
    """Create ``oci-layout``, ``index.json`` and ``blobs/sha256`` when missing (idempotent)."""
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    # the canonical JSON of OciLayout() and of an empty Index, written without loading pydantic
    if not (root / "oci-layout").exists():
        write_file_atomic(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', tmp_dir)
    if not (root / "index.json").exists():
        empty = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}, separators=(",", ":"))
        write_file_atomic(root / "index.json", empty.encode(), tmp_dir)


def read_index_file(path: Path) -> Index:
    """Parse an OCI ``index.json``; StoreError when missing or malformed."""
    from ..oci import models
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path}: missing (not an OCI image layout)") from None
    return models.parse_json(models.Index, data, origin=str(path))


def sniff_media_type(data: bytes) -> str:
    """Media type of manifest/index bytes, from its ``mediaType`` field or its shape."""
    from ..oci import models
    mtype = models.media_type_of(data)
    if mtype is None:
        raise StoreError("blob is not a manifest or index")
    return mtype


def children(data: bytes, media_type: str, *, subject: bool = True) -> list[Descriptor]:
    """Descriptors a manifest (config, layers[, subject]) or index (manifests[, subject]) points to."""
    from ..oci import models
    if mt.is_index(media_type):
        idx = models.parse_json(models.Index, data, origin="index")
        return list(idx.manifests) + ([idx.subject] if idx.subject and subject else [])
    if mt.is_manifest(media_type):
        man = models.parse_json(models.Manifest, data, origin="manifest")
        return [man.config, *man.layers] + ([man.subject] if man.subject and subject else [])
    return []


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image of the store: the chosen manifest's descriptor and parsed + raw JSON."""

    manifest_desc: Descriptor
    manifest: Manifest
    manifest_raw: bytes
    config: ImageConfig
    config_raw: bytes

    @property
    def digest(self) -> Digest:
        return self.manifest_desc.digest_value


class Store:
    """The local store at ``root`` (created when missing). See the module docstring."""

    concurrent_reads = True   # blobs are immutable files
    concurrent_writes = True  # each ingest has its own temp file; the rename is atomic


    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.tmp_dir = self.root / "tmp"
        self.index_path = self.root / "index.json"
        self.lock_path = self.root / "index.lock"
        self.blobs = BlobStore(self.root, self.tmp_dir)
        self._lease: Lease | None = None
        self._leases_depth = 0
        self._lease_guard = threading.Lock()
        self._collecting: LiveLeases | None = None  # set while this process holds gc.lock
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
            if not self.index_path.exists() or not (self.root / "oci-layout").exists():
                with self._lock():
                    init_layout(self.root, self.tmp_dir)
        except OSError as e:
            raise StoreError(f"cannot initialise the store at {self.root}: {e.strerror or e}") from e

    # ---- leases (what a running command needs; see builder.store.lease) ----------------------

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """Hold a lease on this store for the ``with`` block (nested and concurrent calls on
        this object share one). The first one also sweeps what dead processes left (temp dirs,
        mounts, leases)."""
        with self._lease_guard:
            if self._lease is None:
                from .stale import sweep

                try:
                    sweep(self.root)
                except OSError:
                    pass  # best effort: `pybuild store check --repair` reports what is left
                self._lease = Lease(self.root)
                self.blobs.on_reuse = lambda d: self.pin([str(d)])
            self._leases_depth += 1
            lease = self._lease
        try:
            yield lease
        finally:
            with self._lease_guard:
                self._leases_depth -= 1
                if self._leases_depth == 0:
                    self._lease = None
                    self.blobs.on_reuse = None
                    lease.close()

    def pin(self, items: Iterable[str]) -> None:
        """Pin digests / diff_ids in this process's lease (no-op without one). Afterwards
        the caller checks they are present: a prune that ran before cannot be undone."""
        if self._lease is not None:
            self._lease.pin(items)

    @contextmanager
    def collecting(self) -> Iterator[LiveLeases]:
        """Hold ``gc.lock`` exclusively (nested calls share it) and yield the live leases:
        everything a garbage collector deletes must be decided and deleted inside."""
        if self._collecting is not None:
            yield self._collecting
            return
        with gc_lock(self.root):
            self._collecting = live_leases(self.root)
            try:
                yield self._collecting
            finally:
                self._collecting = None

    def _lock(self) -> FileLock:
        return FileLock(self.lock_path)

    def lock(self) -> FileLock:
        """The store-wide exclusive lock (index.json writes and gc); a context manager."""
        return self._lock()

    # ---- index.json ---------------------------------------------------------------------------

    def read_index(self) -> Index:
        return read_index_file(self.index_path)

    def _write_index(self, index: Index) -> None:
        from ..oci import models
        write_file_atomic(self.index_path, models.canonical_json(index), self.tmp_dir)

    @staticmethod
    def _full_name(name: str) -> str:
        ref = parse_reference(name)
        if ref.digest is not None:
            raise ReferenceError_(f"cannot tag with a digest reference: {name!r}")
        return str(ref)

    def tag(self, name: str, descriptor: Descriptor) -> str:
        """Point ``name`` (familiar or full) at ``descriptor``; returns the full name.
        The manifest blob must be in the store (StoreError otherwise)."""
        full = self._full_name(name)
        if not self.blobs.has(descriptor.digest_value):
            raise StoreError(f"cannot tag {full}: manifest {descriptor.digest} is not in the store")
        ann = dict(descriptor.annotations or {})
        ann[mt.ANNOTATION_REF_NAME] = full
        entry = descriptor.model_copy(update={"annotations": ann})
        with self._lock():
            index = self.read_index()
            kept = [d for d in index.manifests if (d.annotations or {}).get(mt.ANNOTATION_REF_NAME) != full]
            kept.append(entry)
            kept.sort(key=lambda d: (d.annotations or {}).get(mt.ANNOTATION_REF_NAME, ""))
            self._write_index(index.model_copy(update={"manifests": kept}))
        return full

    def lookup_tag(self, name: str) -> dict[str, Any] | None:
        """Fast path without pydantic: the raw index.json entry (a dict with mediaType, digest,
        size) that the tag ``name`` points at, or None when there is no such tag."""
        full = self._full_name(name)
        try:
            data = json.loads(self.index_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.index_path}: unreadable ({exc})") from None
        for entry in data.get("manifests", []):
            if (entry.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == full:
                return dict(entry)
        return None

    def tag_digest(self, name: str, media_type: str, digest: str, size: int) -> str:
        """Point ``name`` at a stored manifest; a no-op (no lock, no write) when the tag already
        points there, so a fully cached rebuild writes nothing (nor imports pydantic). Returns
        the full name."""
        current = self.lookup_tag(name)
        full = self._full_name(name)
        if current is not None and current.get("digest") == digest:
            return full
        if not self.blobs.has(Digest.parse(digest)):
            raise StoreError(f"cannot tag {full}: manifest {digest} is not in the store")
        entry = {"mediaType": media_type, "digest": digest, "size": size,
                 "annotations": {mt.ANNOTATION_REF_NAME: full}}
        with self._lock():
            # pydantic-free: index.json as written by canonical_json, one entry replaced (same
            # bytes as tag() would write); anything unexpected goes through the validating path
            try:
                data = json.loads(self.index_path.read_bytes())
            except (OSError, ValueError):
                data = None
            manifests = data.get("manifests") if isinstance(data, dict) else None
            plain = isinstance(manifests, list) and all(
                isinstance(d, dict) and isinstance(d.get("annotations") or {}, dict) for d in manifests)
            if plain:
                assert isinstance(data, dict) and isinstance(manifests, list)
                kept = [d for d in manifests if (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) != full]
                kept.append(entry)
                kept.sort(key=lambda d: (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME, ""))
                data["manifests"] = kept
                write_file_atomic(self.index_path,
                                  json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), self.tmp_dir)
        if not plain:
            from ..oci import models
            return self.tag(name, models.Descriptor(mediaType=media_type, digest=digest, size=size))
        return full

    def untag(self, name: str) -> Descriptor:
        """Remove the tag ``name``; returns what it pointed at. ImageNotFound when absent."""
        full = self._full_name(name)
        with self._lock():
            index = self.read_index()
            gone = [d for d in index.manifests if (d.annotations or {}).get(mt.ANNOTATION_REF_NAME) == full]
            if not gone:
                raise ImageNotFound(f"no such image: {name}")
            kept = [d for d in index.manifests if d not in gone]
            self._write_index(index.model_copy(update={"manifests": kept}))
        return gone[0]

    def tags(self) -> list[tuple[str, Descriptor]]:
        """Every (full name, descriptor) of index.json, sorted by name."""
        out = []
        for d in self.read_index().manifests:
            name = (d.annotations or {}).get(mt.ANNOTATION_REF_NAME)
            if name:
                out.append((name, d))
        return sorted(out, key=lambda t: t[0])

    def resolve(self, name_or_digest: str) -> Descriptor:
        """Descriptor for a familiar/full name, ``name@sha256:..``, ``sha256:<hex>``, or a unique
        (at least 4 hex digits) prefix of a tagged manifest digest, with or without ``sha256:``,
        else of a tagged image's config digest (the IMAGE ID ``pybuild images`` shows, as docker
        does; for an index, that of one of its manifests, whose descriptor is returned)."""
        text = name_or_digest.strip()
        tags = self.tags()
        if text.startswith("sha256:") and len(text) == 71:
            try:
                d = Digest.parse(text)
            except ValueError:
                raise ReferenceError_(f"invalid digest {text!r}") from None
            return self._by_digest(d, tags, text)
        parse_error: ReferenceError_ | None = None
        if not text.startswith("sha256:"):
            try:
                ref = parse_reference(text)
            except ReferenceError_ as e:
                parse_error = e
            else:
                if ref.digest is not None:
                    return self._by_digest(ref.digest, tags, text)
                full = str(ref)
                for name, desc in tags:
                    if name == full:
                        return desc
        prefix = text[len("sha256:"):] if text.startswith("sha256:") else text
        if _HEX_PREFIX_RE.match(prefix) and (len(prefix) >= MIN_SHORT_ID or text.startswith("sha256:")):
            found = {d.digest: d for _, d in tags if d.digest.startswith("sha256:" + prefix)}
            if len(found) == 1:
                return next(iter(found.values()))
            if not found:
                found = self._by_config_prefix("sha256:" + prefix, tags)
            if len(found) > 1:
                raise ReferenceError_(f"ambiguous image id {text!r}: matches {len(found)} images")
            if found:
                return next(iter(found.values()))
        if parse_error is not None:
            raise parse_error
        raise ImageNotFound(f"no such image: {text}")

    def _by_config_prefix(self, prefix: str, tags: list[tuple[str, Descriptor]]) -> dict[str, Descriptor]:
        """Manifests (tagged, or in a tagged index) whose config digest starts with ``prefix``,
        by manifest digest. Unreadable blobs are skipped (store check reports them)."""
        found: dict[str, Descriptor] = {}
        todo = [d for _, d in tags]
        while todo:
            desc = todo.pop()
            try:
                data = json.loads(self.blobs.read_bytes(desc.digest_value, limit=_JSON_LIMIT))
            except (OSError, ValueError, StoreError):
                continue
            if not isinstance(data, dict):
                continue
            if mt.is_index(desc.mediaType):
                children = data.get("manifests")
                for child in children if isinstance(children, list) else []:
                    try:
                        from ..oci.models import Descriptor as _Descriptor

                        todo.append(_Descriptor.model_validate(child))
                    except ValueError:
                        continue
            elif mt.is_manifest(desc.mediaType):
                config = data.get("config")
                if isinstance(config, dict) and str(config.get("digest", "")).startswith(prefix):
                    found[desc.digest] = desc.model_copy(update={"annotations": None})
        return found

    def _by_digest(self, d: Digest, tags: list[tuple[str, Descriptor]], text: str) -> Descriptor:
        from ..oci import models
        for _, desc in tags:
            if desc.digest == str(d):
                return desc.model_copy(update={"annotations": None})
        if not self.blobs.has(d):
            raise ImageNotFound(f"no such image: {text}")
        data = self.blobs.read_bytes(d, limit=_JSON_LIMIT)
        try:
            mtype = sniff_media_type(data)
        except StoreError:
            raise ImageNotFound(f"{text} is not a manifest or index") from None
        return models.Descriptor(mediaType=mtype, digest=str(d), size=len(data))

    def image(self, name: str, platform: Platform | None = None) -> StoredImage:
        """The image ``name`` (resolved as :meth:`resolve`); an index is resolved to ``platform``
        (default: the host's). StoreError when blobs are missing or malformed."""
        from ..oci import models
        desc = self.resolve(name)
        raw = self.blobs.read_bytes(desc.digest_value, limit=_JSON_LIMIT)
        if mt.is_index(desc.mediaType):
            index = models.parse_json(models.Index, raw, origin=f"index of {name}")
            desc = models.select_manifest(index, platform, origin=name)
            raw = self.blobs.read_bytes(desc.digest_value, limit=_JSON_LIMIT)
        manifest = models.parse_json(models.Manifest, raw, origin=f"manifest of {name}")
        config_raw = self.blobs.read_bytes(manifest.config.digest_value, limit=_JSON_LIMIT)
        config = models.parse_json(models.ImageConfig, config_raw, origin=f"config of {name}")
        return StoredImage(desc.model_copy(update={"annotations": None}), manifest, raw, config, config_raw)

    # ---- garbage collection ------------------------------------------------------------------

    def reachable(self, roots: Iterable[Digest | Descriptor]) -> set[Digest]:
        """Digests reachable from ``roots`` (manifests and indexes are followed; other blobs
        are leaves). Missing blobs are included but not followed."""
        from ..oci import models
        seen: set[Digest] = set()
        todo: list[tuple[Digest, str | None]] = []
        for r in roots:
            if isinstance(r, models.Descriptor):
                todo.append((r.digest_value, r.mediaType))
            else:
                todo.append((r, None))
        while todo:
            d, mtype = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            if not self.blobs.has(d):
                continue
            if mtype is None:
                mtype = self._sniff(d)
            if mtype and (mt.is_index(mtype) or mt.is_manifest(mtype)):
                data = self.blobs.read_bytes(d, limit=_JSON_LIMIT)
                for child in children(data, mtype):
                    todo.append((child.digest_value, child.mediaType))
        return seen

    def _sniff(self, d: Digest) -> str | None:
        from ..oci import models
        with self.blobs.open(d) as f:
            if f.read(1) != b"{":
                return None
        if self.blobs.size(d) > _JSON_LIMIT:
            return None
        return models.media_type_of(self.blobs.read_bytes(d, limit=_JSON_LIMIT))

    def gc(self, keep: set[Digest] | frozenset[Digest] = frozenset(), *, tmp_age: float = 3600.0) -> int:
        """Delete blobs reachable neither from tags, ``keep`` nor live leases' pins (all
        followed like tags) and not written since the oldest live lease began; also temp
        files older than ``tmp_age`` seconds. Returns bytes freed. Runs under ``gc.lock``
        (see :meth:`collecting`) and the index lock."""
        freed = 0
        with self.collecting() as leases, self._lock():
            roots: list[Digest | Descriptor] = [d for _, d in self.tags()]
            for pin in leases.pinned:
                try:
                    roots.append(Digest.parse(pin))
                except ValueError:
                    continue
            live = self.reachable(roots + list(keep))
            for d in list(self.blobs):
                if d in live:
                    continue
                if leases.oldest is not None:
                    try:
                        if leases.protects_time(self.blobs.path(d).stat().st_mtime):
                            continue  # written while a command runs: maybe not tagged yet
                    except FileNotFoundError:
                        continue
                freed += self.blobs.delete(d)
            now = time.time()
            if self.tmp_dir.is_dir():
                for p in self.tmp_dir.iterdir():
                    try:
                        st = p.stat()
                        if p.is_file() and now - st.st_mtime > tmp_age:
                            p.unlink()
                            freed += st.st_size
                    except FileNotFoundError:
                        continue
        return freed

    def disk_usage(self) -> int:
        """Total bytes of all blobs."""
        return sum(self.blobs.size(d) for d in self.blobs)

    # ---- ImageSource ------------------------------------------------------------------------

    def get_manifest(self, ref: str) -> tuple[bytes, str]:
        """Raw manifest/index bytes and media type for a name, digest or short ID (pinned in
        this process's lease, so a concurrent prune keeps everything it names)."""
        desc = self.resolve(ref)
        self.pin([desc.digest])
        return self.blobs.read_bytes(desc.digest_value, limit=_JSON_LIMIT), desc.mediaType

    def open_blob(self, digest: Digest) -> BinaryIO:
        return self.blobs.open(digest)

    # ---- ImageDestination -------------------------------------------------------------------

    def has_blob(self, digest: Digest) -> bool:
        return self.blobs.has(digest)

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        if self.blobs.has(digest):
            self.pin([str(digest)])
            if self.blobs.has(digest):
                return
        self.blobs.put_stream(stream, digest, size)

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...]) -> Digest:
        """Store manifest/index bytes as given (every blob they name must be present, else
        StoreError) and tag them. A manifest's descriptor carries the config's platform."""
        from ..oci import models
        refs = children(data, media_type, subject=False)
        for child in refs:
            if not self.blobs.has(child.digest_value):
                raise StoreError(f"cannot store manifest: blob {child.digest} ({child.mediaType}) is missing")
        digest = self.blobs.put_bytes(data)
        platform = None
        if mt.is_manifest(media_type):
            man = models.parse_json(models.Manifest, data, origin="manifest")
            try:
                cfg = models.parse_json(models.ImageConfig, self.blobs.read_bytes(man.config.digest_value, limit=_JSON_LIMIT),
                                 origin="config")
                platform = cfg.platform
            except StoreError:
                platform = None  # artifact or foreign config: no platform
        desc = models.Descriptor(mediaType=media_type, digest=str(digest), size=len(data), platform=platform)
        for t in tags:
            self.tag(t, desc)
        return digest


def load_json_blob(blobs: BlobStore, digest: Digest) -> dict[str, Any]:
    """A small JSON blob as a dict (StoreError on bad JSON)."""
    try:
        obj = json.loads(blobs.read_bytes(digest, limit=_JSON_LIMIT))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"blob {digest}: invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"blob {digest}: expected a JSON object")
    return obj
