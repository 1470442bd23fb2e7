"""Config steps (ENV, LABEL, CMD, USER, WORKDIR, ...): a new config state and a history entry.

Only WORKDIR may touch the filesystem: when the directory is missing it is created (owned by
the current USER, as BuildKit does) in a small layer of its own, cached like any layer step.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .cachekey import step_key
from .layers import MISS, CacheMiss, cache_lookup, cache_store, commit_step, store_layer
from .state import ImageState

if TYPE_CHECKING:
    from .session import StageSession
    from ..plan.steps import ConfigStep


def apply_config(session: StageSession, state: ImageState, step: ConfigStep, *, use_cache: bool) -> tuple[ImageState, bool]:
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


def workdir_entries(session: StageSession, state: ImageState, path: str, user: str) -> list[Any]:
    """The layer of ``WORKDIR path`` (BuildKit: ``llb.Mkdir(path, 0755, WithParents,
    WithUser(USER))``): ``path`` is resolved inside the image root (a symlink on the way is
    followed, never replaced); every missing directory is created 0755, owned by USER under
    the ``--chown`` rule (:func:`~builder.engine.userdb.resolve_chown`: an unknown name is
    0:0), mtime SOURCE_DATE_EPOCH or now. The existing directories above the first created
    one are part of the layer with their own metadata (as BuildKit's diff carries them), so
    the layer never hides their owner or mode. Empty when nothing is missing; CopyError
    ("mkdir P: not a directory") when ``path`` or one of its parents is not a directory."""
    import stat
    from dataclasses import replace as _replace

    from .context import CopyError
    from .copy import _Emitter
    from .pathresolve import resolve_in_root
    from .userdb import resolve_chown

    view = session.view(state)
    resolved = resolve_in_root(view, path, follow_last=True)
    st = view.lstat(resolved)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):  # fsutil MkdirAll: ENOTDIR
            raise CopyError(f"mkdir {resolved}: not a directory")
        return []
    owner = resolve_chown(user, view) if user not in ("", "root", "0", "0:0") else (0, 0)
    mtime = session.opts.source_date_epoch if session.opts.source_date_epoch is not None else int(time.time())
    emit = _Emitter(dest_view=view, chown=owner, chmod=None, keep_owner=False, keep_xattrs=False,
                    mtime_clamp=None)
    try:
        emit.ensure_parents(resolved, include_self=True)
    except CopyError:
        raise CopyError(f"mkdir {resolved}: not a directory") from None
    return [e if view.lstat("/" + e.name) is not None else _replace(e, mtime=mtime)
            for e in emit.entries.values()]
