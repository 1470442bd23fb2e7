"""The registry package's view of image references: the project's parser
(:func:`builder.oci.reference.parse_reference`) without a default tag, accepting a
``docker://`` prefix. Raises :class:`builder.errors.ReferenceError_` naming the text."""

from __future__ import annotations

from ..oci.reference import Reference as ImageRef
from ..oci.reference import parse_reference

__all__ = ["ImageRef", "parse_image_ref"]


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``[registry/]repo[:tag][@digest]`` (``docker://`` prefix allowed)."""
    return parse_reference(text[len("docker://"):] if text.startswith("docker://") else text, default_tag=None)
