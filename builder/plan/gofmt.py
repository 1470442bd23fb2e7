"""Go formatting BuildKit's history strings rely on: ``%q`` of strings and slices, ``%v`` of
slices, ``time.Duration.String()``. Pure functions, never raise."""

from __future__ import annotations

from collections.abc import Sequence

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\", '"': '\\"'}


def quote(s: str) -> str:
    """Go's ``strconv.Quote``: double-quoted, Go escapes, printable Unicode kept."""
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == " " or ch.isprintable():
            out.append(ch)
        else:
            cp = ord(ch)
            if cp < 0x80:
                out.append(f"\\x{cp:02x}")
            elif cp <= 0xFFFF:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def quote_rune(value: int) -> str:
    """Go's ``%q`` of an integer (``strconv.QuoteRune``): ``'A'``, ``'\\x03'``, ``'\\n'``."""
    if value < 0 or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        return "'\\ufffd'"
    ch = chr(value)
    if ch == "'":
        return "'\\''"
    if ch in _ESCAPES and ch != '"':
        return "'" + _ESCAPES[ch] + "'"
    if ch == " " or ch.isprintable() or ch == '"':
        return f"'{ch}'"
    if value < 0x80:
        return f"'\\x{value:02x}'"
    return f"'\\u{value:04x}'" if value <= 0xFFFF else f"'\\U{value:08x}'"


def quote_list(items: Sequence[str]) -> str:
    """Go's ``%q`` of a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(quote(i) for i in items) + "]"


def value_list(items: Sequence[str]) -> str:
    """Go's ``%v`` of a ``[]string``: ``[a b]``."""
    return "[" + " ".join(items) + "]"


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    digits = []
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        v //= 10
    frac = "".join(reversed(digits))
    return ("." + frac if frac else ""), v


def duration(ns: int) -> str:
    """Go's ``time.Duration.String()`` (``1m30s``, ``500ms``, ``0s``)."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        if u < 1_000:
            s = f"{u}ns"
        elif u < 1_000_000:
            frac, whole = _fmt_frac(u, 3)
            s = f"{whole}{frac}µs"
        else:
            frac, whole = _fmt_frac(u, 6)
            s = f"{whole}{frac}ms"
    else:
        frac, secs = _fmt_frac(u, 9)
        s = f"{secs % 60}{frac}s"
        mins = secs // 60
        if mins:
            s = f"{mins % 60}m" + s
            hours = mins // 60
            if hours:
                s = f"{hours}h" + s
    return "-" + s if neg else s
