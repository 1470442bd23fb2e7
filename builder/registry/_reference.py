"""A minimal, private image-reference parser for the registry package.

``builder.oci.reference.parse_reference`` is the project's parser; this module exists so the
registry client does not depend on it being finished. It applies Docker's normalisation:
a first path component containing ``.`` or ``:`` or equal to ``localhost`` names the
registry, otherwise the registry is ``docker.io`` and single-component names get
``library/``. Raises :class:`builder.errors.ReferenceError_` naming the offending text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..digest import Digest
from ..errors import ReferenceError_

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed reference. ``registry`` is the name as written (``docker.io`` for Hub)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def api_host(self) -> str:
        """The host (and port) to talk to: Docker Hub's API lives at registry-1.docker.io."""
        return DOCKER_HUB_API if self.registry in (DOCKER_HUB, "index.docker.io") else self.registry

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if any, else the tag, else ``latest``."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``[registry/]repo[:tag][@digest]`` (``docker://`` prefix allowed)."""
    raw = text
    if text.startswith("docker://"):
        text = text[len("docker://"):]
    if not text:
        raise ReferenceError_(f"invalid image reference {raw!r}: empty")
    digest: Digest | None = None
    if "@" in text:
        text, _, dpart = text.partition("@")
        try:
            digest = Digest.parse(dpart)
        except ValueError:
            raise ReferenceError_(f"invalid image reference {raw!r}: bad digest {dpart!r}") from None
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, rest
        if not _HOST_RE.match(registry):
            raise ReferenceError_(f"invalid image reference {raw!r}: bad registry {registry!r}")
    else:
        registry, path = DOCKER_HUB, text
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1:]
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"invalid image reference {raw!r}: bad tag {tag!r}")
    if registry in (DOCKER_HUB, "index.docker.io") and "/" not in path:
        path = f"library/{path}"
    if not _REPO_RE.match(path):
        raise ReferenceError_(f"invalid image reference {raw!r}: bad repository name {path!r}")
    return ImageRef(registry, path, tag, digest)
