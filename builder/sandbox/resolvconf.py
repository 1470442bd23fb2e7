"""The /etc/resolv.conf a RUN step sees, made as BuildKit makes it (executor/oci/resolvconf.go
with util/resolvconf): the host's file, parsed and written again.

* Source: ``/etc/resolv.conf``; for a network other than the host's, when its only nameserver
  is systemd-resolved's stub ``127.0.0.53``, ``/run/systemd/resolve/resolv.conf`` instead.
  A missing file reads as empty.
* Parsing: blank lines and comments (``#``, ``;``) dropped; ``nameserver ADDR`` kept when ADDR
  is an IP address; the last ``search`` (or ``domain``) line wins; ``options`` accumulate;
  any other line is kept as is.
* Transform (a network other than the host's, or no nameserver at all): loopback nameservers
  removed; when none is left, Google's public servers (8.8.8.8, 8.8.4.4 and the IPv6 pair).
* Output: ``nameserver`` lines, then ``search``, ``options``, the other lines; no comments.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = Path("/etc/resolv.conf")
SYSTEMD_PATH = Path("/run/systemd/resolve/resolv.conf")
_STUB = ipaddress.ip_address("127.0.0.53")
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")


@dataclass
class _Parsed:
    """The lines of a resolv.conf by kind (``other``: lines kept as they are)."""

    nameservers: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def _parse(text: str) -> _Parsed:
    rc = _Parsed()
    for line in text.splitlines():
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if not fields:
            continue
        key = fields[0]
        if key == "nameserver":
            if len(fields) >= 2:
                try:
                    rc.nameservers.append(ipaddress.ip_address(fields[1]))
                except ValueError:
                    pass  # BuildKit notes it as invalid and leaves it out
        elif key in ("search", "domain"):
            if len(fields) >= 2:
                rc.search = fields[1:]
        elif key == "options":
            if len(fields) >= 2:
                rc.options.extend(fields[1:])
        else:
            rc.other.append(line)
    return rc


def transform(text: str, network: str) -> bytes:
    """The step's resolv.conf from the host file's ``text`` for ``network`` ("host" or not)."""
    rc = _parse(text)
    if network != "host" or not rc.nameservers:
        rc.nameservers = [a for a in rc.nameservers if not a.is_loopback]
        if not rc.nameservers:
            rc.nameservers = [ipaddress.ip_address(a) for a in DEFAULT_NAMESERVERS]
    out = [f"nameserver {a}" for a in rc.nameservers]
    if rc.search:
        out.append("search " + " ".join(rc.search))
    if rc.options:
        out.append("options " + " ".join(rc.options))
    out.extend(rc.other)
    return "".join(line + "\n" for line in out).encode()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def resolv_conf(network: str, *, default: Path = DEFAULT_PATH, systemd: Path = SYSTEMD_PATH) -> bytes:
    """The step's /etc/resolv.conf for ``network`` from this host's files (see the module doc)."""
    text = _read(default)
    if network != "host" and _parse(text).nameservers == [_STUB]:
        text = _read(systemd)
    return transform(text, network)
