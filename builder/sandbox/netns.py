"""Network setup inside a fresh network namespace: bring the loopback interface up.

A new netns has only ``lo``, down. :func:`loopback_up` sets IFF_UP with two ioctls on a
datagram socket (no ``ip`` binary needed in the image). Uses libc through ctypes rather than
the ``socket`` module, which costs more to import than the whole rest of the init.
Raises ``OSError``.
"""

from __future__ import annotations

import ctypes
import os
import struct

from . import namespaces as ns

_AF_INET = 2
_SOCK_DGRAM = 2
_SOCK_CLOEXEC = 0o2000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sh22x"  # struct ifreq: name[16] + union (40 bytes on 64-bit)


def loopback_up(name: str = "lo") -> None:
    """Set interface ``name`` up in the current network namespace."""
    libc = ns.libc()
    fd = libc.socket(_AF_INET, _SOCK_DGRAM | _SOCK_CLOEXEC, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"socket: {os.strerror(err)}")
    try:
        buf = ctypes.create_string_buffer(struct.pack(_IFREQ, name.encode(), 0), struct.calcsize(_IFREQ))
        if libc.ioctl(fd, ctypes.c_ulong(_SIOCGIFFLAGS), buf) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"SIOCGIFFLAGS {name}: {os.strerror(err)}")
        flags = struct.unpack(_IFREQ, buf.raw)[1]
        buf = ctypes.create_string_buffer(struct.pack(_IFREQ, name.encode(), flags | _IFF_UP), struct.calcsize(_IFREQ))
        if libc.ioctl(fd, ctypes.c_ulong(_SIOCSIFFLAGS), buf) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"SIOCSIFFLAGS {name}: {os.strerror(err)}")
    finally:
        os.close(fd)
