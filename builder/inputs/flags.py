"""Values of the RUN-environment flags, parsed as docker/buildx do: ``--add-host``,
``--shm-size``, ``--ulimit``, ``--annotation``. Each parser raises UsageError naming the flag."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import UsageError

HOST_GATEWAY = "host-gateway"
# RUN shares the host's network namespace (or has none): the host is its own gateway
HOST_GATEWAY_IP = "127.0.0.1"
ULIMITS = {"as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
           "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
           "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
           "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
           "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK"}
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


def parse_add_host(value: str) -> tuple[str, str]:
    """``HOST:IP`` or ``HOST=IP`` (IP may be IPv6, or ``host-gateway``) -> (host, ip)."""
    if "=" in value:
        host, _, ip = value.partition("=")
    else:
        host, _, ip = value.partition(":")
    host, ip = host.strip(), ip.strip()
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if not host or not _HOSTNAME.match(host):
        raise UsageError(f"--add-host {value!r}: invalid host name {host!r} (expected HOST:IP)")
    if ip == HOST_GATEWAY:
        return host, HOST_GATEWAY_IP
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"--add-host {value!r}: invalid IP address {ip!r}") from None
    return host, ip


def parse_shm_size(value: str) -> int:
    """Docker's RAMInBytes (1024-based units): ``64m`` -> 67108864."""
    from ..plan.mounts import _ram_in_bytes

    size = _ram_in_bytes(value)
    if size is None or size <= 0:
        raise UsageError(f"--shm-size {value!r}: expected a size such as 64m or 1g")
    return size


def parse_ulimit(value: str) -> tuple[str, int, int]:
    """``TYPE=SOFT[:HARD]`` -> (type, soft, hard); -1 means unlimited; HARD defaults to SOFT."""
    kind, sep, limits = value.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in ULIMITS:
        raise UsageError(f"--ulimit {value!r}: expected TYPE=SOFT[:HARD] with TYPE one of "
                         f"{', '.join(sorted(ULIMITS))}")
    soft_s, _, hard_s = limits.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise UsageError(f"--ulimit {value!r}: limits must be integers") from None
    if soft < -1 or hard < -1 or (hard != -1 and (soft == -1 or soft > hard)):
        raise UsageError(f"--ulimit {value!r}: soft limit must not exceed the hard limit")
    return kind, soft, hard


@dataclass(frozen=True, slots=True)
class Annotation:
    """One ``--annotation``: ``levels`` among manifest, index, manifest-descriptor,
    index-descriptor; ``platform`` limits a manifest annotation (``manifest[linux/amd64]:``)."""

    levels: tuple[str, ...]
    key: str
    value: str
    platform: str | None = None


_LEVELS = ("manifest", "index", "manifest-descriptor", "index-descriptor")


def parse_annotation(value: str) -> Annotation:
    """buildx's syntax: ``[TYPE[,TYPE...][\\[PLATFORM\\]]:]KEY=VALUE``; no type means manifest."""
    key_part, sep, val = value.partition("=")
    if not sep or not key_part:
        raise UsageError(f"--annotation {value!r}: expected [TYPE:]KEY=VALUE")
    levels: tuple[str, ...] = ("manifest",)
    platform = None
    m = re.match(r"^([a-z,-]+)(\[([^\]]+)\])?:(.+)$", key_part)
    if m and all(t in _LEVELS for t in m.group(1).split(",")):
        levels = tuple(m.group(1).split(","))
        platform = m.group(3)
        key_part = m.group(4)
    elif ":" in key_part.split(".", 1)[0] and not key_part.startswith(("http", "org.", "com.")):
        raise UsageError(f"--annotation {value!r}: unknown annotation type (one of {', '.join(_LEVELS)})")
    if not key_part:
        raise UsageError(f"--annotation {value!r}: empty key")
    return Annotation(levels, key_part, val, platform)
