"""The plan layer's platforms: the project-wide value type (see :mod:`builder.platform`)."""

from ..platform import Platform, host_platform, normalize_arch

__all__ = ["Platform", "host_platform", "normalize_arch"]
