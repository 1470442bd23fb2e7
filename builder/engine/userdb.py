"""User and group lookups in an image's own /etc/passwd and /etc/group.

Two entry points with the semantics of the BuildKit code they mirror:

* :func:`resolve_chown` for ``COPY/ADD --chown=user[:group]`` and WORKDIR's directories
  (BuildKit's file op: ``llb.WithUser`` + the solver's ``readUser``). The value is split at
  its first ``:``. Each part is an id when it is ``root`` (0) or a base-10 int32 (Go's
  ``ParseInt(s, 10, 32)``), else a name. A user id gives ``gid = uid``; a user name found in
  passwd gives its uid and primary gid; a name *not* found (also ``""`` and a missing passwd)
  gives 0:0, never an error. A group id replaces the gid; a group name found in /etc/group
  replaces it; one not found leaves the gid from the user part. So ``--chown=:`` is 0:0 and
  ``--chown=nosuchuser:nosuchgroup`` is 0:0. Only a negative id is refused (BuildKit would
  pass it on as a huge uint32).
* :func:`resolve_user` for the process user of RUN (BuildKit ``executor/oci.GetUser``, then
  runc/moby ``GetExecUser``): an empty USER means uid 0 / gid 0 with no lookup failing (a
  scratch image needs no passwd); ``uid:gid`` with both numeric (or ``root``) is taken as is
  without any lookup and without supplementary groups; otherwise the user name or number is
  looked up in passwd (a number absent from passwd, or with no passwd at all, is used as is
  with gid 0; a name must be found); an explicit group replaces the gid; without one, the
  supplementary groups are the /etc/group groups listing the matched user by name.

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
    """One line of an image's /etc/passwd (the fields pybuild uses)."""

    name: str
    uid: int
    gid: int
    home: str = "/"


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """One line of an image's /etc/group (the fields pybuild uses)."""

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


def _go_int32(text: str) -> int | None:
    """``root`` -> 0, a base-10 int32 with optional sign (Go ``ParseInt(s, 10, 32)``) -> its
    value, anything else (a name) -> None."""
    if text == "root":
        return 0
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(text)
    return value if -2**31 <= value <= _MAX_ID else None


def _chown_id(text: str, what: str) -> int | None:
    value = _go_int32(text)
    if value is not None and value < 0:
        raise UserLookupError(f"{what} {text} cannot be negative")
    return value


def resolve_chown(spec: str, view: FsView) -> tuple[int, int]:
    """``--chown`` value to (uid, gid) using the image seen through ``view`` (BuildKit's file
    op rule, see the module doc: unknown names fall back to id 0, never an error).

    Raises UserLookupError only for a negative id or an unreadable passwd/group file.
    """
    user, sep, group = spec.partition(":")
    uid = gid = 0
    num = _chown_id(user, "uid")
    if num is not None:
        uid = gid = num
    else:
        for entry in iter_passwd(view):
            if entry.name == user:
                uid, gid = entry.uid, entry.gid
                break
    if sep:
        gnum = _chown_id(group, "gid")
        if gnum is not None:
            gid = gnum
        else:
            for gentry in iter_group(view):
                if gentry.name == group:
                    gid = gentry.gid
                    break
    return uid, gid


def _fast_uid_gid(spec: str) -> tuple[int, int] | None:
    """BuildKit's ``ParseUIDGID`` fast path: ``uid:gid`` both numeric (or ``root``), else None."""
    user, sep, group = spec.partition(":")
    if not sep:
        return None
    ids = []
    for part in (user, group):
        if part == "root":
            ids.append(0)
        elif part.isascii() and part.isdigit() and int(part) <= 2**32 - 1:
            ids.append(int(part))
        else:
            return None
    return ids[0], ids[1]


def user_home(spec: str, view: FsView) -> str:
    """The home directory of the user of ``USER`` value ``spec`` in the image's passwd (by
    name, or by uid for a number), "/" when there is none: what runc puts in ``HOME`` when
    the process environment has none (libcontainer's setupUser), so BuildKit's RUN sees it.
    Never raises."""
    user = (spec.strip() or "root").split(":", 1)[0]
    try:
        num = int(user) if user.isdigit() else None
        for entry in iter_passwd(view):
            if (num is None and entry.name == user) or (num is not None and entry.uid == num):
                return entry.home or "/"
    except Exception:
        pass
    return "/"


def resolve_user(spec: str, view: FsView) -> tuple[int, int, tuple[int, ...]]:
    """``USER`` value to (uid, gid, supplementary gids) using the image seen through ``view``
    (BuildKit ``GetUser``, see the module doc).

    An empty spec means 0:0 when no passwd says otherwise, and never fails. Raises
    UserLookupError for an unknown user/group name.
    """
    if not spec.strip():
        try:
            return _exec_user("0", view)
        except UserLookupError:
            return 0, 0, ()
    fast = _fast_uid_gid(spec.strip())
    if fast is not None:
        return fast[0], fast[1], ()
    return _exec_user(spec, view)


def _exec_user(spec: str, view: FsView) -> tuple[int, int, tuple[int, ...]]:
    """runc's ``GetExecUser`` with no defaults (uid 0, gid 0)."""
    user, sep, group_text = spec.strip().partition(":")
    group = group_text if sep and group_text else None
    user = user or "0"  # runc: an empty user part matches the default uid, 0
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
    for gentry in iter_group(view):
        if matched.name in gentry.members and gentry.gid not in extra:
            extra.append(gentry.gid)
    return uid, gid, tuple(extra)
