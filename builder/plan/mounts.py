"""``RUN --mount=...`` values: parsing and validation with BuildKit's rules.

:func:`parse_mount` turns one flag value into a :class:`MountSpec`; it raises
:class:`builder.errors.DockerfileError` at the given span for any bad value. Values are expanded
with the caller's ``expand`` function except ``from``, which BuildKit never expands.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DockerfileError
from ..source import Span

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_ALL_KEYS = ("type", "from", "source", "target", "readonly", "id", "sharing", "required", "mode",
             "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env", "size")


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One ``--mount`` of a RUN, validated, defaults applied, paths absolute.

    ``target`` is absolute (relative targets are joined to the WORKDIR); for a secret mounted only
    as an environment variable it is ``""``. ``from_`` is the value as written;
    the lowering resolves it into ``from_stage`` (a stage index) or ``from_image`` (a reference).
    A cache mount's ``id`` defaults to its target; a secret's to the basename of its target; an ssh
    mount's to ``default``. ``mode`` is None when not given (defaults: cache 0o755, secret 0o400,
    ssh 0o600 are the engine's to apply). ``size`` is bytes (tmpfs only).
    """

    type: str
    target: str
    source: str = ""
    from_: str | None = None
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    readonly: bool = False
    required: bool = False
    env: str | None = None
    size: int | None = None
    from_stage: int | None = None
    from_image: str | None = None


def _go_bool(key: str, value: str, span: Span | None) -> bool:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise DockerfileError(f"invalid value for {key}: {value}", span)


def _ram_in_bytes(value: str) -> int | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGtTpP]?)(?:[iI]?[bB])?", value.strip())
    if not m:
        return None
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _fields(value: str, span: Span | None) -> list[str]:
    import csv

    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise DockerfileError(f"failed to parse csv mounts: {exc}", span) from None
    return rows[0] if rows else []


def mount_from(value: str) -> str | None:
    """The ``from=`` of a raw mount value (unexpanded), or None. Never raises."""
    import csv

    try:
        fields = next(csv.reader([value]), [])
    except csv.Error:
        return None
    mtype = "bind"
    found: str | None = None
    for field in fields:
        key, sep, val = field.partition("=")
        key = key.lower()
        if sep and key == "type":
            mtype = val.lower()
        elif sep and key == "from":
            found = val
    if mtype == "tmpfs":
        return None
    return found


def parse_mount(value: str, *, expand: Callable[[str], str], workdir: str, span: Span | None,
                ssh_index: int = 0) -> MountSpec:
    """Parse one ``--mount`` value. ``expand`` expands a word in the step's scope.

    ``workdir`` resolves a relative target; ``ssh_index`` numbers the default ssh socket path.
    Raises DockerfileError (at ``span``) for an unknown key or type, a bad value, or a field that
    the mount type does not allow.
    """
    mtype = "bind"
    target = source = cache_id = sharing = ""
    from_: str | None = None
    env: str | None = None
    mode = uid = gid = size = None
    readonly = False
    ro_auto = True
    required = False
    for field in _fields(value, span):
        key, sep, val = field.partition("=")
        key = key.lower()
        if not sep:
            if key in ("readonly", "ro"):
                readonly, ro_auto = True, False
            elif key in ("readwrite", "rw"):
                readonly, ro_auto = False, False
            elif key == "required":
                if mtype not in ("secret", "ssh"):
                    raise DockerfileError(f"unexpected key '{key}' for mount type '{mtype}'", span)
                required = True
            else:
                raise DockerfileError(f"invalid field '{field}' must be a key=value pair", span)
            continue
        if key == "from":
            if re.search(r"\$.", val):
                raise DockerfileError("'from' doesn't support variable expansion, define alias stage instead", span)
        else:
            val = expand(val)
        if key == "type":
            if val.lower() not in MOUNT_TYPES:
                raise DockerfileError(f"unsupported mount type {val!r} (one of {', '.join(MOUNT_TYPES)})", span)
            mtype = val.lower()
        elif key == "from":
            from_ = val
        elif key in ("source", "src"):
            source = val
        elif key in ("target", "dst", "destination"):
            target = val
        elif key in ("readonly", "ro"):
            readonly, ro_auto = _go_bool(key, val, span), False
        elif key in ("readwrite", "rw"):
            readonly, ro_auto = not _go_bool(key, val, span), False
        elif key == "required":
            if mtype not in ("secret", "ssh"):
                raise DockerfileError(f"unexpected key '{key}' for mount type '{mtype}'", span)
            required = _go_bool(key, val, span)
        elif key == "size":
            if mtype != "tmpfs":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{mtype}'", span)
            size = _ram_in_bytes(val)
            if size is None:
                raise DockerfileError(f"invalid value for {key}: {val}", span)
        elif key == "env":
            if mtype != "secret":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{mtype}'", span)
            env = val
        elif key == "id":
            cache_id = val
        elif key == "sharing":
            if val.lower() not in SHARING_MODES:
                raise DockerfileError(f"unsupported sharing value {val!r} (one of {', '.join(SHARING_MODES)})", span)
            sharing = val.lower()
        elif key == "mode":
            if not re.fullmatch(r"[0-7]+", val) or int(val, 8) > 0xFFFFFFFF:
                raise DockerfileError(f"invalid value {val} for mode", span)
            mode = int(val, 8)
        elif key in ("uid", "gid"):
            if not re.fullmatch(r"\d+", val) or int(val) > 0xFFFFFFFF:
                raise DockerfileError(f"invalid value {val} for {key}", span)
            if key == "uid":
                uid = int(val)
            else:
                gid = int(val)
        else:
            raise DockerfileError(f"unexpected key '{key}' in '{field}' (one of {', '.join(_ALL_KEYS)})", span)

    if mtype not in ("secret", "ssh", "cache"):
        for name, given in (("mode", mode), ("uid", uid), ("gid", gid)):
            if given is not None:
                raise DockerfileError(f"{name} not allowed for {mtype!r} type mounts", span)
    if ro_auto:
        readonly = mtype not in ("cache", "tmpfs")
    if mtype == "secret":
        if from_:
            raise DockerfileError("secret mount should not have a from", span)
        if sharing:
            raise DockerfileError("secret mount should not define sharing", span)
        if source and cache_id:
            raise DockerfileError("both source and id can't be set", span)
        if not source and not target and not cache_id:
            raise DockerfileError("invalid secret mount. one of source, target required", span)
        cache_id = source or cache_id or posixpath.basename(target.rstrip("/"))
        if not target and env is None:
            target = "/run/secrets/" + posixpath.basename(cache_id)
    elif mtype == "ssh":
        cache_id = cache_id or "default"
        if not target:
            target = f"/run/buildkit/ssh_agent.{ssh_index}"
    elif not target:
        raise DockerfileError(f"mount type={mtype} requires a target", span)
    if sharing and mtype != "cache":
        raise DockerfileError(f"invalid cache sharing set for {mtype} mount", span)

    if target:
        if not target.startswith("/"):
            target = posixpath.join("/", workdir or "/", target)
        target = _clean(target)
        if target == "/":
            raise DockerfileError('invalid mount target "/"', span)
    if mtype == "cache" and not cache_id:
        cache_id = target
    return MountSpec(
        type=mtype, target=target, source=source, from_=from_, id=cache_id,
        sharing=(sharing or "shared") if mtype == "cache" else "", mode=mode, uid=uid, gid=gid,
        readonly=readonly, required=required, env=env, size=size,
    )


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned
