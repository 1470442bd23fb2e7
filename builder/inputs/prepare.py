"""Turn the build's inputs (context argument, ``-f``, ``--build-context``) into local paths.

:class:`Inputs` owns one scratch directory (under the store's ``tmp``) holding whatever had to
be fetched or unpacked: stdin, git checkouts, downloaded tarballs. **The caller closes it**
(``with Inputs(...) as inputs:``), which removes everything, whatever happened.

Rules (buildx's): context ``-`` reads a tar (plain or compressed) holding the Dockerfile and
the context, or a lone Dockerfile with an empty context; ``-f -`` reads the Dockerfile from
stdin (not both at once). A git URL is fetched shallowly (``#REF:SUBDIR``); an http(s) URL is a
tarball context, or a Dockerfile when it is not an archive. For a remote context ``-f`` names a
file inside it. Errors are UsageError (bad values), GitError, FetchError, naming the flag or
the redacted URL.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from ..errors import PybuildError, UsageError
from .urls import is_git_url, is_http_url, parse_git_url, redact


@dataclass(frozen=True, slots=True)
class MainInputs:
    """The main context directory and the Dockerfile to read; ``git_commit`` for a git context;
    ``shown`` names a Dockerfile that is not the user's file (stdin, fetched) in messages."""

    context: Path
    dockerfile: Path
    git_commit: str | None = None
    shown: str | None = None


@dataclass(frozen=True, slots=True)
class NamedContext:
    """One ``--build-context NAME=VALUE``: either a local directory (``path``: a directory
    given, a git checkout or an unpacked tarball) or an image (``image``: a reference or an
    ``oci-layout://`` value that :func:`builder.engine.base.resolve_base` takes)."""

    name: str
    value: str                 # as shown to the user (credentials removed)
    path: Path | None = None
    image: str | None = None


class Inputs:
    """Scratch space for fetched inputs (see the module docstring); ``close`` removes it."""

    def __init__(self, scratch_parent: Path, *, stdin: BinaryIO | None = None, keep_git_dir: bool = False,
                 ssh_sock: str | None = None, git_mtime: str = "checkout") -> None:
        self._parent = scratch_parent
        self._dir: Path | None = None  # made on first need
        self._stdin = stdin
        self._stdin_used = False
        self._n = 0
        self.keep_git_dir = keep_git_dir
        self.ssh_sock = ssh_sock
        self.git_mtime = git_mtime

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def dir(self) -> Path:
        """The scratch directory (under the store's tmp, named with this process's PID so that
        a dead owner's leftovers are swept by the next command)."""
        if self._dir is None:
            from ..store.stale import owned_prefix

            self._parent.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix=owned_prefix("inputs"), dir=self._parent))
        return self._dir

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _new(self, what: str) -> Path:
        self._n += 1
        return self.dir / f"{what}{self._n}"

    def _read_stdin(self) -> BinaryIO:
        if self._stdin is None:
            raise UsageError("stdin is not available")
        if self._stdin_used:
            raise UsageError("invalid argument: can't use stdin for both build context and dockerfile")
        self._stdin_used = True
        return self._stdin

    # -- the main context ---------------------------------------------------------------------
    def main(self, context: str, file: str | None) -> MainInputs:
        """The main context (a directory, ``-``, a git or http(s) URL) and ``-f`` made local;
        see the module docstring for the rules. Reads stdin at most once."""
        if context == "-" and file == "-":
            raise UsageError("invalid argument: can't use stdin for both build context and dockerfile")
        commit = None
        remote = False
        if context == "-":
            from .streams import unpack_stream

            ctx = self._new("stdin")
            df_path = self._new("df") / "Dockerfile"
            if not unpack_stream(self._read_stdin(), ctx, df_path, "stdin"):
                return MainInputs(ctx, df_path, shown="Dockerfile")
            remote = True
        elif is_git_url(context):
            ctx, commit = self._git(context, "build context")
            remote = True
        elif is_http_url(context):
            ctx, df = self._http(context, "build context")
            if df is not None:
                return MainInputs(ctx, df, shown="Dockerfile")
            remote = True
        else:
            ctx = Path(context)
            if not ctx.is_dir():
                raise UsageError(f"build context {context!r} is not a directory")
        if file == "-":
            df_path = self._new("df") / "Dockerfile"
            from .streams import MAX_DOCKERFILE

            data = self._read_stdin().read(MAX_DOCKERFILE + 1)
            if len(data) > MAX_DOCKERFILE:
                raise UsageError(f"-f -: the Dockerfile on stdin is larger than {MAX_DOCKERFILE >> 20} MiB")
            df_path.parent.mkdir(parents=True)
            df_path.write_bytes(data)
            return MainInputs(ctx, df_path, commit, shown="Dockerfile")
        if file is None:
            df_path = ctx / "Dockerfile"
        elif remote and not Path(file).is_absolute():
            if ".." in Path(file).parts:
                raise UsageError(f"-f {file!r}: the Dockerfile must be inside the build context {redact(context)}")
            df_path = ctx / file
        else:
            df_path = Path(file)
        if remote and not df_path.is_file():
            raise UsageError(f"Dockerfile {file or 'Dockerfile'!r} not found in the build context {redact(context)}")
        return MainInputs(ctx, df_path, commit, shown=(file or "Dockerfile") if remote else None)

    # -- named contexts -----------------------------------------------------------------------
    def named(self, spec: str) -> NamedContext:
        """Parse and fetch one ``--build-context NAME=VALUE``."""
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise UsageError(f"--build-context {redact(spec)!r}: expected NAME=VALUE")
        shown = f"--build-context {name}={redact(value)}"
        if value.startswith("docker-image://"):
            ref = value[len("docker-image://"):]
            if not ref:
                raise UsageError(f"{shown}: missing image reference")
            from ..oci.reference import parse_reference

            try:
                parse_reference(ref)
            except PybuildError as exc:  # ReferenceError_ and friends: say which flag
                raise UsageError(f"{shown}: {exc}") from None
            return NamedContext(name, value, image=ref)
        if value.startswith("oci-layout://"):
            from ..oci.layoutdir import parse_layout_ref

            path, _ref = parse_layout_ref(value[len("oci-layout://"):])
            if not path.exists():
                raise UsageError(f"{shown}: no OCI layout at {path}")
            return NamedContext(name, value, image=value)
        if value.startswith("target:"):
            raise UsageError(f"{shown}: target: contexts are only for bake")
        if is_git_url(value):
            path, _commit = self._git(value, shown)
            return NamedContext(name, redact(value), path=path)
        if is_http_url(value):
            path, df = self._http(value, shown)
            if df is not None:
                raise UsageError(f"{shown}: the URL is not an archive")
            return NamedContext(name, redact(value), path=path)
        if "://" in value:
            raise UsageError(f"{shown}: unsupported context source")
        p = Path(value)
        if not p.is_dir():
            raise UsageError(f"{shown}: not a directory")
        return NamedContext(name, value, path=p)

    # -- fetchers -----------------------------------------------------------------------------
    def _git(self, url: str, what: str) -> tuple[Path, str]:
        from .git import GitError, fetch_git

        spec = parse_git_url(url)
        keep = spec.keep_git_dir if spec.keep_git_dir is not None else self.keep_git_dir
        try:
            co = fetch_git(spec, self._new("git"), keep_git_dir=keep, ssh_sock=self.ssh_sock,
                           mtime=spec.mtime or self.git_mtime)
        except GitError as exc:
            raise GitError(f"{what}: {exc}") from None
        ctx = co.top / spec.subdir if spec.subdir else co.top
        if not ctx.is_dir() or ctx.is_symlink():
            raise UsageError(f"{what}: sub-directory {spec.subdir!r} not found in {spec.shown}")
        return ctx, co.commit

    def _http(self, url: str, what: str) -> tuple[Path, Path | None]:
        """An http(s) context: (context dir, None) for an archive, (empty dir, Dockerfile) else."""
        from ..engine.fetch import fetch_url
        from .streams import unpack_stream

        from ..engine.fetch import FetchError
        from .urls import InputError

        try:
            dl = fetch_url(url, self._new("dl"))
        except FetchError as exc:  # a CopyError: never shown as a Dockerfile position here
            raise InputError(f"{what}: {exc.args[0] if exc.args else exc}") from None
        ctx = self._new("http")
        df = self._new("df") / "Dockerfile"
        try:
            with open(dl.path, "rb") as f:
                is_archive = unpack_stream(f, ctx, df, redact(url))
        finally:
            dl.path.unlink(missing_ok=True)
        return (ctx, None) if is_archive else (ctx, df)
