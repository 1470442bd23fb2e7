"""Named contexts (``--build-context NAME=VALUE``) as the engine sees them.

A name matches ``FROM NAME``, ``COPY --from=NAME`` and ``RUN --mount=from=NAME`` when NAME is
not a stage; names compare as BuildKit's do: an image name in its familiar form without
``:latest`` (``alpine``, ``docker.io/library/alpine:latest`` and ``alpine:latest`` are one
name). :class:`NamedContexts` records which ones a build used (:meth:`unused` for the warning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..inputs.prepare import NamedContext
    from .context import BuildContext


def context_key(name: str) -> str:
    """The comparison key of a named context or of a name a Dockerfile uses."""
    from ..errors import PybuildError
    from ..oci.reference import parse_reference

    try:
        ref = parse_reference(name)
    except PybuildError:  # not an image name: compared as written
        return name.lower()
    text = ref.familiar
    return text.removesuffix(":latest")


class NamedContexts:
    """Lookup of the build's named contexts."""

    def __init__(self, items: tuple[NamedContext, ...]) -> None:
        self._by_key: dict[str, NamedContext] = {}
        for item in items:
            self._by_key[context_key(item.name)] = item
        self._used: set[str] = set()
        self._contexts: dict[str, BuildContext] = {}

    def lookup(self, name: str) -> NamedContext | None:
        key = context_key(name)
        found = self._by_key.get(key)
        if found is not None:
            self._used.add(key)
        return found

    def build_context(self, item: NamedContext) -> BuildContext:
        """The :class:`~builder.engine.context.BuildContext` of a directory context (its own
        .dockerignore applies), made once."""
        key = context_key(item.name)
        if key not in self._contexts:
            from .context import BuildContext
            from .dockerignore import load_ignore

            assert item.path is not None, "an image named context has no directory"
            self._contexts[key] = BuildContext(item.path, load_ignore(item.path))
        return self._contexts[key]

    def unused(self) -> list[str]:
        return [item.name for key, item in self._by_key.items() if key not in self._used]
