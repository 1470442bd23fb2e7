"""Capabilities of a step's process: Docker's default set, nothing more.

:func:`apply_default_caps` is called in the command's process (inside the sandbox, before
``setuid``): it drops every capability outside :data:`DOCKER_DEFAULT_CAPS` from the bounding
set, clears the ambient set and sets effective = permitted = the default set, inheritable =
empty (as Docker does since 20.10.14 / CVE-2022-24769). A non-root uid then loses effective
and permitted capabilities at ``setuid``/``execve``, again as in Docker. Raises ``OSError``.
"""

from __future__ import annotations

import ctypes
import os

from . import namespaces as ns

# name -> number, from linux/capability.h
DOCKER_DEFAULT_CAPS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}

DEFAULT_MASK = sum(1 << n for n in DOCKER_DEFAULT_CAPS.values())  # 0xa80425fb

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read().strip())
    except OSError:
        return 40


def apply_default_caps(mask: int = DEFAULT_MASK, top: int | None = None) -> None:
    """Restrict the calling process to ``mask`` (see module doc). Needs CAP_SETPCAP.

    ``top`` is the kernel's last capability (read it before pivot_root: /proc may differ)."""
    top = last_cap() if top is None else top
    for cap in range(top + 1):
        if not mask & (1 << cap):
            ns.prctl(ns.PR_CAPBSET_DROP, cap)
    try:
        ns.prctl(ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    data[0].effective = data[0].permitted = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = (mask >> 32) & 0xFFFFFFFF
    libc = ns.libc()
    if libc.capset(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
