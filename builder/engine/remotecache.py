"""Shared build cache: ``--cache-to`` / ``--cache-from`` (registry, local OCI layout, inline).

Specs (buildx syntax, comma separated ``key=value``):

- export: ``type=registry,ref=REPO:TAG[,mode=min|max]``, ``type=local,dest=DIR[,mode=...]``,
  ``type=inline`` (always min mode); registry and local also take
  ``cache-mounts=true|false|ID[;ID...]`` (export the contents of those ``RUN
  --mount=type=cache`` mounts, see :mod:`builder.engine.cachemounts`; ids are separated by
  ``;`` so the value needs no CSV quoting, though a quoted ``"cache-mounts=a,b"`` works too)
  and ``cache-mounts-max=SIZE``;
- import: ``type=registry,ref=REF``, ``type=local,src=DIR[,tag=TAG]``, or a bare ``REF``
  (means ``type=registry``; an image built with ``--cache-to type=inline`` is such a ref).

Our format (not BuildKit's, which stores a ``application/vnd.buildkit.cacheconfig.v0``
chain of vertices; ours is a flat map because our keys already are a hash chain):

- an OCI image manifest (``application/vnd.oci.image.manifest.v1+json``) whose ``config``
  has media type :data:`CACHE_CONFIG_MEDIA_TYPE` and whose ``layers`` list every layer blob a
  record names (once, in first-use order), so registries keep the blobs and ``skopeo copy``
  can copy the cache like an image;
- the config blob is canonical JSON ``{"pybuild.cache": 1, "records": [R...]}`` sorted by
  key, each ``R = {"key": "sha256:...", "layer": {"digest", "diff_id", "size",
  "media_type"} | null, "created_by": str, "time": float}`` (``time``: when the step was
  first built; reusing it keeps image digests stable across machines); optional
  ``"why"``: the explanation entries of the records (:meth:`ExplainStore.export`) and
  ``"mounts"``: exported cache mounts (:class:`~builder.engine.cachemounts.MountEntry`, their
  layers listed in the manifest after the records' layers);
- ``type=local`` writes that manifest into an OCI layout directory tagged ``cache``;
- ``type=inline`` writes the records (min mode) into the image config as the top-level
  field :data:`INLINE_FIELD` (as BuildKit does with ``moby.buildkit.cache.v0``): the
  runtime ``config`` is untouched and the field is never inherited by images built FROM it
  (the engine copies only ``os.version``/``os.features`` from a base config).

``mode=min`` exports the records of the target stage's steps and of the stages it is FROM
(its layers are those of the image); ``mode=max`` every step of every built stage.

Import is lazy: a source is opened at the first local cache miss (a build that hits the
local cache everywhere touches no network); then only the manifest and the (small) config
are fetched, the source stays open and a layer blob is pulled (digest and size verified by the store) only when a step hits its
record. Trust: a remote cache maps keys to layers; blobs are verified against their digest,
the key -> layer mapping is trusted like a local record. A failing import is a warning,
never a failed build (buildx behaves the same); a failing export is an error.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable

from ..digest import Digest
from ..errors import PybuildError, UsageError
from ..store.cache import CacheRecord

if TYPE_CHECKING:
    from ..plan.graph import BuildGraph
    from ..platform import Platform
    from .session import BuildSession, StageSession
    from .state import ImageState
    from ..store.layout import Store

CACHE_CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
from .state import INLINE_FIELD  # noqa: E402 - defined beside ImageState (a plain build reads it)
LOCAL_TAG = "cache"
_CONFIG_LIMIT = 64 << 20
_KEY_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One ``--cache-to``/``--cache-from`` value. ``type`` is registry|local|inline; ``ref``
    for registry; ``path`` for local (dest or src); ``tag`` the local layout's tag."""

    type: str
    ref: str = ""
    path: str = ""
    mode: str = "min"
    tag: str = LOCAL_TAG
    mounts: tuple[str, ...] = ()        # cache mounts to export: ("*",) all, else ids/targets
    mounts_max: int | None = None       # cap on the mounts' file bytes


def _mounts_option(f: dict[str, str], what: str, text: str) -> tuple[tuple[str, ...], int | None]:
    raw = f.pop("cache-mounts", "false")
    limit_text = f.pop("cache-mounts-max", "")
    if raw.lower() in ("true", "1", "yes", "all"):
        mounts: tuple[str, ...] = ("*",)
    elif raw.lower() in ("false", "0", "no", ""):
        mounts = ()
    else:
        mounts = tuple(p.strip() for p in raw.replace(",", ";").split(";") if p.strip())
    limit = None
    if limit_text:
        from ..units import parse_size

        try:
            limit = parse_size(limit_text)
        except UsageError:
            raise UsageError(f"{what} {text!r}: cache-mounts-max={limit_text!r} is not a size (e.g. 500MB)") from None
    return mounts, limit


def _fields(text: str, what: str) -> dict[str, str]:
    """``key=value`` fields, CSV-split as buildx does (a field may be double-quoted)."""
    import csv

    try:
        parts = next(csv.reader([text], skipinitialspace=True), [])
    except csv.Error as exc:
        raise UsageError(f"{what} {text!r}: {exc}") from None
    out: dict[str, str] = {}
    for part in parts:
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep:
            raise UsageError(f"{what} {text!r}: expected key=value, got {part!r}")
        out[k.strip().lower()] = v.strip()
    return out


def parse_cache_spec(text: str, *, export: bool) -> CacheSpec:
    """Parse one ``--cache-to`` (``export=True``) or ``--cache-from`` value; UsageError on a
    malformed or unsupported spec. A bare reference (no ``=``) is ``type=registry`` for import."""
    what = "--cache-to" if export else "--cache-from"
    text = text.strip()
    if not text:
        raise UsageError(f"{what}: empty value")
    if "=" not in text.split(",", 1)[0]:
        if export:
            raise UsageError(f"{what} {text!r}: expected type=registry|local|inline,...")
        return CacheSpec("registry", ref=text)
    f = _fields(text, what)
    kind = f.pop("type", "")
    mode = f.pop("mode", "min").lower()
    if mode not in ("min", "max"):
        raise UsageError(f"{what} {text!r}: mode must be min or max")
    for ignored in ("compression", "compression-level", "force-compression", "oci-mediatype",
                    "ignore-error", "image-manifest"):
        f.pop(ignored, None)
    mounts, limit = _mounts_option(f, what, text) if export and kind in ("registry", "local") else ((), None)
    if kind == "registry":
        ref = f.pop("ref", "")
        if not ref:
            raise UsageError(f"{what} {text!r}: type=registry needs ref=REPO:TAG")
        spec = CacheSpec("registry", ref=ref, mode=mode, mounts=mounts, mounts_max=limit)
    elif kind == "local":
        key = "dest" if export else "src"
        path = f.pop(key, "")
        if not path:
            raise UsageError(f"{what} {text!r}: type=local needs {key}=DIR")
        spec = CacheSpec("local", path=path, mode=mode, tag=f.pop("tag", LOCAL_TAG) or LOCAL_TAG,
                         mounts=mounts, mounts_max=limit)
    elif kind == "inline":
        if not export:
            raise UsageError(f"{what} {text!r}: to read an inline cache, name the image: --cache-from REF")
        if mode != "min":
            raise UsageError(f"{what} {text!r}: type=inline supports mode=min only")
        spec = CacheSpec("inline")
    else:
        raise UsageError(f"{what} {text!r}: unsupported type {kind!r} (registry, local, inline)")
    if f:
        raise UsageError(f"{what} {text!r}: unknown option(s) {', '.join(sorted(f))}")
    return spec


# ---------------------------------------------------------------------------- records <-> JSON

def _record_json(rec: CacheRecord) -> dict[str, Any]:
    return {"key": rec.key, "layer": rec.layer, "created_by": rec.extra.get("created_by", ""),
            "time": rec.extra.get("time", 0.0)}


def records_config(records: Iterable[CacheRecord], extras: dict[str, Any] | None = None) -> bytes:
    """The canonical config blob of a cache manifest (records sorted by key), with the
    optional top-level ``extras`` (``why``, ``mounts``)."""
    items = sorted((_record_json(r) for r in records), key=lambda r: r["key"])
    body: dict[str, Any] = {"pybuild.cache": 1, "records": items}
    body.update({k: v for k, v in (extras or {}).items() if v})
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse_layer(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("layer is not an object")
    size = int(raw["size"])
    if size < 0:
        raise ValueError("negative size")
    return {"digest": str(Digest.parse(str(raw["digest"]))), "diff_id": str(Digest.parse(str(raw["diff_id"]))),
            "size": size, "media_type": str(raw["media_type"])}


def parse_records(items: Any, allowed_layers: set[str] | None) -> dict[str, CacheRecord]:
    """Records from their JSON list; invalid entries and those naming a layer outside
    ``allowed_layers`` (the manifest's blobs) are skipped."""
    out: dict[str, CacheRecord] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        try:
            key = str(item["key"])
            if not _KEY_RE.fullmatch(key):
                continue
            layer = parse_layer(item.get("layer"))
            if layer is not None and allowed_layers is not None and layer["digest"] not in allowed_layers:
                continue
            extra = {"created_by": str(item.get("created_by", "")), "time": float(item.get("time", 0.0))}
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        out[key] = CacheRecord(key, layer, extra)
    return out


def cache_manifest(config: bytes, records: Iterable[CacheRecord], extra_layers: Iterable[dict[str, Any]] = ()) -> bytes:
    """The cache manifest for ``config``, listing each layer the records name once, then
    ``extra_layers`` (layer dicts of exported cache mounts)."""
    layers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for layer in [r.layer for r in records] + list(extra_layers):
        if layer is not None and layer["digest"] not in seen:
            seen.add(layer["digest"])
            layers.append({"mediaType": layer["media_type"], "digest": layer["digest"], "size": layer["size"]})
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CACHE_CONFIG_MEDIA_TYPE, "digest": str(Digest.of_bytes(config)), "size": len(config)},
        "layers": layers,
    }, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------ import

@dataclass(frozen=True, slots=True)
class CacheContents:
    """What one cache manifest holds: records, explanation entries, cache mounts."""

    records: dict[str, CacheRecord]
    why: Any = None          # builder.engine.explain.ImportedWhy | None
    mounts: dict[str, Any] | None = None   # id -> builder.engine.cachemounts.MountEntry


class ImportedCache:
    """Records read from one ``--cache-from`` source, plus that source for lazy blob pulls.
    :meth:`close` closes the source (the build does it in ``finally``)."""

    def __init__(self, name: str, contents: CacheContents, source: Any) -> None:
        self.name = name
        self.records = contents.records
        self.why = contents.why
        self.mounts = contents.mounts or {}
        self.source = source

    def get(self, key: str) -> CacheRecord | None:
        return self.records.get(key)

    def fetch_layer(self, store: Store, layer: dict[str, Any]) -> None:
        """Copy the layer blob into ``store`` unless present; StoreError/RegistryError when
        the bytes do not match the digest and size (nothing is stored then)."""
        digest = Digest.parse(layer["digest"])
        if store.blobs.has(digest):
            return
        size = int(layer["size"])
        with _open_blob(self.source, digest, size) as stream:
            store.blobs.put_stream(stream, digest, size)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def _open_blob(source: Any, digest: Digest, size: int) -> BinaryIO:
    """A registry source verifies while streaming when told the size; others take the digest."""
    stream: BinaryIO = (source.open_blob(digest, size) if getattr(source, "client", None) is not None
                        else source.open_blob(digest))
    return stream


def _read_small(source: Any, digest: Digest, size: int, origin: str) -> bytes:
    from ..errors import StoreError

    if size > _CONFIG_LIMIT:
        raise StoreError(f"{origin}: config blob {digest} is too large ({size} bytes)")
    with _open_blob(source, digest, size) as f:
        data = f.read(_CONFIG_LIMIT + 1)
    if Digest.of_bytes(data) != digest:
        raise StoreError(f"{origin}: config blob does not match its digest {digest}")
    return data


def _records_from_manifest(source: Any, manifest: bytes, origin: str) -> CacheContents:
    """Records (and explanation entries, cache mounts) of a cache manifest, or the records
    of an image config's inline field."""
    from ..errors import StoreError

    try:
        man = json.loads(manifest)
        cfg = man["config"]
        cfg_digest, cfg_size, cfg_type = Digest.parse(cfg["digest"]), int(cfg["size"]), str(cfg.get("mediaType", ""))
        allowed = {str(Digest.parse(layer["digest"])) for layer in man.get("layers") or []}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StoreError(f"{origin}: not an image manifest") from None
    data = _read_small(source, cfg_digest, cfg_size, origin)
    try:
        body = json.loads(data)
    except ValueError:
        raise StoreError(f"{origin}: config is not JSON") from None
    if not isinstance(body, dict):
        raise StoreError(f"{origin}: config is not a JSON object")
    items = body.get("records") if cfg_type == CACHE_CONFIG_MEDIA_TYPE else body.get(INLINE_FIELD)
    if items is None:
        raise StoreError(f"{origin}: holds no pybuild cache (neither a cache manifest nor an inline cache)")
    if cfg_type != CACHE_CONFIG_MEDIA_TYPE:
        return CacheContents(parse_records(items, allowed))
    from .cachemounts import parse_mounts
    from .explain import ImportedWhy

    return CacheContents(parse_records(items, allowed), ImportedWhy(body.get("why")),
                         parse_mounts(body.get("mounts"), allowed))


def _insecure_for(ref: str, insecure: tuple[str, ...]) -> bool | None:
    from ..registry._reference import parse_image_ref

    r = parse_image_ref(ref)
    return True if (r.registry in insecure or r.api_host in insecure) else None


def open_cache(spec: CacheSpec, *, platform: str | None = None,
               insecure: tuple[str, ...] = ()) -> ImportedCache:
    """Read the records of ``spec`` (manifest and config only). Raises PybuildError."""
    if spec.type == "local":
        from ..oci.layoutdir import OciLayoutDir

        layout = OciLayoutDir(spec.path)
        data, _ = layout.get_manifest(spec.tag)
        return ImportedCache(f"local:{spec.path}", _records_from_manifest(layout, data, spec.path), layout)
    from ..registry.source import RegistrySource

    src = RegistrySource(spec.ref, insecure=_insecure_for(spec.ref, insecure))
    try:
        data, _, _ = src.get_platform_manifest(platform)
        records = _records_from_manifest(src, data, spec.ref)
    except BaseException:
        src.close()
        raise
    return ImportedCache(spec.ref, records, src)


class LazyCache:
    """A ``--cache-from`` source opened on the first lookup (so a build whose steps all hit
    the local cache touches no network). A source that cannot be read is reported once
    through ``warn`` and then behaves as empty."""

    def __init__(self, spec: CacheSpec, *, platform: str | None, insecure: tuple[str, ...],
                 warn: Any, note: Any) -> None:
        self.spec = spec
        self.name = spec.ref or spec.path
        self._platform = platform
        self._insecure = insecure
        self._warn = warn
        self._note = note
        self._cache: ImportedCache | None = None
        self._failed = False
        import threading

        self._lock = threading.Lock()  # stages of a build look up concurrently

    def _open(self) -> ImportedCache | None:
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> ImportedCache | None:
        if self._cache is None and not self._failed:
            try:
                self._cache = open_cache(self.spec, platform=self._platform, insecure=self._insecure)
            except PybuildError as exc:
                self._failed = True
                self._warn(f"cache import from {self.name} skipped: {exc.render()}")
                return None
            self._note(f"imported {len(self._cache.records)} cache records from {self._cache.name}")
        return self._cache

    def get(self, key: str) -> CacheRecord | None:
        cache = self._open()
        return cache.get(key) if cache is not None else None

    @property
    def opened(self) -> bool:
        return self._cache is not None

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def why(self) -> Any:
        """The source's explanation entries, if it was already opened (never opens it)."""
        return self._cache.why if self._cache is not None else None

    def mounts(self) -> dict[str, Any]:
        """The source's exported cache mounts (opens it)."""
        cache = self._open()
        return cache.mounts if cache is not None else {}

    def fetch_layer(self, store: Store, layer: dict[str, Any]) -> None:
        cache = self._open()
        if cache is None:
            from ..errors import StoreError

            raise StoreError(f"cache {self.name} is unavailable")
        cache.fetch_layer(store, layer)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def import_caches(session: StageSession | BuildSession, platform: Platform | None = None) -> list[LazyCache]:
    """The ``--cache-from`` sources of the build for ``platform`` (a build's StageSessions of
    that platform share the list), each opened lazily (see :class:`LazyCache`). UsageError for
    a malformed spec, before any build step."""
    opts = session.opts
    specs = [parse_cache_spec(t, export=False) for t in opts.cache_from]
    plat = str(platform) if platform is not None else None
    return [LazyCache(spec, platform=plat, insecure=opts.insecure_registries, warn=session.warn_once,
                      note=session.note) for spec in specs]


def close_caches(caches: Iterable[Any]) -> None:
    """Close the sources of imported caches (errors ignored)."""
    for cache in caches:
        try:
            cache.close()
        except Exception:  # noqa: BLE001 - closing must not mask the build's outcome
            pass


def lookup_remote(session: StageSession | BuildSession, key: str) -> CacheRecord | None:
    """After a local miss: the first imported record for ``key`` whose layer blob could be
    brought into the store (pulled now, digest-verified); it is also saved as a local record.
    A failed pull is a warning and the next source (or a miss) follows. On a miss, what each
    source lacked is kept in ``session.remote_notes[key]`` (for the miss explanation)."""
    notes: list[str] = []
    for cache in getattr(session, "remote_caches", ()):
        rec: CacheRecord | None = cache.get(key)
        if rec is None:
            unavailable = getattr(cache, "failed", False)
            notes.append(f"cache {cache.name} unavailable" if unavailable else f"not in cache {cache.name}")
            continue
        if rec.layer is not None:
            try:
                cache.fetch_layer(session.store, rec.layer)
            except PybuildError as exc:
                session.warn_once(f"cache blob {rec.layer['digest']} from {cache.name} unusable: {exc.render()}")
                notes.append(f"cache {cache.name} lacks blob {rec.layer['digest'][:19]}")
                continue
        session.cache.put(rec)
        return rec
    remote_notes = getattr(session, "remote_notes", None)
    if remote_notes is not None:
        remote_notes[key] = notes
    return None


# ------------------------------------------------------------------------------------ export

def export_specs(opts: Any) -> list[CacheSpec]:
    """Parsed ``--cache-to`` values (parse early: a usage error must come before building)."""
    return [parse_cache_spec(t, export=True) for t in opts.cache_to]


def chain_keys(graph: BuildGraph, stage_keys: dict[int, list[str]], target: int) -> list[str]:
    """Keys of ``target``'s steps and of the stages it is FROM, base-most first (min mode)."""
    chain = graph.base_chain(target)
    out: list[str] = []
    for i in reversed(chain):
        out.extend(stage_keys.get(i, ()))
    return out


def collect_records(session: StageSession | BuildSession, keys: Iterable[str]) -> list[CacheRecord]:
    """Local records of ``keys`` (deduplicated, order kept); keys without a record are skipped.
    A lazy layer (no blob yet) gets its blob made now: an exported record names a blob."""
    from .layers import layer_to_record, materialize, record_to_layer

    out: list[CacheRecord] = []
    seen: set[str] = set()
    for k in keys:
        if k in seen:
            continue
        seen.add(k)
        rec = session.cache.get(k)
        if rec is not None and rec.layer is not None and not rec.layer.get("digest"):
            layer = record_to_layer(rec.layer)
            assert layer is not None
            rec = CacheRecord(k, layer_to_record(materialize(session, layer)), rec.extra)
        if rec is not None:
            out.append(rec)
    return out


def with_inline_cache(state: ImageState, records: list[CacheRecord] | None) -> ImageState:
    """``state`` with :data:`INLINE_FIELD` set to ``records`` (only those whose layer is in
    the image), or removed when ``records`` is None."""
    from dataclasses import replace

    extra = tuple((k, v) for k, v in state.extra if k != INLINE_FIELD)
    if records is not None:
        in_image = {str(layer.digest) for layer in state.layers}
        keep = [r for r in records if r.layer is None or r.layer["digest"] in in_image]
        items = json.loads(records_config(keep))["records"]
        extra = extra + ((INLINE_FIELD, items),)
    return replace(state, extra=extra)


def write_cache(store: Store, records: list[CacheRecord], dest: Any, tag: str,
                extras: dict[str, Any] | None = None, extra_layers: Iterable[dict[str, Any]] = (),
                current: Any = None, fetch: Any = None) -> Digest:
    """Push the layer blobs, the config and the manifest of ``records`` to ``dest`` (an
    ``ImageDestination``) tagged ``tag``; returns the manifest digest. Layers come from
    ``store``; StoreError when one is missing there. ``extras``/``extra_layers``: see
    :func:`records_config` and :func:`cache_manifest`. A blob ``dest`` has is not sent;
    nothing is sent when ``current()`` (the digest ``tag`` names now, or None) is already
    this manifest's. ``fetch(store, digest)`` brings a blob ``dest`` lacks and ``store`` does
    not hold (a passed-through cache mount) into ``store`` first."""
    config = records_config(records, extras)
    manifest = cache_manifest(config, records, extra_layers)
    digest = Digest.of_bytes(manifest)
    if current is not None and current() == digest:
        return digest
    for layer in json.loads(manifest)["layers"]:
        digest = Digest.parse(layer["digest"])
        if dest.has_blob(digest):
            continue
        if fetch is not None and not store.blobs.has(digest):
            fetch(store, digest)
        with store.blobs.open(digest) as f:
            dest.put_blob(digest, int(layer["size"]), f)
    cfg_digest = Digest.of_bytes(config)
    if not dest.has_blob(cfg_digest):
        dest.put_blob(cfg_digest, len(config), io.BytesIO(config))
    written: Digest = dest.put_manifest(manifest, MANIFEST_MEDIA_TYPE, (tag,))
    return written


def export_cache(session: StageSession | BuildSession, spec: CacheSpec, records: list[CacheRecord]) -> Digest | None:
    """Write ``records`` per a registry/local ``spec`` (inline is handled before the image is
    written), with their explanation entries and the cache mounts ``spec`` selects.
    Raises PybuildError (RegistryError, StoreError, UsageError)."""
    from .explain import ExplainStore

    extras: dict[str, Any] = {"why": ExplainStore(session.store.root).export(r.key for r in records)}
    mount_layers: list[dict[str, Any]] = []
    fetch = None
    if spec.mounts:
        from .cachemounts import export_entries

        mounts = export_entries(session, spec.mounts, spec.mounts_max)
        extras["mounts"] = [e.to_json() for e in mounts.entries]
        mount_layers = [e.layer for e in mounts.entries]
        fetch = mounts.fetch
    if spec.type == "local":
        from ..oci.layoutdir import OciLayoutDir

        return write_cache(session.store, records, OciLayoutDir(spec.path), spec.tag, extras, mount_layers,
                           fetch=fetch)
    if spec.type != "registry":
        return None
    from ..registry._reference import parse_image_ref
    from ..registry.destination import RegistryDestination

    ref = parse_image_ref(spec.ref)
    if ref.digest is not None:
        raise UsageError(f"--cache-to ref={spec.ref}: needs a tag, not a digest")
    dst = RegistryDestination(ref, insecure=_insecure_for(spec.ref, session.opts.insecure_registries))
    try:
        tag = ref.tag or "latest"

        def current() -> Digest | None:
            found = dst.client.head_manifest(ref.repository, tag)
            return found[0] if found is not None else None

        return write_cache(session.store, records, dst, tag, extras, mount_layers, current, fetch)
    finally:
        dst.close()


def export_caches(session: StageSession | BuildSession, specs: list[CacheSpec], platforms: list[tuple[Any, dict[int, list[str]]]]) -> None:
    """Export per each non-inline spec the records of every platform's build (each
    ``(graph, stage_keys)``; keys include the platform, so one cache holds each platform's
    records side by side): min mode the target chain, max mode every built step."""
    for spec in specs:
        if spec.type == "inline":
            continue
        keys: list[str] = []
        for graph, stage_keys in platforms:
            keys.extend(chain_keys(graph, stage_keys, graph.target) if spec.mode == "min"
                        else [k for i in sorted(stage_keys) for k in stage_keys[i]])
        records = collect_records(session, keys)
        digest = export_cache(session, spec, records)
        session.note(f"exported {len(records)} cache records to {spec.ref or spec.path} ({digest})")


def inline_records(session: StageSession | BuildSession, specs: list[CacheSpec], graph: BuildGraph,
                   stage_keys: dict[int, list[str]]) -> list[CacheRecord] | None:
    """The records to embed in the image config (None without ``type=inline``)."""
    if not any(s.type == "inline" for s in specs):
        return None
    return collect_records(session, chain_keys(graph, stage_keys, graph.target))


__all__ = ["CacheSpec", "ImportedCache", "LazyCache", "parse_cache_spec", "open_cache", "import_caches", "close_caches",
           "lookup_remote", "export_specs", "export_caches", "export_cache", "write_cache", "inline_records",
           "with_inline_cache", "chain_keys", "collect_records", "records_config", "cache_manifest",
           "parse_records", "CACHE_CONFIG_MEDIA_TYPE", "INLINE_FIELD"]
