"""What the host can do, probed once per process and file system, and cached.

:func:`probe_host` never raises: a missing feature is reported in :class:`HostCaps` (with a
``reason``). The overlay probe mounts a tiny overlay in a temp dir under ``where`` (the file
system the upper dirs will live on) and unmounts it at once. The result is cached by the file
system of ``where`` (its ``st_dev``), not by the path: every RUN has a new upper dir, but they
all live on the store's file system, so a build probes once. Without root it cannot mount
outside a user namespace: overlay is assumed from the kernel version (5.11+) and the options
get ``userxattr``; a refusal then shows as a setup error of the first step.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from .spec import HostCaps

_WANTED = (("index", "index=off"), ("metacopy", "metacopy=off"), ("redirect_dir", "redirect_dir=off"))
_cache: dict[int | str, HostCaps] = {}
_lock = threading.Lock()


def _known_options() -> list[str]:
    """Options whose feature the kernel's overlay module advertises (parameters in sysfs)."""
    params = Path("/sys/module/overlay/parameters")
    if not params.is_dir():
        return [opt for _, opt in _WANTED]  # built-in without sysfs params: try them all
    return [opt for name, opt in _WANTED if (params / name).exists()]


def _try_overlay(where: str, options: list[str]) -> tuple[bool, str, str]:
    """(usable, accepted options, reason). Needs root; mounts in the caller's namespace."""
    from . import namespaces as ns

    tmp = tempfile.mkdtemp(prefix="pbprobe-", dir=where)
    try:
        for d in ("l", "u", "w", "m"):
            os.mkdir(os.path.join(tmp, d))
        base = f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w"
        opts = list(options)
        last = ""
        while True:
            try:
                ns.mount("overlay", f"{tmp}/m", "overlay", 0, ",".join([base] + opts))
            except OSError as e:
                last = str(e)
                if not opts:
                    return False, "", f"overlay mount failed: {last}"
                opts.pop()  # drop the least important option and retry
                continue
            ns.umount2(f"{tmp}/m", ns.MNT_DETACH)
            return True, ",".join(opts), ""
    finally:
        for d in ("w/work", "w/index", "l", "u", "w", "m"):
            try:
                os.rmdir(os.path.join(tmp, d))
            except OSError:
                pass
        try:
            os.rmdir(tmp)
        except OSError:
            pass


def _userns() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read()) > 0
    except (OSError, ValueError):
        return os.path.exists("/proc/self/ns/user")


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (major, minor)
    except (ValueError, IndexError):
        return False


def probe_host(where: Path | None = None) -> HostCaps:
    """The cached capabilities of this host for upper dirs under ``where`` (default: temp dir),
    probed once per file system."""
    path = str(where or tempfile.gettempdir())
    key: int | str
    try:
        key = os.stat(path).st_dev
    except OSError:
        key = path  # the probe reports why it cannot use it
    caps = _cache.get(key)
    if caps is not None:
        return caps
    with _lock:  # one probe at a time (a spare keeper may be probing ahead of the first RUN)
        caps = _cache.get(key)
        if caps is None:
            caps = _cache[key] = _probe(path)
    return caps


def _probe(path: str) -> HostCaps:
    root = os.geteuid() == 0
    if not root:
        userns = _userns()
        ok = userns and _kernel_at_least(5, 11)  # overlay in a user namespace, with userxattr
        why = "" if ok else ("user namespaces are disabled" if not userns
                             else "overlay in a user namespace needs Linux 5.11")
        # with userxattr the kernel refuses redirect_dir=off (it means "follow" when the module's
        # redirect_always_follow is on); nofollow neither creates nor follows redirects
        known = [o.replace("redirect_dir=off", "redirect_dir=nofollow") for o in _known_options()]
        caps = HostCaps(root=False, overlay=ok, overlay_options=",".join(known + ["userxattr"]),
                        userns=userns, reason=why)
    else:
        try:
            ok, opts, why = _try_overlay(path, _known_options())
        except OSError as e:
            ok, opts, why = False, "", f"overlay probe failed: {e}"
        caps = HostCaps(root=True, overlay=ok, overlay_options=opts, userns=_userns(), reason=why)
    return caps
