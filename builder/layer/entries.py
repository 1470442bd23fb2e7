"""What goes into a layer tar, independent of where it comes from.

Producers (the COPY handler walking a context, the snapshotter walking an overlay upper dir,
heredoc files) yield :class:`Entry` values in any order; :mod:`builder.layer.tar` sorts them,
writes a deterministic tar and returns the digests. Content is read from ``source`` (a host
path, opened only while that entry is written) or taken from ``data``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryType(enum.Enum):
    FILE = "0"
    HARDLINK = "1"
    SYMLINK = "2"
    CHAR = "3"
    BLOCK = "4"
    DIR = "5"
    FIFO = "6"


@dataclass(frozen=True, slots=True)
class Entry:
    """One tar member.

    ``name``: path inside the layer, POSIX, relative, no leading ``./`` or ``/``, no trailing
    slash (directories included). ``mode``: permission bits including setuid/setgid/sticky
    (no file-type bits). ``linkname``: symlink target, or for HARDLINK the layer path of the
    first member with the same content. ``size`` is the content length of a FILE (0 otherwise).
    Exactly one of ``source``/``data`` may be set for a FILE; neither means empty content.
    ``xattrs``: sorted (name, value) pairs, e.g. ``security.capability``.
    """

    name: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    source: str | None = None
    data: bytes | None = None
