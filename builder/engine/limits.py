"""Resource limits of RUN steps: the build flags, their defaults, and the rlimits every RUN gets.

Flags (``docker build``'s names): ``--memory`` / ``-m`` (bytes, k/m/g suffixes, 1024-based),
``--memory-swap`` (memory + swap; ``-1`` unlimited swap; default twice ``--memory``),
``--pids-limit`` (processes and threads of one RUN; ``-1`` unlimited), ``--cpu-shares`` / ``-c``
(relative weight, 2..262144), ``--cpuset-cpus`` (``0-3,5``). They apply to every RUN step through
a cgroup of its own (:mod:`builder.sandbox.cgroups`) and are not part of cache keys (they do not
change what a step produces, only whether it may finish).

Defaults (when no flag is given), applied when the host lets us (root, controllers present):

* ``pids``: :data:`DEFAULT_PIDS` (4096) per RUN, so a fork bomb ends instead of exhausting the
  host's PID space (podman's containers.conf default is 2048; Docker/BuildKit set none);
* memory and CPU: unlimited (as Docker and BuildKit);
* ``nofile`` (``--ulimit`` default): soft = hard = min(the builder's hard limit, 1048576).
  BuildKit drops containerd's 1024 default and lets RUN inherit the daemon's limit, which under
  dockerd/systemd is 1048576; newer systemd makes "infinity" 2^30, which makes programs that
  close every descriptor crawl, hence the cap. An explicit ``--ulimit nofile=...`` wins.
"""

from __future__ import annotations

import resource

from ..errors import UsageError
from ..sandbox.spec import ResourceLimits

DEFAULT_PIDS = 4096
NOFILE_CAP = 1048576


def _bytes(flag: str, value: str) -> int:
    from ..plan.mounts import _ram_in_bytes

    size = _ram_in_bytes(value)
    if size is None or size <= 0:
        raise UsageError(f"{flag} {value!r}: expected a size such as 256m or 1g")
    return size


def parse_limits(*, memory: str | None = None, memory_swap: str | None = None, pids: str | None = None,
                 cpu_shares: str | None = None, cpuset_cpus: str | None = None) -> ResourceLimits:
    """The limits the flags ask for, with the defaults for what they leave out. UsageError
    names the flag of a malformed or contradictory value."""
    mem = _bytes("--memory", memory) if memory else None
    if mem is not None and mem < 6 << 20:
        raise UsageError(f"--memory {memory!r}: the minimum is 6MiB")
    swap: int | None = None
    if memory_swap:
        if memory_swap.strip() == "-1":
            swap = -1
        else:
            swap = _bytes("--memory-swap", memory_swap)
            if mem is None:
                raise UsageError("--memory-swap needs --memory")
            if swap < mem:
                raise UsageError(f"--memory-swap {memory_swap!r} must be at least --memory {memory!r}")
    pid_limit: int | None = DEFAULT_PIDS
    if pids is not None:
        try:
            pid_limit = int(pids)
        except ValueError:
            raise UsageError(f"--pids-limit {pids!r}: expected a number (-1: unlimited)") from None
        if pid_limit == 0 or pid_limit < -1:
            raise UsageError(f"--pids-limit {pids!r}: expected a positive number or -1")
        if pid_limit == -1:
            pid_limit = None
    shares: int | None = None
    if cpu_shares is not None:
        try:
            shares = int(cpu_shares)
        except ValueError:
            raise UsageError(f"--cpu-shares {cpu_shares!r}: expected a number") from None
        if not 2 <= shares <= 262144:
            raise UsageError(f"--cpu-shares {cpu_shares!r}: expected 2..262144")
    if cpuset_cpus is not None:
        import re

        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", cpuset_cpus.strip()):
            raise UsageError(f"--cpuset-cpus {cpuset_cpus!r}: expected a list such as 0-3,5")
        cpuset_cpus = cpuset_cpus.strip()
        _check_cpus_online(cpuset_cpus)
    explicit = any(v is not None for v in (memory, memory_swap, pids, cpu_shares, cpuset_cpus))
    return ResourceLimits(memory=mem, memory_swap=swap, pids=pid_limit, cpu_shares=shares,
                          cpuset_cpus=cpuset_cpus, explicit=explicit)


DEFAULT_LIMITS = ResourceLimits(pids=DEFAULT_PIDS)


def step_limits(given: ResourceLimits | None) -> ResourceLimits:
    """The cgroup limits of a build's RUN steps: those of its flags (``given``), else the safe
    defaults."""
    return given if given is not None else DEFAULT_LIMITS


def _cpu_list(text: str) -> set[int]:
    """``0-3,5`` as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _check_cpus_online(cpuset: str) -> None:
    """UsageError naming the flag when ``cpuset`` asks for CPUs this machine does not have
    online (as docker: "Requested CPUs are not available"); unknown when sysfs is unreadable."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            online = f.read().strip()
    except OSError:
        return
    missing = sorted(_cpu_list(cpuset) - _cpu_list(online))
    if missing:
        raise UsageError(f"--cpuset-cpus {cpuset!r}: CPU {','.join(map(str, missing))} not available "
                         f"(online: {online})")


def run_rlimits(ulimits: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, int, int], ...]:
    """The rlimits of a RUN: the ``--ulimit`` values (``(type, soft, hard)``, -1 unlimited)
    as RLIMIT names, plus the nofile default when ``nofile`` is not among them."""
    from ..inputs.flags import ULIMITS

    out = [(ULIMITS[k], soft, hard) for k, soft, hard in ulimits]
    if not any(k == "nofile" for k, _s, _h in ulimits):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        n = NOFILE_CAP if hard == resource.RLIM_INFINITY else min(hard, NOFILE_CAP)
        out.append(("RLIMIT_NOFILE", n, n))
    return tuple(out)


__all__ = ["DEFAULT_LIMITS", "DEFAULT_PIDS", "NOFILE_CAP", "parse_limits", "run_rlimits"]
