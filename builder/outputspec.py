"""``--output`` values (buildx syntax) parsed into :class:`OutputSpec`.

Kept apart from :mod:`builder.transfer` so that parsing outputs costs no pydantic import:
a build whose only output is the local image store never loads the OCI models.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from .errors import UsageError
from .oci import mediatypes as mt

_TYPES = ("oci", "docker", "local", "tar", "image", "registry")
_KEYS = {"type", "dest", "tar", "name", "push", "compression", "compression-level", "force-compression",
         "oci-mediatypes"}


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One parsed ``--output``. ``dest`` is a path or ``-`` (stdout); ``names`` image names;
    ``tar`` False makes ``type=oci`` write a directory."""

    type: str
    dest: str | None = None
    names: tuple[str, ...] = ()
    push: bool = False
    tar: bool = True
    compression: str | None = None
    compression_level: int | None = None
    force_compression: bool = False
    attrs: tuple[tuple[str, str], ...] = field(default=())


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", ""):
        return True
    if v in ("false", "0", "no"):
        return False
    raise UsageError(f"--output: {key}={value!r} is not a boolean")


def parse_output(text: str) -> OutputSpec:
    """Parse a buildx ``--output`` value (CSV ``key=value`` pairs; a bare path means
    ``type=local,dest=PATH``; ``-`` means ``type=tar,dest=-``). UsageError when malformed."""
    text = text.strip()
    if not text:
        raise UsageError("--output: empty value")
    if text == "-":
        return OutputSpec(type="tar", dest="-")
    if "=" not in text:
        return OutputSpec(type="local", dest=text)
    try:
        fields = next(csv.reader([text]))
    except csv.Error as e:
        raise UsageError(f"--output {text!r}: {e}") from None
    kv: dict[str, str] = {}
    for f in fields:
        key, sep, value = f.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"--output {text!r}: {f!r} is not key=value")
        if key not in _KEYS and not key.startswith("annotation"):
            raise UsageError(f"--output {text!r}: unknown key {key!r}")
        kv[key] = value
    typ = kv.get("type")
    if typ is None:
        raise UsageError(f"--output {text!r}: type= is required ({', '.join(_TYPES)})")
    if typ not in _TYPES:
        raise UsageError(f"--output {text!r}: unknown type {typ!r} ({', '.join(_TYPES)})")
    dest = kv.get("dest")
    names = tuple(n.strip() for n in kv.get("name", "").split(",") if n.strip())
    push = _bool("push", kv["push"]) if "push" in kv else typ == "registry"
    tar = _bool("tar", kv["tar"]) if "tar" in kv else True
    compression = kv.get("compression")
    if compression is not None and compression not in mt.COMPRESSIONS:
        raise UsageError(f"--output {text!r}: compression={compression!r} is not one of gzip, zstd, uncompressed")
    level = None
    if "compression-level" in kv:
        try:
            level = int(kv["compression-level"])
        except ValueError:
            raise UsageError(f"--output {text!r}: compression-level must be an integer") from None
    force = _bool("force-compression", kv["force-compression"]) if "force-compression" in kv else False
    if typ in ("oci", "docker", "local", "tar") and not dest:
        raise UsageError(f"--output {text!r}: type={typ} needs dest=")
    if typ in ("image", "registry"):
        # without name= the build's -t tags are used (buildx behaviour); export_image checks
        if dest:
            raise UsageError(f"--output {text!r}: type={typ} takes no dest=")
    if dest == "-" and (typ == "local" or (typ == "oci" and not tar)):
        raise UsageError(f"--output {text!r}: dest=- needs a tar output (type=oci, docker or tar)")
    if typ == "docker" and not tar:
        raise UsageError(f"--output {text!r}: type=docker is always a tar")
    if names:
        from .oci.reference import parse_reference

        for n in names:
            parse_reference(n)  # ReferenceError_ names the bad one
    extra = tuple(sorted((k, v) for k, v in kv.items() if k not in _KEYS))
    return OutputSpec(typ, dest, names, push, tar, compression, level, force, extra)


def check_dest(spec: OutputSpec) -> None:
    """UsageError, before anything is built, when ``spec.dest`` cannot be written: a file output
    (``oci``/``docker``/``tar`` archives) whose dest is a directory, a directory output
    (``local``, ``oci`` with ``tar=false``) whose dest is something else, or a path below a
    non-directory. Missing parent directories are fine (they are made)."""
    if not spec.dest or spec.dest == "-" or spec.type in ("image", "registry"):
        return
    wants_dir = spec.type == "local" or (spec.type == "oci" and not spec.tar)
    check_path(spec.dest, f"--output type={spec.type},dest={spec.dest}", wants_dir=wants_dir,
               why=f"type={spec.type} writes one file")


def check_path(dest: str, what: str, *, wants_dir: bool, why: str = "a file is written there",
               parents: bool = True) -> None:
    """UsageError naming ``what`` (the flag and value) when ``dest`` cannot become the file
    (``wants_dir`` False) or directory it should be: a file onto a directory, a directory onto a
    file, a path below a non-directory, or (``parents`` False) a missing parent directory."""
    import os

    path = os.path.abspath(dest)
    if os.path.isdir(path) and not wants_dir:
        raise UsageError(f"{what}: {dest} is a directory ({why})")
    probe = path if wants_dir else os.path.dirname(path)
    if not parents and not os.path.lexists(probe):
        raise UsageError(f"{what}: no directory {probe}")
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{what}: {probe} exists and is not a directory")


__all__ = ["OutputSpec", "check_dest", "check_path", "parse_output"]
