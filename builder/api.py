"""The library's front door, for Python programs (CI scripts) that build without shelling out.

Importable as ``from builder import build, push, ...`` (see the README). Every operation takes
an optional ``store`` (default: :func:`open_store`'s default root) and reports progress as typed
events (:mod:`builder.events`) to ``on_event``; nothing here prints. Errors are
:class:`builder.errors.PybuildError` subclasses: ``DockerfileError`` / ``StepFailed`` (the
Dockerfile or a step), ``UsageError`` (bad option values), ``HostError`` (the host cannot do it),
``StoreError`` / ``RegistryError`` / ``ReferenceError_`` (store, registry, references).

Heavy modules (the engine, pydantic, requests) are imported by the call that needs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from . import codecache

codecache.install()  # before the first dataclass is made (dataclasses compiled once per install)

from .errors import UsageError  # noqa: E402
from .events import EventSink, discard, serialized  # noqa: E402

if TYPE_CHECKING:
    from .engine.build import BuildResult
    from .engine.options import BuildOptions, SecretSource
    from .engine.prune import CacheItem
    from .oci.models import Descriptor
    from .outputspec import OutputSpec
    from .store.check import CheckReport
    from .store.layout import Store, StoredImage

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
"""A value of parsed JSON (manifests, configs)."""
JSONObject = dict[str, JSONValue]
PathArg = str | os.PathLike[str]
OutputSink = Callable[[bytes], None]

_NO_ARGS: Mapping[str, str] = MappingProxyType({})


def open_store(root: PathArg | None = None) -> Store:
    """The image store at ``root`` (created when missing), else at ``$PYBUILD_ROOT``, else
    ``/var/lib/pybuild`` as root and ``~/.local/share/pybuild`` otherwise. Raises StoreError
    when it cannot be created. The store needs no closing."""
    from .store.layout import Store, default_root

    return Store(Path(root) if root is not None else default_root())


def _sink(on_event: EventSink | None) -> EventSink:
    return serialized(on_event) if on_event is not None else discard


def _store(store: Store | None) -> Store:
    return store if store is not None else open_store()


# -- build --------------------------------------------------------------------------------------
def build(context: PathArg, *, dockerfile: PathArg | None = None, tags: Sequence[str] = (),
          build_args: Mapping[str, str] = _NO_ARGS, target: str | None = None,
          platforms: Sequence[str] = (), outputs: Sequence[str | OutputSpec] = (),
          cache_from: Sequence[str] = (), cache_to: Sequence[str] = (),
          secrets: Sequence[SecretSource | str] = (), no_cache: bool = False,
          store: Store | None = None, on_event: EventSink | None = None) -> BuildResult:
    """Build the Dockerfile (default ``CONTEXT/Dockerfile``) with the directory ``context``
    and tag the image with ``tags``; returns the image's digests.

    ``outputs``, ``cache_from``, ``cache_to`` and string ``secrets`` take the values of the
    buildx flags (``type=registry``, ``type=oci,dest=app.tar``, ``id=token,src=FILE``).
    ``platforms``: ``os/arch[/variant]`` values (default: the host's). Events arrive in the
    order :mod:`builder.events` describes; the last one is ``ImageWritten``. On failure no tag
    changes and nothing of the build is left behind."""
    from .engine.options import BuildOptions, SecretSource

    ctx = Path(context)
    if not ctx.is_dir():
        raise UsageError(f"build context {str(context)!r} is not a directory")
    opts = BuildOptions(
        context=ctx, dockerfile=Path(dockerfile) if dockerfile is not None else ctx / "Dockerfile",
        tags=tuple(tags), build_args=tuple(build_args.items()), target=target,
        platform=",".join(platforms) or None, no_cache=no_cache, outputs=tuple(outputs),
        cache_from=tuple(cache_from), cache_to=tuple(cache_to),
        secrets=tuple(s if isinstance(s, SecretSource) else SecretSource.parse(s) for s in secrets))
    return build_with(opts, store=store, on_event=on_event)


def build_with(options: BuildOptions, *, store: Store | None = None,
               on_event: EventSink | None = None) -> BuildResult:
    """:func:`build` with every option the CLI has, as one
    :class:`builder.engine.options.BuildOptions` value."""
    from .engine.build import run_build

    st = _store(store)
    with st.lease():
        return run_build(options, st, _sink(on_event))


# -- images in the store ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImageRow:
    """One tagged image, as ``pybuild images`` lists it."""

    repository: str
    tag: str
    id: str          # config digest hex, as docker shows "IMAGE ID"
    digest: str      # manifest digest
    size: int        # compressed size of config + layers


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """A stored image: its name as asked, manifest digest, and the manifest and config JSON
    as stored (parsed)."""

    name: str
    digest: str
    manifest: JSONObject
    config: JSONObject
    index: JSONObject | None = None  # {"Digest", "Platforms"} when ``name`` is a multi-platform index

    def _section(self) -> JSONObject:
        section = self.config.get("config")
        return section if isinstance(section, dict) else {}

    def _strings(self, key: str) -> tuple[str, ...]:
        value = self._section().get(key)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    @property
    def env(self) -> dict[str, str]:
        """The image's environment (``Env``), as a mapping."""
        return dict(e.partition("=")[::2] for e in self._strings("Env"))

    @property
    def entrypoint(self) -> tuple[str, ...]:
        return self._strings("Entrypoint")

    @property
    def cmd(self) -> tuple[str, ...]:
        return self._strings("Cmd")

    @property
    def labels(self) -> dict[str, str]:
        value = self._section().get("Labels")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @property
    def platform(self) -> str:
        """``os/architecture[/variant]`` of the config."""
        parts = [str(self.config.get("os", "")), str(self.config.get("architecture", ""))]
        if self.config.get("variant"):
            parts.append(str(self.config["variant"]))
        return "/".join(parts)

    @property
    def layers(self) -> tuple[str, ...]:
        """The layer blob digests, bottom first."""
        layers = self.manifest.get("layers")
        if not isinstance(layers, list):
            return ()
        return tuple(str(layer.get("digest")) for layer in layers if isinstance(layer, dict))

    def as_json(self) -> JSONObject:
        """What ``pybuild inspect`` prints."""
        out: JSONObject = {"Name": self.name, "Digest": self.digest}
        if self.index is not None:
            out["Index"] = self.index
        out.update({"Manifest": self.manifest, "Config": self.config})
        return out


def _stored_image(store: Store, name: str, platform: str | None = None) -> StoredImage:
    """The stored image ``name``; of a multi-platform index, the ``platform`` manifest (default:
    the host's, else the index's first image). StoreError when ``platform`` is not there."""
    from .errors import StoreError
    from .oci import mediatypes as mt
    from .oci.models import Index, parse_json, parse_platform

    if platform:
        return store.image(name, parse_platform(platform))
    try:
        return store.image(name)
    except StoreError:
        desc = store.resolve(name)
        if not mt.is_index(desc.mediaType):
            raise
        index = parse_json(Index, store.blobs.read_bytes(desc.digest_value, limit=16 << 20), origin=name)
        first = next((d.platform for d in index.manifests if d.platform is not None), None)
        if first is None:
            raise
        return store.image(name, first)


def _load(store: Store, name: str, platform: str | None = None) -> tuple[JSONObject, JSONObject, str]:
    img = _stored_image(store, name, platform)
    manifest: JSONObject = json.loads(img.manifest_raw)
    config: JSONObject = json.loads(img.config_raw)
    return manifest, config, str(img.manifest_desc.digest)


def _index_of(store: Store, name: str) -> JSONObject | None:
    """``{"Digest", "Platforms"}`` when ``name`` is a multi-platform index, else None."""
    from .oci import mediatypes as mt

    top = store.resolve(name)
    if not mt.is_index(top.mediaType):
        return None
    index = json.loads(store.blobs.read_bytes(top.digest_value, limit=16 << 20))
    platforms: list[JSONValue] = []
    for m in _list(index.get("manifests")):
        p = m.get("platform") if isinstance(m, dict) else None
        if isinstance(p, dict):
            platforms.append("/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k)))
    return {"Digest": str(top.digest), "Platforms": platforms}


def images(*, store: Store | None = None, platform: str | None = None) -> list[ImageRow]:
    """Every tagged image of the store; an entry whose content is missing is left out. For a
    multi-platform tag, ID and size are ``platform``'s image (default: the host's, else the
    first) and ``digest`` is the index's; a tag without ``platform`` is left out."""
    from .errors import PybuildError

    if platform:
        from .oci.models import parse_platform

        parse_platform(platform)  # a malformed value is a UsageError, not an empty list
    st = _store(store)
    rows = []
    for name, desc in st.tags():
        try:
            manifest, _config, _digest = _load(st, name, platform)
        except (PybuildError, OSError, ValueError):  # a broken entry is not listed, and not fatal
            continue
        repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
        blobs = [manifest.get("config")] + list(_list(manifest.get("layers")))
        size = sum(_blob_size(b) or 0 for b in blobs)
        config = manifest.get("config")
        cfg_digest = str(config.get("digest", "")) if isinstance(config, dict) else ""
        rows.append(ImageRow(_familiar(repo), tag or "<none>", cfg_digest.partition(":")[2], str(desc.digest),
                             size))
    return rows


def _blob_size(descriptor: JSONValue) -> int | None:
    """The ``size`` of a descriptor object, or None."""
    size = descriptor.get("size") if isinstance(descriptor, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _list(value: JSONValue) -> list[JSONValue]:
    return value if isinstance(value, list) else []


def _familiar(repo: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            return repo[len(prefix):]
    return repo


def inspect(name: str, *, store: Store | None = None, platform: str | None = None) -> ImageDetails:
    """The stored image ``name`` (a tag, ``sha256:`` digest or ID); of a multi-platform index,
    ``platform``'s image (``index`` then gives the index digest and its platforms). Raises
    StoreError / ReferenceError_ when it names nothing."""
    st = _store(store)
    manifest, config, digest = _load(st, name, platform)
    return ImageDetails(name, digest, manifest, config, _index_of(st, name))


def history(name: str, *, store: Store | None = None,
            platform: str | None = None) -> list[tuple[str | None, int | None, str]]:
    """Newest first, like ``docker history``: (created, layer size or None, created_by)."""
    manifest, config, _digest = _load(_store(store), name, platform)
    layers = iter(_list(manifest.get("layers")))
    rows = []
    for h in _list(config.get("history")):
        if not isinstance(h, dict):
            continue
        size: int | None = None
        if not h.get("empty_layer"):
            size = _blob_size(next(layers, None))
        created = h.get("created")
        rows.append((str(created) if created is not None else None, size, str(h.get("created_by", ""))))
    rows.reverse()
    return rows


def tag(source: str, target: str, *, store: Store | None = None) -> None:
    """Point the tag ``target`` at the image ``source`` names."""
    from .oci.reference import parse_reference

    st = _store(store)
    st.tag(str(parse_reference(target)), st.resolve(source))


def untag(name: str, *, store: Store | None = None) -> list[str]:
    """Remove the tag ``name`` (the image's content stays until :func:`prune`); returns the
    names removed. ``name`` may also be an image ID or digest (prefix) with one tag, which is
    removed (as ``docker rmi ID``); an ID with several tags raises ReferenceError_ naming them.
    ImageNotFound (a StoreError and ReferenceError_) when nothing matches."""
    from .errors import ReferenceError_
    from .oci.reference import parse_reference

    st = _store(store)
    try:
        full = str(parse_reference(name)) if not name.startswith("sha256:") else name
        st.untag(full)
        return [full]
    except ReferenceError_ as exc:
        try:
            digest = st.resolve(name).digest
        except ReferenceError_:
            raise exc from None
        names = [n for n, d in st.tags() if d.digest == digest or _index_holds(st, d, digest)]
        if not names:
            raise exc from None
        if len(names) > 1:
            raise ReferenceError_(f"image {name} is tagged {len(names)} times ({', '.join(names)}): "
                                  "remove the tags by name") from None
        st.untag(names[0])
        return names


def _index_holds(store: Store, desc: Descriptor, digest: str) -> bool:
    """True when ``desc`` is an index listing the manifest ``digest`` (a multi-platform tag,
    whose IMAGE ID in :func:`images` is one platform's)."""
    from .errors import PybuildError
    from .oci import mediatypes as mt

    if not mt.is_index(desc.mediaType):
        return False
    try:
        index = json.loads(store.blobs.read_bytes(desc.digest_value, limit=16 << 20))
    except (OSError, ValueError, PybuildError):
        return False
    return any(isinstance(m, dict) and m.get("digest") == digest for m in _list(index.get("manifests")))


def parse_size(text: str) -> int:
    """``500MB``, ``2GB``, ``1.5GiB`` as bytes; UsageError otherwise (:func:`builder.units.parse_size`)."""
    from .units import parse_size as _parse

    return _parse(text)


def prune(*, all_cache: bool = False, keep_storage: int | None = None, until: float | None = None,
          store: Store | None = None) -> int:
    """Remove unreferenced blobs and layers and dangling cache records (``all_cache``: every
    cache record and cache mount; ``until``: also those last used more than that many seconds
    ago; ``keep_storage``: keep the newest records and cache mounts up to that many bytes).
    Returns the bytes freed. Tagged images are never touched."""
    from .engine.prune import prune_store

    return prune_store(_store(store), all_cache=all_cache, keep_storage=keep_storage, until=until)


def cache_items(*, store: Store | None = None) -> list[CacheItem]:
    """Every cache record and ``RUN --mount=type=cache`` directory with its size and last
    use, newest first (``pybuild du --verbose``)."""
    from .engine.prune import cache_items as _items

    return _items(_store(store))


def check_store(*, repair: bool = False, store: Store | None = None) -> CheckReport:
    """Verify the store (:func:`builder.store.check.check_store`): blobs, tags' closures, cache
    records, snapshots, leftovers of dead processes; ``repair`` removes what is broken."""
    from .store.check import check_store as _check

    return _check(_store(store), repair=repair)


def disk_usage(*, store: Store | None = None) -> dict[str, int]:
    """Bytes used by the store, by kind."""
    from .engine.prune import usage

    return usage(_store(store))


# -- running -------------------------------------------------------------------------------------
def run(image: str, command: Sequence[str] = (), *, network: str = "host", env: Mapping[str, str] = _NO_ARGS,
        user: str | None = None, workdir: str | None = None, store: Store | None = None,
        on_output: OutputSink | None = None, platform: str | None = None) -> int:
    """Run ``image``'s entrypoint with ``command`` (default: its Cmd) in the sandbox; each
    output line (stdout and stderr, bytes) goes to ``on_output``. ``platform`` picks the image
    of a multi-platform index (another architecture needs a binfmt_misc handler: HostError
    otherwise). Returns the exit code. Nothing the command writes is kept; nothing is left
    mounted or running."""
    from .engine.runimage import run_image

    st = _store(store)
    with st.lease():
        return run_image(st, image, tuple(command), network=network, env=tuple(env.items()), user=user,
                         workdir=workdir, on_output=on_output, platform=platform)


# -- registries ---------------------------------------------------------------------------------
def pull(ref: str, *, platform: str | None = None, insecure: Sequence[str] = (), store: Store | None = None,
         on_event: EventSink | None = None) -> str:
    """Copy the image ``ref`` from its registry into the store and tag it as ``ref``; returns
    the manifest digest. ``insecure``: registries reached over plain HTTP (loopback always
    is). Sends ``BlobProgress`` events (action ``pull``)."""
    from .engine.remote import pull as _pull

    st = _store(store)
    with st.lease():
        return _pull(st, ref, platform=platform, insecure=tuple(insecure), on_progress=_sink(on_event))


def push(name: str, dest: str | None = None, *, compression: str | None = None, insecure: Sequence[str] = (),
         store: Store | None = None, on_event: EventSink | None = None) -> str:
    """Push the stored image ``name`` to ``dest`` (default: ``name``); returns the pushed
    manifest digest. ``compression`` (gzip, zstd, uncompressed) re-encodes every layer first.
    Sends ``BlobProgress`` events (action ``push``)."""
    from .engine.remote import push as _push

    st = _store(store)
    with st.lease():
        return _push(st, name, dest, compression=compression, insecure=tuple(insecure), on_progress=_sink(on_event))


def login(server: str, username: str, password: str, *, insecure: Sequence[str] = ()) -> None:
    """Check the credentials against ``server`` and keep them for later pulls and pushes."""
    from .engine.remote import login as _login

    _login(server, username, password, insecure=tuple(insecure))


def logout(server: str) -> None:
    """Forget the credentials kept for ``server``."""
    from .engine.remote import logout as _logout

    _logout(server)


__all__ = ["ImageDetails", "ImageRow", "JSONObject", "JSONValue", "build", "build_with", "check_store",
           "disk_usage", "history", "images", "inspect", "login", "logout", "open_store", "parse_size", "prune",
           "pull", "push", "run", "tag", "untag"]
