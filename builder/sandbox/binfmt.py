"""Can this host run a foreign platform's binaries? binfmt_misc handlers, read, never written.

A RUN for another architecture works when the kernel hands that architecture's ELF files to
an emulator (QEMU user mode) through a binfmt_misc handler. :func:`emulation_problem` reads
``/proc/sys/fs/binfmt_misc`` and says why such a step cannot run, before it starts:

- binfmt_misc not mounted, or globally disabled;
- no enabled handler whose magic/mask matches the platform's ELF header;
- a handler without the ``F`` (fix binary) flag whose interpreter is missing from the image's
  root file system: the kernel opens the interpreter inside the sandbox's root then.

pybuild never registers handlers: that is the user's (or a test set-up's) decision, since a
registration is machine-global. :func:`fix_hint` tells how.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# OCI architecture -> (ELF class 1/2, data 1 little/2 big endian, e_machine, QEMU/Debian name)
_ELF: dict[str, tuple[int, int, int, str]] = {
    "amd64": (2, 1, 62, "x86_64"),
    "386": (1, 1, 3, "i386"),
    "arm64": (2, 1, 183, "aarch64"),
    "arm": (1, 1, 40, "arm"),
    "riscv64": (2, 1, 243, "riscv64"),
    "s390x": (2, 2, 22, "s390x"),
    "ppc64le": (2, 1, 21, "ppc64le"),
    "mips64le": (2, 1, 8, "mips64el"),
    "loong64": (2, 1, 258, "loongarch64"),
}
# architectures a host runs natively besides its own
_NATIVE_EXTRA = {"amd64": {"386"}, "arm64": {"arm"}}


@dataclass(frozen=True, slots=True)
class Handler:
    """One binfmt_misc entry (magic type only)."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes

    def matches(self, header: bytes) -> bool:
        """True when ``header`` (a file's first bytes) satisfies magic and mask."""
        part = header[self.offset:self.offset + len(self.magic)]
        if len(part) < len(self.magic):
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        return all((h & m) == (g & m) for h, g, m in zip(part, self.magic, mask, strict=False))


def elf_header(architecture: str) -> bytes | None:
    """The first 20 bytes of an executable ELF file of ``architecture`` (OCI name), or None
    for an architecture we do not know."""
    info = _ELF.get(architecture)
    if info is None:
        return None
    cls, data, machine, _ = info
    ident = b"\x7fELF" + bytes([cls, data, 1, 0]) + b"\x00" * 8
    return ident + struct.pack("<HH" if data == 1 else ">HH", 2, machine)


def qemu_name(architecture: str) -> str:
    """QEMU's (and Debian's binfmt.d file's) name of ``architecture``."""
    info = _ELF.get(architecture)
    return info[3] if info else architecture


def runs_natively(architecture: str, host_architecture: str) -> bool:
    """True when the host runs ``architecture`` binaries without emulation."""
    return architecture == host_architecture or architecture in _NATIVE_EXTRA.get(host_architecture, set())


def parse_handler(name: str, text: str) -> Handler | None:
    """A handler from its ``/proc/sys/fs/binfmt_misc/NAME`` text; None for extension handlers
    or text we cannot read."""
    enabled = False
    interpreter = flags = ""
    offset = 0
    magic = mask = b""
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        try:
            if line.strip() == "enabled":
                enabled = True
            elif word == "interpreter":
                interpreter = rest.strip()
            elif word == "flags:":
                flags = rest.strip()
            elif word == "offset":
                offset = int(rest.strip())
            elif word == "magic":
                magic = bytes.fromhex(rest.strip())
            elif word == "mask":
                mask = bytes.fromhex(rest.strip())
        except ValueError:
            return None
    if not magic:
        return None
    return Handler(name, enabled, interpreter, flags, offset, magic, mask)


def handlers(root: Path = BINFMT_DIR) -> list[Handler] | None:
    """Every magic handler registered, or None when binfmt_misc is not mounted at ``root``
    or is globally disabled."""
    try:
        if (root / "status").read_text().strip() != "enabled":
            return None
        names = sorted(p.name for p in root.iterdir() if p.name not in ("status", "register"))
    except OSError:
        return None
    out: list[Handler] = []
    for name in names:
        try:
            h = parse_handler(name, (root / name).read_text())
        except OSError:
            continue
        if h is not None:
            out.append(h)
    return out


def emulation_problem(architecture: str, host_architecture: str, *,
                      exists_in_root: Callable[[str], bool] | None = None,
                      root: Path = BINFMT_DIR) -> str | None:
    """Why binaries of ``architecture`` cannot run here (None: they can: natively, or through
    a usable handler). ``exists_in_root(path)`` says whether a path exists in the step's root
    file system (needed for handlers without the ``F`` flag; without it they count as unusable)."""
    if runs_natively(architecture, host_architecture):
        return None
    header = elf_header(architecture)
    if header is None:
        return f"pybuild does not know the ELF machine of architecture {architecture!r}"
    found = handlers(root)
    if found is None:
        return f"binfmt_misc is not mounted at {root} (or is disabled)"
    matching = [h for h in found if h.matches(header)]
    if not matching:
        return f"no binfmt_misc handler for {qemu_name(architecture)} ELF files is registered"
    enabled = [h for h in matching if h.enabled]
    if not enabled:
        return f"the binfmt_misc handler {matching[0].name} for {qemu_name(architecture)} is disabled"
    for h in enabled:
        if "F" in h.flags:
            return None
        if exists_in_root is not None and exists_in_root(h.interpreter):
            return None
    h = enabled[0]
    return (f"the binfmt_misc handler {h.name} lacks the F flag and its interpreter {h.interpreter} "
            "is not in the image (the sandbox cannot reach the host's)")


def fix_hint(architecture: str) -> str:
    """How a user makes ``architecture`` binaries run (QEMU user emulation via binfmt_misc)."""
    q = qemu_name(architecture)
    return ("to emulate it, as root: install qemu-user-static, mount binfmt_misc "
            f"(mount -t binfmt_misc binfmt_misc {BINFMT_DIR}) and register QEMU's handler with the F flag "
            f"(cat /usr/lib/binfmt.d/qemu-{q}.conf > {BINFMT_DIR}/register); "
            "or build that stage FROM --platform=$BUILDPLATFORM and cross-compile")


def emulation_error(where: str, platform: object, host: object, problem: str, architecture: str) -> str:
    """The message of a step that cannot run: ``where`` (``Dockerfile:LINE: RUN ...``), the
    platform, the host, why, and the fix."""
    return f"{where}: cannot run {platform} binaries on this {host} host: {problem}; {fix_hint(architecture)}"
