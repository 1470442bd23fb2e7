"""Rootless mode: the user namespace's id maps.

:func:`plan_maps` decides the maps for the calling (non-root) user: container 0 -> the user's
own uid/gid, and container 1..N -> the user's subordinate range from ``/etc/subuid`` and
``/etc/subgid`` when both ranges exist and ``newuidmap``/``newgidmap`` are installed.
Otherwise a single-id map (container 0 only) with a warning: then only uid/gid 0 exist inside
and supplementary groups cannot be set. :func:`write_maps` applies a plan to a process that
has just unshared its user namespace (run from the parent user namespace).

Maps are tuples of ``(container_start, host_start, count)``, as in ``/proc/PID/uid_map``.
Raises :class:`builder.errors.HostError` when a map cannot be written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import HostError

IdMap = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class MapPlan:
    """The uid/gid maps of a user namespace, whether newuidmap/newgidmap write them, and the
    warning to show when only a single-id map was possible (else "")."""

    uidmap: IdMap
    gidmap: IdMap
    helpers: bool  # True: newuidmap/newgidmap; False: single-id map written directly
    warning: str = ""


def _sub_range(path: str, names: tuple[str, ...]) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names:
                    start, count = int(parts[1]), int(parts[2])
                    if count > 0:
                        return start, count
    except (OSError, ValueError):
        return None
    return None


def plan_maps() -> MapPlan:
    """The maps for the current user (see module doc)."""
    uid, gid = os.getuid(), os.getgid()
    names: tuple[str, ...] = (str(uid),)
    try:
        import pwd
        names = (pwd.getpwuid(uid).pw_name, str(uid))
    except (KeyError, ImportError):
        pass
    sub_u = _sub_range("/etc/subuid", names)
    sub_g = _sub_range("/etc/subgid", names)
    if sub_u and sub_g and shutil.which("newuidmap") and shutil.which("newgidmap"):
        return MapPlan(uidmap=((0, uid, 1), (1, sub_u[0], sub_u[1])),
                       gidmap=((0, gid, 1), (1, sub_g[0], sub_g[1])), helpers=True)
    why = ("newuidmap/newgidmap are not installed" if sub_u and sub_g
           else f"no subordinate id range for {names[0]} in /etc/subuid and /etc/subgid")
    return MapPlan(uidmap=((0, uid, 1),), gidmap=((0, gid, 1),), helpers=False,
                   warning=f"rootless: {why}; only uid/gid 0 exist in the step and groups are ignored")


def mapped(idmap: IdMap, container_id: int) -> bool:
    """Whether ``container_id`` exists in ``idmap``."""
    return any(c <= container_id < c + n for c, _, n in idmap)


def to_container(idmap: IdMap, host_id: int, overflow: int = 65534) -> int:
    """The container id of ``host_id`` under ``idmap`` (``overflow`` when unmapped)."""
    for c, h, n in idmap:
        if h <= host_id < h + n:
            return c + host_id - h
    return overflow


def write_maps(pid: int, plan: MapPlan) -> None:
    """Apply ``plan`` to process ``pid`` (which unshared CLONE_NEWUSER and waits)."""
    try:
        if plan.helpers:
            for tool, idmap in (("newuidmap", plan.uidmap), ("newgidmap", plan.gidmap)):
                args = [tool, str(pid)] + [str(x) for triple in idmap for x in triple]
                res = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
                if res.returncode != 0:
                    raise HostError(f"rootless: {' '.join(args)} failed: "
                                    f"{res.stdout.decode(errors='replace').strip()}")
            return
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write("".join(f"{c} {h} {n}\n" for c, h, n in plan.uidmap))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write("".join(f"{c} {h} {n}\n" for c, h, n in plan.gidmap))
    except OSError as e:
        raise HostError(f"rootless: cannot write the id maps of the sandbox: {e}") from e
