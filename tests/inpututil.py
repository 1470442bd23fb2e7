"""Helpers of the build-input tests (issue 15): the installed ``pybuild`` console script fed
on stdin, git repositories made by the test and served on 127.0.0.1 by ``git daemon`` and by
``git http-backend`` behind a small CGI HTTP server (optionally asking for basic auth), and a
private ``ssh-agent``.

Contracts: every server binds 127.0.0.1 on a free port and is stopped by its context manager;
``make_repo`` commits files with fixed dates (so commit hashes are stable within a test).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from buildutil import CliResult, _QuietHandler, http_server
from registry_fixture import free_port
from runutil import REPO, make_context, pybuild_env

GIT_DATE = "2021-02-03T04:05:06Z"


def console_script() -> str:
    """The installed ``pybuild`` entry point of this interpreter's environment."""
    script = Path(sys.executable).parent / "pybuild"
    assert script.exists(), f"{script} missing: pip install the project (its console script)"
    return str(script)


def run_script(args: Sequence[str], root: Path, *, stdin: bytes | None = None,
               env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """``pybuild ARGS`` through the console script with store ``root``; never raises on failure."""
    p = subprocess.run([console_script(), *args], cwd=REPO, env=pybuild_env(root, env), input=stdin, check=False,
                       capture_output=True, timeout=timeout)
    return CliResult(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_DATE=GIT_DATE, GIT_COMMITTER_DATE=GIT_DATE, GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid", GIT_CONFIG_NOSYSTEM="1", HOME=str(cwd))
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, commits: Sequence[dict[str, str]], *, tags: dict[int, str] | None = None,
              branches: dict[int, str] | None = None, submodules: dict[str, tuple[str, str]] | None = None,
              ) -> list[str]:
    """A bare repository at ``path`` whose ``main`` holds ``commits`` (each: relative path ->
    text; later commits add to earlier ones). ``tags``/``branches`` name commit indexes.
    ``submodules`` (path -> (url, commit)) are recorded in the first commit (.gitmodules and
    gitlinks; a relative url resolves against the superproject's remote). Returns the commit
    hashes in order."""
    work = path.parent / (path.name + ".work")
    work.mkdir(parents=True)
    _git(work, "init", "-q", "-b", "main")
    if submodules:
        (work / ".gitmodules").write_text("".join(f'[submodule "{p}"]\n\tpath = {p}\n\turl = {u}\n'
                                                  for p, (u, _c) in submodules.items()))
    hashes = []
    for i, files in enumerate(commits):
        for rel, text in files.items():
            f = work / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
        _git(work, "add", "-A")
        for sub, (_u, commit) in (submodules or {}).items() if i == 0 else ():
            _git(work, "update-index", "--add", "--cacheinfo", f"160000,{commit},{sub}")
        _git(work, "commit", "-q", "-m", f"commit {i}")
        hashes.append(_git(work, "rev-parse", "HEAD"))
        for idx, name in (tags or {}).items():
            if idx == i:
                _git(work, "tag", "-a", "-m", name, name)
        for idx, name in (branches or {}).items():
            if idx == i:
                _git(work, "branch", name)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True, capture_output=True)
    (path / "git-daemon-export-ok").touch()
    _git(path, "config", "http.receivepack", "false")
    _git(path, "config", "uploadpack.allowAnySHA1InWant", "true")
    shutil.rmtree(work)
    return hashes


def _wait_port(port: int, attempts: int = 200, host: str = "127.0.0.1") -> None:
    """Wait (bounded) until something accepts connections on ``host``:``port``."""
    import socket
    import time

    for _ in range(attempts):
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """``git daemon`` serving the repositories under ``base``; yields ``git://127.0.0.1:PORT``."""
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
                             f"--base-path={base}", "--export-all", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _git_http_backend() -> str:
    out = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(out, "git-http-backend")


class _CgiGit(http.server.BaseHTTPRequestHandler):
    """Runs git-http-backend for each request (smart HTTP); checks basic auth when set."""

    base: Path
    credentials: tuple[str, str] | None = None
    seen_auth: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        if self.credentials is not None:
            want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            got = self.headers.get("Authorization", "")
            self.seen_auth.append(got)
            if got != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {"GIT_PROJECT_ROOT": str(self.base), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": os.environ.get("PATH", "")}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        p = subprocess.run([_git_http_backend()], input=body, env=env, capture_output=True, check=False)
        head, _, payload = p.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            if not line:
                continue
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            else:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def git_http(base: Path, credentials: tuple[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Smart-HTTP git for the repositories under ``base``; yields (``http://127.0.0.1:PORT``,
    the Authorization headers seen)."""
    seen: list[str] = []
    handler = type("H", (_CgiGit,), {"base": base, "credentials": credentials, "seen_auth": seen})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def ssh_agent(workdir: Path) -> Iterator[tuple[str, Path, str]]:
    """A private ssh-agent holding a new ed25519 key; yields (socket, key file, public key's
    fingerprint as ``ssh-add -l`` prints it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pybuild-test-key", "-f", str(key)],
                   check=True)
    sock = f"/tmp/pybuild-test-agent-{os.getpid()}-{free_port()}"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True)
        fp = subprocess.run(["ssh-keygen", "-l", "-f", str(key) + ".pub"], capture_output=True, text=True,
                            check=True).stdout.split()[1]
        yield sock, key, fp
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(sock)


class _AuthFiles(_QuietHandler):
    """Static files (with Last-Modified) behind basic auth when ``credentials`` is set."""

    credentials: tuple[str, str] | None = None

    def do_GET(self) -> None:
        if self.credentials is not None:
            want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if self.headers.get("Authorization", "") != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="files"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        super().do_GET()


@contextlib.contextmanager
def file_server(directory: Path, credentials: tuple[str, str] | None = None) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1, behind basic auth when ``credentials``; yields the base URL."""
    with http_server(directory, type("F", (_AuthFiles,), {"credentials": credentials})) as url:
        yield url


@contextlib.contextmanager
def sshd(workdir: Path, authorized_key: Path, *, host: str = "127.0.0.1", port: int | None = None) -> Iterator[int]:
    """An OpenSSH server on ``host`` (a loopback address) and ``port`` (default: a free one)
    accepting ``authorized_key`` for root, with a host key of its own; yields the port."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    auth = workdir / "authorized_keys"
    shutil.copy(str(authorized_key) + ".pub", auth)
    port = port or free_port()
    config = workdir / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress {host}\nUseDNS no\nHostKey {host_key}\nAuthorizedKeysFile {auth}\n"
                      f"PidFile {workdir / 'sshd.pid'}\nStrictModes no\nPermitRootLogin prohibit-password\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, host=host)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ssh_add_context(dest: Path, dockerfile_tail: str) -> Path:
    """A context whose image holds the host's ssh-add and the libraries it loads (``ldd``)."""
    ssh_add = shutil.which("ssh-add")
    assert ssh_add, "openssh-client is needed (apt-get install openssh-client)"
    root = dest / "sshroot"
    files = [ssh_add]
    for line in subprocess.run(["ldd", ssh_add], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            files.append(path)
    for f in files:
        target = root / f.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), target)
    return make_context(dest, "FROM localhost/busybox:latest\nCOPY sshroot/ /\n" + dockerfile_tail)
