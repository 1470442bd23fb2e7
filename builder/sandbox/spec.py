"""Value types of the sandbox: what to run (:class:`ProcessSpec`) and how it ended (:class:`RunResult`).

The sandbox knows nothing of Dockerfiles: the engine lowers a RUN step to a ProcessSpec. All
paths in ``MountSpec.target`` / ``extra_files`` keys / ``cwd`` are absolute paths *inside* the
step's root file system; ``lowerdirs`` / ``upperdir`` / ``workdir`` / ``MountSpec.source`` are
host paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

Network = Literal["host", "none"]
OutputCallback = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Limits of one RUN step; None leaves a resource unlimited. ``memory_swap`` is memory plus
    swap as in ``docker build --memory-swap`` (-1: unlimited swap; None: twice ``memory``).
    ``explicit``: the user asked (an unusable cgroup setup is then an error, not a skip)."""

    memory: int | None = None
    memory_swap: int | None = None
    pids: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    explicit: bool = False

    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.memory_swap, self.pids, self.cpu_shares,
                                            self.cpuset_cpus))

    def wanted(self) -> tuple[str, ...]:
        """Controllers these limits need."""
        out = []
        if self.memory is not None or self.memory_swap is not None:
            out.append("memory")
        if self.pids is not None:
            out.append("pids")
        if self.cpu_shares is not None:
            out.append("cpu")
        if self.cpuset_cpus is not None:
            out.append("cpuset")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One extra mount inside the step's root.

    ``kind="bind"``: host ``source`` (file or directory) bind-mounted at ``target``, read-only
    unless ``readonly=False``. ``kind="tmpfs"``: a fresh tmpfs at ``target`` of at most
    ``size`` bytes (0 = kernel default). A missing ``target`` is created as a stub (a directory,
    or an empty file for a file source) that the runner removes from the upper dir afterwards:
    mount points never reach the layer, nor does anything written below them.
    """

    target: str
    kind: Literal["bind", "tmpfs"] = "bind"
    source: Path | None = None
    readonly: bool = True
    size: int = 0


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process to run in a fresh sandbox over an overlay of ``lowerdirs``.

    ``argv``: exec'd as is (no shell added); ``argv[0]`` is looked up in the ``PATH`` of ``env``
    *inside* the new root. ``lowerdirs``: top-most first; empty means scratch. ``upperdir`` and
    ``workdir`` must be empty-or-previous overlay dirs on the same file system; after
    :func:`builder.sandbox.runner.run` returns, ``upperdir`` holds exactly the step's changes
    (overlay format: whiteouts as 0/0 char devices, opaque dirs by xattr).

    ``stdin``: bytes fed to the process (then EOF); None means ``/dev/null``.
    ``extra_files``: path inside root -> bytes (written to a private 0400 temp file) or a host
    ``Path``; bind-mounted read-only, never in the upper dir (secrets).
    ``on_output``: called with each line (ending in ``b"\\n"``, except a last partial line) of
    the combined stdout/stderr as it arrives; a line longer than 64 KiB is delivered in
    several chunks, nothing is ever dropped. Called from the thread that called ``run``.
    ``hostname``: None gives a random 12 hex digit name. ``etc_hostname``: whether
    ``/etc/hostname`` is bind-mounted with it (as ``docker run`` does; a Dockerfile RUN in
    BuildKit gets only ``/etc/hosts`` and ``/etc/resolv.conf``).
    ``extra_hosts``: (name, ip) lines added to the step's /etc/hosts. ``shm_size``: bytes of
    /dev/shm (None: 64 MiB). ``rlimits``: (RLIMIT name, soft, hard), -1 unlimited.
    ``limits``: cgroup limits of the step (:mod:`builder.sandbox.cgroups`); None: none.
    """

    argv: tuple[str, ...]
    upperdir: Path
    workdir: Path
    lowerdirs: tuple[Path, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    hostname: str | None = None
    etc_hostname: bool = True
    network: Network = "none"
    mounts: tuple[MountSpec, ...] = ()
    stdin: bytes | None = None
    extra_files: tuple[tuple[str, bytes | Path], ...] = ()
    on_output: OutputCallback | None = field(default=None, compare=False)
    extra_hosts: tuple[tuple[str, str], ...] = ()
    shm_size: int | None = None
    rlimits: tuple[tuple[str, int, int], ...] = ()
    limits: ResourceLimits | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a step ended. ``exit_code`` is the command's status, 128+N when killed by signal N
    (then ``signal`` is N). ``cancelled`` is True when ``run`` killed it on request.
    ``warnings`` are things the user should know (e.g. degraded isolation); ``notes`` are
    informational (e.g. the copy-based fallback was used).

    Rootless runs (a user namespace) set ``userxattr`` (the upper dir's overlay xattrs are
    ``user.overlay.*``) and the id maps ``(container_start, host_start, count)`` by which the
    upper dir's host owners translate back to image owners; pass all three on to
    :func:`builder.layer.whiteout.upper_entries`. Empty maps mean identity (run as root).
    ``limit``: set when the step ran into one of its cgroup limits (memory, pids)."""

    exit_code: int
    signal: int | None = None
    cancelled: bool = False
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    userxattr: bool = False
    uidmap: tuple[tuple[int, int, int], ...] = ()
    gidmap: tuple[tuple[int, int, int], ...] = ()
    limit: str | None = None  # the cgroup limit the step reached ("memory limit 256MiB reached")
    # run(..., early_exit=True) only: returns once every mount of the step is gone (idempotent);
    # call it before the upper dir is moved, changed or removed
    teardown: Callable[[], object] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class HostCaps:
    """What this host can do, probed once per process (:func:`builder.sandbox.probe.probe_host`).

    ``overlay_options``: the subset of ``index=off,metacopy=off,redirect_dir=off,volatile`` the
    kernel accepts (joined with commas, possibly empty; see :mod:`builder.sandbox.probe`).
    """

    root: bool
    overlay: bool
    overlay_options: str
    userns: bool
    reason: str = ""
