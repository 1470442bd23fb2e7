"""User and group lookups in an image's own /etc/passwd and /etc/group.

Two entry points with the semantics of the tools they mirror:

* :func:`resolve_chown` for ``COPY/ADD --chown=user[:group]`` (BuildKit's file op): a numeric
  user gives ``gid = uid`` (BuildKit does not look numeric ids up, even when passwd has them);
  a user name gives that user's primary gid from passwd; an explicit group (name looked up in
  /etc/group, or number) replaces the gid.
* :func:`resolve_user` for ``USER`` of RUN (runc/moby ``GetExecUser``): a user name or number is
  looked up in passwd (a number absent from passwd is used as is with gid 0); an explicit group
  replaces the gid; without one, the supplementary groups are the /etc/group groups listing
  the user by name.

Files are read through an :class:`FsView` after resolving symlinks inside the image root; a
missing file counts as empty. Unknown names raise :class:`UserLookupError` with runc's wording
("unable to find user X: no matching entries in passwd file").
"""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass
from typing import Iterator

from ..errors import PybuildError
from .pathresolve import FsView, resolve_in_root

PASSWD = "/etc/passwd"
GROUP = "/etc/group"
_MAX_ID = 2**31 - 1


class UserLookupError(PybuildError):
    """A ``--chown`` or ``USER`` value names an unknown user/group or is malformed."""


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = "/"


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


def _read_lines(view: FsView, path: str) -> Iterator[str]:
    """Lines of a text file of the image (missing or not a regular file: nothing)."""
    real = resolve_in_root(view, path)
    st = view.lstat(real)
    if st is None or not stat.S_ISREG(st.st_mode):
        return
    try:
        with view.open(real) as raw:
            for line in io.TextIOWrapper(raw, encoding="utf-8", errors="replace"):
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
    except OSError as exc:
        raise UserLookupError(f"cannot read {path} of the image: {exc.strerror}") from None


def _int(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def iter_passwd(view: FsView) -> Iterator[PasswdEntry]:
    """Parsed /etc/passwd entries, malformed lines skipped."""
    for line in _read_lines(view, PASSWD):
        fields = line.split(":")
        if len(fields) < 4:
            continue
        uid, gid = _int(fields[2]), _int(fields[3])
        if uid is None or gid is None:
            continue
        home = fields[5] if len(fields) > 5 and fields[5] else "/"
        yield PasswdEntry(fields[0], uid, gid, home)


def iter_group(view: FsView) -> Iterator[GroupEntry]:
    """Parsed /etc/group entries, malformed lines skipped."""
    for line in _read_lines(view, GROUP):
        fields = line.split(":")
        if len(fields) < 3:
            continue
        gid = _int(fields[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip()) if len(fields) > 3 else ()
        yield GroupEntry(fields[0], gid, members)


def _split_spec(spec: str, what: str) -> tuple[str, str | None]:
    spec = spec.strip()
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise UserLookupError(f"invalid {what} {spec!r}: expected user[:group]")
    return user, (group if sep else None)


def _numeric(text: str, what: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value > _MAX_ID:
            raise UserLookupError(f"{what} {text} is out of range")
        return value
    if text.startswith("-") and text[1:].isdigit():
        raise UserLookupError(f"{what} {text} cannot be negative")
    return None


def _group_gid(view: FsView, group: str) -> int:
    gid = _numeric(group, "gid")
    if gid is not None:
        return gid
    for entry in iter_group(view):
        if entry.name == group:
            return entry.gid
    raise UserLookupError(f"unable to find group {group}: no matching entries in group file")


def resolve_chown(spec: str, view: FsView) -> tuple[int, int]:
    """``--chown`` value to (uid, gid) using the image seen through ``view``.

    Raises UserLookupError for a malformed spec or an unknown user/group name.
    """
    user, group = _split_spec(spec, "--chown value")
    uid = _numeric(user, "uid")
    if uid is not None:
        gid = uid
    else:
        for entry in iter_passwd(view):
            if entry.name == user:
                uid, gid = entry.uid, entry.gid
                break
        else:
            raise UserLookupError(f"unable to find user {user}: no matching entries in passwd file")
    if group is not None:
        gid = _group_gid(view, group)
    return uid, gid


def resolve_user(spec: str, view: FsView) -> tuple[int, int, tuple[int, ...]]:
    """``USER`` value to (uid, gid, supplementary gids) using the image seen through ``view``.

    An empty spec means root (0, 0, ()). Raises UserLookupError for an unknown user/group name.
    """
    if not spec.strip():
        return 0, 0, ()
    user, group = _split_spec(spec, "user")
    num = _numeric(user, "uid")
    matched: PasswdEntry | None = None
    for entry in iter_passwd(view):
        if (num is None and entry.name == user) or (num is not None and entry.uid == num):
            matched = entry
            break
    if matched is None:
        if num is None:
            raise UserLookupError(f"unable to find user {user}: no matching entries in passwd file")
        uid, gid = num, 0
    else:
        uid, gid = matched.uid, matched.gid
    if group is not None:
        return uid, _group_gid(view, group), ()
    if matched is None:
        return uid, gid, ()
    extra: list[int] = []
    for entry in iter_group(view):
        if matched.name in entry.members and entry.gid not in extra:
            extra.append(entry.gid)
    return uid, gid, tuple(extra)
