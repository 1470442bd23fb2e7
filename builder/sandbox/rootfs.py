"""Populate a step's root before pivot_root: /proc, /dev, /sys, bind/tmpfs mounts, stub tracking.

Runs inside the sandbox init (PID 1 of the step's PID namespace, in its own mount namespace,
mounts already private), with the new root mounted at ``root`` (a host path). Every mount
target is resolved *inside* ``root`` (symlinks are followed as if ``root`` were ``/``, never
out of it). A missing target is created as a *stub* (a directory, or an empty file for a file
mount) and recorded in :class:`Stubs` so the runner can remove it from the upper dir after the
step: ``created`` in creation order (root-relative paths), ``fresh``: directories that had to
be created or copied up into the upper dir because a stub was made inside them.

Raises ``OSError`` (or ``ValueError`` for a target that escapes or has the wrong type).
"""

from __future__ import annotations

import os
import stat

from . import namespaces as ns

MYPY = False
if MYPY:  # for the type checker only: the sandbox init imports this module in every RUN
    from typing import Any

# Docker's masked and read-only paths (moby oci/defaults.go)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


class Stubs:
    """Paths created in the root only to serve as mount points (see module doc)."""

    def __init__(self, upper: str | None) -> None:
        self.upper = upper
        self.created: list[str] = []
        self.fresh: list[str] = []

    def note_parent(self, rel_dir: str) -> None:
        """Record ``rel_dir`` and its ancestors that are not (yet) in the upper dir."""
        if self.upper is None:
            return
        while rel_dir and rel_dir not in self.fresh:
            if os.path.lexists(os.path.join(self.upper, rel_dir)):
                return
            self.fresh.append(rel_dir)
            rel_dir = os.path.dirname(rel_dir)


def resolve(root: str, path: str, create: str | None = None, stubs: Stubs | None = None) -> str:
    """The host path of ``path`` (absolute, inside ``root``), symlinks resolved within ``root``.

    ``create``: None (must exist: ``FileNotFoundError``), ``"dir"`` or ``"file"`` (the type
    of the last component when missing; intermediate directories are created as dirs).
    Created paths are recorded in ``stubs``.
    """
    todo = [c for c in path.split("/") if c not in ("", ".")]
    todo.reverse()
    done: list[str] = []
    hops = 0
    while todo:
        comp = todo.pop()
        if comp == "..":
            if done:
                done.pop()
            continue
        rel = "/".join(done + [comp])
        host = os.path.join(root, rel)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if create is None:
                raise
            parent = "/".join(done)
            if stubs is not None:
                stubs.note_parent(parent)
            if todo or create == "dir":
                os.mkdir(host, 0o755)
            else:
                os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            if stubs is not None:
                stubs.created.append(rel)
            done.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise OSError(40, f"too many levels of symbolic links: {path}")
            target = os.readlink(host)
            parts = [c for c in target.split("/") if c not in ("", ".")]
            if target.startswith("/"):
                done = []
            todo.extend(reversed(parts))
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(20, f"not a directory: /{rel} (resolving {path})")
        done.append(comp)
    return os.path.join(root, "/".join(done)) if done else root


def _mkfile_or_dir(root: str, target: str, is_dir: bool, stubs: Stubs) -> str:
    host = resolve(root, target, "dir" if is_dir else "file", stubs)
    st = os.lstat(host)
    if is_dir and not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"mount target {target} exists and is not a directory")
    if not is_dir and stat.S_ISDIR(st.st_mode):
        raise ValueError(f"mount target {target} exists and is a directory")
    return host


def bind(src: str, dst: str, readonly: bool, extra: int = 0) -> None:
    """Bind ``src`` on ``dst`` (recursively), then remount read-only if asked."""
    ns.mount(src, dst, None, ns.MS_BIND | ns.MS_REC)
    if readonly or extra:
        flags = ns.MS_REMOUNT | ns.MS_BIND | extra | (ns.MS_RDONLY if readonly else 0)
        ns.mount(None, dst, None, flags)


def mount_proc(root: str, stubs: Stubs) -> None:
    target = _mkfile_or_dir(root, "/proc", True, stubs)
    ns.mount("proc", target, "proc", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)
    for p in READONLY_PATHS:
        host = os.path.join(root, p.lstrip("/"))
        if os.path.exists(host):
            bind(host, host, True, ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def mount_dev(root: str, stubs: Stubs, shm_size: int | None = None) -> None:
    dev = _mkfile_or_dir(root, "/dev", True, stubs)
    ns.mount("tmpfs", dev, "tmpfs", ns.MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        host = "/dev/" + name
        if not os.path.exists(host):
            continue
        node = os.path.join(dev, name)
        os.close(os.open(node, os.O_WRONLY | os.O_CREAT, 0o666))
        ns.mount(host, node, None, ns.MS_BIND)
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    ns.mount("devpts", os.path.join(dev, "pts"), "devpts", ns.MS_NOSUID | ns.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    ns.mount("shm", os.path.join(dev, "shm"), "tmpfs", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC,
             f"mode=1777,size={shm_size}" if shm_size else "mode=1777,size=65536k")
    os.mkdir(os.path.join(dev, "mqueue"), 0o755)
    for link, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(to, os.path.join(dev, link))


def mount_sys(root: str, stubs: Stubs) -> None:
    target = _mkfile_or_dir(root, "/sys", True, stubs)
    flags = ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC
    try:
        ns.mount("sysfs", target, "sysfs", flags)
    except OSError:
        bind("/sys", target, True, ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def mask_paths(root: str) -> None:
    """Hide Docker's masked paths: files get /dev/null, directories an empty read-only tmpfs."""
    for p in MASKED_PATHS:
        host = os.path.join(root, p.lstrip("/"))
        try:
            st = os.lstat(host)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            ns.mount("tmpfs", host, "tmpfs", ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, "size=0")
        else:
            ns.mount("/dev/null", host, None, ns.MS_BIND)


def user_mount(root: str, m: dict[str, Any], stubs: Stubs) -> None:
    """One entry of the init config's ``mounts``: ``{"kind": "bind"|"tmpfs", "target", "src",
    "ro", "size"}``."""
    if m["kind"] == "tmpfs":
        host = _mkfile_or_dir(root, m["target"], True, stubs)
        opts = "mode=755" + (f",size={m['size']}" if m.get("size") else "")
        ns.mount("tmpfs", host, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, opts)
        return
    src = m["src"]
    host = _mkfile_or_dir(root, m["target"], os.path.isdir(src), stubs)
    bind(src, host, bool(m.get("ro", True)))


def populate(root: str, mounts: list[dict[str, Any]], stubs: Stubs, shm_size: int | None = None) -> None:
    """Mount /proc, /dev, /sys (masked as Docker does) and ``mounts`` under ``root``; what had
    to be created is recorded in ``stubs`` as it happens (also when this raises)."""
    mount_proc(root, stubs)
    mount_dev(root, stubs, shm_size)
    mount_sys(root, stubs)
    mask_paths(root)
    for m in mounts:
        user_mount(root, m, stubs)


def enter(root: str) -> None:
    """pivot_root into ``root`` (a mount point) and drop the old root."""
    os.chdir(root)
    ns.pivot_root(".", ".")
    ns.umount2(".", ns.MNT_DETACH)
    os.chdir("/")
