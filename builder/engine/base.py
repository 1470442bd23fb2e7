"""Resolve a FROM reference to a stored image: scratch, the store, an OCI layout, a registry.

Docker's rule: a tag present in the store wins unless ``pull`` is set. Anything fetched is
copied into the store first (verified), so later steps read layers from one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..digest import Digest
from ..errors import StoreError
from ..events import BlobProgress
from ..oci import mediatypes as mt
from .state import History, LayerRef

if TYPE_CHECKING:
    from ..oci.reference import Reference
    from ..platform import Platform
    from ..store.layout import Store



@dataclass(frozen=True, slots=True)
class BaseImage:
    """A resolved base: ``manifest_digest`` is "" for scratch; ``config`` is the parsed config JSON."""

    manifest_digest: str
    layers: tuple[LayerRef, ...] = ()
    history: tuple[History, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    name: str = "scratch"


SCRATCH = BaseImage(manifest_digest="")


def load_from_store(store: Store, manifest_digest: Digest, platform: Platform | None, name: str, *,
                    strict: bool = True) -> BaseImage:
    """Read a stored manifest (or index, resolved to ``platform``) and its config. The manifest
    is pinned in the store's lease first (a concurrent prune keeps all it names). ``strict``:
    a single-platform image of another platform than ``platform`` is a StoreError naming
    both (see :func:`check_platform`)."""
    pin = getattr(store, "pin", None)
    if pin is not None:
        pin([str(manifest_digest)])
    with store.blobs.open(manifest_digest) as f:
        raw = f.read()
    doc = json.loads(raw)
    media = doc.get("mediaType", "")
    if media in mt.INDEXES or "manifests" in doc:
        from ..errors import RegistryError
        from ..registry.source import resolve_platform

        try:
            chosen = resolve_platform(raw, platform)
        except RegistryError as exc:
            raise StoreError(f"{name}: {exc.args[0]}") from None
        return load_from_store(store, chosen.digest, platform, name, strict=strict)
    cfg_digest = Digest.parse(doc["config"]["digest"])
    if not store.blobs.has(cfg_digest):
        raise StoreError(f"{name}: config blob {cfg_digest} is missing from the store")
    with store.blobs.open(cfg_digest) as f:
        config = json.loads(f.read())
    if platform is not None and strict:
        check_platform(config, platform, name)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    layers_json = doc.get("layers", [])
    if len(diff_ids) != len(layers_json):
        raise StoreError(f"{name}: manifest has {len(layers_json)} layers but config has {len(diff_ids)} diff_ids")
    layers = tuple(LayerRef(Digest.parse(layer["digest"]), Digest.parse(d), int(layer["size"]), layer["mediaType"])
                   for layer, d in zip(layers_json, diff_ids, strict=True))
    history = tuple(History.from_json(h) for h in config.get("history", []))
    return BaseImage(manifest_digest=str(manifest_digest), layers=layers, history=history, config=config, name=name)


def check_platform(config: dict[str, Any], want: Any, name: str) -> None:
    """Raise StoreError when the single-platform image ``name`` (its ``config``) is of
    another platform than ``want``: running its binaries would mislabel the result. A config
    without os/architecture is accepted. (BuildKit only warns, InvalidBaseImagePlatform; we
    refuse, as a silently mislabelled image is worse than a failed build.)"""
    from ..platform import Platform, match_score, normalize_arch

    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        return
    variant = config.get("variant") if isinstance(config.get("variant"), str) else ""
    have = Platform(os_name.lower(), *normalize_arch(arch, variant or ""))
    wanted = Platform(str(want.os), str(want.architecture), str(getattr(want, "variant", "") or ""))
    if match_score(wanted, have) is None:
        raise StoreError(f"image {name} is for platform {have}, not the wanted {wanted} "
                         f"(use an image index that has {wanted}, or build with --platform {have})")


def resolve_base(ref_text: str, *, store: Store, platform: Platform | None, pull: bool = False,
                 insecure: tuple[str, ...] = (), notify: Callable[[str], None] | None = None,
                 on_progress: Callable[[BlobProgress], None] | None = None) -> BaseImage:
    """Resolve ``ref_text`` (already expanded) to a stored base image. A pull reports its
    bytes to ``on_progress``.

    Raises StoreError / RegistryError / ReferenceError_ naming the reference when it names nothing.
    """
    if ref_text.lower() == "scratch":
        return SCRATCH
    if ref_text.startswith("oci-layout://"):
        return _from_oci_layout(ref_text[len("oci-layout://"):], store=store, platform=platform)
    from ..oci.reference import parse_reference

    ref = parse_reference(ref_text)
    full = str(ref)
    if not pull:
        if ref.digest is not None:
            if store.blobs.has(Digest.parse(str(ref.digest))):
                return load_from_store(store, Digest.parse(str(ref.digest)), platform, full)
        else:
            entry = store.lookup_tag(full)
            if entry is not None:
                return load_from_store(store, Digest.parse(entry["digest"]), platform, full)
    return _pull(ref, store=store, platform=platform, insecure=insecure, notify=notify, on_progress=on_progress)


def _from_oci_layout(spec: str, *, store: Store, platform: Platform | None) -> BaseImage:
    """Copy the image of a local OCI layout (directory or tar) into the store, then load it."""
    from ..oci.layoutdir import OciLayoutTarReader, open_layout, parse_layout_ref
    from ..transfer import copy_image

    path, ref = parse_layout_ref(spec)
    src = open_layout(path)
    try:
        digest = copy_image(src, ref, store, tags=(), platform=platform)
    finally:
        if isinstance(src, OciLayoutTarReader):
            src.close()
    return load_from_store(store, digest, platform, f"oci-layout://{spec}")


def _pull(ref: Reference, *, store: Store, platform: Platform | None, insecure: tuple[str, ...],
          notify: Callable[[str], None] | None, on_progress: Callable[[BlobProgress], None] | None) -> BaseImage:
    try:
        from ..registry.source import RegistrySource
    except ImportError as exc:  # pragma: no cover - registry support is part of the package
        raise StoreError(f"image {ref} is not in the store and registry support is unavailable") from exc
    from ..transfer import copy_image, progress_sink

    if notify:
        notify(f"pulling {ref}")
    from .remote import insecure_flag

    target = ref.digest or ref.tag or "latest"
    tags = () if ref.digest else (str(ref),)
    with RegistrySource(str(ref), insecure=insecure_flag(ref.registry, insecure)) as src:
        digest = copy_image(src, str(target), store, tags=tags, platform=platform,
                            on_event=progress_sink(on_progress, "pull") if on_progress else None)
    return load_from_store(store, digest, platform, str(ref))
