"""OCI image layouts outside the store: a directory, or a tar of one, as ImageSource/ImageDestination.

* :class:`OciLayoutDir` (directory; read and write). Writing creates ``oci-layout``,
  ``index.json`` and ``blobs/`` when missing and keeps existing entries (like skopeo).
* :class:`OciLayoutTarReader` (a tar file; read, blobs streamed from the tar without extraction).
* :class:`OciLayoutTarWriter` (any writable stream, e.g. a file or stdout; written in tar
  stream mode, blobs copied in bounded chunks, ``index.json`` and ``oci-layout`` added by
  :meth:`~OciLayoutTarWriter.close`).

Tags: ``get_manifest(ref)`` accepts the ``org.opencontainers.image.ref.name`` as written (a
bare tag such as ``latest``, as skopeo writes, or a full name), a full or familiar image name
(matched against ``io.containerd.image.name`` too), a ``sha256:`` digest, or ``""`` when the
index holds exactly one manifest. Writers annotate each manifest with ref.name = the tag and
``io.containerd.image.name`` = the full name (buildx's behaviour).

Errors: StoreError for missing/malformed layouts and unknown refs; ImageNotFound (a
StoreError) when a ref names nothing.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ..digest import Digest
from ..errors import ReferenceError_, StoreError
from ..store.blobs import BlobStore, VerifyingReader
from ..store.layout import ImageNotFound, init_layout, read_index_file, sniff_media_type, write_file_atomic
from . import mediatypes as mt
from .models import Descriptor, ImageConfig, Index, Manifest, OciLayout, Platform, canonical_json, parse_json
from .reference import parse_reference

_JSON_LIMIT = 16 << 20
_SMALL = 1 << 20


# ---- ref matching shared by readers and writers ---------------------------------------------------

def tag_annotations(name: str) -> dict[str, str]:
    """buildx's annotations for an image name: ref.name = tag, containerd name = full name."""
    ref = parse_reference(name)
    if ref.digest is not None and ref.tag is None:
        raise ReferenceError_(f"cannot tag with a digest reference: {name!r}")
    return {mt.ANNOTATION_CONTAINERD_NAME: str(ref.with_tag(ref.tag or "latest")),
            mt.ANNOTATION_REF_NAME: ref.tag or "latest"}


def find_in_index(index: Index, ref: str, *, origin: str) -> Descriptor:
    """The entry of ``index`` that ``ref`` names (see module docstring); ImageNotFound if none,
    StoreError if a bare tag is ambiguous."""
    entries = index.manifests
    if ref == "":
        if len(entries) == 1:
            return entries[0]
        raise StoreError(f"{origin}: holds {len(entries)} manifests; name one with :TAG or @sha256:...")
    if ref.startswith("sha256:") or ref.startswith("sha512:"):
        for d in entries:
            if d.digest == ref:
                return d
        raise ImageNotFound(f"{origin}: no manifest {ref}")
    exact = [d for d in entries if (d.annotations or {}).get(mt.ANNOTATION_REF_NAME) == ref]
    if len(exact) == 1:
        return exact[0]
    try:
        full = str(parse_reference(ref))
    except ReferenceError_:
        full = None
    if full is not None:
        named = [d for d in entries if full in ((d.annotations or {}).get(mt.ANNOTATION_CONTAINERD_NAME),
                                                 (d.annotations or {}).get(mt.ANNOTATION_REF_NAME))]
        if named:
            return named[0]
    # a bare tag against full names written by pybuild's store: "latest" -> "...:latest"
    by_tag = [d for d in entries
              if _tag_of((d.annotations or {}).get(mt.ANNOTATION_REF_NAME, "")) == ref]
    if len(by_tag) == 1:
        return by_tag[0]
    if len(exact) > 1 or len(by_tag) > 1:
        raise StoreError(f"{origin}: tag {ref!r} is ambiguous")
    raise ImageNotFound(f"{origin}: no image tagged {ref!r}")


def _unlisted_digest(index: Index, ref: str) -> Digest | None:
    """The digest ``ref`` spells when it is one and index.json does not list it."""
    if not (ref.startswith("sha256:") or ref.startswith("sha512:")):
        return None
    if any(d.digest == ref for d in index.manifests):
        return None
    try:
        return Digest.parse(ref)
    except ValueError:
        raise StoreError(f"invalid digest {ref!r}") from None


def _tag_of(name: str) -> str | None:
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[colon + 1:] if colon > slash else None


def parse_layout_ref(text: str) -> tuple[Path, str]:
    """Split ``PATH[:TAG|@sha256:...]`` (``oci-layout://`` already removed) into path and ref
    (``""`` when none). A ``:`` only starts a tag after the last ``/``."""
    if "@" in text:
        path, _, digest = text.rpartition("@")
        return Path(path), digest
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        return Path(text[:colon]), text[colon + 1:]
    return Path(text), ""


def _merge_entry(entries: list[Descriptor], new: Descriptor) -> list[Descriptor]:
    """Replace entries carrying the same name annotations as ``new``, then append it."""
    ann = new.annotations or {}
    key = ann.get(mt.ANNOTATION_CONTAINERD_NAME) or ann.get(mt.ANNOTATION_REF_NAME)
    if key is None:
        return [d for d in entries if d.digest != new.digest or d.annotations] + [new]
    kept = []
    for d in entries:
        a = d.annotations or {}
        if (a.get(mt.ANNOTATION_CONTAINERD_NAME) or a.get(mt.ANNOTATION_REF_NAME)) == key:
            continue
        kept.append(d)
    return kept + [new]


def _platform_of(config_raw: bytes | None) -> Platform | None:
    if config_raw is None:
        return None
    try:
        return parse_json(ImageConfig, config_raw, origin="config").platform
    except StoreError:
        return None


# ---- directory ----------------------------------------------------------------------------------

class OciLayoutDir:
    """An OCI layout directory. Reading needs an existing layout (StoreError otherwise);
    the first write creates one. Blob writes are atomic (temp dir ``.pybuild-tmp`` inside the
    layout, removed again by :meth:`put_manifest`)."""

    child_manifests_as_blobs = True  # an index's manifests are blobs, not index.json entries

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._tmp = self.path / ".pybuild-tmp"
        self.blobs = BlobStore(self.path, self._tmp)

    def _ensure(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            init_layout(self.path, self._tmp)
        except OSError as e:
            raise StoreError(f"cannot create OCI layout {self.path}: {e.strerror or e}") from e

    def read_index(self) -> Index:
        if not (self.path / "oci-layout").is_file():
            raise StoreError(f"{self.path}: not an OCI image layout (no oci-layout file)")
        return read_index_file(self.path / "index.json")

    # ImageSource
    def get_manifest(self, ref: str) -> tuple[bytes, str]:
        """By tag/name/digest of index.json; a digest not listed there (an index's child) is
        read from blobs/ with its media type taken from the JSON."""
        index = self.read_index()
        direct = _unlisted_digest(index, ref)
        if direct is not None and self.blobs.has(direct):
            data = self.blobs.read_bytes(direct, limit=_JSON_LIMIT)
            return data, sniff_media_type(data)
        desc = find_in_index(index, ref, origin=str(self.path))
        return self.blobs.read_bytes(desc.digest_value, limit=_JSON_LIMIT), desc.mediaType

    def open_blob(self, digest: Digest) -> BinaryIO:
        return self.blobs.open(digest)

    # ImageDestination
    def has_blob(self, digest: Digest) -> bool:
        return self.blobs.has(digest)

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        self._ensure()
        if not self.blobs.has(digest):
            self.blobs.put_stream(stream, digest, size)

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...]) -> Digest:
        self._ensure()
        digest = self.blobs.put_bytes(data)
        platform = None
        if mt.is_manifest(media_type):
            man = parse_json(Manifest, data, origin="manifest")
            if self.blobs.has(man.config.digest_value):
                platform = _platform_of(self.blobs.read_bytes(man.config.digest_value, limit=_JSON_LIMIT))
        base = Descriptor(mediaType=media_type, digest=str(digest), size=len(data), platform=platform)
        index = self.read_index()
        entries = list(index.manifests)
        for name in tags or ("",):
            entry = base.model_copy(update={"annotations": tag_annotations(name)}) if name else base
            entries = _merge_entry(entries, entry)
        write_file_atomic(self.path / "index.json",
                          canonical_json(index.model_copy(update={"manifests": entries})), self._tmp)
        shutil.rmtree(self._tmp, ignore_errors=True)
        return digest


# ---- tar reader -----------------------------------------------------------------------------------

class OciLayoutTarReader:
    """An OCI layout packed in a (seekable, uncompressed) tar file. Close it (or use ``with``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._tar = tarfile.open(self.path, mode="r:")
        except (OSError, tarfile.TarError) as e:
            raise StoreError(f"{self.path}: cannot read as a tar: {e}") from e
        self._members = {m.name.lstrip("./") if m.name.startswith("./") else m.name: m
                         for m in self._tar.getmembers() if m.isfile()}
        if "oci-layout" not in self._members or "index.json" not in self._members:
            self._tar.close()
            raise StoreError(f"{self.path}: not an OCI layout tar (no oci-layout/index.json)")

    def _read_small(self, name: str) -> bytes:
        m = self._members.get(name)
        if m is None:
            raise StoreError(f"{self.path}: missing {name}")
        if m.size > _JSON_LIMIT:
            raise StoreError(f"{self.path}: {name} is too large for JSON")
        f = self._tar.extractfile(m)
        assert f is not None
        with f:
            return f.read()

    def read_index(self) -> Index:
        return parse_json(Index, self._read_small("index.json"), origin=f"{self.path}:index.json")

    def get_manifest(self, ref: str) -> tuple[bytes, str]:
        index = self.read_index()
        direct = _unlisted_digest(index, ref)
        if direct is not None and f"blobs/{direct.algorithm}/{direct.hex}" in self._members:
            data = self._read_small(f"blobs/{direct.algorithm}/{direct.hex}")
            return data, sniff_media_type(data)
        desc = find_in_index(index, ref, origin=str(self.path))
        return self._read_small(f"blobs/{desc.digest_value.algorithm}/{desc.digest_value.hex}"), desc.mediaType

    def open_blob(self, digest: Digest) -> BinaryIO:
        m = self._members.get(f"blobs/{digest.algorithm}/{digest.hex}")
        if m is None:
            raise StoreError(f"{self.path}: blob {digest} is missing")
        f = self._tar.extractfile(m)
        assert f is not None
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> "OciLayoutTarReader":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_layout(path: Path | str) -> OciLayoutDir | OciLayoutTarReader:
    """An ImageSource for an OCI layout directory or tar; StoreError when neither."""
    p = Path(path)
    if p.is_dir():
        return OciLayoutDir(p)
    if p.is_file():
        return OciLayoutTarReader(p)
    raise StoreError(f"{p}: no such OCI layout")


# ---- tar writer -----------------------------------------------------------------------------------

class TarBlobWriter:
    """Writes ``blobs/<alg>/<hex>`` members (and other files) to a tar stream.

    ``out`` is not closed here; :meth:`finish` ends the tar. Headers are deterministic
    (mtime 0, root owner, 0644/0755). A blob whose stream does not match its digest raises
    StoreError after it was written: the tar is then unusable and the caller discards it."""

    def __init__(self, out: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self._names: set[str] = set()
        self.blobs: set[Digest] = set()
        self._dirs_done = False

    def _info(self, name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size = 0 if directory else size
        ti.mtime = 0
        ti.mode = 0o755 if directory else 0o644
        ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def _dirs(self, algorithm: str) -> None:
        for d in ("blobs", f"blobs/{algorithm}"):
            if d not in self._names:
                self._tar.addfile(self._info(d, 0, directory=True))
                self._names.add(d)

    def add_file(self, name: str, data: bytes) -> None:
        if name in self._names:
            raise StoreError(f"tar member {name} written twice")
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self._names.add(name)

    def has_blob(self, digest: Digest) -> bool:
        return digest in self.blobs

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        if digest in self.blobs:
            return
        self._dirs(digest.algorithm)
        reader = VerifyingReader(stream, digest, size)
        try:
            self._tar.addfile(self._info(f"blobs/{digest.algorithm}/{digest.hex}", size), reader)
        except (OSError, tarfile.TarError) as e:
            raise StoreError(f"writing blob {digest} to the tar failed: {e}") from e
        reader.verify()
        self.blobs.add(digest)
        self._names.add(f"blobs/{digest.algorithm}/{digest.hex}")

    def put_bytes(self, data: bytes) -> Digest:
        d = Digest.of_bytes(data)
        self.put_blob(d, len(data), io.BytesIO(data))
        return d

    def finish(self) -> None:
        self._tar.close()

    def abort(self) -> None:
        """Give up after an error: nothing more is written (the output is to be discarded)."""
        self._tar.closed = True  # type: ignore[attr-defined]  # TarFile.close() then writes nothing
        stream = getattr(self._tar, "fileobj", None)
        if stream is not None and hasattr(stream, "closed"):
            stream.closed = True


class OciLayoutTarWriter:
    """ImageDestination writing an OCI layout tar to ``out`` in one stream.

    Every blob a manifest names must be put before the manifest (StoreError otherwise).
    :meth:`close` writes ``oci-layout`` and ``index.json`` and ends the tar; ``out`` stays open."""

    child_manifests_as_blobs = True  # an index's manifests are blobs, not index.json entries

    def __init__(self, out: BinaryIO) -> None:
        self._w = TarBlobWriter(out)
        self._entries: list[Descriptor] = []
        self._configs: dict[Digest, bytes] = {}
        self._closed = False

    def has_blob(self, digest: Digest) -> bool:
        return self._w.has_blob(digest)

    def put_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        if size <= _SMALL and not self._w.has_blob(digest):
            data = stream.read(size + 1)  # small blobs (configs) are kept for the platform
            self._w.put_blob(digest, size, io.BytesIO(data))
            if data[:1] == b"{":
                self._configs[digest] = data
            return
        self._w.put_blob(digest, size, stream)

    def put_config(self, data: bytes) -> Digest:
        """Put a config blob, remembering it for the manifest's platform."""
        d = self._w.put_bytes(data)
        self._configs[d] = data
        return d

    def put_manifest(self, data: bytes, media_type: str, tags: tuple[str, ...]) -> Digest:
        platform = None
        if mt.is_manifest(media_type):
            man = parse_json(Manifest, data, origin="manifest")
            for child in [man.config, *man.layers]:
                if not self._w.has_blob(child.digest_value):
                    raise StoreError(f"manifest names blob {child.digest} that was not written")
            platform = _platform_of(self._configs.get(man.config.digest_value))
        digest = self._w.put_bytes(data)
        base = Descriptor(mediaType=media_type, digest=str(digest), size=len(data), platform=platform)
        for name in tags or ("",):
            entry = base.model_copy(update={"annotations": tag_annotations(name)}) if name else base
            self._entries = _merge_entry(self._entries, entry)
        return digest

    def abort(self) -> None:
        """Stop after an error without finishing the tar (the caller discards the output)."""
        self._closed = True
        self._w.abort()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._w.add_file("oci-layout", canonical_json(OciLayout()))
        self._w.add_file("index.json", canonical_json(Index(mediaType=mt.OCI_INDEX, manifests=self._entries)))
        self._w.finish()

    def __enter__(self) -> "OciLayoutTarWriter":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()

