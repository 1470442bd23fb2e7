"""Reading images from a registry: :class:`RegistrySource` (an ``ImageSource``) and
:func:`resolve_platform` for multi-platform indexes and Docker manifest lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import BinaryIO

from ..digest import Digest
from ..errors import RegistryError, UsageError
from ..oci import mediatypes as mt
from ..platform import Platform, host_platform, match_score, normalize_arch
from .locations import note_blob_location
from .endpoint import RepositoryEndpoint

PlatformSpec = Platform  # the registry's name for the project-wide platform value type


@dataclass(frozen=True, slots=True)
class ManifestDescriptor:
    """One entry of an index: the child manifest's media type, digest, size and platform."""

    media_type: str
    digest: Digest
    size: int
    platform: PlatformSpec | None


def _entries(index_bytes: bytes) -> list[ManifestDescriptor]:
    try:
        data = json.loads(index_bytes)
        raw = data["manifests"]
        if not isinstance(raw, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise RegistryError("image index is not valid JSON with a manifests list") from None
    out: list[ManifestDescriptor] = []
    for m in raw:
        try:
            p = m.get("platform")
            spec = None
            if isinstance(p, dict) and p.get("os") and p.get("architecture"):
                arch, variant = normalize_arch(str(p["architecture"]), str(p.get("variant") or ""))
                spec = Platform(str(p["os"]).lower(), arch, variant)
            out.append(ManifestDescriptor(str(m["mediaType"]), Digest.parse(m["digest"]), int(m["size"]), spec))
        except (KeyError, ValueError, TypeError, AttributeError):
            raise RegistryError(f"image index has an invalid manifest descriptor: {m!r:.200}") from None
    return out


def resolve_platform(index_bytes: bytes, platform: str | PlatformSpec | None = None) -> ManifestDescriptor:
    """The manifest of ``platform`` (default: the host's, linux) in an OCI index or Docker list.

    A requested variant must match (arm64's ``v8`` and an absent variant are the same); with
    no variant requested, an entry without variant or with the default one is preferred.
    Entries that are not image manifests (attestations: ``unknown/unknown``) never match.
    Raises RegistryError listing the available platforms when none matches."""
    if isinstance(platform, Platform):
        want = platform
    elif platform:
        if "/" not in platform.strip():
            raise RegistryError(f"invalid platform {platform!r}: expected os/arch[/variant]")
        try:
            want = Platform.parse(platform)
        except UsageError as exc:
            raise RegistryError(str(exc)) from None
    else:
        want = host_platform()
    entries = _entries(index_bytes)
    best: tuple[int, ManifestDescriptor] | None = None
    for e in entries:
        if e.platform is None or e.media_type not in mt.MANIFESTS:
            continue
        score = match_score(want, e.platform)
        if score is not None and (best is None or score > best[0]):
            best = (score, e)
    if best is None:
        avail = ", ".join(sorted({str(e.platform) for e in entries if e.platform})) or "none"
        raise RegistryError(f"no manifest for platform {want} in the image index (available: {avail})")
    return best[1]


class RegistrySource(RepositoryEndpoint):
    """An ``ImageSource`` reading one repository of a registry.

    ``ref`` is ``host[:port]/repo[:tag][@digest]`` (Docker normalisation applies). The client
    is created here (and closed by :meth:`close`) unless one is passed in; ``insecure`` forces
    plain http."""

    concurrent_reads = True  # the client is safe to use from several threads

    def get_manifest(self, ref: str = "") -> tuple[bytes, str]:
        """Raw manifest/index bytes and media type for a tag or digest (default: the one in the
        source's reference, else ``latest``). Raises RegistryError when it does not exist."""
        data, media_type, _ = self.client.get_manifest(self.ref.repository, ref or self.ref.reference)
        return data, media_type

    def get_platform_manifest(self, platform: str | PlatformSpec | None = None,
                              ref: str = "") -> tuple[bytes, str, Digest]:
        """The image manifest for ``platform``: fetched directly, or through the index."""
        data, media_type, digest = self.client.get_manifest(self.ref.repository, ref or self.ref.reference)
        if media_type in mt.INDEXES:
            desc = resolve_platform(data, platform)
            data, media_type, digest = self.client.get_manifest(self.ref.repository, str(desc.digest))
        return data, media_type, digest

    def open_blob(self, digest: Digest, size: int | None = None) -> BinaryIO:
        """A reader that verifies digest (and ``size`` when given) while streaming and resumes
        dropped connections; see :class:`builder.registry.client.BlobReader`. Caller closes."""
        reader = self.client.open_blob(self.ref.repository, digest, size)
        return reader  # type: ignore[return-value]

    def has_blob(self, digest: Digest) -> bool:
        found = self.client.has_blob(self.ref.repository, digest)
        if found:
            note_blob_location(self.client.registry, self.ref.repository, digest)
        return found
