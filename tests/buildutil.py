"""Shared helpers of the build tests: run the pybuild CLI, make the busybox base store, read
what was written.

Contracts:
- ``run_cli(args, root)`` runs ``builder.cli.main`` in this process with ``--root`` semantics via
  ``PYBUILD_ROOT`` (the store is always a tmp dir of the test); ``run_cli_subprocess`` runs
  ``python -m builder.cli`` as a child (use it when the exit code, the absence of a traceback or
  the environment of a fresh process matters). Neither raises on a failed build: look at ``rc``.
- ``busybox_store(tmp_path)`` copies a session-cached store holding ``localhost/busybox:latest``
  (built from the host's /bin/busybox by testdata/demo/make-base.sh) into ``tmp_path/store``.
- Reading images goes through tests/ocireader.py, which shares no code with ``builder``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
BUILDS = REPO / "testdata" / "builds"
MAKE_BASE = REPO / "testdata" / "demo" / "make-base.sh"
BUSYBOX = Path("/bin/busybox")
BASE_TAG = "localhost/busybox:latest"


@dataclass(frozen=True)
class CliResult:
    """What one CLI invocation did: exit code, stdout, stderr."""

    rc: int
    out: str
    err: str

    def ok(self) -> "CliResult":
        """Self, or AssertionError showing the output when the command failed."""
        assert self.rc == 0, f"pybuild exited {self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self


def _env(root: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYBUILD_ROOT"] = str(root)
    env.pop("SOURCE_DATE_EPOCH", None)
    env.update(extra or {})
    return env


@contextlib.contextmanager
def _patched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(args: Sequence[str], root: Path, env: dict[str, str] | None = None) -> CliResult:
    """Run ``builder.cli.main(args)`` in-process with PYBUILD_ROOT=root (plus ``env``; an
    inherited SOURCE_DATE_EPOCH is removed). stdout/stderr are captured; never raises for a
    failed command (a SystemExit becomes its code)."""
    from builder.cli import main

    raw_out = io.BytesIO()  # the build writes ``-`` outputs to sys.stdout.buffer
    out = io.TextIOWrapper(raw_out, encoding="utf-8", write_through=True)
    err = io.StringIO()
    with _patched_environ(_env(root, env)), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse --help and friends
            rc = exc.code if isinstance(exc.code, int) else 1
        out.flush()
    return CliResult(rc, raw_out.getvalue().decode("utf-8", "replace"), err.getvalue())


def run_cli_subprocess(args: Sequence[str], root: Path, env: dict[str, str] | None = None,
                       timeout: float = 120) -> CliResult:
    """Run ``python -m builder.cli ARGS`` as a child process with PYBUILD_ROOT=root."""
    e = _env(root, env)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    p = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=timeout)
    return CliResult(p.returncode, p.stdout, p.stderr)


@functools.lru_cache(maxsize=1)
def _base_store() -> Path:
    """A store holding localhost/busybox:latest, built once per test session."""
    if not BUSYBOX.exists():
        raise AssertionError("/bin/busybox is missing: apt-get install busybox-static")
    work = Path(tempfile.mkdtemp(prefix="pybuild-base-"))
    atexit.register(shutil.rmtree, work, True)
    subprocess.run(["sh", str(MAKE_BASE), str(work / "base")], check=True)
    root = work / "store"
    run_cli(["-t", BASE_TAG, "--progress=quiet", str(work / "base")], root).ok()
    return root


def busybox_store(tmp_path: Path) -> Path:
    """A private copy of the session's busybox store at ``tmp_path/store``."""
    dest = tmp_path / "store"
    shutil.copytree(_base_store(), dest, symlinks=True)
    return dest


def busybox_context(dest: Path) -> Path:
    """The build context of the busybox base (make-base.sh output) at ``dest``."""
    subprocess.run(["sh", str(MAKE_BASE), str(dest)], check=True)
    return dest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def tree_fingerprint(root: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, size, link target or content sha) of everything under ``root`` (symlinks
    not followed): compare two calls to prove nothing changed."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                extra = os.readlink(p)
            elif p.is_file():
                extra = sha256_file(p)
            else:
                extra = ""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size if p.is_file() else 0, extra)
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the log
        pass


@contextlib.contextmanager
def http_server(directory: Path, handler_class: type[http.server.SimpleHTTPRequestHandler] = _QuietHandler
                ) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread with ``handler_class`` (a
    quiet SimpleHTTPRequestHandler by default); yields the base URL."""
    handler = functools.partial(handler_class, directory=str(directory))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
