"""``pybuild store check [--repair]``: prove the store is sound, or make it so.

What is verified (each failure is one :class:`Problem`):

* every blob under ``blobs/<algorithm>/`` hashes to its name (``blob-corrupt``); anything else
  in the blob directories is ``blob-stray``;
* ``index.json`` parses (``index-unreadable``) and every tag's manifest closure is present
  with the sizes its descriptors give: manifest, config, layers; an index needs at least one
  of its manifests (``tag-broken``, naming the missing or mismatched blob);
* every cache record parses and its layer is present: its blob (``record-dangling``), or, for a
  lazy step result that has no blob yet, its unpacked snapshot;
* every snapshot directory has a valid ``diff_id`` naming it and an ``fs`` directory
  (``snapshot-broken``);
* nothing stale remains: temp entries and mounts of dead processes (``stale-temp``,
  ``stale-mount``, see :mod:`builder.store.stale`) and unlocked leases (``stale-lease``).

``repair=True`` then removes what is broken, under the store's ``gc.lock`` (running builds
pin what they use, so nothing they need is judged in between) and the index lock: corrupt and
stray blobs, tags whose image cannot be read back whole, dangling records, broken snapshots,
stale entries. A removed blob can break more tags and records, so checking repeats until a
round finds nothing new. Everything else stays usable. Nothing here prints; errors reading the
store's own files become problems, never exceptions (OSErrors of removals propagate).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import Digest, hash_stream
from ..oci import mediatypes as mt

if TYPE_CHECKING:
    from .layout import Store

_JSON_LIMIT = 4 << 20
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: ``kind`` (see the module doc), ``subject`` (a path, tag or digest) and a
    human sentence; ``repaired`` once ``--repair`` removed it."""

    kind: str
    subject: str
    detail: str
    repaired: bool = False

    def render(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}" + (" (repaired)" if self.repaired else "")


@dataclass
class CheckReport:
    """The outcome of one check: problems found (repaired or not) and what was looked at."""

    problems: list[Problem] = field(default_factory=list)
    blobs: int = 0
    tags: int = 0
    records: int = 0
    snapshots: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing is (still) wrong."""
        return all(p.repaired for p in self.problems)


@dataclass
class _Scan:
    """State of one round: blob verdicts are kept across rounds (each blob hashed once)."""

    root: Path
    verified: dict[Digest, tuple[bool, int]]  # digest -> (content matches, size)
    problems: list[Problem] = field(default_factory=list)
    fixes: list[tuple[Problem, Callable[[], None]]] = field(default_factory=list)

    def add(self, problem: Problem, fix: Callable[[], None] | None = None) -> None:
        self.problems.append(problem)
        if fix is not None:
            self.fixes.append((problem, fix))


def _hash_file(path: Path, algorithm: str) -> tuple[str, int]:
    with open(path, "rb") as f:
        return hash_stream(f, algorithm, _HASH_CHUNK)


_HEX_LEN = {"sha256": 64, "sha512": 128}


def _scan_blobs(scan: _Scan, report: CheckReport) -> None:
    blob_root = scan.root / "blobs"
    try:
        algos = sorted(os.listdir(blob_root))
    except OSError as exc:
        scan.add(Problem("blob-stray", str(blob_root), f"unreadable: {exc.strerror}"))
        return
    for algo in algos:
        adir = blob_root / algo
        if algo not in _HEX_LEN or not adir.is_dir() or adir.is_symlink():
            scan.add(Problem("blob-stray", str(adir), "not a blob directory"), partial(_remove, adir))
            continue
        for name in sorted(os.listdir(adir)):
            path = adir / name
            valid = len(name) == _HEX_LEN[algo] and all(c in "0123456789abcdef" for c in name)
            if not valid or not path.is_file() or path.is_symlink():
                scan.add(Problem("blob-stray", str(path), "not a blob (bad name or not a regular file)"),
                         partial(_remove, path))
                continue
            d = Digest(algo, name)
            report.blobs += 1
            if d not in scan.verified:
                try:
                    got, size = _hash_file(path, algo)
                except OSError as exc:
                    scan.add(Problem("blob-corrupt", str(d), f"unreadable: {exc.strerror}"),
                             partial(_remove, path))
                    continue
                scan.verified[d] = (got == name, size)
            ok, size = scan.verified[d]
            if not ok:
                scan.add(Problem("blob-corrupt", str(d), f"content does not hash to its name ({size} bytes)"),
                         partial(_remove, path))


def _blob_state(scan: _Scan, d: Digest) -> tuple[bool, int] | None:
    """(content ok, size) of a blob the scan saw, None when it is missing or corrupt."""
    state = scan.verified.get(d)
    if state is None or not state[0] or not (scan.root / "blobs" / d.algorithm / d.hex).is_file():
        return None
    return state


def _read_json(scan: _Scan, d: Digest) -> dict[str, Any] | None:
    try:
        with open(scan.root / "blobs" / d.algorithm / d.hex, "rb") as f:
            data = f.read(_JSON_LIMIT + 1)
        obj = json.loads(data) if len(data) <= _JSON_LIMIT else None
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _closure_problem(scan: _Scan, desc: dict[str, Any], depth: int = 0) -> str | None:
    """Why the image ``desc`` cannot be read back whole, or None when it can."""
    try:
        d = Digest.parse(str(desc.get("digest")))
        size = int(desc.get("size", -1))
    except (ValueError, TypeError):
        return f"descriptor {desc.get('digest')!r} is malformed"
    state = _blob_state(scan, d)
    if state is None:
        return f"blob {d} is missing or corrupt"
    if state[1] != size:
        return f"blob {d} has {state[1]} bytes, its descriptor says {size}"
    media = str(desc.get("mediaType") or "")
    if depth > 4 or not (mt.is_index(media) or mt.is_manifest(media)):
        return None
    doc = _read_json(scan, d)
    if doc is None:
        return f"{media} {d} is not a JSON object"
    if mt.is_index(media):
        children = [c for c in doc.get("manifests") or [] if isinstance(c, dict)]
        reasons = [_closure_problem(scan, c, depth + 1) for c in children]
        if children and all(r is not None for r in reasons):
            return f"no manifest of index {d} is complete ({reasons[0]})"
        return None
    for child in [doc.get("config")] + list(doc.get("layers") or []):
        if not isinstance(child, dict):
            return f"manifest {d} has a malformed descriptor"
        reason = _closure_problem(scan, child, depth + 1)
        if reason is not None:
            return reason
    return None


def _scan_tags(scan: _Scan, report: CheckReport, store: Store) -> None:
    index_path = scan.root / "index.json"
    try:
        data = json.loads(index_path.read_bytes())
        if not isinstance(data, dict) or "manifests" not in data:
            raise ValueError("no \"manifests\" list")
        entries = data["manifests"]
        if not isinstance(entries, list):
            raise ValueError("manifests is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        scan.add(Problem("index-unreadable", str(index_path), str(exc)),
                 partial(_reset_index, scan.root))
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = (entry.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) or str(entry.get("digest"))
        report.tags += 1
        reason = _closure_problem(scan, entry)
        if reason is not None:
            scan.add(Problem("tag-broken", name, reason),
                     partial(_drop_tag, store, name, entry.get("digest")))


def _scan_records(scan: _Scan, report: CheckReport, snapshot_ids: set[str]) -> None:
    rdir = scan.root / "cache" / "records"
    try:
        names = sorted(n for n in os.listdir(rdir) if n.endswith(".json"))
    except OSError:
        return
    for name in names:
        path = rdir / name
        report.records += 1
        try:
            rec = json.loads(path.read_bytes())
            layer = rec.get("layer")
            if layer is not None and not isinstance(layer, dict):
                raise ValueError("layer is not an object")
        except (OSError, ValueError, AttributeError) as exc:
            scan.add(Problem("record-dangling", str(path), f"unreadable record: {exc}"),
                     partial(_remove, path))
            continue
        if layer is None:
            continue
        digest = layer.get("digest")
        diff_id = str(layer.get("diff_id") or "")
        if digest:
            try:
                d = Digest.parse(str(digest))
            except ValueError:
                d = None
            if d is not None and _blob_state(scan, d) is not None:
                continue
            if d is not None and diff_id in snapshot_ids and _lazy_ok(layer):
                continue
            what = f"layer blob {digest} is missing or corrupt"
        elif diff_id in snapshot_ids:
            continue  # a lazy step result: its snapshot is the layer until an output needs a blob
        else:
            what = f"lazy layer {diff_id or '?'} has neither a blob nor a snapshot"
        scan.add(Problem("record-dangling", path.stem, what), partial(_remove, path))


def _lazy_ok(layer: dict[str, Any]) -> bool:
    """Whether a record may stand on its snapshot alone (a lazy layer marks itself so)."""
    return bool(layer.get("lazy"))


def _scan_snapshots(scan: _Scan, report: CheckReport) -> set[str]:
    sdir = scan.root / "snapshots"
    good: set[str] = set()
    try:
        names = sorted(os.listdir(sdir))
    except OSError:
        return good
    for name in names:
        if name.startswith("tmp-"):
            continue  # temp dirs are judged by their owner's liveness (stale entries)
        if name == "fixups":
            continue  # implied-directory fixups (Snapshots.stack), removed with their layer
        path = sdir / name
        report.snapshots += 1
        reason = None
        try:
            diff_id = Digest.parse((path / "diff_id").read_text().strip())
            if not diff_id.hex.startswith(name) or len(name) not in (12, 24, 64):
                reason = f"its name does not match its diff_id {diff_id}"
            elif not (path / "fs").is_dir() or (path / "fs").is_symlink():
                reason = "its fs directory is missing"
        except (OSError, ValueError) as exc:
            reason = f"no valid diff_id ({exc})"
            diff_id = None
        if reason is not None:
            scan.add(Problem("snapshot-broken", str(path), reason), partial(_remove, path))
        elif diff_id is not None:
            good.add(str(diff_id))
    return good


def _scan_stale(scan: _Scan) -> None:
    from .lease import stale_leases
    from .stale import remove, stale_entries

    for e in stale_entries(scan.root):
        kind = "stale-mount" if e.kind == "mount" else "stale-temp"
        owner = f"process {e.pid} is gone" if e.pid is not None else "no live owner"
        scan.add(Problem(kind, str(e.path), owner), partial(remove, e))
    for p in stale_leases(scan.root):
        scan.add(Problem("stale-lease", str(p), "its process is gone (the lock is free)"),
                 partial(_remove, p))


def _round(store: Store, root: Path, verified: dict[Digest, tuple[bool, int]]) -> tuple[_Scan, CheckReport]:
    scan = _Scan(root, verified)
    report = CheckReport()
    _scan_stale(scan)
    _scan_blobs(scan, report)
    _scan_tags(scan, report, store)
    snapshot_ids = _scan_snapshots(scan, report)
    _scan_records(scan, report, snapshot_ids)
    return scan, report


def check_store(store: Store, *, repair: bool = False) -> CheckReport:
    """Check ``store`` (a :class:`builder.store.layout.Store`); with ``repair`` remove what is
    broken (see the module doc). The report lists every problem found, marked repaired when
    removed; ``report.clean`` tells whether the store is sound now."""
    root = store.root
    verified: dict[Digest, tuple[bool, int]] = {}
    scan, report = _round(store, root, verified)
    if not repair or not scan.problems:
        report.problems = scan.problems
        return report
    found: dict[tuple[str, str], Problem] = {}
    with store.collecting():
        for _ in range(6):  # a removed blob can break tags and records: check again
            # (the first round re-checks under the lock: running commands may have moved on)
            scan, report = _round(store, root, verified)
            for problem in scan.problems:
                found.setdefault((problem.kind, problem.subject), problem)
            if not scan.fixes:
                break
            for problem, fix in scan.fixes:
                fix()
                found[(problem.kind, problem.subject)] = replace(problem, repaired=True)
            verified = {d: v for d, v in verified.items() if v[0]}  # the corrupt ones are gone
        else:
            scan, report = _round(store, root, verified)
    for problem in scan.problems:  # what the last round still finds could not be repaired
        found[(problem.kind, problem.subject)] = problem
    report.problems = list(found.values())
    return report


# -- repairs -------------------------------------------------------------------------------------
def _remove(path: Path) -> None:
    from .stale import rmtree

    rmtree(path)


def _drop_tag(store: Store, name: str, digest: object) -> None:
    """Remove the index entry ``name`` if it still points at ``digest``."""
    from .layout import write_file_atomic

    root = store.root
    with store.lock():
        index_path = root / "index.json"
        data = json.loads(index_path.read_bytes())
        kept = [e for e in data.get("manifests", [])
                if not (isinstance(e, dict) and e.get("digest") == digest
                        and ((e.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) or str(e.get("digest"))) == name)]
        data["manifests"] = kept
        write_file_atomic(index_path, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(),
                          root / "tmp")


def _reset_index(root: Path) -> None:
    """Keep an unreadable index.json aside (``index.json.corrupt``) and start an empty one."""
    from .layout import init_layout

    src = root / "index.json"
    if src.exists():
        os.replace(src, root / "index.json.corrupt")
    init_layout(root, root / "tmp")


__all__ = ["CheckReport", "Problem", "check_store"]
