"""Pydantic models for the OCI/Docker JSON that crosses pybuild's boundary.

Contracts:

* Models are used only at the JSON boundary (reading/writing manifests, indexes, configs);
  code inside pybuild converts to frozen dataclasses where it needs more than a field or two.
* :func:`canonical_json` serialises deterministically: compact separators, keys in the order
  the model declares them (unknown fields kept, after the declared ones, in input order),
  ``None`` fields omitted, UTF-8 without ASCII escaping.
* Fetched JSON is never re-serialised: :func:`parse_json` returns the model and callers keep
  the raw bytes beside it (see :class:`Parsed`); digests are always over the raw bytes.
* Unknown fields are kept everywhere (``extra="allow"``) so Docker's extra config keys and
  future spec fields survive a read-modify-write of a config we build ourselves.
* Bad input raises :class:`builder.errors.StoreError` (or the ``error`` class given) naming
  where the JSON came from; no pydantic exception escapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ..platform import Platform as Plat

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..digest import Digest
from ..errors import PybuildError, StoreError

_DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())


class Platform(_Model):
    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: list[str] | None = Field(default=None, alias="os.features")
    variant: str | None = None
    features: list[str] | None = None

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s


class Descriptor(_Model):
    mediaType: str
    digest: str = Field(pattern=_DIGEST_PATTERN)
    size: int = Field(ge=0)
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    data: str | None = None
    platform: Platform | None = None
    artifactType: str | None = None

    @property
    def digest_value(self) -> Digest:
        """The digest as a :class:`Digest` (raises StoreError for unsupported algorithms)."""
        try:
            return Digest.parse(self.digest)
        except ValueError as e:
            raise StoreError(f"unsupported digest in descriptor: {self.digest}") from e


class Manifest(_Model):
    schemaVersion: int = 2
    mediaType: str | None = None
    artifactType: str | None = None
    config: Descriptor
    layers: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class Index(_Model):
    schemaVersion: int = 2
    mediaType: str | None = None
    artifactType: str | None = None
    manifests: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class HealthConfig(_Model):
    Test: list[str] | None = None
    Interval: int | None = None
    Timeout: int | None = None
    StartPeriod: int | None = None
    StartInterval: int | None = None
    Retries: int | None = None


class ContainerConfig(_Model):
    """Docker's container config as stored in image configs (``config`` key). Unknown keys kept."""

    Hostname: str | None = None
    Domainname: str | None = None
    User: str | None = None
    AttachStdin: bool | None = None
    AttachStdout: bool | None = None
    AttachStderr: bool | None = None
    ExposedPorts: dict[str, dict[str, Any]] | None = None
    Tty: bool | None = None
    OpenStdin: bool | None = None
    StdinOnce: bool | None = None
    Env: list[str] | None = None
    Cmd: list[str] | None = None
    Healthcheck: HealthConfig | None = None
    ArgsEscaped: bool | None = None
    Image: str | None = None
    Volumes: dict[str, dict[str, Any]] | None = None
    WorkingDir: str | None = None
    Entrypoint: list[str] | None = None
    OnBuild: list[str] | None = None
    Labels: dict[str, str] | None = None
    StopSignal: str | None = None
    Shell: list[str] | None = None


class RootFS(_Model):
    type: str = "layers"
    diff_ids: list[str] = Field(default_factory=list)


class History(_Model):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(_Model):
    created: str | None = None
    author: str | None = None
    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: list[str] | None = Field(default=None, alias="os.features")
    variant: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS = Field(default_factory=RootFS)
    history: list[History] | None = None

    @property
    def platform(self) -> Platform:
        return Platform(architecture=self.architecture, os=self.os, variant=self.variant,
                        **({"os.version": self.os_version} if self.os_version else {}))  # type: ignore[arg-type]


class OciLayout(_Model):
    imageLayoutVersion: str = "1.0.0"


M = TypeVar("M", bound=BaseModel)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def canonical_json(model: BaseModel) -> bytes:
    """Deterministic compact JSON bytes of ``model`` (see module docstring)."""
    data = _drop_none(model.model_dump(mode="json", by_alias=True, exclude_none=True))
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_json(cls: type[M], data: bytes, *, origin: str = "JSON",
               error: type[PybuildError] = StoreError) -> M:
    """Parse ``data`` into ``cls``; raises ``error`` naming ``origin`` on bad JSON or shape."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{origin}: invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise error(f"{origin}: expected a JSON object")
    try:
        return cls.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise error(f"{origin}: invalid {cls.__name__}: {where}: {first['msg']}") from None


@dataclass(frozen=True, slots=True)
class Parsed(Generic[M]):
    """A model together with the exact bytes it was parsed from and their digest."""

    model: M
    raw: bytes
    digest: Digest

    @classmethod
    def of(cls, model_cls: type[M], raw: bytes, *, origin: str = "JSON",
           error: type[PybuildError] = StoreError) -> "Parsed[M]":
        return cls(parse_json(model_cls, raw, origin=origin, error=error), raw, Digest.of_bytes(raw))


def media_type_of(data: bytes) -> str | None:
    """The ``mediaType`` field of a manifest/index JSON document, or None (no field / not JSON)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("mediaType"), str):
        return str(obj["mediaType"])
    if isinstance(obj, dict) and "manifests" in obj:
        from .mediatypes import OCI_INDEX
        return OCI_INDEX
    if isinstance(obj, dict) and "config" in obj and "layers" in obj:
        from .mediatypes import OCI_MANIFEST
        return OCI_MANIFEST
    return None


# ---- platforms -------------------------------------------------------------------------------



def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` (``linux/amd64``, ``linux/arm/v7``) to a Platform; UsageError if malformed.
    Normalisation is :class:`builder.platform.Platform`'s."""
    from ..errors import UsageError
    from ..platform import Platform as Plat

    if "/" not in text.strip():
        raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant]")
    p = Plat.parse(text)
    return Platform(architecture=p.architecture, os=p.os, variant=p.variant or None)


def host_platform() -> Platform:
    """The platform of the running machine."""
    from ..platform import host_platform as host

    p = host()
    return Platform(architecture=p.architecture, os=p.os, variant=p.variant or None)


def _plain(p: Platform) -> "Plat":
    from ..platform import Platform as Plat

    return Plat(p.os, p.architecture, p.variant or "")


def platform_score(want: Platform, have: Platform | None) -> int | None:
    """:func:`builder.platform.match_score` of two descriptor platforms (None: no match)."""
    if have is None:
        return None
    from ..platform import match_score

    return match_score(_plain(want), _plain(have))


def platform_matches(want: Platform, have: Platform | None) -> bool:
    """True when ``have`` (from an index entry or a config) satisfies ``want``, after
    containerd's normalisation (arm64 = arm64/v8, arm = arm/v7, amd64 = amd64/v1); no wanted
    variant accepts any."""
    return platform_score(want, have) is not None


def select_manifest(index: Index, platform: Platform | None = None, *, origin: str = "index") -> Descriptor:
    """The manifest descriptor of ``index`` for ``platform`` (default: the host's).

    Entries without a platform (attestations, unknown) are skipped unless the index holds
    exactly one entry. Raises StoreError naming ``origin`` when nothing matches."""
    want = platform or host_platform()
    scored = [(platform_score(want, d.platform), i, d) for i, d in enumerate(index.manifests)
              if (d.annotations or {}).get("vnd.docker.reference.type") != "attestation-manifest"]
    candidates = [(s, -i, d) for s, i, d in scored if s is not None]
    if candidates:
        return max(candidates, key=lambda t: (t[0], t[1]))[2]
    if len(index.manifests) == 1 and index.manifests[0].platform is None:
        return index.manifests[0]
    have = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
    raise StoreError(f"{origin}: no manifest for platform {want} (available: {have})")
