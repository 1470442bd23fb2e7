"""What the differential suite compares: an image reduced to its config and its flattened file
system, read from any builder's output, and the list of differences between two of them.

Shares no code with ``builder``: layers are read by tests/ocireader.py (tarfile, whiteouts
applied by ``flatten``); a docker ``save`` archive (the legacy layout dockerd 20.10 writes) is
read here.

Differences are strings ``KEY: detail`` where KEY is ``config:FIELD``, ``history`` (entries or empty_layer flags differ), ``history:N``
(the text of entry N), ``layers``
or ``fs:/path``; a documented difference in a case lists the KEYs (fnmatch patterns) it allows.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ocireader import Member, _members, flatten, read_layout

# Image config fields `docker inspect` shows under Config (the zero values it shows for
# container-only fields, e.g. Hostname "", are dropped on both sides) and at the top level.
TOP_FIELDS = ("architecture", "os", "variant", "author")


@dataclass(frozen=True)
class Entry:
    """One path of a flattened file system, reduced to what must match between builders."""

    type: str                       # file dir symlink char block fifo
    mode: int                       # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    content: str                    # sha256 of a file, the target of a symlink, "maj:min" of a device
    xattrs: tuple[tuple[str, str], ...]
    links: tuple[str, ...]          # the hardlink group (sorted paths) of a file, () when alone
    mtime: int


@dataclass(frozen=True)
class Snapshot:
    """An image as the suite compares it."""

    config: dict[str, Any]          # Config fields plus TOP_FIELDS, zero values dropped
    created: str | None
    history: tuple[tuple[str, bool], ...]   # (created_by, empty_layer)
    history_created: tuple[str | None, ...]
    layers: int
    fs: dict[str, Entry]


def _zero(v: Any) -> bool:
    return v is None or v == "" or v is False


def _config_view(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in (cfg.get("config") or {}).items() if not _zero(v)}
    for k in TOP_FIELDS:
        if not _zero(cfg.get(k)):
            out[k] = cfg[k]
    return out


def _fs(layers: list[list[Member]]) -> dict[str, Entry]:
    flat = flatten(layers)
    groups: dict[str, set[str]] = {}
    for path, m in flat.items():
        if m.type == "hardlink" and m.linkname in flat:
            g = groups.get(m.linkname, {m.linkname}) | groups.get(path, {path})
            for p in g:
                groups[p] = g
    fs: dict[str, Entry] = {}
    for path, m in flat.items():
        src = flat[m.linkname] if m.type == "hardlink" and m.linkname in flat else m
        if src.type == "file":
            content = hashlib.sha256(src.data or b"").hexdigest()
        elif src.type == "symlink":
            content = src.linkname
        else:
            content = ""
        links = tuple(sorted(groups[path])) if path in groups else ()
        fs["/" + path] = Entry(src.type, src.mode & 0o7777, src.uid, src.gid, content,
                               tuple(sorted(src.xattrs.items())), tuple("/" + p for p in links), src.mtime)
    return fs


def _snapshot(cfg: dict[str, Any], layers: list[list[Member]]) -> Snapshot:
    hist = cfg.get("history") or []
    return Snapshot(_config_view(cfg), cfg.get("created"),
                    tuple((h.get("created_by", ""), bool(h.get("empty_layer"))) for h in hist),
                    tuple(h.get("created") for h in hist),
                    len((cfg.get("rootfs") or {}).get("diff_ids") or []), _fs(layers))


def read_oci(path: Path, tag: str | None = None) -> Snapshot:
    """The image ``tag`` of an OCI layout directory or tar (pybuild's store, oci-archive)."""
    img = read_layout(path, tag)
    return _snapshot(img.config, img.layers)


def read_docker_archive(path: Path) -> Snapshot:
    """The (single) image of a ``docker save`` archive, legacy or OCI-style."""
    with tarfile.open(path) as tar:
        def read(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None, f"{path}: {name} is not a file"
            return f.read()

        manifest = json.loads(read("manifest.json"))
        assert len(manifest) == 1, f"{path}: {len(manifest)} images"
        cfg = json.loads(read(manifest[0]["Config"]))
        layers = [_members(_maybe_gunzip(read(name))) for name in manifest[0]["Layers"]]
    return _snapshot(cfg, layers)


def snapshot_from_inspect(inspect: dict[str, Any]) -> Snapshot:
    """An image without layers, from ``docker image inspect`` (no history: inspect shows none)."""
    cfg = {"config": inspect.get("Config") or {}, "architecture": inspect.get("Architecture"),
           "os": inspect.get("Os"), "variant": inspect.get("Variant"), "author": inspect.get("Author")}
    view = _config_view(cfg)
    view.pop("Image", None)  # the parent image field of a container config, empty for BuildKit
    return Snapshot(view, inspect.get("Created"), (), (), len((inspect.get("RootFS") or {}).get("Layers") or []), {})


def _maybe_gunzip(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        import gzip

        return gzip.decompress(data)
    return data


@dataclass(frozen=True)
class CompareRules:
    """How two snapshots are compared.

    ``history``: compare created_by/empty_layer and the layer count (dockerd peers; buildah
    writes its own history text). ``mtime_floor``: a time before the build started; mtimes
    older than it came from the inputs (context, base) and must match. ``epoch``: the build's
    SOURCE_DATE_EPOCH: pybuild clamps layer mtimes to it (BuildKit's rewrite-timestamp), so an
    input mtime is expected as min(peer, epoch) and an mtime made during the build as epoch.
    ``mtimes``: False turns the mtime check off for a case whose inputs make it meaningless.
    ``buildah``: the peer is buildah; see :func:`buildah_view`."""

    history: bool
    mtime_floor: float
    buildah: bool = False
    epoch: int | None = None
    mtimes: bool = True


_COPY_FLAGS = re.compile(r" --(?:parents|chown=\S*|chmod=\S*)(?= )")
_HEALTH3 = re.compile(r'^(HEALTHCHECK &\{\[.*\] "[^"]*" "[^"]*" "[^"]*") (\'.*\'\})$')


def normalize_created_by(text: str) -> str:
    """History text in a spelling both BuildKit versions share. EXPOSE: v0.8 printed a Go map
    (``EXPOSE map[53/udp:{} 80/tcp:{}]``, sorted), current BuildKit the parsed list in source
    order (``EXPOSE [80/tcp 53/udp]``, dockerfile2llb/convert_expose.go dispatchExpose): both
    become the sorted list. HEALTHCHECK: current BuildKit prints ``%+v`` of a config with
    StartInterval (convert.go dispatchHealthcheck), v0.8's had none: a missing 4th duration
    becomes its default "0s". COPY/ADD: current BuildKit writes ``--parents``, ``--chown=``
    and ``--chmod=`` into the text (convert_copy.go, commitMessage), v0.8 did not: they are
    dropped. ARG: current BuildKit writes each name with the value it resolved (build arg,
    default or inherited global, convert.go dispatchArg), v0.8 the Dockerfile's own text:
    only the names are compared (the values reach every later RUN's text and the files)."""
    if text.startswith("EXPOSE map[") and text.endswith("]"):
        ports = [p.rsplit(":", 1)[0] for p in text[len("EXPOSE map["):-1].split(" ") if p]
        return "EXPOSE [" + " ".join(sorted(ports)) + "]"
    if text.startswith("EXPOSE [") and text.endswith("]"):
        return "EXPOSE [" + " ".join(sorted(text[len("EXPOSE ["):-1].split())) + "]"
    m = _HEALTH3.match(text)
    if m:
        return f'{m.group(1)} "0s" {m.group(2)}'
    if text.startswith(("COPY ", "ADD ")):
        return _COPY_FLAGS.sub("", text)
    if text.startswith("ARG "):
        return "ARG " + " ".join(w.split("=", 1)[0] for w in text[4:].split(" "))
    return text


def buildah_view(peer: Snapshot, ours: Snapshot) -> Snapshot:
    """buildah's image without what buildah adds of its own, which no BuildKit writes: the
    ``io.buildah.version`` label, a random ``Hostname`` in the config, empty ``[]``/``{}``
    where BuildKit leaves a field out, and the ``/etc/hostname`` and ``/run`` (for
    /run/.containerenv) its RUN leaves in the rootfs (BuildKit mounts only /etc/hosts and
    /etc/resolv.conf there, executor/oci/spec.go)."""
    cfg = {k: v for k, v in peer.config.items() if k != "Hostname" and v not in ([], {})}
    labels = {k: v for k, v in (cfg.get("Labels") or {}).items() if k != "io.buildah.version"}
    if labels:
        cfg["Labels"] = labels
    else:
        cfg.pop("Labels", None)
    fs = dict(peer.fs)
    for path in ("/etc/hostname", "/run"):
        if path not in ours.fs:
            fs.pop(path, None)
    return Snapshot(cfg, peer.created, peer.history, peer.history_created, peer.layers, fs)


def differences(ours: Snapshot, peer: Snapshot, rules: CompareRules) -> list[str]:
    """Every way ``ours`` differs from ``peer``, as ``KEY: detail`` strings (empty: identical)."""
    out: list[str] = []
    if rules.buildah:
        peer = buildah_view(peer, ours)
    for k in sorted(set(ours.config) | set(peer.config)):
        a, b = ours.config.get(k), peer.config.get(k)
        if a != b:
            out.append(f"config:{k}: pybuild {json.dumps(a)} != peer {json.dumps(b)}")
    if rules.history:
        if ours.layers != peer.layers:
            out.append(f"layers: pybuild {ours.layers} != peer {peer.layers}")
        oh = [(normalize_created_by(c), e) for c, e in ours.history]
        ph = [(normalize_created_by(c), e) for c, e in peer.history]
        if [e for _, e in oh] != [e for _, e in ph]:
            out.append(f"history: pybuild {oh} != peer {ph}")
        else:
            for i, ((a, _), (b, _)) in enumerate(zip(oh, ph, strict=True)):
                if a != b:
                    out.append(f"history:{i}: pybuild {a!r} != peer {b!r}")
    for path in sorted(set(ours.fs) | set(peer.fs)):
        a_e, b_e = ours.fs.get(path), peer.fs.get(path)
        if a_e is None:
            assert b_e is not None
            out.append(f"fs:{path}: only in peer ({b_e.type} {b_e.mode:o} {b_e.uid}:{b_e.gid})")
            continue
        if b_e is None:
            out.append(f"fs:{path}: only in pybuild ({a_e.type} {a_e.mode:o} {a_e.uid}:{a_e.gid})")
            continue
        for field in ("type", "mode", "uid", "gid", "content", "xattrs", "links"):
            va, vb = getattr(a_e, field), getattr(b_e, field)
            if va != vb:
                shown = (f"{va:o} != {vb:o}") if field == "mode" else f"{va!r} != {vb!r}"
                out.append(f"fs:{path}: {field} pybuild {shown} peer")
        want = _expected_mtime(b_e.mtime, rules)
        if rules.mtimes and want is not None and a_e.mtime != want:
            out.append(f"fs:{path}: mtime pybuild {a_e.mtime} != expected {want} (peer {b_e.mtime})")
    return out


def _expected_mtime(peer_mtime: int, rules: CompareRules) -> int | None:
    """The mtime pybuild must have given the peer's, or None when it is not fixed by the inputs."""
    fixed = peer_mtime < rules.mtime_floor
    if rules.epoch is None:
        return peer_mtime if fixed else None
    return min(peer_mtime, rules.epoch) if fixed else rules.epoch


def unexplained(diffs: list[str], allowed: list[str]) -> list[str]:
    """The differences no pattern of ``allowed`` (fnmatch on the KEY) covers."""
    return [d for d in diffs if not any(fnmatchcase(d.split(": ", 1)[0], pat) for pat in allowed)]


def unused(diffs: list[str], allowed: list[str]) -> list[str]:
    """Patterns of ``allowed`` that match no difference (a stale documented difference)."""
    keys = [d.split(": ", 1)[0] for d in diffs]
    return [pat for pat in allowed if not any(fnmatchcase(k, pat) for k in keys)]
