"""``ADD GITURL DEST``: the repository's tree at the ref, fetched once per build.

A checkout is made under the build's temp dir on first use (the cache key needs its commit)
and reused by the step that copies it; it goes with the build's temp dir. ``.git`` is kept only
with ``--keep-git-dir`` (or ``?keep-git-dir=1``); ``--checksum`` must match the commit. File
mtimes are the commit time when SOURCE_DATE_EPOCH is set (BuildKit's rule), else checkout time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import StageSession


@dataclass(frozen=True, slots=True)
class GitCheckout:
    """A fetched git source: ``path`` is the directory ADD copies (the sub-directory when the
    URL names one)."""

    path: Path
    commit: str
    subdir: str
    keep_git_dir: bool


def git_checkout(session: StageSession, url: str, *, keep_git_dir: bool, checksum: str | None) -> GitCheckout:
    """Fetch (or reuse) ``url`` for this build. Raises CopyError (located at the instruction
    by the engine) when the fetch fails, the checksum differs or the sub-directory is missing."""
    from dataclasses import replace

    from ..inputs.urls import parse_git_url

    spec = parse_git_url(url)
    if checksum:
        spec = replace(spec, checksum=checksum.lower())
    keep = spec.keep_git_dir if spec.keep_git_dir is not None else keep_git_dir
    memo: dict[tuple[str, bool, str | None], GitCheckout] = session.git_checkouts
    key = (url, keep, spec.checksum)
    with session.key_lock(f"git\0{url}\0{keep}\0{spec.checksum}"):  # stages of several platforms at once
        if key not in memo:
            memo[key] = _fetch(session, spec, keep)
        return memo[key]


def _fetch(session: StageSession, spec: Any, keep: bool) -> GitCheckout:
    import tempfile

    from ..inputs.git import GitError, fetch_git
    from .context import CopyError

    dest = Path(tempfile.mkdtemp(prefix="git-", dir=session.tmp)) / "tree"
    ssh = dict(session.opts.ssh).get("default")
    mtime = spec.mtime or ("commit" if session.opts.source_date_epoch is not None else "checkout")
    try:
        co = fetch_git(spec, dest, keep_git_dir=keep, ssh_sock=ssh, mtime=mtime)
    except GitError as exc:  # located at the ADD by the engine
        raise CopyError(f"ADD failed: {exc}") from None
    path = co.top / spec.subdir if spec.subdir else co.top
    if not path.is_dir() or path.is_symlink():
        raise CopyError(f"ADD {spec.shown}: sub-directory {spec.subdir!r} not found in the repository")
    return GitCheckout(path=path, commit=co.commit, subdir=spec.subdir, keep_git_dir=keep)
