"""Resource limits of one sandboxed step through cgroups (v1, v2 or hybrid: what the host has).

Detection (:func:`detect`) reads ``/proc/self/mountinfo`` and ``/proc/self/cgroup``:

* **v2** when a cgroup2 hierarchy offers the controllers (``cgroup.controllers`` lists them);
* **v1** for each controller mounted as its own v1 hierarchy (memory, pids, cpu, cpuset);
* **hybrid** hosts (v1 controllers plus an empty cgroup2 at ``/sys/fs/cgroup/unified``, systemd's
  name hierarchy) use v1 for every controller the v2 tree does not offer.

A step's cgroup is a child of this process's own cgroup in each hierarchy, named
``pybuild-<pid>-<random>``: created by :meth:`StepCgroup.create`, the step's init attached
before it starts anything (children inherit it), and removed by :meth:`StepCgroup.close`
(remaining processes are killed first). A dead builder's cgroups are empty (their processes
died with the PID namespace) and removed by :func:`sweep`.

Outcome: :meth:`StepCgroup.breach` says which limit was reached (``memory``: the kernel's OOM
killer ran in the cgroup, from ``memory.oom_control`` / ``memory.events``; ``pids``: forks
failed at the limit, from ``pids.events``). A step stuck at its pids limit (a fork bomb keeps
failing forks forever) is ended by :meth:`StepCgroup.watch` after ``PIDS_GRACE`` seconds.

Errors: :class:`builder.errors.HostError` when explicitly requested limits cannot be applied
(no such controller, no permission); :func:`for_limits` decides whether defaults are skipped.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HostError
from .spec import ResourceLimits

PIDS_GRACE = 1.5  # seconds a step may sit at its pids limit, failing forks, before it is ended
CONTROLLERS = ("memory", "pids", "cpu", "cpuset")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each controller lives: ``v1`` maps a controller to this process's cgroup dir in
    its v1 hierarchy; ``v2`` is this process's cgroup2 dir when it offers controllers
    (``v2_controllers``). ``mode`` is "v1", "v2", "hybrid" or "none"."""

    mode: str
    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None
    v2_controllers: frozenset[str] = frozenset()

    def where(self, controller: str) -> str | None:
        """"v2", "v1" or None: which hierarchy serves ``controller``."""
        if controller in self.v2_controllers:
            return "v2"
        if controller in self.v1:
            return "v1"
        return None


def _unescape(field_: str) -> str:
    return field_.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def detect(mountinfo: str | None = None, self_cgroup: str | None = None) -> Layout:
    """The host's cgroup layout as seen by this process (arguments: file contents, for tests)."""
    try:
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        if self_cgroup is None:
            self_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return Layout("none")
    own: dict[str, str] = {}  # controller (or "" for v2) -> path of this process's cgroup
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, names, path = parts
        if names == "":
            own[""] = path
        for c in names.split(","):
            if c:
                own[c] = path
    v1: dict[str, Path] = {}
    v2: Path | None = None
    v2_ctrls: frozenset[str] = frozenset()
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        fstype, options = post_fields[0], post_fields[2].split(",")
        mount_root, point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2" and "" in own:
            d = _inside(point, mount_root, own[""])
            ctrls: frozenset[str] = frozenset()
            if d is not None:
                ctrls = frozenset(_read(d / "cgroup.controllers").split())
            if d is not None and (v2 is None or ctrls):
                v2, v2_ctrls = d, ctrls & frozenset(CONTROLLERS)
        elif fstype == "cgroup":
            for c in CONTROLLERS:
                if c in options and c in own and c not in v1:
                    d = _inside(point, mount_root, own[c])
                    if d is not None and d.is_dir():
                        v1[c] = d
    has_v1 = any(c not in v2_ctrls for c in v1)
    mode = ("hybrid" if has_v1 and v2 is not None else "v1" if has_v1 else "v2" if v2_ctrls else "none")
    return Layout(mode, {c: p for c, p in v1.items() if c not in v2_ctrls}, v2 if v2_ctrls else None, v2_ctrls)


def _inside(point: str, mount_root: str, own_path: str) -> Path | None:
    """This process's cgroup directory in a hierarchy mounted at ``point`` from ``mount_root``."""
    if mount_root != "/" and not (own_path == mount_root or own_path.startswith(mount_root.rstrip("/") + "/")):
        return None  # our cgroup is outside what this mount shows
    rel = own_path[len(mount_root):] if mount_root != "/" else own_path
    return Path(point) / rel.lstrip("/")


_layout: Layout | None = None


def layout() -> Layout:
    """:func:`detect`, once per process."""
    global _layout
    if _layout is None:
        _layout = detect()
    return _layout


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise HostError(f"cgroups: cannot write {value!r} to {path}: {exc.strerror}") from exc


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _kv(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


def _delegate(parent: Path, controllers: list[str]) -> None:
    """Enable ``controllers`` for the children of the v2 cgroup ``parent`` (HostError if refused)."""
    current = set(_read(parent / "cgroup.subtree_control").split())
    missing = [c for c in controllers if c not in current]
    if missing:
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def human(n: int) -> str:
    """Bytes as docker prints limits: 256MiB, 1GiB, 1536KiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


class StepCgroup:
    """The cgroup(s) of one step. ``create`` → ``attach(pid)`` → (``watch``) → ``breach`` →
    ``close`` (always; idempotent)."""

    def __init__(self, limits: ResourceLimits, lay: Layout | None = None) -> None:
        self.limits = limits
        self.layout = lay or layout()
        self.name = f"pybuild-{os.getpid()}-{os.urandom(4).hex()}"
        self.dirs: dict[str, Path] = {}  # controller -> its directory ("v2" key for the v2 dir)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.killed_for: str | None = None

    # -- setup
    def create(self) -> None:
        """Make the cgroup(s) and write the limits. HostError when a wanted controller is
        missing or refuses; everything made so far is removed first."""
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        lim = self.limits
        wanted = lim.wanted()
        missing = [c for c in wanted if self.layout.where(c) is None]
        if missing:
            raise HostError(f"cgroups: no {', '.join(missing)} controller on this host "
                            f"(cgroup layout: {self.layout.mode})")
        if any(self.layout.where(c) == "v2" for c in wanted):
            assert self.layout.v2 is not None
            need = [c for c in wanted if self.layout.where(c) == "v2"]
            parent = self.layout.v2
            try:
                _delegate(parent, need)
            except HostError as exc:
                # v2's "no internal processes" rule: our own cgroup holds us, so it cannot hand
                # controllers to children (EBUSY). Its parent usually holds no process: make the
                # step's cgroup a sibling of ours there, as runc does under a systemd slice.
                alt = parent.parent
                if not (alt / "cgroup.controllers").exists():
                    raise
                try:
                    _delegate(alt, need)
                except HostError:
                    raise exc from None
                parent = alt
            d = parent / self.name
            self._mkdir(d)
            self.dirs["v2"] = d
        for c in wanted:
            if self.layout.where(c) == "v1":
                d = self.layout.v1[c] / self.name
                self._mkdir(d)
                self.dirs[c] = d
        self._limits()

    def _mkdir(self, d: Path) -> None:
        try:
            d.mkdir()
        except OSError as exc:
            raise HostError(f"cgroups: cannot create {d}: {exc.strerror}") from exc

    def _dir(self, controller: str) -> Path | None:
        return self.dirs.get("v2") if self.layout.where(controller) == "v2" else self.dirs.get(controller)

    def _limits(self) -> None:
        lim = self.limits
        mem, cpu, cpuset, pids = self._dir("memory"), self._dir("cpu"), self._dir("cpuset"), self._dir("pids")
        v2 = self.layout.where
        if mem is not None:
            swap = lim.memory_swap
            if swap is None and lim.memory is not None:
                swap = 2 * lim.memory  # docker: as much swap as memory
            if v2("memory") == "v2":
                if lim.memory is not None:
                    _write(mem / "memory.max", str(lim.memory))
                if swap is not None and (mem / "memory.swap.max").exists():
                    extra = "max" if swap < 0 else str(max(0, swap - (lim.memory or 0)))
                    _write(mem / "memory.swap.max", extra)
            else:
                if lim.memory is not None:
                    _write(mem / "memory.limit_in_bytes", str(lim.memory))
                if swap is not None and (mem / "memory.memsw.limit_in_bytes").exists():
                    _write(mem / "memory.memsw.limit_in_bytes", "-1" if swap < 0 else str(swap))
        if pids is not None and lim.pids is not None:
            _write(pids / "pids.max", str(lim.pids) if lim.pids > 0 else "max")
        if cpu is not None and lim.cpu_shares is not None:
            if v2("cpu") == "v2":  # runc's conversion of shares (2..262144) to weight (1..10000)
                weight = 1 + ((lim.cpu_shares - 2) * 9999) // 262142
                _write(cpu / "cpu.weight", str(max(1, min(10000, weight))))
            else:
                _write(cpu / "cpu.shares", str(lim.cpu_shares))
        if cpuset is not None and lim.cpuset_cpus is not None:
            if v2("cpuset") == "v1":  # a v1 cpuset starts empty: mems must be set too
                _write(cpuset / "cpuset.mems", _read(cpuset.parent / "cpuset.mems").strip() or "0")
            _write(cpuset / "cpuset.cpus", lim.cpuset_cpus)

    def attach(self, pid: int) -> None:
        """Move ``pid`` (the step's init, before it starts anything) into every cgroup."""
        for d in self.dirs.values():
            _write(d / "cgroup.procs", str(pid))

    # -- while it runs
    def watch(self, kill: Callable[[], None]) -> None:
        """Start a thread ending the step (``kill()``) when it sits at its pids limit, failing
        forks, for ``PIDS_GRACE`` seconds; stopped by :meth:`close`."""
        d = self._dir("pids")
        if d is None or not self.limits.pids:
            return
        events = d / "pids.events"  # "max N": forks refused at the limit (v1 and v2 alike)

        def run() -> None:
            since: float | None = None
            last = _kv(_read(events)).get("max", 0)
            while not self._stop.wait(0.2):
                now_max = _kv(_read(events)).get("max", 0)
                if now_max > last:
                    since = since or time.monotonic()
                    if time.monotonic() - since >= PIDS_GRACE:
                        self.killed_for = "pids"
                        kill()
                        self.kill_all()
                        return
                else:
                    since = None
                last = now_max

        self._watcher = threading.Thread(target=run, name="cgroup-pids-watch", daemon=True)
        self._watcher.start()

    def breach(self) -> str | None:
        """"memory" or "pids" when the step hit that limit, else None."""
        if self.killed_for:
            return self.killed_for
        mem = self._dir("memory")
        if mem is not None:
            where = self.layout.where("memory")
            stats = _kv(_read(mem / ("memory.events" if where == "v2" else "memory.oom_control")))
            if stats.get("oom_kill", 0) > 0 or (where == "v1" and stats.get("under_oom", 0) > 0):
                return "memory"
        pids = self._dir("pids")
        if pids is not None and _kv(_read(pids / "pids.events")).get("max", 0) > 0:
            return "pids"
        return None

    def describe(self, what: str) -> str:
        """The sentence for a breach: ``memory limit 256MiB reached``."""
        if what == "memory":
            return f"memory limit {human(self.limits.memory or 0)} reached"
        return f"pids limit {self.limits.pids} reached"

    # -- teardown
    def kill_all(self) -> None:
        """SIGKILL every process still in the cgroup(s)."""
        for d in self.dirs.values():
            for line in _read(d / "cgroup.procs").split():
                try:
                    os.kill(int(line), signal.SIGKILL)
                except (OSError, ValueError):
                    pass

    def abandon(self) -> None:
        """Give the cgroups up without killing anything (an attach failed): empty ones are
        removed, the others are left to :func:`sweep`; limits no longer apply."""
        self._stop.set()
        for key, d in list(self.dirs.items()):
            try:
                d.rmdir()
            except OSError:
                pass
            del self.dirs[key]

    def close(self) -> None:
        """Stop watching, kill what is left and remove the directories (retrying while the
        kernel finishes tearing down exited tasks)."""
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)
        for _ in range(100):
            left = []
            for key, d in list(self.dirs.items()):
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(key)
                    continue
                del self.dirs[key]
            if not left:
                return
            self.kill_all()
            time.sleep(0.02)


def sweep() -> int:
    """Remove empty ``pybuild-<pid>-*`` cgroups of dead processes below this process's cgroups;
    returns how many. Best effort."""
    from ..owners import alive, owner_pid

    lay = layout()
    parents = set(lay.v1.values())
    if lay.v2 is not None:  # v2 step cgroups may be siblings of ours (see StepCgroup._create)
        parents |= {lay.v2, lay.v2.parent}
    n = 0
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            pid = owner_pid(name) if name.startswith("pybuild-") else None
            if pid is None or alive(pid):
                continue
            try:
                os.rmdir(parent / name)
                n += 1
            except OSError:
                continue
    return n


def for_limits(limits: ResourceLimits | None) -> StepCgroup | None:
    """A StepCgroup for ``limits`` (not created yet), or None when there is nothing to limit
    or only defaults that this host cannot apply (not root, no controllers)."""
    if limits is None or not limits.any():
        return None
    if not limits.explicit:
        lay = layout()
        if os.geteuid() != 0 or any(lay.where(c) is None for c in limits.wanted()):
            return None
    return StepCgroup(limits)


__all__ = ["Layout", "ResourceLimits", "StepCgroup", "detect", "for_limits", "human", "layout", "sweep"]
