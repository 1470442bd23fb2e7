"""Config steps (ENV, LABEL, CMD, USER, WORKDIR, ...): a new config state and a history entry.

Only WORKDIR may touch the filesystem: when the directory is missing it is created (owned by
the current USER, as BuildKit does) in a small layer of its own, cached like any layer step.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from .cachekey import step_key
from .layers import MISS, CacheMiss, cache_lookup, cache_store, commit_step, store_layer
from .state import ImageState


def apply_config(session: Any, state: ImageState, step: Any, *, use_cache: bool) -> tuple[ImageState, bool]:
    """Apply a config step; returns the new state and whether a recorded outcome was reused.

    Pure config steps also keep a (layer-less) cache record so their history time, and with it
    the image digest, is stable across cached rebuilds. ONBUILD records no history."""
    author = getattr(step.state, "author", None) or state.author
    new = replace(state, config=step.state, author=author)
    mkdir = getattr(step, "workdir_to_create", None)
    if mkdir:
        user = getattr(step.state, "user", None) or "root"
        key = step_key(state.cache_key, "WORKDIR", {"path": mkdir, "user": user, "history": step.created_by})
    else:
        key = step_key(state.cache_key, "CONFIG", step.created_by)
    if not step.records_history:
        return replace(new, cache_key=key), False
    hit = cache_lookup(session, key) if use_cache else MISS
    if not isinstance(hit, CacheMiss):
        return commit_step(session, new, step, hit, key), bool(mkdir)
    layer = None
    if mkdir:
        entries = workdir_entries(session, state, mkdir, user)
        layer = store_layer(session, entries) if entries else None
    return commit_step(session, new, step, cache_store(session, key, layer, step.created_by), key), False


def workdir_entries(session: Any, state: ImageState, path: str, user: str) -> list[Any]:
    """DIR entries for the missing components of ``path`` (symlinks resolved inside the image)."""
    from ..layer.entries import Entry, EntryType
    from .pathresolve import resolve_in_root
    from .userdb import resolve_user

    view = session.view(state)
    resolved = resolve_in_root(view, path)
    uid, gid = 0, 0
    if user not in ("", "root", "0", "0:0"):
        uid, gid, _groups = resolve_user(user, view)
    mtime = session.opts.source_date_epoch if session.opts.source_date_epoch is not None else int(time.time())
    parts = [p for p in resolved.split("/") if p]
    entries = []
    current = ""
    for i, part in enumerate(parts):
        current = f"{current}/{part}"
        if view.lstat(current) is not None:
            continue
        last = i == len(parts) - 1
        entries.append(Entry(name=current.lstrip("/"), type=EntryType.DIR, mode=0o755,
                             uid=uid if last else 0, gid=gid if last else 0, mtime=mtime))
    return entries
