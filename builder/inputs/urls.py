"""Classify and parse remote build inputs: git URLs (BuildKit's rules) and http(s) URLs.

A git URL is ``git://...``, ``git@HOST:PATH``, ``ssh://...``, ``github.com/...`` or an
http(s) URL whose path ends in ``.git``. Its fragment ``#REF[:SUBDIR]`` names the ref
(branch, tag, full or short commit) and the sub-directory; the query form
``?ref=|branch=|tag=|checksum=|commit=|subdir=|keep-git-dir=|mtime=`` (BuildKit 0.24) is
understood too. ``redact`` removes a ``user:password@`` from anything shown to the user.
Pure functions; :class:`GitURLError` (a UsageError) for malformed values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import PybuildError, UsageError


class InputError(PybuildError):
    """A remote build input (git repository, URL) could not be fetched or did not verify."""

_SCP = re.compile(r"^(?P<user>[A-Za-z0-9_.-]+)@(?P<host>[A-Za-z0-9_.-]+):(?P<path>(?!//).+)$")
_HEX = re.compile(r"^[0-9a-f]{7,64}$")


class GitURLError(UsageError):
    """A git URL that cannot be used (bad fragment or query)."""


@dataclass(frozen=True, slots=True)
class GitSpec:
    """A parsed git source. ``remote`` is what ``git fetch`` is given (credentials removed);
    ``username``/``password`` come from an http(s) URL's userinfo (never shown, never hashed).
    ``ref`` is None for the remote's default branch. ``subdir`` has no leading slash (``""``
    for the top). ``checksum`` is a commit the ref must resolve to."""

    remote: str
    ref: str | None = None
    subdir: str = ""
    checksum: str | None = None
    keep_git_dir: bool | None = None
    mtime: str | None = None          # "commit" | "checkout" | None (the caller's default)
    username: str | None = None
    password: str | None = None

    @property
    def shown(self) -> str:
        """The URL as it may be printed: no credentials, fragment as given."""
        out = self.remote
        if self.ref or self.subdir:
            out += "#" + (self.ref or "") + (":" + self.subdir if self.subdir else "")
        return out

    @property
    def is_ssh(self) -> bool:
        return self.remote.startswith("ssh://") or bool(_SCP.match(self.remote))


def is_http_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def is_git_url(value: str) -> bool:
    """BuildKit's test for a git source (see the module docstring)."""
    if value.startswith(("git://", "ssh://", "git@", "github.com/")):
        return True
    if _SCP.match(value.split("#", 1)[0]) and ".git" in value:
        return True
    if is_http_url(value):
        path = urlsplit(value.split("#", 1)[0]).path
        return path.endswith((".git", ".git/"))
    return False


def redact(text: str) -> str:
    """``text`` (a URL) with any ``user[:password]@`` of a scheme URL removed."""
    parts = urlsplit(text)
    if not parts.scheme or (parts.username is None and parts.password is None):
        return text
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def redact_text(text: str) -> str:
    """``text`` with the ``user[:password]@`` of every scheme URL in it removed (step lines,
    messages). An ssh user (``ssh://git@host``) is no secret but goes too: simpler, safe."""
    return _USERINFO.sub(r"\1", text)


def _go_bool(value: str, what: str) -> bool:
    if value.lower() in ("1", "t", "true", ""):
        return True
    if value.lower() in ("0", "f", "false"):
        return False
    raise GitURLError(f"{what}: invalid boolean {value!r}")


def parse_git_url(value: str) -> GitSpec:
    """Parse a git URL (``is_git_url`` true). Raises GitURLError naming the (redacted) URL."""
    text = value
    fragment = ""
    if "#" in text:
        text, fragment = text.split("#", 1)
    username = password = None
    query: list[tuple[str, str]] = []
    if "://" in text:
        parts = urlsplit(text)
        username, password = parts.username, parts.password
        if parts.query:
            query = parse_qsl(parts.query, keep_blank_values=True)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        if parts.scheme == "ssh" and parts.username:  # ssh user is no secret: keep it
            host = f"{parts.username}@{host}"
            username = None
            password = None
        remote = urlunsplit((parts.scheme, host, parts.path, "", ""))
    elif text.startswith("github.com/"):
        remote = "https://" + text
    else:
        remote = text
    shown = redact(value)
    ref: str | None = None
    subdir = ""
    if fragment:
        ref_part, _, subdir = fragment.partition(":")
        ref = ref_part or None
    checksum: str | None = None
    keep: bool | None = None
    mtime: str | None = None
    for key, val in query:
        if key in ("ref", "branch", "tag"):
            if ref is not None and ref != val:
                raise GitURLError(f"{shown}: ref given twice ({ref!r} and {val!r})")
            ref = val if key == "ref" else ("refs/heads/" if key == "branch" else "refs/tags/") + val
        elif key in ("checksum", "commit"):
            checksum = val.lower()
        elif key == "subdir":
            subdir = val
        elif key == "keep-git-dir":
            keep = _go_bool(val, shown)
        elif key == "mtime":
            if val not in ("commit", "checkout"):
                raise GitURLError(f"{shown}: mtime must be commit or checkout, not {val!r}")
            mtime = val
        else:
            raise GitURLError(f"{shown}: unknown git URL query key {key!r}")
    if ref is not None and (ref.startswith("-") or any(c in ref for c in " \t\n~^:?*[\\")):
        raise GitURLError(f"{shown}: invalid git ref {ref!r}")
    subdir = subdir.strip("/")
    if any(p == ".." for p in subdir.split("/")):
        raise GitURLError(f"{shown}: sub-directory {subdir!r} leaves the repository")
    if checksum is not None and not _HEX.match(checksum):
        raise GitURLError(f"{shown}: checksum {checksum!r} is not a commit hash")
    return GitSpec(remote=remote, ref=ref, subdir=subdir, checksum=checksum, keep_git_dir=keep, mtime=mtime,
                   username=username, password=password)


def is_commit_like(ref: str) -> bool:
    """A (possibly abbreviated) hex commit id."""
    return bool(_HEX.match(ref))
