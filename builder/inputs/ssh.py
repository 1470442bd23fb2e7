"""``--ssh``: ssh agents for ``RUN --mount=type=ssh`` and git over ssh.

``--ssh default`` (or ``--ssh ID``) uses ``$SSH_AUTH_SOCK``; ``ID=SOCKET`` an agent socket;
``ID=KEY[,KEY]`` key files, loaded into a private ``ssh-agent`` that :class:`SshAgents`
starts and stops (``with SshAgents(...)``; **the caller closes it**). Keys never leave the
agent: a RUN sees only a forwarding socket (:class:`SocketProxy`) made per step with the
mount's mode and owner, removed after the step. Errors: UsageError naming the flag.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from ..errors import HostError, UsageError


@dataclass(frozen=True, slots=True)
class SshSpec:
    """One ``--ssh`` value: ``paths`` empty means ``$SSH_AUTH_SOCK``."""

    id: str
    paths: tuple[str, ...] = ()


def parse_ssh(value: str) -> SshSpec:
    sid, sep, rest = value.partition("=")
    sid = sid.strip()
    if not sid or (sep and not rest):
        raise UsageError(f"--ssh {value!r}: expected default|ID=SOCKET|ID=KEY[,KEY]")
    return SshSpec(sid, tuple(p for p in rest.split(",") if p) if sep else ())


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


_AGENTC_ADD_IDENTITY = 17
_AGENT_SUCCESS = 6
# fields after the key type in both the OpenSSH private key format and the agent protocol
_KEY_FIELDS = {b"ssh-ed25519": 2, b"ssh-rsa": 6, b"ssh-dss": 5}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated")
        value = int.from_bytes(self.data[self.pos:self.pos + 4], "big")
        self.pos += 4
        return value

    def string(self) -> bytes:
        n = self.uint32()
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value


def add_identity(sock: str, key_path: str) -> bool:
    """Add the unencrypted OpenSSH private key at ``key_path`` to the agent at ``sock`` with an
    empty comment (SSH2_AGENTC_ADD_IDENTITY). False when the file is not such a key (PEM,
    encrypted, several keys, a security-key type) or the agent refused it: the caller falls
    back to ssh-add. Never raises for bad content; the key bytes are never logged."""
    import base64

    try:
        text = Path(key_path).read_text(errors="replace")
        if "-----BEGIN OPENSSH PRIVATE KEY-----" not in text:
            return False
        data = base64.b64decode("".join(x for x in text.splitlines() if x and not x.startswith("-----")))
        magic = b"openssh-key-v1\0"
        if not data.startswith(magic):
            return False
        r = _Reader(data[len(magic):])
        cipher, _kdf, _kdfopts, count = r.string(), r.string(), r.string(), r.uint32()
        if cipher != b"none" or count != 1:
            return False
        r.string()  # the public key
        priv = _Reader(r.string())
        if priv.uint32() != priv.uint32():
            return False
        start = priv.pos
        ktype = priv.string()
        fields = _KEY_FIELDS.get(ktype) or (3 if ktype.startswith(b"ecdsa-sha2-") else 0)
        if not fields:
            return False
        for _ in range(fields):
            priv.string()
        msg = bytes([_AGENTC_ADD_IDENTITY]) + priv.data[start:priv.pos] + (0).to_bytes(4, "big")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(sock)
            s.sendall(len(msg).to_bytes(4, "big") + msg)
            reply = b""
            while len(reply) < 5:
                chunk = s.recv(5 - len(reply))
                if not chunk:
                    return False
                reply += chunk
        return reply[4] == _AGENT_SUCCESS
    except (OSError, ValueError):
        return False


class SshAgents:
    """The agent socket of each ``--ssh`` id (see the module docstring)."""

    def __init__(self, specs: tuple[SshSpec, ...]) -> None:
        self._socks: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir: Path | None = None
        try:
            for spec in specs:
                if spec.id in self._socks:
                    raise UsageError(f"--ssh {spec.id}: given twice")
                self._socks[spec.id] = self._open(spec)
        except BaseException:
            self.close()
            raise

    def _open(self, spec: SshSpec) -> str:
        shown = f"--ssh {spec.id}" + ("=" + ",".join(spec.paths) if spec.paths else "")
        if not spec.paths:
            sock = os.environ.get("SSH_AUTH_SOCK")
            if not sock or not _is_socket(sock):
                raise UsageError(f"{shown}: SSH_AUTH_SOCK does not name an agent socket")
            return sock
        if len(spec.paths) == 1 and _is_socket(spec.paths[0]):
            return spec.paths[0]
        for path in spec.paths:
            if not os.path.isfile(path):
                raise UsageError(f"{shown}: {path} is neither an agent socket nor a key file")
        if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
            raise HostError(f"{shown}: key files need ssh-agent and ssh-add (apt-get install openssh-client)")
        if self._dir is None:  # a short path: a unix socket's name is at most 107 bytes
            self._dir = Path(tempfile.mkdtemp(prefix="pybuild-ssh-"))
        sock = str(self._dir / f"agent{len(self._procs)}")
        proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        for _ in range(500):
            if _is_socket(sock) or proc.poll() is not None:
                break
            threading.Event().wait(0.01)
        if not _is_socket(sock):
            raise HostError(f"{shown}: ssh-agent did not start")
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DISPLAY", "SSH_ASKPASS")}
        env["SSH_AUTH_SOCK"] = sock
        # BuildKit's key-file agent holds the keys without their comments: unencrypted OpenSSH
        # keys are added so (agent protocol); anything else goes through ssh-add
        rest = [p for p in spec.paths if not add_identity(sock, p)]
        added = subprocess.run(["ssh-add", *rest], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, errors="replace", check=False) if rest else None
        if added is not None and added.returncode != 0:
            raise UsageError(f"{shown}: cannot load the key file(s) into an agent "
                             f"(a key with a passphrase needs a running agent: --ssh {spec.id}=$SSH_AUTH_SOCK)")
        return sock

    def socket(self, sid: str) -> str | None:
        return self._socks.get(sid)

    def sockets(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._socks.items())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agents this object started and remove their sockets."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class SocketProxy:
    """A unix socket at ``path`` (mode ``mode``, owned by ``uid``:``gid``) forwarding each
    connection to the agent at ``target``. ``close`` stops it and removes ``path``; it is a
    context manager. Connections run in daemon threads and end with the proxy."""

    def __init__(self, target: str, path: Path, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        self.target = target
        self.path = path
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(str(path))
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        self._srv.listen(16)
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            try:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(self.target)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns += [conn, up]
            threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        try:
            self._srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._srv.close()
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except OSError:
            pass
