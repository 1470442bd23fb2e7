"""Names that carry their owner's PID (``<kind>-<pid>-<rest>``) and whether that owner lives.

Base layer: the store's temp entries (builder.store.stale) and the sandbox's cgroups
(builder.sandbox.cgroups) both name what they make this way, so that what a dead process left
can be found without any registry.
"""

from __future__ import annotations

import os


def owned_prefix(kind: str) -> str:
    """The name prefix of a temporary entry of ``kind`` owned by this process."""
    return f"{kind}-{os.getpid()}-"


def make_owned_dir(parent: str | os.PathLike[str], kind: str) -> str:
    """Create a new directory ``parent/<kind>-<pid>-<random>`` (mode 0700) and return its path,
    as ``tempfile.mkdtemp(prefix=owned_prefix(kind), dir=parent)`` would without importing
    tempfile (and with it shutil, random and the compressors: ~3 ms of every command's start).
    OSErrors of mkdir propagate."""
    while True:
        path = os.path.join(parent, f"{owned_prefix(kind)}{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def owner_pid(name: str) -> int | None:
    """The PID in an entry name ``<kind>-<pid>-<rest>``, or None when it carries none."""
    parts = name.split("-", 2)
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) holds nothing any more
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[-1].split()
        return not fields or fields[0] != b"Z"
    except OSError:
        return True
