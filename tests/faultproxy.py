"""A small fault-injecting HTTP proxy for registry tests, serving on 127.0.0.1 in a thread.

``FaultProxy(upstream="127.0.0.1:PORT", seed=1, rate=0.2, max_faults=10)`` forwards every
request to the upstream registry (keeping the client's ``Host`` so the registry's
``Location`` headers point back at the proxy) and, with probability ``rate`` and at most
``max_faults`` times (seeded, so runs repeat), injects one of:

* ``500``: answers 500 with a distribution error body, without forwarding;
* ``429``: answers 429 Too Many Requests with ``Retry-After: 0`` (only when listed in ``kinds``);
* ``reset``: drops the connection (RST), either before forwarding or after the upstream
  handled the request (its answer is lost);
* ``truncate``: forwards, sends the status, headers and part of the body, then resets.

``throttle=BYTES_PER_SECOND`` reads request bodies (uploads) no faster than that: a slow link.

``rewrite=fn`` makes it a *hostile* registry: every forwarded answer is first read whole into a
:class:`Answer` (method, path, status, headers, body) and ``fn(answer)`` may return another
Answer to send instead (its ``body`` may be an iterable of chunks, streamed; the bytes actually
written before the client hung up are counted in ``FaultProxy.sent``), or None to pass it on.

Every request is logged as :class:`LogEntry` (method, path with query, status, fault).
``bearer=(user, password)`` puts a tiny token server in front: requests need
``Authorization: Bearer`` tokens from ``GET /token`` (basic auth checked) or ``POST /token``
(OAuth2 refresh token = the password) whose scopes cover the
repository and action; otherwise 401 with a ``WWW-Authenticate: Bearer`` challenge.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import re
import secrets
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}
_REPO_PATH = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags)(/|$)")


@dataclass(frozen=True)
class LogEntry:
    method: str
    path: str
    status: int | None   # None when the connection was reset before an answer
    fault: str = ""


@dataclass
class Answer:
    """One upstream answer as a ``rewrite`` hook sees it (and may return, changed). ``body``
    is bytes, or an iterable of byte chunks to stream; Content-Length is ``length`` when set
    (a lie, if you like), else the body's length (bytes) or none (chunks: the connection ends
    the body)."""

    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterable[bytes]
    length: int | None = None
    request_headers: dict[str, str] = field(default_factory=dict)  # what the client sent

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names} | {"content-length"}
        return [(k, v) for k, v in self.headers if k.lower() not in drop]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
        pass

    # one method for all verbs
    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> tempfile.SpooledTemporaryFile:
        throttle = self.server.throttle
        step = 1 << 16 if throttle else 1 << 20
        body = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, step))
                    if not piece:
                        raise ConnectionError("client closed mid-body")
                    body.write(piece)
                    if throttle:
                        time.sleep(len(piece) / throttle)
                    remaining -= len(piece)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                piece = self.rfile.read(min(remaining, step))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                body.write(piece)
                if throttle:
                    time.sleep(len(piece) / throttle)
                remaining -= len(piece)
        size = body.tell()
        body.seek(0)
        body.size = size  # type: ignore[attr-defined]
        return body

    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _send(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        srv = self.server
        try:
            body = self._read_body()
        except (ConnectionError, ValueError):
            self._reset()
            return
        with body:
            if srv.bearer is not None:
                if self.path.startswith("/token"):
                    self._token(srv, body.read())
                    return
                if not self._authorized(srv):
                    return
            fault = srv.pick_fault() if srv.fault_methods is None or self.command in srv.fault_methods else ""
            if fault == "500":
                srv.record(LogEntry(self.command, self.path, 500, fault))
                self._send(500, json.dumps({"errors": [{"code": "UNKNOWN", "message": "injected fault"}]}).encode(),
                           [("Content-Type", "application/json")])
                return
            if fault == "429":
                srv.record(LogEntry(self.command, self.path, 429, fault))
                self._send(429, json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode(),
                           [("Content-Type", "application/json"), ("Retry-After", "0")])
                return
            if fault == "reset" and srv.rng_choice((True, False)):
                srv.record(LogEntry(self.command, self.path, None, "reset-before"))
                self._reset()
                return
            self._forward(srv, body, fault)

    def _forward(self, srv: "_Server", body: tempfile.SpooledTemporaryFile, fault: str) -> None:
        conn = http.client.HTTPConnection(srv.upstream, timeout=120)
        logged = False
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if srv.bearer is not None:
                headers.pop("Authorization", None)
            headers["Content-Length"] = str(body.size)  # type: ignore[attr-defined]
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            while True:
                piece = body.read(1 << 20)
                if not piece:
                    break
                conn.send(piece)
            resp = conn.getresponse()
            if srv.rewrite is not None:
                data = resp.read()
                ans = Answer(self.command, self.path, resp.status,
                             [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], data,
                             request_headers=dict(self.headers.items()))
                new = srv.rewrite(ans)
                if new is not None:
                    srv.record(LogEntry(self.command, self.path, new.status, "rewritten"))
                    logged = True
                    self._answer(srv, new)
                    return
                resp = _Replay(resp, data)
            if fault == "reset":
                resp.read()
                srv.record(LogEntry(self.command, self.path, None, "reset-after"))
                self._reset()
                return
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            length = resp.getheader("Content-Length")
            if length is None:
                data = resp.read()
                out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
                out_headers.append(("Content-Length", str(len(data))))
                chunks: Iterable[bytes] = [data] if self.command != "HEAD" else []
                total = len(data)
            else:
                total = int(length)
                chunks = iter(lambda: resp.read(1 << 20), b"") if self.command != "HEAD" else []
            # log before answering: once the client has its answer, the entry is there
            truncate = fault == "truncate" and self.command != "HEAD" and total > 1
            srv.record(LogEntry(self.command, self.path, resp.status, "truncate" if truncate else ""))
            logged = True
            self.send_response(resp.status)
            for k, v in out_headers:
                self.send_header(k, v)
            self.end_headers()
            if truncate:
                cut = max(1, total // 2)
                sent = 0
                for piece in chunks:
                    take = piece[: cut - sent]
                    self.wfile.write(take)
                    sent += len(take)
                    if sent >= cut:
                        break
                self.wfile.flush()
                self._reset()
                return
            for piece in chunks:
                self.wfile.write(piece)
        except (OSError, http.client.HTTPException):
            if not logged:
                srv.record(LogEntry(self.command, self.path, None, "upstream-error"))
            self._reset()
        finally:
            conn.close()

    def _answer(self, srv: "_Server", ans: Answer) -> None:
        self.send_response(ans.status)
        for k, v in ans.without():
            self.send_header(k, v)
        if ans.length is not None:
            self.send_header("Content-Length", str(ans.length))
        elif isinstance(ans.body, (bytes, bytearray)):
            self.send_header("Content-Length", str(len(ans.body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        chunks = [ans.body] if isinstance(ans.body, (bytes, bytearray)) else ans.body
        for piece in chunks:
            self.wfile.write(piece)
            with srv.lock:
                srv.sent += len(piece)
        self.wfile.flush()

    # ---------------------------------------------------------------- bearer mode
    def _token(self, srv: "_Server", body: bytes) -> None:
        """GET with basic auth and ``scope`` query parameters, or POST of an OAuth2 form with
        ``grant_type=refresh_token`` whose refresh token must equal the password."""
        user, password = srv.bearer  # type: ignore[misc]
        if self.command == "POST":
            form = parse_qs(body.decode())
            ok = form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [password]
            scopes = " ".join(form.get("scope", [])).split(" ")
        else:
            want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            ok = self.headers.get("Authorization") == want
            scopes = parse_qs(urlsplit(self.path).query).get("scope", [])
        if not ok:
            self._send(401, b'{"details":"bad credentials"}', [("Content-Type", "application/json")])
            return
        granted: set[tuple[str, str]] = set()
        for scope in scopes:
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) == 3 and parts[0] == "repository":
                    granted.update((parts[1], a) for a in parts[2].split(","))
        token = secrets.token_hex(16)
        with srv.lock:
            srv.tokens[token] = granted
            srv.token_requests += 1
            srv.token_scopes.append(frozenset(granted))
        srv.record(LogEntry(self.command, self.path, 200, ""))
        self._send(200, json.dumps({"token": token, "expires_in": 300}).encode(),
                   [("Content-Type", "application/json")])

    def _authorized(self, srv: "_Server") -> bool:
        needed: set[tuple[str, str]] = set()
        path = urlsplit(self.path)
        m = _REPO_PATH.match(path.path)
        scope = ""
        if m:
            repo = m.group(1)
            action = "pull" if self.command in ("GET", "HEAD") else "push"
            needed.add((repo, action))
            scope = f"repository:{repo}:{'pull' if action == 'pull' else 'pull,push'}"
            src = parse_qs(path.query).get("from")
            if src:
                needed.add((src[0], "pull"))
        header = self.headers.get("Authorization", "")
        with srv.lock:
            granted = srv.tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if granted is not None and needed <= granted:
            return True
        realm = f"http://{self.headers.get('Host')}/token"
        challenge = f'Bearer realm="{realm}",service="faultproxy"' + (f',scope="{scope}"' if scope else "")
        srv.record(LogEntry(self.command, self.path, 401, ""))
        self._send(401, json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
                   .encode(), [("Content-Type", "application/json"), ("WWW-Authenticate", challenge)])
        return False


class _Replay:
    """An http.client response whose body was already read (by a rewrite hook that passed)."""

    def __init__(self, resp: http.client.HTTPResponse, data: bytes) -> None:
        self.status = resp.status
        self._headers = [(k, v) for k, v in resp.getheaders() if k.lower() != "content-length"]
        self._headers.append(("Content-Length", str(len(data))))
        self._data = data

    def getheaders(self) -> list[tuple[str, str]]:
        return self._headers

    def getheader(self, name: str) -> str | None:
        return next((v for k, v in self._headers if k.lower() == name.lower()), None)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._data)
        out, self._data = self._data[:n], self._data[n:]
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, seed: int, rate: float, max_faults: int, kinds: tuple[str, ...],
                 bearer: tuple[str, str] | None,
                 rewrite: "Callable[[Answer], Answer | None] | None" = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rewrite = rewrite
        self.sent = 0  # body bytes written by rewritten answers
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.rate = rate
        self.max_faults = max_faults
        self.kinds = kinds
        self.bearer = bearer
        self.lock = threading.Lock()
        self.log: list[LogEntry] = []
        self.faults = 0
        self.tokens: dict[str, set[tuple[str, str]]] = {}
        self.token_requests = 0
        self.token_scopes: list[frozenset[tuple[str, str]]] = []  # what each token granted
        self.fault_methods: tuple[str, ...] | None = None
        self.throttle = 0.0  # bytes per second read of request bodies (0: as fast as they come)

    def handle_error(self, request: object, client_address: object) -> None:
        """Connection errors are part of the game here; stay quiet about them."""
        import sys
        if not isinstance(sys.exc_info()[1], (OSError, ConnectionError)):
            super().handle_error(request, client_address)

    def pick_fault(self) -> str:
        with self.lock:
            if self.faults >= self.max_faults or self.rng.random() >= self.rate:
                return ""
            self.faults += 1
            return self.rng.choice(self.kinds)

    def rng_choice(self, options: tuple) -> object:
        with self.lock:
            return self.rng.choice(options)

    def record(self, entry: LogEntry) -> None:
        with self.lock:
            self.log.append(entry)


class FaultProxy:
    """The proxy; use as a context manager. ``host`` is ``127.0.0.1:PORT``."""

    def __init__(self, upstream: str, *, seed: int = 0, rate: float = 0.0, max_faults: int = 10,
                 kinds: tuple[str, ...] = ("500", "reset", "truncate"),
                 bearer: tuple[str, str] | None = None, throttle: float = 0.0,
                 rewrite: Callable[[Answer], Answer | None] | None = None) -> None:
        self._server = _Server(upstream, seed, rate, max_faults, kinds, bearer, rewrite)
        self._server.throttle = throttle
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def log(self) -> list[LogEntry]:
        with self._server.lock:
            return list(self._server.log)

    @property
    def sent(self) -> int:
        """Body bytes rewritten answers managed to write before the client stopped reading."""
        return self._server.sent

    @property
    def faults(self) -> int:
        return self._server.faults

    @property
    def token_requests(self) -> int:
        return self._server.token_requests

    @property
    def token_scopes(self) -> list[frozenset[tuple[str, str]]]:
        """The (repository, action) set each issued token granted, in order."""
        return list(self._server.token_scopes)

    def clear_log(self) -> None:
        with self._server.lock:
            self._server.log.clear()

    def set_faults(self, rate: float, max_faults: int, methods: tuple[str, ...] | None = None) -> None:
        """Change the fault rate and budget (resetting the count); ``methods`` limits faults to
        those HTTP methods."""
        with self._server.lock:
            self._server.fault_methods = methods
            self._server.rate = rate
            self._server.max_faults = max_faults
            self._server.faults = 0

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
