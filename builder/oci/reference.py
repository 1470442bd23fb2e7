"""Image references with Docker's normalisation (``ubuntu`` -> ``docker.io/library/ubuntu:latest``).

Grammar (distribution/reference): ``[domain[:port]/]path[:tag][@digest]`` where

* the first ``/``-separated component is a domain when it contains ``.`` or ``:``, is
  ``localhost``, or has an upper-case letter; otherwise the registry is ``docker.io``;
* on ``docker.io`` a single-component path gets the ``library/`` prefix; ``index.docker.io``
  is spelled ``docker.io``;
* path components are lower-case ``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or runs of ``-``;
* a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a digest is ``sha256:<64 hex>`` (or sha512);
* a reference without tag and digest gets the default tag ``latest``.

Every malformed input raises :class:`builder.errors.ReferenceError_` naming the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..digest import Digest
from ..errors import ReferenceError_

DEFAULT_REGISTRY = "docker.io"
LEGACY_REGISTRY = "index.docker.io"
DOCKER_API_HOST = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised image reference. ``tag`` and ``digest`` may both be set; at least one is,
    unless the reference was parsed with ``default_tag=None``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def _suffix(self) -> str:
        """``:tag``, ``@digest`` or both, as written after a name."""
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()

    @property
    def familiar_name(self) -> str:
        """The short repository name Docker shows: ``ubuntu``, ``user/app``, ``host:5000/app``."""
        if self.registry == DEFAULT_REGISTRY:
            repo = self.repository
            if repo.startswith(OFFICIAL_PREFIX) and repo.count("/") == 1:
                return repo[len(OFFICIAL_PREFIX):]
            return repo
        return self.name

    @property
    def familiar(self) -> str:
        """The short form for listings, with tag and/or digest: ``ubuntu:22.04``."""
        return self.familiar_name + self._suffix()

    @property
    def api_host(self) -> str:
        """The host serving the registry API (``registry-1.docker.io`` for Docker Hub)."""
        return DOCKER_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def api_reference(self) -> str:
        """What goes after ``/manifests/`` in the distribution API: the digest if any, else the tag."""
        if self.digest:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    @property
    def reference(self) -> str:
        """Alias of :attr:`api_reference` (the registry client's name for it)."""
        return self.api_reference

    def with_tag(self, tag: str) -> "Reference":
        """The same repository with ``tag`` and no digest; ReferenceError_ for a bad tag."""
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"invalid tag {tag!r} for {self.name}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> "Reference":
        """The same repository pinned to ``digest`` (tag dropped)."""
        return replace(self, tag=None, digest=digest)


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i < 0 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = DEFAULT_REGISTRY, name
    else:
        domain, rest = first, name[i + 1:]
    if domain == LEGACY_REGISTRY:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    return domain, rest


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise ``text``; raises ReferenceError_ naming ``text`` when malformed.

    ``default_tag`` is added when neither tag nor digest is given (None: leave both empty).
    """
    if not isinstance(text, str) or not text:
        raise ReferenceError_("invalid reference format: empty reference")
    bad = f"invalid reference format {text!r}"
    if _HEX64_RE.match(text):
        raise ReferenceError_(f"{bad}: cannot use a 64-character hexadecimal string as a name")
    rest = text
    digest: Digest | None = None
    if "@" in rest:
        rest, _, dtext = rest.partition("@")
        try:
            digest = Digest.parse(dtext)
        except ValueError:
            raise ReferenceError_(f"{bad}: invalid digest {dtext!r}") from None
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"{bad}: invalid tag {tag!r}")
    if not rest:
        raise ReferenceError_(f"{bad}: missing repository name")
    domain, path = _split_domain(rest)
    if not _DOMAIN_RE.match(domain):
        raise ReferenceError_(f"{bad}: invalid registry {domain!r}")
    if not _PATH_RE.match(path):
        if _PATH_RE.match(path.lower()):
            raise ReferenceError_(f"{bad}: repository name must be lowercase")
        raise ReferenceError_(f"{bad}: invalid repository name {path!r}")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise ReferenceError_(f"{bad}: repository name must not be more than {NAME_MAX} characters")
    if tag is None and digest is None and default_tag is not None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def normalize_name(text: str) -> str:
    """``str(parse_reference(text))``: the full normalised name with tag (``latest`` by default)."""
    return str(parse_reference(text))
