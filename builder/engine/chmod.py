"""``COPY/ADD --chmod``: octal modes and chmod(1)'s symbolic modes, applied per entry.

An octal value (``755``, ``0644``, at most ``07777``) replaces the permission bits. A symbolic
value (Dockerfile syntax 1.14) is a comma-separated list of clauses ``[ugoa]*(op perms)+``
with op ``+``, ``-`` or ``=`` and perms from ``rwxXst`` or one of ``u``/``g``/``o`` (copy that
class's current bits). It transforms each entry's own mode, in order:

* no ``who`` means ``a`` (no umask applies to a build);
* ``X`` is execute for directories and for entries that already have an execute bit (the
  mode as changed so far), with every op (POSIX 2024 / GNU chmod);
* ``s`` is setuid for ``u`` and setgid for ``g``; ``t`` is the sticky bit, set for ``o``/``a``;
* ``=`` first clears the named classes' ``rwx`` bits and their special bits (a directory
  keeps its setuid/setgid bits, as GNU chmod does).

Results agree with coreutils' chmod under umask 0 (``tests/test_copy.py`` checks that).

:func:`parse_chmod` raises CopyError for anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .context import CopyError

_CLASS_RWX = {"u": 0o700, "g": 0o070, "o": 0o007}
_CLASS_SPECIAL = {"u": 0o4000, "g": 0o2000, "o": 0o1000}
_SHIFT = {"u": 6, "g": 3, "o": 0}
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")


@dataclass(frozen=True, slots=True)
class _Action:
    """One ``op`` (``+``, ``-`` or ``=``) with its permission letters or copied class (``u``/``g``/``o``)."""

    op: str
    perms: str


@dataclass(frozen=True, slots=True)
class _Clause:
    """The actions of one comma-separated clause for the classes ``who``."""

    who: str  # a subset of "ugo", never empty
    actions: tuple[_Action, ...]


@dataclass(frozen=True, slots=True)
class Chmod:
    """A parsed ``--chmod``: ``text`` as written, ``octal`` when it is a number."""

    text: str
    octal: int | None
    clauses: tuple[_Clause, ...] = ()

    def apply(self, mode: int, is_dir: bool) -> int:
        """The permission bits (``0o7777`` range) an entry with bits ``mode`` gets."""
        if self.octal is not None:
            return self.octal
        mode &= 0o7777
        for clause in self.clauses:
            for action in clause.actions:
                mode = _apply_action(mode, is_dir, clause.who, action)
        return mode


def _apply_action(mode: int, is_dir: bool, who: str, action: _Action) -> int:
    mask = 0
    for c in who:
        mask |= _CLASS_RWX[c]
    bits = 0
    perms = action.perms
    if perms in _CLASS_RWX:  # copy a class: its rwx bits, replicated into each named class
        triple = (mode >> _SHIFT[perms]) & 0o7
        for c in who:
            bits |= triple << _SHIFT[c]
    else:
        for p in perms:
            if p == "r":
                bits |= 0o444 & mask
            elif p == "w":
                bits |= 0o222 & mask
            elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                bits |= 0o111 & mask
            elif p == "s":
                bits |= (0o4000 if "u" in who else 0) | (0o2000 if "g" in who else 0)
            elif p == "t":
                bits |= 0o1000 if "o" in who else 0
    if action.op == "+":
        return mode | bits
    if action.op == "-":
        return mode & ~bits
    cleared = mask
    for c in who:
        cleared |= _CLASS_SPECIAL[c]
    if is_dir:
        cleared &= ~0o6000  # a directory keeps setuid/setgid unless named (GNU chmod)
    return (mode & ~cleared) | bits


def parse_chmod(text: str) -> Chmod:
    """Parse a ``--chmod`` value; CopyError naming it when it is neither form."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        if not re.fullmatch(r"[0-7]+", value) or int(value, 8) > 0o7777:
            raise CopyError(f"invalid --chmod value {text!r}: an octal mode between 0 and 07777 is expected")
        return Chmod(value, int(value, 8))
    clauses: list[_Clause] = []
    for part in value.split(","):
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise CopyError(f"invalid --chmod value {text!r}: expected an octal mode or chmod's symbolic "
                            f"form such as u+x or u=rwX,go=rX")
        who = m.group(1)
        who = "ugo" if not who or "a" in who else "".join(c for c in "ugo" if c in who)
        actions = tuple(_Action(op, perms) for op, perms in _ACTION.findall(m.group(2)))
        clauses.append(_Clause(who, actions))
    return Chmod(value, None, tuple(clauses))


def as_chmod(value: "Chmod | int | str | None") -> Chmod | None:
    """Normalise what callers pass as ``chmod=`` (a Chmod, an int of permission bits, a
    string to parse, or None)."""
    if value is None or isinstance(value, Chmod):
        return value
    if isinstance(value, int):
        return Chmod(f"{value:o}", value & 0o7777)
    return parse_chmod(value)


__all__ = ["Chmod", "parse_chmod", "as_chmod"]
