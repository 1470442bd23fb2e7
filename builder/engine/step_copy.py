"""COPY and ADD steps (and WORKDIR's directory): entries -> a layer, with cache.

Cache key inputs: the step's expanded meaning (sources, dest, chown, chmod, flags) and the
content digest of what it reads: context files (never mtimes, never ignored files), the source
stage's cache key for ``--from=stage``, the image digest for ``--from=image``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DockerfileError, PybuildError
from .cachekey import step_key
from .layers import MISS, CacheMiss, cache_lookup, cache_store, commit_step, store_copy_layer, whiteout_named
from .state import ImageState

if TYPE_CHECKING:
    from .session import StageSession
    from ..plan.steps import CopyStep


def copy_inputs_digest(session: StageSession, step: CopyStep, source_state: ImageState | None, context: Any = None,
                       files: dict[str, tuple[str, os.stat_result]] | None = None) -> str:
    """What the COPY reads, as a digest string (part of the cache key). ``context``: a named
    directory context read instead of the build context (``COPY --from=NAME``). ``files``:
    filled with each context file read (host path): its content digest and the lstat it was
    hashed under."""
    if source_state is not None:
        return "stage:" + source_state.cache_key
    if getattr(step, "from_image", None) and context is None:
        return "image:" + str(step.from_image)
    plain = [s for s in step.sources if isinstance(s, str)]
    if not plain:
        return "heredoc"
    ctx = context if context is not None else session.context
    paths: list[str] = []
    git: list[str] = []
    for pattern in plain:
        if step.kind == "ADD" and _remote_like(pattern) and _is_git(pattern):
            from .gitsource import git_checkout

            co = git_checkout(session, pattern, keep_git_dir=step.keep_git_dir, checksum=step.checksum)
            git.append(f"git:{co.commit}:{co.subdir}:{int(co.keep_git_dir)}")
            continue
        if "://" in pattern:
            paths.append(_redact(pattern))
            continue
        paths.extend(ctx.match_sources(pattern, allow_empty_wildcard=True))
    local = [p for p in paths if "://" not in p]
    remote = [p for p in paths if "://" in p] + git
    if remote and not step.checksum and len(git) != len(remote):
        # a URL without --checksum may change at any time: never reuse such a step
        import time

        remote.append(f"fetched-at:{time.time()}")
    # COPY from the context always writes 0:0, so host ownership is not part of the meaning
    into = None
    if files is not None:
        from .context import TreeDigest

        into = TreeDigest(ctx.view, owners=False, keep_files=True)
    digest: str = ctx.content_digest(local, owners=False, into=into)
    if files is not None and into is not None and into.files:
        files.update(into.files)
    return digest + ("|" + "|".join(remote) if remote else "")


def _remote_like(source: str) -> bool:
    """Cheap test before :mod:`builder.inputs.urls` is imported (a cached COPY never needs it)."""
    return "://" in source or "@" in source or source.startswith("github.com/")


def _is_git(source: str) -> bool:
    from ..inputs.urls import is_git_url

    return is_git_url(source)


def _redact(source: str) -> str:
    if "@" not in source:
        return source
    from ..inputs.urls import redact

    return redact(source)


def copy_meaning(step: CopyStep) -> dict[str, Any]:
    heredocs = [{"name": h.name, "content": h.content} for h in step.sources if not isinstance(h, str)]
    return {  # URL credentials never enter a key: they do not change what is fetched
        "kind": step.kind, "sources": [_redact(s) for s in step.sources if isinstance(s, str)], "heredocs": heredocs,
        "dest": step.dest, "chown": step.chown, "chmod": step.chmod, "link": step.link,
        "parents": step.parents, "excludes": list(step.excludes), "checksum": step.checksum,
        "from_image": step.from_image,
    }


def apply_copy(session: StageSession, state: ImageState, step: CopyStep, *, source_state: ImageState | None,
               source_view: Any | None, use_cache: bool, context: Any = None) -> tuple[ImageState, bool]:
    """Run one COPY/ADD; returns the new state and whether the cache was used. ``context``: a
    directory named context to read instead of the build context."""
    if source_state is None and source_view is None and context is None:
        single = _single_source(session, state, step)
        if single is not None:
            return _apply_single(session, state, step, single, use_cache)
    meaning = copy_meaning(step)
    files: dict[str, tuple[str, os.stat_result]] | None = {} if source_state is None and source_view is None and (
        session.unpack_layers or session.lazy_layers) else None
    key = step_key(state.cache_key, step.kind, meaning, copy_inputs_digest(session, step, source_state, context, files))
    hit = cache_lookup(session, key) if use_cache else MISS
    if not isinstance(hit, CacheMiss):
        return commit_step(session, state, step, hit, key), True
    entries = build_copy_entries(session, state, step, source_view=source_view, context=context)
    reuse = None
    if files:
        from .snapreuse import Reuse, has_base

        reuse = Reuse(_lineage(session, meaning, context), files.get)
    # with the step's last snapshot to link from, unpacking costs little: a layer that stamps
    # the time it is made (a directory COPY creates) is never the last one, whatever the key
    unpack = session.unpack_layers and (reuse is not None and has_base(session, reuse)
                                        or not _snapshot_likely_exists(session, key))
    # a layer with a whiteout-named file (".wh.x" from the context) cannot live as a snapshot
    # alone (unpacked, it is a whiteout): it is written at once
    lazy = session.lazy_layers and not whiteout_named(e.name for e in entries)
    layer = store_copy_layer(session, entries, unpack=unpack, lazy=lazy,
                             avoid=_chain_snapshots(session, state) if source_view is not None else (),
                             reuse=reuse) \
        if entries else None
    return commit_step(session, state, step, cache_store(session, key, layer, step.created_by), key), False


def _chain_snapshots(session: StageSession, state: ImageState) -> tuple[str, ...]:
    """The snapshot dirs (``.../fs/``) of ``state``'s layers that exist: a COPY onto that image
    copies files out of them rather than linking them (see builder.layer.linksnap)."""
    found = (session.snapshots.get(layer.diff_id) for layer in state.layers)
    return tuple(str(fs) + "/" for fs in found if fs is not None)


def _single_source(session: StageSession, state: ImageState, step: CopyStep) -> Any | None:
    """A :class:`~builder.engine.copy.SingleSourceCopy` for a COPY of one context source
    without --parents/--exclude/heredocs/URLs, else None (the general path applies)."""
    if step.kind != "COPY" or step.parents or step.excludes or getattr(step, "from_image", None):
        return None
    if len(step.sources) != 1 or not isinstance(step.sources[0], str) or "://" in step.sources[0]:
        return None
    from .copy import NotSingleSource, SingleSourceCopy

    try:
        match = SingleSourceCopy.find(session.context, step.sources[0])  # before any --chown trouble
    except NotSingleSource:
        return None
    try:
        dest_view = _dest_view(session, state, step)
        chmod, chown = _chmod_chown(step, dest_view)
        return SingleSourceCopy(match=match, dest=step.dest, context=session.context, dest_view=dest_view,
                                chown=chown, chmod=chmod, mtime_clamp=session.opts.source_date_epoch)
    except DockerfileError:
        raise
    except PybuildError as exc:
        raise DockerfileError(f"{step.kind} failed: {exc.render()}", step.node.span) from exc


def _apply_single(session: StageSession, state: ImageState, step: CopyStep, single: Any, use_cache: bool) -> tuple[ImageState, bool]:
    """COPY of one context source, its members framed as tar records as the context is
    walked (``SingleSourceCopy.records``).

    With the cache in use, the walk comes first (its digest is the key) and the layer is
    written from what it saw. Without (``--no-cache``) and with no RUN to unpack for, one walk
    writes the layer and gives the key: compression starts at the first file. The key is the
    same either way, and the same the general path computes."""
    from .context import TreeDigest

    digest = TreeDigest(session.context.view, owners=False, keep_files=session.unpack_layers or session.lazy_layers,
                        keep_lines=True)
    meaning = copy_meaning(step)
    clamp = session.opts.source_date_epoch
    try:
        if not use_cache and not session.unpack_layers and not session.lazy_layers:
            layer = _store_nonempty(session, single.records(single.walk(digest), clamp), unpack=False)
            key = step_key(state.cache_key, step.kind, meaning, digest.hexdigest())
            session.walked[key] = (single.item.display, digest.kept_lines or [])
        else:
            walked = list(single.walk(digest))
            key = step_key(state.cache_key, step.kind, meaning, digest.hexdigest())
            hit = cache_lookup(session, key) if use_cache else MISS
            if not isinstance(hit, CacheMiss):
                return commit_step(session, state, step, hit, key), True
            session.walked[key] = (single.item.display, digest.kept_lines or [])
            unpack = session.unpack_layers and (single.stamps_now or not _snapshot_likely_exists(session, key))
            lazy = session.lazy_layers and not whiteout_named(path for path, _, _ in walked)
            reuse = None
            if (unpack or lazy) and digest.files is not None:
                from .snapreuse import Reuse

                reuse = Reuse(_lineage(session, meaning), digest.files.get)
            layer = _store_nonempty(session, single.records(walked, clamp), unpack=unpack, lazy=lazy, reuse=reuse)
    except DockerfileError:
        raise
    except PybuildError as exc:
        from ..layer.tar import LayerError

        if isinstance(exc, LayerError):  # as the general path lets it through
            raise
        raise DockerfileError(f"{step.kind} failed: {exc.render()}", step.node.span) from exc
    return commit_step(session, state, step, cache_store(session, key, layer, step.created_by), key), False


def _store_nonempty(session: StageSession, records: Any, *, unpack: bool, lazy: bool = False, reuse: Any = None) -> Any:
    """The layer of ``records`` (tar records in layer order), or None when there are none."""
    import itertools

    from .layers import store_records

    first = next(records, None)
    if first is None:
        return None
    return store_records(session, itertools.chain((first,), records), unpack=unpack, lazy=lazy, reuse=reuse)


def _lineage(session: StageSession, meaning: dict[str, Any], context: Any = None) -> str:
    """The step as written, for :mod:`builder.store.lineage`: its meaning and its context
    directory (each run of it, whatever the content, has the same). ``context``: a named
    directory context read instead of the build context."""
    import json

    root = (context if context is not None else session.context).root
    return json.dumps(["copy", os.path.abspath(root), meaning], sort_keys=True)


def _dest_view(session: StageSession, state: ImageState, step: CopyStep) -> Any:
    """The file system a COPY/ADD writes onto: the image's, or for ``--link`` (without
    ``--chmod``) an empty one. BuildKit copies a --link source onto scratch and merges that
    layer on top (dockerfile2llb/convert_copy.go: ``link && chmod == ""``): missing parent
    directories are made 0755 (owned by --chown) and, stacked, replace the image's own (its
    docs: --link creates parent directories with the default settings); the destination is
    not resolved through the image's symlinks nor taken as an existing directory; a --chown
    *name* is looked up in scratch, so it is id 0."""
    if getattr(step, "link", False) and not step.chmod:
        from ..store.rootview import RootView

        return RootView([])
    return session.view(state)


def _chmod_chown(step: CopyStep, dest_view: Any) -> tuple[Any, Any]:
    """The step's parsed --chmod and resolved --chown (None where not given)."""
    from .chmod import parse_chmod
    from .userdb import resolve_chown

    chmod = parse_chmod(step.chmod) if step.chmod else None
    chown = resolve_chown(step.chown, dest_view) if step.chown else None
    return chmod, chown


def _snapshot_likely_exists(session: StageSession, key: str) -> bool:
    """True when this key was built before and that layer is still unpacked (a re-run with
    --no-cache): unpacking again while writing would only be thrown away. If the new layer turns
    out different, the next RUN unpacks it from its blob as usual."""
    rec = session.cache.get(key)
    if rec is None or rec.layer is None:
        return False
    from ..digest import Digest

    return session.snapshots.get(Digest.parse(rec.layer["diff_id"])) is not None


def build_copy_entries(session: StageSession, state: ImageState, step: CopyStep, *, source_view: Any | None,
                       context: Any = None) -> list[Any]:
    from .copy import copy_entries

    dest_view = _dest_view(session, state, step)
    heredocs = [(h.name, h.content) for h in step.sources if not isinstance(h, str)]
    sources = [s for s in step.sources if isinstance(s, str)]
    try:
        chmod, chown = _chmod_chown(step, dest_view)
        if step.kind == "ADD" and source_view is None:
            return _add_entries(session, step, sources, heredocs, dest_view, chown, chmod)
        if source_view is not None:
            src_view, ctx, is_ctx = source_view, None, False
        else:
            # the context's own view: its directory listings are those the cache key saw
            ctx = context if context is not None else session.context
            src_view, is_ctx = ctx.view, True
        return copy_entries(sources=sources, dest=step.dest, src_view=src_view, src_is_context=is_ctx,
                            context=ctx, dest_view=dest_view, chown=chown, chmod=chmod,
                            excludes=list(step.excludes), parents=step.parents, heredocs=heredocs,
                            mtime_clamp=session.opts.source_date_epoch)
    except DockerfileError:
        raise
    except PybuildError as exc:
        raise DockerfileError(f"{step.kind} failed: {exc.render()}", step.node.span) from exc


def _add_entries(session: StageSession, step: CopyStep, sources: list[str], heredocs: list[tuple[str, str]], dest_view: Any,
                 chown: Any, chmod: Any) -> list[Any]:
    """ADD from the context: URLs fetched, local archives extracted, the rest copied like COPY.
    Temporary content lives under the build's temp dir (removed with the build)."""
    from .archive import add_entries

    git = [s for s in sources if _remote_like(s) and _is_git(s)]
    rest = [s for s in sources if s not in git]
    merged: dict[str, Any] = {}
    if git:
        from .copy import copy_entries
        from .gitsource import git_checkout
        from .pathresolve import DirView

        for url in git:
            co = git_checkout(session, url, keep_git_dir=step.keep_git_dir, checksum=step.checksum)
            for e in copy_entries(sources=["."], dest=step.dest if step.dest.endswith("/") else step.dest + "/",
                                  src_view=DirView(co.path), src_is_context=False, context=None,
                                  dest_view=dest_view, chown=chown or (0, 0), chmod=chmod,
                                  excludes=list(step.excludes), mtime_clamp=session.opts.source_date_epoch):
                merged[e.name] = e
    if rest or heredocs or not git:
        scratch = Path(session.tmp) / "add"
        result = add_entries(sources=rest, dest=step.dest, src_view=session.context.view,
                             src_is_context=True, context=session.context, dest_view=dest_view, scratch=scratch,
                             chown=chown, chmod=chmod, excludes=list(step.excludes),
                             checksum=step.checksum if not git else None,
                             heredocs=heredocs, mtime_clamp=session.opts.source_date_epoch)
        merged.update((e.name, e) for e in result.entries)
    return list(merged.values())
