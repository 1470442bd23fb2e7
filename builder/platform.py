"""Target and build platforms (``os/arch[/variant]``), normalised the way containerd does.

``Platform.parse`` raises :class:`builder.errors.UsageError` for a malformed value; callers that
read the value from a Dockerfile re-raise it as a DockerfileError with the instruction's span.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UsageError

_KNOWN_OS = {
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
    "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos",
}

# containerd's known architectures (platforms/database.go): a one-word value must be one of these or an OS
_KNOWN_ARCH = {
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips",
    "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x",
    "sparc", "sparc64", "wasm",
}

# architecture alias -> (architecture, variant or None when the variant is kept as given)
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None), "x86-64": ("amd64", None), "amd64": ("amd64", None),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""), "386": ("386", ""),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"),
    "armv5l": ("arm", "v5"), "armv6l": ("arm", "v6"), "armv7l": ("arm", "v7"), "armv8l": ("arm", "v8"),
    "arm": ("arm", None), "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    "mips64le": ("mips64le", ""), "loong64": ("loong64", ""), "loongarch64": ("loong64", ""),
}


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """OCI architecture and variant names (``aarch64`` -> ``arm64``; arm defaults to ``v7``;
    arm64's ``v8`` and amd64's ``v1`` are the defaults and dropped)."""
    arch = arch.lower()
    variant = variant.lower()
    alias = _ARCH_ALIASES.get(arch)
    if alias is not None:
        arch, fixed = alias
        if fixed is not None and (fixed != "" or not variant):
            variant = fixed if not variant else variant
    if arch == "amd64" and variant == "v1":
        variant = ""
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return arch, variant


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform. ``variant`` is ``""`` when there is none. ``str()`` gives ``os/arch[/variant]``."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse ``linux/amd64``, ``linux/arm/v7``, ``arm64`` (host OS assumed) or ``linux`` (host arch).

        Raises UsageError when the value is empty or has more than three parts, or is one word
        that is neither a known OS nor a known architecture (containerd's rule).
        """
        value = text.strip()
        if not value:
            raise UsageError(f"invalid platform {text!r}: empty value")
        parts = value.split("/")
        if len(parts) > 3 or any(not p for p in parts):
            raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant]")
        if len(parts) == 1:
            word = parts[0].lower()
            if word in _KNOWN_OS:
                host = host_platform()
                return cls(word, host.architecture, host.variant)
            arch, variant = normalize_arch(word, "")
            if arch not in _KNOWN_ARCH:  # as containerd: a lone word must be a known OS or architecture
                raise UsageError(f"invalid platform {text!r}: unknown operating system or architecture")
            return cls(host_platform().os, arch, variant)
        os_name = parts[0].lower()
        if os_name == "macos":
            os_name = "darwin"
        arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
        return cls(os_name, arch, variant)

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def args(self, prefix: str) -> dict[str, str]:
        """The predefined ARGs for this platform: ``{prefix}PLATFORM``, ``OS``, ``ARCH``, ``VARIANT``."""
        return {
            f"{prefix}PLATFORM": str(self),
            f"{prefix}OS": self.os,
            f"{prefix}ARCH": self.architecture,
            f"{prefix}VARIANT": self.variant,
        }


def parse_platforms(text: str | None) -> tuple[Platform, ...]:
    """``--platform A,B,...`` as platforms in the given order, duplicates (after
    normalisation) dropped; ``()`` for None/empty. UsageError names the bad entry."""
    if not text or not text.strip():
        return ()
    out: list[Platform] = []
    for part in text.split(","):
        if not part.strip():
            raise UsageError(f"invalid platform list {text!r}: empty entry")
        p = Platform.parse(part)
        if p not in out:
            out.append(p)
    return tuple(out)


# the variant an entry without one is taken to have (containerd's platforms package)
DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


def match_score(want: Platform, have: Platform) -> int | None:
    """How well an image of platform ``have`` serves ``want``, both normalised first (aarch64 is
    arm64, arm64/v8 is arm64, arm alone is arm/v7, amd64/v1 is amd64): None when it does not
    (os or architecture differ, or a wanted variant differs); 2 for the exact or default
    variant, 1 for another variant when none was wanted."""
    w_arch, w_var = normalize_arch(want.architecture, want.variant)
    h_arch, h_var = normalize_arch(have.architecture, have.variant)
    if want.os.lower() != have.os.lower() or w_arch != h_arch:
        return None
    default = DEFAULT_VARIANT.get(w_arch, "")
    got = h_var or default
    if w_var:
        return 2 if got == w_var else None
    return 2 if got == default else 1


def host_platform() -> Platform:
    """The platform of this machine (``uname -m`` mapped to OCI names: x86_64 -> amd64 ...)."""
    uname = os.uname()  # what platform.machine()/system() read, without importing platform (~1.5 ms)
    arch, variant = normalize_arch(uname.machine or "amd64", "")
    system = (uname.sysname or "linux").lower()
    return Platform(system, arch, variant)
