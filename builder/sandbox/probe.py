"""What the host can do, probed once per process and file system, and cached.

:func:`probe_host` never raises: a missing feature is reported in :class:`HostCaps` (with a
``reason``). The overlay probe mounts a tiny overlay in a temp dir under ``where`` (the file
system the upper dirs will live on) and unmounts it at once. The result is cached by the file
system of ``where`` (its ``st_dev``), not by the path: every RUN has a new upper dir, but they
all live on the store's file system, so a build probes once. Without root it cannot mount
outside a user namespace: overlay is assumed from the kernel version (5.11+) and the options
get ``userxattr``; a refusal then shows as a setup error of the first step.

The options asked for: ``index=off``, ``metacopy=off``, ``redirect_dir=off`` (a step's upper
dir must be a plain layer) and, as root, ``volatile`` (Linux 5.10+): unmounting a step's overlay
then does not sync the whole file system of its upper dir (15-20 ms for a RUN that wrote 2,000
small files here, on the path from one RUN to the next). That upper dir becomes the step's
snapshot; like every other snapshot (unpacked layers, COPY results) and the cache records, it
reaches the disk by the kernel's writeback, while blobs and tags are fsynced (see README, "What
a crash leaves").

A SUCCESSFUL root overlay probe is also persisted for the boot (``/run/pybuild/``, a root-owned
0700 dir; one file per file system, written to an ``O_EXCL|O_NOFOLLOW`` temp file and renamed),
keyed by the boot id, ``st_dev``, ``statvfs().f_fsid``, the kernel release and the options the
overlay module advertises: a later process on the same boot and file system skips the mount
(~15-20 ms on the first RUN). Any mismatch, unreadable or corrupt file means: probe as before.
If a step's overlay mount then fails with persisted options, the runner calls :func:`forget`
and retries once with a fresh probe, so the error is never worse than without the file.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

from .spec import HostCaps

_WANTED = (("index", "index=off"), ("metacopy", "metacopy=off"), ("redirect_dir", "redirect_dir=off"))
# Linux 5.10+: the overlay's unmount skips the sync of its upper file system (buildah mounts its
# build containers so too). Last in the list: the probe drops it first when a mount is refused.
VOLATILE = "volatile"
_cache: dict[int | str, HostCaps] = {}
_lock = threading.Lock()
_STATE_DIR = "/run/pybuild"  # per boot (tmpfs); tests point it elsewhere
_persisted: set[int | str] = set()  # cache keys whose caps were read from the persisted file
overlay_probes = 0  # overlay probe mounts done by this process (an observable for tests)


def _known_options() -> list[str]:
    """Options whose feature the kernel's overlay module advertises (parameters in sysfs), and
    ``volatile`` on Linux 5.10 and later."""
    params = Path("/sys/module/overlay/parameters")
    if not params.is_dir():
        known = [opt for _, opt in _WANTED]  # built-in without sysfs params: try them all
    else:
        known = [opt for name, opt in _WANTED if (params / name).exists()]
    return known + [VOLATILE] if _kernel_at_least(5, 10) else known


def _try_overlay(where: str, options: list[str]) -> tuple[bool, str, str]:
    """(usable, accepted options, reason). Needs root; mounts in the caller's namespace."""
    from . import namespaces as ns

    global overlay_probes
    overlay_probes += 1

    import tempfile

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
        try:
            os.unlink(os.path.join(tmp, "w/work/incompat/volatile/dirty"))  # a volatile mount's marker
        except OSError:
            pass
        for d in ("w/work/incompat/volatile", "w/work/incompat", "w/work", "w/index", "l", "u", "w", "m"):
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
    if where is None:
        import tempfile

        where = Path(tempfile.gettempdir())
    path = str(where)
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
            caps = _cache[key] = _probe(path, key)
    return caps


def forget(where: Path) -> bool:
    """Drop the cached probe of ``where``'s file system if it was read from the persisted file
    (and delete that file): True when it was, so a failed overlay mount is worth one retry with a
    fresh probe; False otherwise (the error stands). Thread-safe."""
    try:
        key: int | str = os.stat(where).st_dev
    except OSError:
        return False
    with _lock:
        if key not in _persisted:
            return False
        _persisted.discard(key)
        _cache.pop(key, None)
        name = _state_name(key)
        if name is not None:
            try:
                os.unlink(name)
            except OSError:
                pass
        return True


def _state_name(dev: int | str) -> str | None:
    return os.path.join(_STATE_DIR, f"overlay-{dev}") if isinstance(dev, int) else None


def _state_key(path: str, dev: int, known: list[str]) -> list[str] | None:
    """What identifies the file system and kernel the probe ran on (None: cannot tell)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        fsid = os.statvfs(path).f_fsid
    except OSError:
        return None
    if not boot:
        return None
    return [boot, str(dev), str(fsid), os.uname().release, ",".join(known)]


def _state_dir() -> bool:
    """Create (or check) the state dir: a real dir owned by root, no access for others."""
    try:
        os.mkdir(_STATE_DIR, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(_STATE_DIR)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and st.st_mode & 0o077 == 0


def _load(dev: int, key: list[str]) -> HostCaps | None:
    """The persisted successful probe for ``key``; None when missing, unreadable or mismatching."""
    name = _state_name(dev)
    if name is None or not _state_dir():
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_size > 4096:
            return None
        data = json.loads(os.read(fd, 4096))
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        opts = data.get("options")
        if not isinstance(opts, str) or not all(_plain_option(o) for o in opts.split(",") if o):
            return None
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return HostCaps(root=True, overlay=True, overlay_options=opts, userns=_userns())


def _plain_option(opt: str) -> bool:
    """``name=value`` of a wanted option, plain characters only, or ``volatile`` (nothing else
    reaches a mount)."""
    if opt == VOLATILE:
        return True
    name, eq, value = opt.partition("=")
    return bool(eq) and name in {n for n, _ in _WANTED} and value.isascii() and value.isalnum()


def _save(dev: int, key: list[str], caps: HostCaps) -> None:
    """Persist a successful probe (best effort: any failure leaves no file behind)."""
    from ..atomicfile import write_atomic

    name = _state_name(dev)
    if name is None or not _state_dir():
        return
    data = json.dumps({"key": key, "options": caps.overlay_options}).encode()
    try:
        write_atomic(name, data, prefix=f"tmp-{os.getpid()}-", mode=0o600)
    except OSError:
        pass


def _probe(path: str, dev: int | str) -> HostCaps:
    root = os.geteuid() == 0
    if not root:
        userns = _userns()
        ok = userns and _kernel_at_least(5, 11)  # overlay in a user namespace, with userxattr
        why = "" if ok else ("user namespaces are disabled" if not userns
                             else "overlay in a user namespace needs Linux 5.11")
        # with userxattr the kernel refuses redirect_dir=off (it means "follow" when the module's
        # redirect_always_follow is on); nofollow neither creates nor follows redirects. No
        # volatile: it leaves mode-000 dirs with a file inside in the step's work dir, which the
        # unprivileged builder's clean-up could not list, so the workspace would stay behind
        known = [o.replace("redirect_dir=off", "redirect_dir=nofollow") for o in _known_options()
                 if o != VOLATILE]
        caps = HostCaps(root=False, overlay=ok, overlay_options=",".join(known + ["userxattr"]),
                        userns=userns, reason=why)
    else:
        known = _known_options()
        key = _state_key(path, dev, known) if isinstance(dev, int) else None
        if key is not None and isinstance(dev, int):
            loaded = _load(dev, key)
            if loaded is not None:
                _persisted.add(dev)
                return loaded
        try:
            ok, opts, why = _try_overlay(path, known)
        except OSError as e:
            ok, opts, why = False, "", f"overlay probe failed: {e}"
        caps = HostCaps(root=True, overlay=ok, overlay_options=opts, userns=_userns(), reason=why)
        if ok and key is not None and isinstance(dev, int):
            _save(dev, key, caps)
    return caps
