"""Registry credentials and the HTTP authentication dance.

Two jobs, kept apart:

* **Stored credentials**: read from ``$REGISTRY_AUTH_FILE`` (podman/skopeo's auth.json), then
  ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``; per-registry ``credHelpers``
  and the global ``credsStore`` call ``docker-credential-<name>`` when it is installed.
  :func:`store_credentials` / :func:`erase_credentials` write the first of those files (mode
  0600, replaced atomically) or the configured helper.
* **Challenges and tokens**: :func:`parse_www_authenticate` reads ``WWW-Authenticate``;
  :class:`Authenticator` turns a challenge plus credentials into an ``Authorization`` header:
  Bearer tokens fetched from the challenge's realm (service and scopes as query parameters,
  basic auth or an OAuth2 refresh token for the token server), cached per scope set until they
  expire, or plain Basic auth when the registry asks for it.

Errors are :class:`builder.errors.RegistryError`; they name the registry or the config file and
never contain a secret.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import urlsplit

from ..errors import RegistryError

if TYPE_CHECKING:  # pragma: no cover
    import requests

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT = 30.0
_TOKEN_MIN_LIFETIME = 60  # seconds, the distribution spec's default when expires_in is absent


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password, or an identity (refresh) token. ``repr`` hides the secrets."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


# ---------------------------------------------------------------------------- config files

def normalize_registry(name: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/x`` -> ``h:5000``."""
    if "://" in name:
        name = urlsplit(name).netloc or name
    name = name.split("/", 1)[0].lower()
    return "docker.io" if name in _HUB_NAMES else name


def _config_key(registry: str) -> str:
    """The key Docker writes in ``auths`` for ``registry``."""
    reg = normalize_registry(registry)
    return DOCKER_HUB_KEY if reg == "docker.io" else reg


def auth_files() -> list[Path]:
    """The files searched for credentials, in order; the first one is where login writes."""
    files: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    docker_dir = os.environ.get("DOCKER_CONFIG")
    files.append(Path(docker_dir) / "config.json" if docker_dir else Path.home() / ".docker" / "config.json")
    return files


def _load(path: Path) -> dict[str, Any]:
    """The parsed config file, ``{}`` when it does not exist; RegistryError when unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError(f"cannot read registry credentials from {path}: {e}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"cannot read registry credentials from {path}: not a JSON object")
    return data


def _decode_entry(entry: Any, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{path}: the auth entry for {key} is not base64 of user:password") from None
    creds = Credentials(user, password, str(entry.get("identitytoken") or ""))
    return None if creds.empty else creds


def _helper_binary(name: str) -> str | None:
    return shutil.which(f"docker-credential-{name}")


def _run_helper(name: str, action: str, payload: str) -> subprocess.CompletedProcess[str]:
    binary = _helper_binary(name)
    if binary is None:
        raise RegistryError(f"credential helper docker-credential-{name} is not installed")
    try:
        return subprocess.run([binary, action], input=payload, capture_output=True, text=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RegistryError(f"credential helper docker-credential-{name} {action} failed: {e}") from None


def helper_get(name: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<name> get``; None when it has nothing for ``registry``."""
    proc = _run_helper(name, "get", _config_key(registry))
    if proc.returncode != 0:
        if "not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise RegistryError(f"credential helper docker-credential-{name} get failed for "
                            f"{normalize_registry(registry)}: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (ValueError, AttributeError):
        raise RegistryError(f"credential helper docker-credential-{name} returned invalid JSON") from None
    if user == "<token>":
        return Credentials(identity_token=secret)
    creds = Credentials(user, secret)
    return None if creds.empty else creds


def lookup_credentials(registry: str, files: Iterable[Path] | None = None) -> Credentials | None:
    """Credentials stored for ``registry`` (host[:port] or a URL), or None.

    Per file: ``credHelpers[registry]``, then ``auths`` (any key spelling that normalises to the
    registry), then ``credsStore``. Helpers that are not installed are skipped.
    """
    want = normalize_registry(registry)
    for path in (auth_files() if files is None else files):
        cfg = _load(path)
        helpers = cfg.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for key, name in helpers.items():
                if normalize_registry(key) == want and _helper_binary(str(name)):
                    creds = helper_get(str(name), registry)
                    if creds is not None:
                        return creds
        auths = cfg.get("auths") or {}
        if isinstance(auths, dict):
            for key, entry in auths.items():
                if normalize_registry(key) == want:
                    creds = _decode_entry(entry, path, key)
                    if creds is not None:
                        return creds
        store = cfg.get("credsStore")
        if isinstance(store, str) and store and _helper_binary(store):
            creds = helper_get(store, registry)
            if creds is not None:
                return creds
    return None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` with mode 0600 via a temp file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _helper_for(cfg: dict[str, Any], registry: str) -> str | None:
    want = normalize_registry(registry)
    helpers = cfg.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if normalize_registry(key) == want:
                return str(name)
    store = cfg.get("credsStore")
    return store if isinstance(store, str) and store else None


def store_credentials(registry: str, creds: Credentials, path: Path | None = None) -> Path | None:
    """Save ``creds`` for ``registry``: in the configured helper when one is installed, else in
    the config file (mode 0600). Returns the file written, or None when a helper stored them."""
    path = path or auth_files()[0]
    cfg = _load(path)
    helper = _helper_for(cfg, registry)
    key = _config_key(registry)
    if helper and _helper_binary(helper):
        payload = json.dumps({"ServerURL": key,
                              "Username": "<token>" if creds.identity_token else creds.username,
                              "Secret": creds.identity_token or creds.password})
        proc = _run_helper(helper, "store", payload)
        if proc.returncode != 0:
            raise RegistryError(f"credential helper docker-credential-{helper} store failed for "
                                f"{normalize_registry(registry)}: {proc.stderr.strip()}")
        auths = cfg.setdefault("auths", {})
        auths.setdefault(key, {})
        _write_atomic(path, cfg)
        return None
    auths = cfg.get("auths")
    if not isinstance(auths, dict):
        auths = cfg["auths"] = {}
    for old in [k for k in auths if normalize_registry(k) == normalize_registry(registry)]:
        del auths[old]
    entry: dict[str, str] = {}
    if creds.username or creds.password:
        entry["auth"] = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    if creds.identity_token:
        entry["identitytoken"] = creds.identity_token
    auths[key] = entry
    _write_atomic(path, cfg)
    return path


def erase_credentials(registry: str, path: Path | None = None) -> bool:
    """Forget the credentials of ``registry``; True when something was removed."""
    path = path or auth_files()[0]
    cfg = _load(path)
    removed = False
    helper = _helper_for(cfg, registry)
    if helper and _helper_binary(helper):
        proc = _run_helper(helper, "erase", _config_key(registry))
        removed = proc.returncode == 0
    auths = cfg.get("auths")
    if isinstance(auths, dict):
        for old in [k for k in auths if normalize_registry(k) == normalize_registry(registry)]:
            del auths[old]
            removed = True
        if removed:
            _write_atomic(path, cfg)
    return removed


# ---------------------------------------------------------------------------- challenges

@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme in lower case, parameters with lower-case keys."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.params:
            if k == key:
                return v
        return default


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] not in " \t,=\"":
        j += 1
    return s[i:j], j


def _quoted(s: str, i: int) -> tuple[str, int]:
    """Parse a quoted-string starting at ``s[i] == '"'``; returns (value, index after)."""
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into challenges (RFC 7235, lenient).

    ``Bearer realm="https://a/token",service="reg",scope="repository:x:pull"`` gives one
    challenge; several challenges may share the header. Unparseable junk is skipped.
    """
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    scheme = ""
    params: list[tuple[str, str]] = []
    while i < n:
        i = _skip_ws(header, i)
        if i < n and header[i] == ",":
            i += 1
            continue
        word, j = _token(header, i)
        if not word:
            i = j + 1  # stray character
            continue
        k = _skip_ws(header, j)
        if k < n and header[k] == "=" and scheme:
            # an auth-param of the current challenge (token68 values end in '=' but have no
            # following value; they are not used by registries)
            k = _skip_ws(header, k + 1)
            if k < n and header[k] == '"':
                value, k = _quoted(header, k)
            else:
                value, k = _token(header, k)
            params.append((word.lower(), value))
            i = k
            continue
        if scheme:
            challenges.append(Challenge(scheme, tuple(params)))
        scheme, params = word.lower(), []
        i = j
    if scheme:
        challenges.append(Challenge(scheme, tuple(params)))
    return challenges


def repository_scope(repository: str, push: bool = False) -> str:
    """``repository:<name>:pull`` or ``repository:<name>:pull,push``."""
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


# ---------------------------------------------------------------------------- authenticator

@dataclass(slots=True)
class _Token:
    """A bearer token and when (``time.monotonic()``) it stops being used."""

    value: str
    expires: float  # time.monotonic()


class Authenticator:
    """Builds ``Authorization`` headers for one registry; thread-safe.

    The client calls :meth:`header` before each request to the registry host (never to another
    host) and :meth:`on_unauthorized` on a 401; when that returns True the request is worth one
    more try. Tokens are cached per (realm, service, scopes) until ``expires_in`` runs out.
    Token requests go through ``session`` with ``verify``/``cert`` as given.
    """

    def __init__(self, registry: str, credentials: Credentials | None, session: "requests.Session",
                 *, verify: bool | str = True, cert: tuple[str, str] | None = None,
                 timeout: float | tuple[float, float] = (10.0, 60.0)) -> None:
        self.registry = registry
        self.credentials = credentials if credentials and not credentials.empty else None
        self._session = session
        self._verify = verify
        self._cert = cert
        self._timeout = timeout
        self._lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}

    @property
    def scheme(self) -> str | None:
        """``bearer``, ``basic`` or None before the registry challenged us."""
        return self._challenge.scheme if self._challenge else None

    def _basic(self) -> str | None:
        c = self.credentials
        if c is None or not (c.username or c.password):
            return None
        return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()

    def header(self, scopes: Iterable[str]) -> str | None:
        """The Authorization value for a request needing ``scopes``, or None (anonymous).

        With a Bearer challenge known, fetches (or reuses) a token; raises RegistryError when
        the token server refuses."""
        with self._lock:
            ch = self._challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self._basic()
        if ch.scheme == "bearer":
            return "Bearer " + self._token(ch, tuple(sorted(set(scopes))), force=False)
        return None

    def on_unauthorized(self, www_authenticate: str | None, scopes: Iterable[str], sent: str | None) -> bool:
        """Learn from a 401. True when a retry could succeed with a new header.

        ``sent`` is the Authorization value that was refused (None if anonymous)."""
        challenges = parse_www_authenticate(www_authenticate or "")
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or \
            next((c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            return False
        with self._lock:
            self._challenge = chosen
        if chosen.scheme == "basic":
            basic = self._basic()
            return basic is not None and basic != sent
        wanted = set(scopes)
        extra = chosen.get("scope")
        if extra:
            wanted.update(extra.split(" "))
        key_scopes = tuple(sorted(wanted))
        if sent is not None and sent.startswith("Bearer "):
            # a token was refused: drop it and fetch a fresh one once
            token = self._token(chosen, key_scopes, force=True)
            return "Bearer " + token != sent
        self._token(chosen, key_scopes, force=False)
        return True

    def _token(self, ch: Challenge, scopes: tuple[str, ...], force: bool) -> str:
        realm, service = ch.get("realm"), ch.get("service")
        if not realm:
            raise RegistryError(f"registry {self.registry} sent a Bearer challenge without a realm")
        key = (realm, service, scopes)
        now = time.monotonic()
        with self._lock:
            tok = self._tokens.get(key)
            if tok is not None and not force and tok.expires > now:
                return tok.value
        value, lifetime = self._fetch_token(realm, service, scopes)
        with self._lock:
            self._tokens[key] = _Token(value, now + max(lifetime - 10, 5))
        return value

    def _fetch_token(self, realm: str, service: str, scopes: tuple[str, ...]) -> tuple[str, int]:
        import requests  # lazy

        creds = self.credentials
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        try:
            if creds is not None and creds.identity_token:
                form = dict(params[:1]) if service else {}
                form.update(grant_type="refresh_token", refresh_token=creds.identity_token,
                            client_id="pybuild", scope=" ".join(scopes))
                resp = self._session.post(realm, data=form, verify=self._verify, cert=self._cert,
                                          timeout=self._timeout)
            else:
                auth = (creds.username, creds.password) if creds is not None else None
                if creds is not None:
                    params.append(("account", creds.username))
                resp = self._session.get(realm, params=params, auth=auth, verify=self._verify,
                                         cert=self._cert, timeout=self._timeout)
        except requests.RequestException as e:
            raise RegistryError(f"cannot get a token for {self.registry} from {_strip_query(realm)}: "
                                f"{type(e).__name__}", method="GET", url=_strip_query(realm)) from None
        with resp:
            if resp.status_code in (401, 403):
                who = f"user {creds.username!r}" if creds and creds.username else "anonymous access"
                raise RegistryError(f"registry {self.registry} rejected the credentials ({who})",
                                    method=resp.request.method or "GET", url=_strip_query(realm),
                                    status=resp.status_code)
            if resp.status_code != 200:
                raise RegistryError(f"token server for {self.registry} failed",
                                    method=resp.request.method or "GET", url=_strip_query(realm),
                                    status=resp.status_code)
            try:
                body = json.loads(resp.content[:1 << 20])
                token = body.get("token") or body.get("access_token")
                lifetime = int(body.get("expires_in") or _TOKEN_MIN_LIFETIME)
            except (ValueError, AttributeError, TypeError):
                token, lifetime = None, 0
        if not token or not isinstance(token, str):
            raise RegistryError(f"token server for {self.registry} returned no token",
                                method="GET", url=_strip_query(realm), status=200)
        return token, max(lifetime, _TOKEN_MIN_LIFETIME)


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
