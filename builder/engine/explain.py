"""Why a step was not cached: one line comparing its key inputs with the nearest earlier build
of the same step position (issue 16).

A *position* is (Dockerfile path relative to the context, stage name or index, step number,
platform). On every cache miss, and only then, the step's key inputs are written:

- ``<store>/cache/explain/steps/<key hex>.json``: a :class:`StepInputs` (parent key, base
  image digest, instruction text as written, build arg and env *names* with a short salted
  hash of each value, the digest of the context file listing);
- ``<store>/cache/explain/files/<hex>.json``: ``{context path: short hash of its content
  line}`` for the context files the step reads (shared by steps reading the same files);
- ``<store>/cache/explain/pos/<position hex>.json``: the last :data:`KEEP` keys built at the
  position, newest last.

A hit reads and writes none of these (the engine calls :func:`explain_miss` only after a
miss). ``--cache-to`` exports the entries of the exported records (and their listings) in
the cache config, so a fresh store importing the cache can explain a miss against it.

Values never appear: an explanation names build args and env variables, never their values;
entries keep only a 64-bit hash of each value (the cache key already commits to the values,
so the hash discloses nothing the key does not). Secrets never enter a step's env.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from ..plan.steps import Step
    from .session import StageSession

KEEP = 4              # keys remembered per position
SHOW_FILES = 3        # changed paths named before "and N more"
_SALT = "pybuild-why-1\0"


@dataclass(frozen=True, slots=True)
class StepInputs:
    """What a step's key was made of, as far as an explanation needs it."""

    key: str
    position: str
    parent: str
    base: str
    text: str
    args: dict[str, str] = field(default_factory=dict)   # build arg name -> value hash
    env: dict[str, str] = field(default_factory=dict)    # env name -> value hash
    files: str | None = None                            # listing digest (context inputs)
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> "StepInputs | None":
        """An entry from JSON, or None when malformed (foreign or corrupt data is ignored)."""
        try:
            return cls(key=str(raw["key"]), position=str(raw["position"]), parent=str(raw["parent"]),
                       base=str(raw.get("base", "")), text=str(raw.get("text", "")),
                       args={str(k): str(v) for k, v in dict(raw.get("args") or {}).items()},
                       env={str(k): str(v) for k, v in dict(raw.get("env") or {}).items()},
                       files=str(raw["files"]) if raw.get("files") else None, time=float(raw.get("time", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def value_hash(name: str, value: str) -> str:
    """A short salted hash of one variable's value (never the value itself)."""
    return hashlib.sha256((_SALT + name + "\0" + value).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def position_id(dockerfile: str, stage: str, step_no: int, platform: str) -> str:
    """The position of a step in a build (see the module docstring), as a hex digest."""
    text = "\0".join((dockerfile, stage, str(step_no), platform))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class ExplainStore:
    """The explanation records of one store (``<root>/cache/explain``). Writes are atomic and
    best effort (an OSError loses an explanation, never a build)."""

    def __init__(self, store_root: Path) -> None:
        self.root = Path(store_root) / "cache" / "explain"
        self._tmp = Path(store_root) / "tmp"

    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None

    def _write(self, path: Path, value: Any) -> None:
        from ..store.layout import write_file_atomic

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(path, json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
                              self._tmp, durable=False)
        except OSError:
            pass

    def entry(self, key: str) -> StepInputs | None:
        return StepInputs.from_json(self._read(self.root / "steps" / (key.split(":", 1)[-1] + ".json")))

    def listing(self, digest: str) -> dict[str, str] | None:
        raw = self._read(self.root / "files" / (digest.split(":", 1)[-1] + ".json"))
        return raw if isinstance(raw, dict) else None

    def recent(self, position: str, context: str) -> list[StepInputs]:
        """Entries of the last keys built at ``position`` for the build context directory
        ``context`` (another project's Dockerfile is no earlier build), newest last."""
        keys = self._read(self._pos_path(position, context))
        out = []
        for k in keys if isinstance(keys, list) else []:
            e = self.entry(str(k))
            if e is not None:
                out.append(e)
        return out

    def _pos_path(self, position: str, context: str) -> Path:
        local = hashlib.sha256(f"{os.path.abspath(context)}\0{position}".encode("utf-8", "surrogateescape"))
        return self.root / "pos" / (local.hexdigest()[:32] + ".json")

    def put(self, inputs: StepInputs, listing: dict[str, str] | None, context: str) -> None:
        """Record ``inputs`` (and its listing) and make it the newest at its position for
        the build context ``context``."""
        if listing is not None and inputs.files:
            path = self.root / "files" / (inputs.files.split(":", 1)[-1] + ".json")
            if not path.exists():
                self._write(path, listing)
        self._write(self.root / "steps" / (inputs.key.split(":", 1)[-1] + ".json"), inputs.to_json())
        pos = self._pos_path(inputs.position, context)
        keys = self._read(pos)
        keys = [k for k in (keys if isinstance(keys, list) else []) if k != inputs.key]
        self._write(pos, (keys + [inputs.key])[-KEEP:])

    def export(self, keys: Iterable[str]) -> dict[str, Any]:
        """The ``why`` part of an exported cache config for ``keys``: ``{"steps": {key:
        entry}, "files": {digest: listing}}`` (keys without an entry are left out)."""
        steps: dict[str, Any] = {}
        files: dict[str, Any] = {}
        for k in keys:
            e = self.entry(k)
            if e is None:
                continue
            steps[k] = e.to_json()
            if e.files and e.files not in files:
                listing = self.listing(e.files)
                if listing is not None:
                    files[e.files] = listing
        return {"steps": steps, "files": files}

    def prune(self, alive: set[str]) -> int:
        """Remove entries of keys not in ``alive`` (their records are gone), listings no
        entry names, and position lists; returns the bytes freed."""
        freed = 0
        named: set[str] = set()
        steps = self.root / "steps"
        for p in list(steps.iterdir()) if steps.is_dir() else []:
            e = StepInputs.from_json(self._read(p))
            if e is not None and e.key in alive:
                if e.files:
                    named.add(e.files.split(":", 1)[-1])
                continue
            freed += _unlink(p)
        files = self.root / "files"
        for p in list(files.iterdir()) if files.is_dir() else []:
            if p.stem not in named:
                freed += _unlink(p)
        pos = self.root / "pos"
        for p in list(pos.iterdir()) if pos.is_dir() else []:
            keys = self._read(p)
            if not isinstance(keys, list) or not set(keys) & alive:
                freed += _unlink(p)
        return freed

    def entries(self) -> list[tuple[StepInputs, int]]:
        """Every entry with the bytes its files take (for ``du --verbose``)."""
        out = []
        d = self.root / "steps"
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            e = StepInputs.from_json(self._read(p))
            if e is not None:
                out.append((e, p.stat().st_size))
        return out


def _unlink(p: Path) -> int:
    try:
        size = p.stat().st_size
        p.unlink()
        return size
    except OSError:
        return 0


class ImportedWhy:
    """The ``why`` part of an imported cache config (see :meth:`ExplainStore.export`)."""

    def __init__(self, raw: Any) -> None:
        self.by_position: dict[str, list[StepInputs]] = {}
        self.files: dict[str, dict[str, str]] = {}
        if not isinstance(raw, dict):
            return
        for item in dict(raw.get("steps") or {}).values():
            e = StepInputs.from_json(item)
            if e is not None:
                self.by_position.setdefault(e.position, []).append(e)
        for digest, listing in dict(raw.get("files") or {}).items():
            if isinstance(listing, dict):
                self.files[str(digest)] = {str(k): str(v) for k, v in listing.items()}


# ------------------------------------------------------------------------------- the inputs

def _var_hashes(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k: value_hash(k, v) for k, v in pairs}


def _context_patterns(step: Any) -> tuple[list[str], tuple[str, ...]] | None:
    """(source patterns, excludes) the step reads from the build context, or None."""
    mounts = getattr(step, "mounts", None)
    if mounts is not None:  # RUN: bind mounts of the context
        pats = [(m.source or ".").lstrip("/") or "." for m in mounts
                if m.type == "bind" and m.from_stage is None and not m.from_image]
        return (pats, ()) if pats else None
    if getattr(step, "from_stage", None) is not None or getattr(step, "from_image", None):
        return None
    sources = getattr(step, "sources", None)
    if not sources:
        return None
    pats = [s for s in sources if isinstance(s, str) and "://" not in s]
    return (pats, tuple(getattr(step, "excludes", ()))) if pats else None


def context_listing(context: Any, step: Any, walked: tuple[str, list[str]] | None = None) -> dict[str, str] | None:
    """``{path: short content hash}`` of the context files ``step`` reads (names, types,
    modes, sizes, contents; never mtimes), or None when it reads none or they cannot be read.
    ``walked``: ``(source path, lines)`` the step itself hashed for its key when it read one
    context path (a :class:`TreeDigest` with ``keep_lines``): used when that path is what the
    step's source matches, instead of walking the context again."""
    found = _context_patterns(step)
    if found is None:
        return None
    from .context import TreeDigest

    patterns, excludes = found
    kept: dict[str, str] = {}
    try:
        if walked is not None and not excludes and len(patterns) == 1:
            if context.match_sources(patterns[0]) == [walked[0]]:
                _keep_lines(walked[1], walked[0], kept)
                return kept

        class _Listing(TreeDigest):
            """A TreeDigest that also keeps every line it hashes."""

            __slots__ = ("top",)
            top: str

            def _flush(self) -> None:
                # lines are flushed at each tree's end, so all of them belong to ``top``
                _keep_lines(self._lines, self.top, kept)
                TreeDigest._flush(self)

        digest = _Listing(context.view, owners=False)
        for pattern in patterns:
            for path in context.match_sources(pattern):
                digest.top = path
                context.content_digest([path], excludes=excludes, owners=False, into=digest)
    except Exception:  # noqa: BLE001 - an explanation must never fail the build
        return None
    return kept


def _keep_lines(lines: list[str], top: str, kept: dict[str, str]) -> None:
    """Add the TreeDigest ``lines`` of the tree at context path ``top`` to ``kept``."""
    cut = 1 if top == "." else 0   # "." + "a.txt" -> "a.txt"
    sha = hashlib.sha256
    for line in lines:
        name = line.split("\0", 2)[1][cut:] or "."
        kept[name] = sha(line.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def listing_digest(listing: dict[str, str]) -> str:
    data = json.dumps(listing, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def step_inputs(session: StageSession, step: Step, *, key: str, position: str, parent: Any,
                listing: dict[str, str] | None) -> StepInputs:
    """The :class:`StepInputs` of ``step`` built after state ``parent``."""
    text = " ".join((getattr(step.node, "original", "") or step.created_by).split())
    if "@" in text:  # URL credentials (ADD https://user:pw@...) are never stored
        from ..inputs.urls import redact_text

        text = redact_text(text)
    args = _var_hashes(getattr(step, "used_args", ()))
    if getattr(step, "kind", "") == "ARG":  # its own value(s): "ARG a b=c" (values may hold spaces)
        for token in step.created_by[4:].split():
            name = token.partition("=")[0]
            if name.isidentifier():
                args[name] = value_hash(name, step.created_by)
    env = _var_hashes((k, v) for k, v in getattr(step, "env", ()) if k not in args)
    import time

    return StepInputs(key=key, position=position, parent=parent.cache_key, base=parent.base_digest, text=text,
                      args=args, env=env, files=listing_digest(listing) if listing is not None else None,
                      time=time.time())


# ------------------------------------------------------------------------------ comparison

@dataclass(frozen=True, slots=True)
class Diff:
    """How a step's inputs differ from an earlier entry's."""

    text: str | None = None                 # the earlier instruction text, when it changed
    base: tuple[str, str] | None = None     # (old, new) base image digests
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path, "modified"|"added"|"removed")
    files_unknown: bool = False             # the context input changed, listing unavailable
    parent: bool = False
    other: bool = False

    def weight(self) -> int:
        return (bool(self.text) + bool(self.base) + len(self.args) + len(self.env) + len(self.files)
                + self.files_unknown + self.parent + self.other)


def _changed_names(old: dict[str, str], new: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n)))


def _file_changes(old: dict[str, str], new: dict[str, str]) -> tuple[tuple[str, str], ...]:
    changed = sorted({path for path, _ in old.items() ^ new.items()})
    return tuple((path, "added" if path not in old else "removed" if path not in new else "modified")
                 for path in changed)   # a directory's own line has no content: it changes only with its mode


def compare(old: StepInputs, new: StepInputs, old_listing: dict[str, str] | None,
            new_listing: dict[str, str] | None) -> Diff:
    files: tuple[tuple[str, str], ...] = ()
    unknown = False
    if old.files != new.files:
        if old_listing is not None and new_listing is not None:
            files = _file_changes(old_listing, new_listing)
        unknown = not files
    base = (old.base, new.base) if old.base != new.base else None
    diff = Diff(text=old.text if old.text != new.text else None, base=base,
                args=_changed_names(old.args, new.args), env=_changed_names(old.env, new.env),
                files=files, files_unknown=unknown, parent=old.parent != new.parent and base is None)
    if diff.weight() == 0 and old.key != new.key:
        return Diff(other=True)
    return diff


def _short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else (digest or "scratch")


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def describe(diff: Diff, *, first_step: bool) -> list[str]:
    """The parts of an explanation line, most specific first."""
    parts: list[str] = []
    if diff.text is not None:
        parts.append(f"instruction changed (was: {_clip(diff.text)})")
    if diff.args:
        parts.append("build arg " + ", ".join(diff.args) + " changed")
    if diff.env:
        parts.append("env " + ", ".join(diff.env) + " changed")
    if diff.files:
        shown = [f"{p} ({how})" for p, how in diff.files[:SHOW_FILES]]
        more = len(diff.files) - SHOW_FILES
        parts.append("context files changed: " + ", ".join(shown) + (f" and {more} more" if more > 0 else ""))
    elif diff.files_unknown:
        parts.append("context files changed")
    if diff.base is not None:
        parts.append(f"base image changed ({_short(diff.base[0])} -> {_short(diff.base[1])})")
    elif diff.parent:
        parts.append("parent stage changed" if first_step else "previous step changed")
    if diff.other:
        parts.append("other step options changed (flags, mounts, platform or cache version)")
    return parts


def explain_miss(session: StageSession, step: Step, *, key: str, position: str, parent: Any, step_no: int,
                 forced: str | None) -> str:
    """Record the inputs of a step that was just built (a miss) and return why it missed, as
    one line ("" when nothing can be said). ``forced``: the flag that disabled the cache
    (``--no-cache``, ``--no-cache-filter X``). Never raises for a store or data problem."""
    store = ExplainStore(session.store.root)
    walked = getattr(session, "walked", {}).pop(key, None)
    listing = context_listing(session.context, step, walked) if _context_patterns(step) else None
    new = step_inputs(session, step, key=key, position=position, parent=parent, listing=listing)
    candidates: list[tuple[StepInputs, dict[str, str] | None]] = []
    if forced is None:
        for e in store.recent(position, str(session.opts.context)):
            candidates.append((e, store.listing(e.files) if e.files else None))
        if not candidates:
            for why in _imported(session):
                for e in why.by_position.get(position, ()):
                    candidates.append((e, why.files.get(e.files) if e.files else None))
    _record(session, lambda: store.put(new, listing, str(session.opts.context)))
    if forced is not None:
        return forced
    remote = [t for t in getattr(session, "remote_notes", {}).get(key, ())]
    best: tuple[int, float, Diff] | None = None
    for e, old_listing in candidates:
        if e.key == key:
            return "; ".join(["its layer is missing from the store"] + remote)
        d = compare(e, new, old_listing, listing)
        rank = (d.weight(), -e.time)
        if best is None or rank < best[:2]:
            best = (rank[0], rank[1], d)
    if best is None:
        return "; ".join(remote or ["first build of this step"])
    return "; ".join(describe(best[2], first_step=step_no == 1) + remote)


def _record(session: StageSession, write: Callable[[], None]) -> None:
    """Run ``write`` (an explanation record, best effort) on the build's background worker,
    off the step's path (``BuildSession.close`` waits for it); at once when this build
    exports a cache, which reads the records back at its end."""
    if getattr(session.opts, "cache_to", None) or not hasattr(session, "blob_executor"):
        write()
        return
    with session.lock:
        session.blob_executor().submit(write)


def _imported(session: StageSession) -> list[ImportedWhy]:
    out = []
    for cache in getattr(session, "remote_caches", ()):
        why = getattr(cache, "why", None)
        if why is not None:
            out.append(why)
    return out


def dockerfile_name(opts: Any) -> str:
    """The Dockerfile's path relative to the context (its name when outside)."""
    try:
        rel = os.path.relpath(os.path.abspath(opts.dockerfile), os.path.abspath(opts.context))
    except ValueError:
        rel = ""
    return rel if rel and not rel.startswith("..") else os.path.basename(str(opts.dockerfile))
