"""Registry operations behind the CLI: pull, push, login, logout.

Pull and push are one ``copy_image`` between a registry and the store; the registry client
(builder.registry) does auth, retries and verification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..digest import Digest
from ..events import BlobProgress

if TYPE_CHECKING:
    from ..store.layout import Store

ProgressSink = Callable[[BlobProgress], None]


def insecure_flag(registry: str, insecure: tuple[str, ...]) -> bool | None:
    """True to force plain http for ``registry`` (listed, or a loopback host); None: https."""
    from ..registry.client import is_insecure

    return True if is_insecure(registry, insecure) else None


def pull(store: Store, ref_text: str, *, platform: str | None = None, insecure: tuple[str, ...] = (),
         on_progress: ProgressSink | None = None) -> str:
    """Copy ``ref_text`` from its registry into the store and tag it; returns the manifest digest.
    A platform-specific manifest is chosen from an index (default: the host's platform).
    Bytes moving are reported to ``on_progress``."""
    from ..oci.reference import parse_reference
    from ..plan.platform import Platform, host_platform
    from ..registry.source import RegistrySource
    from ..transfer import copy_image, progress_sink

    ref = parse_reference(ref_text)
    plat = Platform.parse(platform) if platform else host_platform()
    with RegistrySource(str(ref), insecure=insecure_flag(ref.registry, insecure)) as src:
        target = str(ref.digest) if ref.digest else (ref.tag or "latest")
        tags = (str(ref),) if not ref.digest else ()
        digest = copy_image(src, target, store, tags=(), platform=plat,
                            on_event=progress_sink(on_progress, "pull") if on_progress else None)
    if platform:  # asked for one: a single-platform image of another is refused, as FROM does
        from .base import load_from_store

        load_from_store(store, digest, plat, str(ref))
    if tags:
        from ..store.layout import sniff_media_type

        data = store.blobs.read_bytes(digest)
        store.put_manifest(data, sniff_media_type(data), tags)
    return str(digest)


def push(store: Store, name: str, dest: str | None = None, *, compression: str | None = None,
         insecure: tuple[str, ...] = (), on_progress: ProgressSink | None = None) -> str:
    """Push the stored image ``name`` to ``dest`` (default: ``name`` itself); returns the pushed
    manifest digest. Blobs the registry has are skipped; the manifest goes last."""
    from ..oci.reference import parse_reference
    from ..outputspec import OutputSpec
    from ..transfer import export_image, progress_sink

    target = str(parse_reference(dest or name))
    spec = OutputSpec(type="registry", names=(target,), push=True, compression=compression)
    digest: Digest = export_image(store, name, spec, insecure=insecure,
                                  on_event=progress_sink(on_progress, "push") if on_progress else None)
    return str(digest)


def login(server: str, username: str, password: str, *, insecure: tuple[str, ...] = ()) -> None:
    from ..registry.client import login as _login

    _login(server, username, password, insecure=insecure_flag(server, insecure))


def logout(server: str) -> bool:
    from ..registry.client import logout as _logout

    return _logout(server)
