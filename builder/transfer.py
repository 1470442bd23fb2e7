"""One copy routine for pull, push and export, plus the ``--output`` exporters.

* :func:`copy_image` copies an image (or a whole index) between any ImageSource and
  ImageDestination: blobs the destination has are skipped, every blob is verified while it
  streams through a bounded buffer, the manifest goes last.
* :func:`recompress` / :func:`convert_compression` re-encode layers gzip <-> zstd <-> tar in one
  streaming pass (new digests, same diff_ids, which are checked).
* :func:`parse_output` parses buildx ``--output`` strings into :class:`OutputSpec`;
  :func:`export_image` writes a stored image to one.
* :func:`flatten_layers` writes the image's root file system as one tar (whiteouts applied).

Errors: UsageError for bad ``--output`` strings, StoreError for missing/corrupt content,
whatever the source/destination raise (RegistryError...). Nothing here prints; progress goes
to ``on_event`` when given.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Generator, Iterator

from .digest import Digest
from .errors import HostError, StoreError, UsageError
from .events import BlobProgress
from .oci import mediatypes as mt
from .oci.models import (Descriptor, ImageConfig, Index, Manifest, Platform, canonical_json, parse_json,
                         select_manifest)
from .oci.transport import ImageDestination, ImageSource
from .outputspec import OutputSpec, parse_output  # noqa: F401 - parse_output re-exported
from .store.blobs import CHUNK, BlobStore, VerifyingReader

if TYPE_CHECKING:
    from .oci.dockerarchive import DockerArchiveWriter
    from .store.layout import Store

_JSON_LIMIT = 16 << 20


# ---- events -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TransferEvent:
    """Progress of a copy: ``kind`` is ``skip`` (destination has the blob), ``copy`` (blob
    copied), ``manifest`` (manifest/index written) or ``convert`` (layer recompressed)."""

    kind: str
    digest: Digest
    size: int
    media_type: str = ""


EventSink = Callable[[TransferEvent | BlobProgress], None]
"""Receives TransferEvents (one per blob or manifest) and BlobProgress (bytes as they move)."""


def _emit(on_event: EventSink | None, kind: str, d: Descriptor) -> None:
    if on_event is not None:
        on_event(TransferEvent(kind, d.digest_value, d.size, d.mediaType))


def progress_sink(sink: Callable[[BlobProgress], None], action: str) -> EventSink:
    """A transfer sink passing only BlobProgress on to ``sink``, with ``action`` (``pull``,
    ``push``, ``export``) set."""
    from dataclasses import replace

    def forward(event: TransferEvent | BlobProgress) -> None:
        if isinstance(event, BlobProgress):
            sink(replace(event, action=action))
    return forward


class _ProgressReader(VerifyingReader):
    """A VerifyingReader that reports BlobProgress: at most about 100 reports per blob, plus
    the last one (sent by :meth:`finish`)."""

    def __init__(self, stream: BinaryIO, desc: Descriptor, on_event: EventSink) -> None:
        super().__init__(stream, desc.digest_value, desc.size)
        self._desc = desc
        self._on_event = on_event
        self._step = max(CHUNK, desc.size // 100)
        self._next = self._step
        on_event(BlobProgress("copy", desc.digest, desc.mediaType or "", 0, desc.size))

    def read(self, n: int = -1) -> bytes:
        data = super().read(n)
        if self.count >= self._next and self.count < self._desc.size:
            self._next = self.count + self._step
            self._on_event(BlobProgress("copy", self._desc.digest, self._desc.mediaType or "", self.count,
                                        self._desc.size))
        return data

    def finish(self) -> None:
        self._on_event(BlobProgress("copy", self._desc.digest, self._desc.mediaType or "", self.count,
                                    self._desc.size, finished=True))


# ---- copy ---------------------------------------------------------------------------------------

def _fetch_manifest(src: ImageSource, ref: str, expected: Descriptor | None) -> tuple[bytes, str]:
    data, mtype = src.get_manifest(ref)
    if expected is not None:
        got = Digest.of_bytes(data) if expected.digest_value.algorithm == "sha256" else \
            Digest(expected.digest_value.algorithm, hashlib.new(expected.digest_value.algorithm, data).hexdigest())
        if got != expected.digest_value:
            raise StoreError(f"manifest digest mismatch: expected {expected.digest}, got {got}")
        if expected.size != len(data):
            raise StoreError(f"manifest {expected.digest}: expected {expected.size} bytes, got {len(data)}")
        why = mt.contradiction(data, expected.mediaType or mtype)
        if why is not None:
            raise StoreError(f"manifest {expected.digest}: {why}")
    elif ref.startswith("sha256:"):
        if str(Digest.of_bytes(data)) != ref:
            raise StoreError(f"manifest digest mismatch for {ref}")
    return data, mtype


def copy_blob(src: ImageSource, dst: ImageDestination, desc: Descriptor, on_event: EventSink | None = None) -> None:
    """Copy one blob unless ``dst`` has it, verifying digest and size while it streams."""
    d = desc.digest_value
    if dst.has_blob(d):
        _emit(on_event, "skip", desc)
        if on_event is not None:
            on_event(BlobProgress("copy", desc.digest, desc.mediaType or "", desc.size, desc.size,
                                  finished=True, skipped=True))
        return
    stream = src.open_blob(d)
    try:
        reader = (VerifyingReader(stream, d, desc.size) if on_event is None
                  else _ProgressReader(stream, desc, on_event))
        dst.put_blob(d, desc.size, reader)  # type: ignore[arg-type]
        reader.drain()
        reader.verify()
    finally:
        stream.close()
    if isinstance(reader, _ProgressReader):
        reader.finish()
    _emit(on_event, "copy", desc)


def _copy_manifest_tree(src: ImageSource, data: bytes, mtype: str, dst: ImageDestination,
                        on_event: EventSink | None) -> None:
    """Copy every blob and child manifest ``data`` names (not ``data`` itself)."""
    if mt.is_index(mtype):
        index = parse_json(Index, data, origin="index")
        for child in index.manifests:
            if not (mt.is_manifest(child.mediaType) or mt.is_index(child.mediaType)):
                copy_blob(src, dst, child, on_event)
                continue
            if dst.has_blob(child.digest_value):
                _emit(on_event, "skip", child)
                continue
            cdata, ctype = _fetch_manifest(src, child.digest, child)
            _copy_manifest_tree(src, cdata, child.mediaType or ctype, dst, on_event)
            if getattr(dst, "child_manifests_as_blobs", False):  # layouts: not a top-level entry
                dst.put_blob(child.digest_value, len(cdata), io.BytesIO(cdata))
            else:
                dst.put_manifest(cdata, child.mediaType or ctype, ())
            _emit(on_event, "manifest", child)
        return
    if not mt.is_manifest(mtype):
        raise StoreError(f"unsupported manifest media type {mtype!r}")
    man = parse_json(Manifest, data, origin="manifest")
    # non-distributable layers are fetched from their URLs by whoever needs them
    wanted = [man.config] + [layer for layer in man.layers if not (layer.urls and _is_foreign(layer))]
    copy_blobs(src, dst, wanted, on_event)


COPY_WORKERS = 4


def copy_blobs(src: ImageSource, dst: ImageDestination, descs: list[Descriptor],
               on_event: EventSink | None, *, workers: int = COPY_WORKERS) -> None:
    """Copy ``descs`` (each blob once), up to ``workers`` at a time when both ends say they
    take concurrent use (``concurrent_reads`` / ``concurrent_writes``: registries, the store);
    one after another otherwise (tar streams). Every started copy finishes before the first
    error is raised, so the caller writes the manifest only when all blobs are there."""
    unique = list({d.digest: d for d in descs}.values())
    parallel = (getattr(src, "concurrent_reads", False) and getattr(dst, "concurrent_writes", False)
                and len(unique) > 1 and workers > 1)
    if not parallel:
        for d in unique:
            copy_blob(src, dst, d, on_event)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="blob-copy") as pool:
        futures = [pool.submit(copy_blob, src, dst, d, on_event) for d in unique]
    for f in futures:
        f.result()  # re-raises the first failure, in manifest order


def _is_foreign(layer: Descriptor) -> bool:
    return layer.mediaType in (mt.DOCKER_LAYER_FOREIGN_GZIP, mt.OCI_LAYER_NONDIST_TAR,
                               mt.OCI_LAYER_NONDIST_GZIP, mt.OCI_LAYER_NONDIST_ZSTD)


def as_platform(platform: Any) -> Platform | None:
    """None, a Platform, ``os/arch[/variant]`` text or any object with ``os``/``architecture``
    (and optionally ``variant``) attributes, as a Platform."""
    if platform is None or isinstance(platform, Platform):
        return platform
    if isinstance(platform, str):
        from .oci.models import parse_platform

        return parse_platform(platform)
    return Platform(os=str(platform.os), architecture=str(platform.architecture),
                    variant=getattr(platform, "variant", None) or None)


def copy_image(src: ImageSource, ref: str, dst: ImageDestination, tags: tuple[str, ...] = (), *,
               platform: Platform | str | Any = None, on_event: EventSink | None = None) -> Digest:
    """Copy the image ``ref`` names from ``src`` to ``dst`` and tag it; returns the digest of
    the manifest written last (the platform's manifest when ``platform`` is given and ``ref``
    names an index, else what ``ref`` names). Config and layers go first, manifest last;
    blobs the destination has are skipped; each blob is verified as it streams."""
    platform = as_platform(platform)
    data, mtype = _fetch_manifest(src, ref, None)
    if mt.is_index(mtype) and platform is not None:
        index = parse_json(Index, data, origin=f"index of {ref}")
        desc = select_manifest(index, platform, origin=ref)
        data, ctype = _fetch_manifest(src, desc.digest, desc)
        mtype = desc.mediaType or ctype
    if platform is not None and mt.is_manifest(mtype):  # an image to run: its config must be one
        config_type = str((json.loads(data).get("config") or {}).get("mediaType", ""))
        if config_type not in mt.CONFIGS:
            raise StoreError(f"{ref}: the manifest's config has media type {config_type!r}, "
                             "not an image config")
    _copy_manifest_tree(src, data, mtype, dst, on_event)
    digest = dst.put_manifest(data, mtype, tuple(tags))
    if on_event is not None:
        on_event(TransferEvent("manifest", digest, len(data), mtype))
    return digest


# ---- compression --------------------------------------------------------------------------------

def open_decompressed(stream: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the uncompressed tar inside ``stream`` (``gzip``/``zstd``/``uncompressed``).
    Closing the returned reader does not close ``stream``."""
    if compression == "uncompressed":
        return stream
    if compression == "gzip":
        from .layer.gz import open_reader

        return open_reader(stream)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True,
                                                          closefd=False)
    raise StoreError(f"unknown compression {compression!r}")


def detect_compression(head: bytes) -> str:
    """``gzip``/``zstd``/``uncompressed`` from a blob's first bytes (magic numbers)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "uncompressed"


def recompress(src: BinaryIO, src_compression: str, dst_compression: str, sink: BinaryIO | object,
               *, level: int | None = None) -> tuple[Digest, int]:
    """Re-encode a layer from ``src`` into ``sink`` (anything with ``write``), streaming.

    Returns (diff_id, uncompressed size). gzip output is what the layer writer makes of the
    same tar (:class:`builder.layer.gz.GzipEncoder`, buildx ``level``, default 1), so the same
    layer gets the same digest whichever way it was written; zstd output is one frame at
    ``level`` (default 3). Neither stream is closed."""
    raw = open_decompressed(src, src_compression)
    h = hashlib.sha256()
    total = 0
    comp: object
    if dst_compression == "uncompressed":
        comp = sink
    elif dst_compression == "gzip":
        from .layer.gz import GzipWriter

        comp = GzipWriter(sink, level)  # type: ignore[arg-type]
    elif dst_compression == "zstd":
        import zstandard

        comp = zstandard.ZstdCompressor(level=3 if level is None else level).stream_writer(
            sink, closefd=False)  # type: ignore[arg-type]
    else:
        raise UsageError(f"unknown compression {dst_compression!r} (gzip, zstd, uncompressed)")
    try:
        while True:
            chunk = raw.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
            comp.write(chunk)  # type: ignore[attr-defined]
    except Exception as e:  # gzip/zlib/isal/zstd decoder errors by type or name
        if not isinstance(e, (OSError, EOFError, ValueError)) and type(e).__name__ not in (
                "error", "IsalError", "ZstdError"):
            raise
        raise StoreError(f"cannot decompress layer ({src_compression}): {e}") from e
    if comp is not sink:
        comp.close()  # type: ignore[attr-defined]
    return Digest("sha256", h.hexdigest()), total


def convert_compression(blobs: BlobStore, manifest_raw: bytes, config: ImageConfig, compression: str, *,
                        force: bool = False, level: int | None = None, keep_layers: int = 0,
                        on_event: EventSink | None = None) -> tuple[bytes, str]:
    """Re-encode the layers of a manifest (whose blobs are in ``blobs``) to ``compression``.

    Returns (manifest bytes, media type): the original bytes when nothing changed, else a new
    manifest stored in ``blobs`` (untagged; gc collects it unless tagged or kept). Each new
    layer's diff_id is checked against the config's (StoreError on mismatch). A Docker manifest
    becomes OCI when zstd is asked (Docker schema 2 has no zstd type). Without ``force``, the
    first ``keep_layers`` layers (those a build inherited from its base image) keep their
    compression, as BuildKit leaves existing layers alone unless ``force-compression``."""
    if compression not in mt.COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r} (gzip, zstd, uncompressed)")
    man = parse_json(Manifest, manifest_raw, origin="manifest")
    docker = man.mediaType == mt.DOCKER_MANIFEST or (man.mediaType is None and mt.is_docker(man.config.mediaType))
    to_oci = docker and compression == "zstd"
    diff_ids = config.rootfs.diff_ids
    if len(diff_ids) != len(man.layers):
        raise StoreError(f"config has {len(diff_ids)} diff_ids for {len(man.layers)} layers")
    changed = False
    layers: list[Descriptor] = []
    for i, layer in enumerate(man.layers):
        cur = mt.layer_compression(layer.mediaType)
        new_type = (mt.docker_layer_type(compression) if docker and not to_oci else mt.oci_layer_type(compression))
        if (cur == compression or i < keep_layers) and not force:
            kept_type = mt.oci_layer_type(cur) if to_oci else layer.mediaType
            if kept_type != layer.mediaType:
                layers.append(layer.model_copy(update={"mediaType": kept_type}))
                changed = True
            else:
                layers.append(layer)
            continue
        with blobs.open(layer.digest_value) as f, blobs.ingest() as w:
            diff_id, _ = recompress(f, cur, compression, w, level=level)
        if str(diff_id) != diff_ids[i]:
            raise StoreError(f"layer {layer.digest}: diff_id {diff_id} does not match config {diff_ids[i]}")
        assert w.digest is not None and w.size is not None
        new = layer.model_copy(update={"mediaType": new_type, "digest": str(w.digest), "size": w.size})
        layers.append(new)
        _emit(on_event, "convert", new)
        changed = True
    if not changed:
        media = man.mediaType or (mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST)
        return manifest_raw, media
    update: dict[str, object] = {"layers": layers}
    if to_oci:
        update["mediaType"] = mt.OCI_MANIFEST
        update["config"] = man.config.model_copy(update={"mediaType": mt.OCI_CONFIG})
    new_man = man.model_copy(update=update)
    data = canonical_json(new_man)
    blobs.put_bytes(data)
    return data, new_man.mediaType or (mt.DOCKER_MANIFEST if docker and not to_oci else mt.OCI_MANIFEST)


# ---- root file system -------------------------------------------------------------------------

def _norm(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return "" if name == "." else name


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path.startswith(prefix + "/")


WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


def _final_owners(open_layer: Callable[[int], BinaryIO], count: int) -> dict[str, int]:
    """Pass 1: for each path of the merged file system, the layer index providing it."""
    state: dict[str, tuple[int, bool]] = {}
    for i in range(count):
        with open_layer(i) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                name = _norm(m.name)
                if not name:
                    continue
                parent, _, base = name.rpartition("/")
                if base == WH_OPAQUE:
                    for p in [p for p, (li, _) in state.items() if _under(p, parent) and li < i]:
                        del state[p]
                    continue
                if base.startswith(WH_PREFIX):
                    target = (parent + "/" if parent else "") + base[len(WH_PREFIX):]
                    old = state.get(target)
                    if old is not None and old[0] < i:  # whiteouts hide lower layers only
                        del state[target]
                    if old is not None and old[1]:
                        for p in [p for p, (li, _) in state.items() if _under(p, target) and li < i]:
                            del state[p]
                    continue
                old = state.get(name)
                if old is not None and old[1] and not m.isdir():
                    for p in [p for p, (li, _) in state.items() if _under(p, name) and li < i]:
                        del state[p]
                state[name] = (i, m.isdir())
    return {p: li for p, (li, _) in state.items()}


def flatten_layers(open_layer: Callable[[int], BinaryIO], count: int, out: BinaryIO | tarfile.TarFile,
                   *, prefix: str = "") -> None:
    """Write the merged root file system of ``count`` layers (bottom first) as one tar to ``out``
    (a stream, or an open TarFile to append to), every name under ``prefix`` (``linux_arm64/``).

    ``open_layer(i)`` returns a fresh reader of layer i's uncompressed tar (closed here); each
    layer is read twice (paths, then contents), streaming. Whiteouts and opaque dirs are
    applied and never written. ``out`` is not closed."""
    owners = _final_owners(open_layer, count)
    if isinstance(out, tarfile.TarFile):
        _flatten_into(open_layer, count, out, owners, prefix)
        return
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tw:
        _flatten_into(open_layer, count, tw, owners, prefix)


def _flatten_into(open_layer: Callable[[int], BinaryIO], count: int, tw: tarfile.TarFile,
                  owners: dict[str, int], prefix: str) -> None:
    if prefix:
        d = tarfile.TarInfo(prefix.rstrip("/"))
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tw.addfile(d)
    for i in range(count):
        with open_layer(i) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                name = _norm(m.name)
                if not name or owners.get(name) != i:
                    continue
                owners.pop(name)
                m.name = prefix + name
                if m.islnk():
                    m.linkname = prefix + _norm(m.linkname)
                if m.isreg():
                    tw.addfile(m, tar.extractfile(m))
                else:
                    tw.addfile(m)


class _AtomicOut:
    """A file written beside ``path`` and renamed into place on success (removed on failure)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.tmp = Path(name)
        self.f = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.f.close()  # may fail again (ENOSPC flushing the buffer): the temp goes anyway
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def _with_output(dest: str, stdout: BinaryIO | None, write: Callable[[BinaryIO], None]) -> None:
    if dest == "-":
        if stdout is None:
            raise UsageError("dest=- needs an output stream (the CLI passes stdout)")
        try:
            write(stdout)
            stdout.flush()
        except BrokenPipeError:  # the output is incomplete: never a silent success
            raise HostError("writing the output to stdout failed: broken pipe (its reader went away)") from None
        return
    from .errors import no_space

    try:
        out = _AtomicOut(Path(dest))
    except OSError as exc:
        raise no_space(exc, f"writing {dest}", Path(dest).parent) or HostError(f"cannot write {dest}: {exc.strerror}")
    try:
        write(out.f)
        out.commit()
    except BaseException as exc:
        out.abort()
        full = no_space(exc, f"writing {dest}", Path(dest).parent) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from exc
        raise


def _layer_reader(blobs: BlobStore, layer: Descriptor) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        f = blobs.open(layer.digest_value)
        return _Closing(open_decompressed(f, mt.layer_compression(layer.mediaType)), f)  # type: ignore[return-value]
    return opener


class _Closing(io.RawIOBase):
    """A reader that closes both the decompressor and the underlying file."""

    def __init__(self, inner: BinaryIO, base: BinaryIO) -> None:
        self._inner, self._base = inner, base

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(n)

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            if self._inner is not self._base:
                self._inner.close()
        finally:
            self._base.close()
            super().close()


def export_image(store: "Store", name: str, output: OutputSpec, *, tags: tuple[str, ...] = (),
                 platform: Platform | str | Any = None, on_event: EventSink | None = None,
                 stdout: BinaryIO | None = None, insecure: tuple[str, ...] = (),
                 open_registry: Callable[[str], ImageDestination] | None = None,
                 keep_layers: int = 0) -> Digest:
    """Write the stored image ``name`` (name, digest or ID) to ``output``; returns the exported
    manifest's digest.

    Image names written into archives / tagged / pushed: ``output.names``, else ``tags``, else
    the name ``name`` is tagged as. ``stdout``: the stream for ``dest=-`` (the CLI passes
    ``sys.stdout.buffer``). File outputs are written to a temp file beside ``dest`` and renamed,
    so a failure leaves no partial file. Pushing uses ``open_registry(name)`` when given, else
    builder.registry's RegistryDestination (``insecure``: registry hosts allowed over HTTP).
    ``keep_layers``: see :func:`convert_compression`. The image is pinned in the store's lease
    (when one is held) before it is read, so a concurrent prune keeps it."""
    top = store.resolve(name)
    pin = getattr(store, "pin", None)
    if pin is not None:
        pin([str(top.digest)])
    if platform is None and mt.is_index(top.mediaType):
        return _export_index(store, name, top, output, tags=tags, on_event=on_event, stdout=stdout,
                             insecure=insecure, open_registry=open_registry, keep_layers=keep_layers)
    img = store.image(name, as_platform(platform))
    manifest_raw, mtype = img.manifest_raw, img.manifest_desc.mediaType
    if output.compression is not None:
        manifest_raw, mtype = convert_compression(store.blobs, manifest_raw, img.config, output.compression,
                                                  force=output.force_compression,
                                                  level=output.compression_level, keep_layers=keep_layers,
                                                  on_event=on_event)
    digest = Digest.of_bytes(manifest_raw)
    if not store.blobs.has(digest):
        store.blobs.put_bytes(manifest_raw)
    names = output.names or tuple(tags) or _names_for(store, name)
    ref = str(digest)
    typ = output.type
    if typ == "oci" and not output.tar:
        from .oci.layoutdir import OciLayoutDir

        assert output.dest is not None
        return copy_image(store, ref, OciLayoutDir(output.dest), names, on_event=on_event)
    if typ in ("oci", "docker"):
        assert output.dest is not None

        def write(f: BinaryIO) -> None:
            if typ == "oci":
                from .oci.layoutdir import OciLayoutTarWriter
                w: "OciLayoutTarWriter | DockerArchiveWriter" = OciLayoutTarWriter(f)
            else:
                from .oci.dockerarchive import DockerArchiveWriter
                w = DockerArchiveWriter(f)
            with w:
                copy_image(store, ref, w, names, on_event=on_event)

        _with_output(output.dest, stdout, write)
        return digest
    man = parse_json(Manifest, manifest_raw, origin="manifest")
    if typ == "tar":
        assert output.dest is not None
        openers = [_layer_reader(store.blobs, layer) for layer in man.layers]
        _with_output(output.dest, stdout, lambda f: flatten_layers(lambda i: openers[i](), len(openers), f))
        return digest
    if typ == "local":
        assert output.dest is not None
        _export_local(store.blobs, man, Path(output.dest))
        return digest
    # image / registry
    _tag_and_push(store, Descriptor(mediaType=mtype, digest=str(digest), size=len(manifest_raw),
                                    platform=img.manifest_desc.platform), names, output.push,
                  insecure, open_registry, on_event)
    return digest


MULTI_PLATFORM_DOCKER = ("docker exporter does not currently support exporting manifest lists "
                         "(several --platform values): use --output type=oci or type=registry")


def check_multi_platform_output(output: OutputSpec) -> None:
    """UsageError for an output that cannot carry several platforms (``type=docker``, as buildx)."""
    if output.type == "docker":
        raise UsageError(MULTI_PLATFORM_DOCKER)


def platform_dir(platform: Platform | None) -> str:
    """``linux_arm64`` / ``linux_arm_v7``: the subdirectory buildx gives one platform."""
    if platform is None:
        return "unknown"
    return "_".join(p for p in (platform.os, platform.architecture, platform.variant or "") if p)


def _index_children(store: "Store", raw: bytes, origin: str) -> list[Descriptor]:
    index = parse_json(Index, raw, origin=origin)
    return [d for d in index.manifests if mt.is_manifest(d.mediaType) and d.platform is not None
            and (d.annotations or {}).get("vnd.docker.reference.type") != "attestation-manifest"]


def _export_index(store: "Store", name: str, top: Descriptor, output: OutputSpec, *, tags: tuple[str, ...],
                  on_event: EventSink | None, stdout: BinaryIO | None, insecure: tuple[str, ...],
                  open_registry: Callable[[str], ImageDestination] | None, keep_layers: int) -> Digest:
    """:func:`export_image` of a multi-platform index: oci/image/registry carry the whole index
    (recompressed per child when asked), local/tar write one ``os_arch[_variant]/`` per
    platform, docker is refused (buildx does the same)."""
    check_multi_platform_output(output)
    raw = store.blobs.read_bytes(top.digest_value, limit=_JSON_LIMIT)
    children = _index_children(store, raw, f"index of {name}")
    if output.type in ("local", "tar"):
        assert output.dest is not None
        mans = [(platform_dir(c.platform), parse_json(Manifest, store.blobs.read_bytes(c.digest_value,
                 limit=_JSON_LIMIT), origin=f"manifest of {name}")) for c in children]
        if output.type == "local":
            for sub, man in mans:
                _export_local(store.blobs, man, Path(output.dest) / sub)
        else:
            def write(f: BinaryIO) -> None:
                with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tw:
                    for sub, man in mans:
                        openers = [_layer_reader(store.blobs, layer) for layer in man.layers]
                        flatten_layers(_indexed(openers), len(openers), tw, prefix=sub + "/")
            _with_output(output.dest, stdout, write)
        return top.digest_value
    if output.compression is not None:
        raw = _recompress_index(store, raw, children, output, keep_layers, on_event)
    digest = Digest.of_bytes(raw)
    if not store.blobs.has(digest):
        store.blobs.put_bytes(raw)
    names = output.names or tuple(tags) or _names_for(store, name)
    ref = str(digest)
    if output.type == "oci":
        assert output.dest is not None
        if not output.tar:
            from .oci.layoutdir import OciLayoutDir

            return copy_image(store, ref, OciLayoutDir(output.dest), names, on_event=on_event)

        def write_oci(f: BinaryIO) -> None:
            from .oci.layoutdir import OciLayoutTarWriter

            with OciLayoutTarWriter(f) as w:
                copy_image(store, ref, w, names, on_event=on_event)
        _with_output(output.dest, stdout, write_oci)
        return digest
    _tag_and_push(store, Descriptor(mediaType=top.mediaType, digest=ref, size=len(raw)), names, output.push,
                  insecure, open_registry, on_event)
    return digest


def _recompress_index(store: "Store", raw: bytes, children: list[Descriptor], output: OutputSpec,
                      keep_layers: int, on_event: EventSink | None) -> bytes:
    """The index with each platform's layers re-encoded per ``output.compression`` (new child
    manifests stored); the original bytes when nothing changed."""
    index = parse_json(Index, raw, origin="index")
    by_digest = {c.digest: c for c in children}
    changed = False
    entries: list[Descriptor] = []
    for d in index.manifests:
        if d.digest not in by_digest:
            entries.append(d)
            continue
        man_raw = store.blobs.read_bytes(d.digest_value, limit=_JSON_LIMIT)
        cfg_digest = parse_json(Manifest, man_raw, origin="manifest").config.digest_value
        config = parse_json(ImageConfig, store.blobs.read_bytes(cfg_digest, limit=_JSON_LIMIT), origin="config")
        new_raw, new_type = convert_compression(store.blobs, man_raw, config, output.compression or "gzip",
                                                force=output.force_compression, level=output.compression_level,
                                                keep_layers=keep_layers, on_event=on_event)
        if new_raw is man_raw:
            entries.append(d)
            continue
        changed = True
        entries.append(d.model_copy(update={"mediaType": new_type, "digest": str(Digest.of_bytes(new_raw)),
                                            "size": len(new_raw)}))
    if not changed:
        return raw
    data = canonical_json(index.model_copy(update={"manifests": entries}))
    store.blobs.put_bytes(data)
    return data


def _tag_and_push(store: "Store", desc: Descriptor, names: tuple[str, ...], push: bool, insecure: tuple[str, ...],
                  open_registry: Callable[[str], ImageDestination] | None, on_event: EventSink | None) -> None:
    """Tag the stored manifest or index ``desc`` as each of ``names``; with ``push`` also copy it
    to each name's registry (UsageError when there is no name to push to)."""
    from .oci.reference import parse_reference

    for n in names:
        store.tag(n, desc)
    if push and not names:
        raise UsageError("pushing needs an image name: give -t NAME or --output type=registry,name=NAME")
    if not push:
        return
    ref = desc.digest
    for n in names:
        dst = open_registry(n) if open_registry is not None else _registry_destination(n, insecure)
        tag = parse_reference(n).tag
        try:
            copy_image(store, ref, dst, (tag,) if tag else (), on_event=on_event)
        finally:
            close = getattr(dst, "close", None)
            if close is not None:
                close()


def _registry_destination(name: str, insecure: tuple[str, ...]) -> ImageDestination:
    from .oci.reference import parse_reference
    from .registry.destination import RegistryDestination

    from .registry.client import is_insecure

    ref = parse_reference(name)
    return RegistryDestination(name, insecure=True if is_insecure(ref.registry, insecure) else None)


def _names_for(store: "Store", name: str) -> tuple[str, ...]:
    """The full name ``name`` was tagged as, or () when ``name`` is an ID/digest."""
    from .oci.reference import parse_reference
    from .errors import ReferenceError_

    try:
        full = str(parse_reference(name))
    except ReferenceError_:
        return ()
    return (full,) if any(n == full for n, _ in store.tags()) else ()


def _indexed(openers: list[Callable[[], BinaryIO]]) -> Callable[[int], BinaryIO]:
    """``open_layer`` for :func:`flatten_layers` over a list of openers."""
    return lambda i: openers[i]()


def _export_local(blobs: BlobStore, man: Manifest, dest: Path) -> None:
    """Unpack the root file system into ``dest`` with :func:`builder.layer.extract.extract_layers`
    (safe extraction, whiteouts applied), streaming one layer at a time."""
    from .layer.extract import extract_layers

    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HostError(f"cannot make the output directory {dest}: {exc.strerror}") from None

    def streams() -> Generator[tuple[BinaryIO, str | None], None, None]:
        for layer in man.layers:  # one layer file open at a time
            with blobs.open(layer.digest_value) as f:
                yield f, mt.layer_compression(layer.mediaType)

    gen = streams()
    try:
        extract_layers(gen, dest)
    finally:
        gen.close()


def iter_layer_members(blobs: BlobStore, layer: Descriptor) -> Iterator[tarfile.TarInfo]:
    """Headers of one stored layer (streamed)."""
    with _layer_reader(blobs, layer)() as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        yield from tar

