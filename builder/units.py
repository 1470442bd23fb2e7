"""Byte sizes as users write and read them (``500MB``, ``2GiB``; ``1.5MB``)."""

from __future__ import annotations

import re

from .errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")


def parse_size(text: str) -> int:
    """Bytes of ``text``: decimal units (kB, MB, GB, TB) or binary with ``i`` (KiB, MiB...).
    UsageError for anything else."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"invalid size {text!r} (examples: 500MB, 2GB)")
    base = 1024 if m.group(3) else 1000
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * base ** power)


def human_size(n: int) -> str:
    """``n`` bytes in decimal units, as docker prints sizes (``0B``, ``1.5MB``)."""
    f = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if f < 1000 or unit == "TB":
            return f"{f:.0f}{unit}" if unit == "B" else f"{f:.1f}{unit}"
        f /= 1000
    return str(n)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds of a Go duration as buildx takes it (``24h``, ``1h30m``, ``90s``; ``d`` for days
    is accepted too). UsageError for anything else."""
    s = text.strip()
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise UsageError(f"invalid duration {text!r} (examples: 24h, 1h30m, 90m)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s:
        raise UsageError("empty duration (examples: 24h, 1h30m)")
    return total
