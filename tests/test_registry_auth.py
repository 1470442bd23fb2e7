"""Registry auth and client pieces that need no registry: challenges, config files, credential
helpers, URL redaction, platform resolution, references, and credential stripping on redirects."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.errors import ReferenceError_, RegistryError
from builder.registry._reference import parse_image_ref
from builder.registry.auth import (Credentials, auth_files, erase_credentials, lookup_credentials,
                                   parse_www_authenticate, store_credentials)
from builder.registry.client import RegistryClient, is_insecure, redact_url, retry_after_seconds
from builder.registry.source import PlatformSpec, resolve_platform


@pytest.fixture()
def config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "docker"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return d


# ------------------------------------------------------------------ challenges

def test_parse_bearer_and_basic_challenges() -> None:
    chs = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push", Basic realm="x \\"y\\""')
    assert [c.scheme for c in chs] == ["bearer", "basic"]
    assert chs[0].get("realm") == "https://auth.docker.io/token"
    assert chs[0].get("service") == "registry.docker.io"
    assert chs[0].get("scope") == "repository:samalba/my-app:pull,push"
    assert chs[1].get("realm") == 'x "y"'
    assert parse_www_authenticate('basic REALM=plain') [0].get("realm") == "plain"
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate(",,, =") == []


# ------------------------------------------------------------------ config files

def test_lookup_auths_key_spellings(config_env: Path) -> None:
    auth = base64.b64encode(b"u1:p:w").decode()
    (config_env / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": auth},
        "http://reg.example:5000/v2/": {"username": "u2", "password": "p2"},
        "tok.example": {"identitytoken": "refresh-me"},
    }}))
    assert lookup_credentials("docker.io") == Credentials("u1", "p:w")
    assert lookup_credentials("registry-1.docker.io") == Credentials("u1", "p:w")
    assert lookup_credentials("reg.example:5000") == Credentials("u2", "p2")
    assert lookup_credentials("tok.example").identity_token == "refresh-me"  # type: ignore[union-attr]
    assert lookup_credentials("other.example") is None
    assert "p:w" not in repr(lookup_credentials("docker.io"))


def test_registry_auth_file_comes_first(config_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (config_env / "config.json").write_text(json.dumps({"auths": {"r.example": {"username": "docker", "password": "x"}}}))
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {"r.example": {"auth": base64.b64encode(b"podman:y").decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
    assert auth_files()[0] == authfile
    assert lookup_credentials("r.example") == Credentials("podman", "y")
    authfile.write_text("{}")
    assert lookup_credentials("r.example") == Credentials("docker", "x")


def test_store_and_erase_write_0600(config_env: Path) -> None:
    (config_env / "config.json").write_text(json.dumps({"auths": {"keep.example": {"auth": "a2VlcDpt"}},
                                                        "psFormat": "table"}))
    path = store_credentials("new.example:5000", Credentials("me", "pw"))
    assert path == config_env / "config.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["psFormat"] == "table" and "keep.example" in data["auths"]
    assert base64.b64decode(data["auths"]["new.example:5000"]["auth"]) == b"me:pw"
    store_credentials("docker.io", Credentials("hub", "h"))
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]
    assert erase_credentials("new.example:5000") is True
    assert erase_credentials("new.example:5000") is False
    assert lookup_credentials("new.example:5000") is None
    assert lookup_credentials("keep.example") == Credentials("keep", "m")


def test_broken_config_is_a_registry_error(config_env: Path) -> None:
    (config_env / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="config.json"):
        lookup_credentials("x.example")


def test_credential_helper(config_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    store = tmp_path / "helper-store.json"
    helper = bindir / "docker-credential-pbtest"
    helper.write_text(f"""#!/usr/bin/env python3
import json, sys
path = {str(store)!r}
try:
    db = json.load(open(path))
except FileNotFoundError:
    db = {{}}
action = sys.argv[1]
data = sys.stdin.read()
if action == "get":
    if data.strip() not in db:
        print("credentials not found in native keychain"); sys.exit(1)
    user, secret = db[data.strip()]
    print(json.dumps({{"ServerURL": data.strip(), "Username": user, "Secret": secret}}))
elif action == "store":
    req = json.loads(data); db[req["ServerURL"]] = [req["Username"], req["Secret"]]
    json.dump(db, open(path, "w"))
elif action == "erase":
    db.pop(data.strip(), None); json.dump(db, open(path, "w"))
""")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    (config_env / "config.json").write_text(json.dumps({"credHelpers": {"helped.example": "pbtest"},
                                                        "auths": {"helped.example": {"auth": "b2xkOm9sZA=="}}}))
    assert lookup_credentials("helped.example") == Credentials("old", "old")  # helper has nothing yet
    assert store_credentials("helped.example", Credentials("hu", "hp")) is None
    assert json.loads(store.read_text()) == {"helped.example": ["hu", "hp"]}
    assert lookup_credentials("helped.example") == Credentials("hu", "hp")
    store_credentials("helped.example", Credentials(identity_token="rt"))
    assert lookup_credentials("helped.example") == Credentials(identity_token="rt")
    assert erase_credentials("helped.example") is True
    assert json.loads(store.read_text()) == {}


# ------------------------------------------------------------------ client pieces

def test_redact_url() -> None:
    assert redact_url("https://u:p@h.example/v2/x?X-Amz-Signature=abc&digest=sha256:1") == \
        "https://h.example/v2/x?X-Amz-Signature=REDACTED&digest=sha256:1"
    assert redact_url("https://h/token?access_token=zzz") == "https://h/token?access_token=REDACTED"


def test_insecure_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYBUILD_INSECURE_REGISTRIES", raising=False)
    assert is_insecure("localhost:5000") and is_insecure("127.0.0.1:5000") and is_insecure("[::1]:5000")
    assert not is_insecure("registry.example") and not is_insecure("localhost.example:5000")
    assert is_insecure("registry.example", ["registry.example"])
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", "a.example:5000, b.example")
    assert is_insecure("a.example:5000") and is_insecure("b.example:443")
    assert RegistryClient("registry.example", anonymous=True).base_url == "https://registry.example"
    assert RegistryClient("localhost:5000", anonymous=True).base_url == "http://localhost:5000"


def test_certs_dir_ca(tmp_path: Path) -> None:
    host_dir = tmp_path / "reg.example:5000"
    host_dir.mkdir()
    (host_dir / "ca.crt").write_text("dummy")
    client = RegistryClient("reg.example:5000", certs_dir=tmp_path, anonymous=True)
    assert client._verify == str(host_dir / "ca.crt")
    assert RegistryClient("other.example", certs_dir=tmp_path, anonymous=True)._verify is True


def test_parse_image_ref() -> None:
    r = parse_image_ref("ubuntu")
    assert (r.registry, r.repository, r.reference, r.api_host) == ("docker.io", "library/ubuntu", "latest",
                                                                    "registry-1.docker.io")
    r = parse_image_ref("localhost:5000/a/b:v1@sha256:" + "a" * 64)
    assert (r.registry, r.repository, r.tag, r.reference) == ("localhost:5000", "a/b", "v1", "sha256:" + "a" * 64)
    assert parse_image_ref("127.0.0.1:1234/x").registry == "127.0.0.1:1234"
    for bad in ("", "library/UPPER", "x:bad tag", "x@sha256:zz"):
        with pytest.raises(ReferenceError_):
            parse_image_ref(bad)


def _index(*platforms: dict, media_type: str = "application/vnd.oci.image.manifest.v1+json") -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": media_type, "digest": "sha256:" + f"{i:064x}", "size": 10 + i, "platform": p}
        for i, p in enumerate(platforms)]}).encode()


def test_resolve_platform() -> None:
    idx = _index({"os": "linux", "architecture": "amd64"},
                 {"os": "linux", "architecture": "arm", "variant": "v6"},
                 {"os": "linux", "architecture": "arm", "variant": "v7"},
                 {"os": "linux", "architecture": "arm64", "variant": "v8"},
                 {"os": "unknown", "architecture": "unknown"})
    assert resolve_platform(idx, "linux/amd64").size == 10
    assert resolve_platform(idx, "linux/arm").size == 12            # default arm variant v7
    assert resolve_platform(idx, "linux/arm/v6").size == 11
    assert resolve_platform(idx, "linux/aarch64").size == 13
    assert resolve_platform(idx, PlatformSpec("linux", "arm64", "v8")).digest == Digest.parse("sha256:" + f"{3:064x}")
    with pytest.raises(RegistryError, match="linux/ppc64le.*available: linux/amd64, linux/arm/v6"):
        resolve_platform(idx, "linux/ppc64le")
    with pytest.raises(RegistryError, match="invalid platform"):
        resolve_platform(idx, "linux")
    with pytest.raises(RegistryError, match="not valid JSON"):
        resolve_platform(b"[]", "linux/amd64")
    # nested indexes and attestations never match as images
    assert pytest.raises(RegistryError, resolve_platform,
                         _index({"os": "linux", "architecture": "amd64"}, media_type="application/vnd.oci.image.index.v1+json"),
                         "linux/amd64")


class _Recorder(BaseHTTPRequestHandler):
    """A registry stand-in that redirects blob GETs to a storage server on another host:port."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None]] = []
    storage = ""
    blob = b"redirected blob bytes"

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/v2/" or self.path.startswith("/v2/app/blobs/"):
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"u:p").decode():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith("/v2/app/blobs/"):
                self.send_response(307)
                self.send_header("Location", f"http://{self.storage}/bucket/blob?X-Amz-Signature=s")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if self.path.startswith("/bucket/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.blob)))
            self.end_headers()
            self.wfile.write(self.blob)
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_credentials_not_sent_after_redirect_to_other_host() -> None:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Recorder) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        registry, storage = (f"127.0.0.1:{s.server_address[1]}" for s in servers)
        _Recorder.storage = storage
        _Recorder.seen = []
        digest = Digest.of_bytes(_Recorder.blob)
        client = RegistryClient(registry, credentials=Credentials("u", "p"))
        reader = client.open_blob("app", digest)
        assert reader.read() == _Recorder.blob
        reader.close()
        client.close()
        blob_gets = [(p, a) for p, a in _Recorder.seen if p.startswith("/v2/app/blobs/")]
        assert blob_gets[-1][1] is not None               # the registry got credentials
        storage_gets = [(p, a) for p, a in _Recorder.seen if p.startswith("/bucket/")]
        assert storage_gets and all(a is None for _, a in storage_gets)  # storage never did
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_netrc_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """requests would add ~/.netrc credentials by itself, also to a redirect's storage host."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("default login leaked password leaked\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Recorder) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        registry, storage = (f"127.0.0.1:{s.server_address[1]}" for s in servers)
        _Recorder.storage = storage
        _Recorder.seen = []
        client = RegistryClient(registry, credentials=Credentials("u", "p"))
        with client.open_blob("app", Digest.of_bytes(_Recorder.blob)) as reader:
            assert reader.read() == _Recorder.blob
        client.close()
        assert all(a is None for p, a in _Recorder.seen if p.startswith("/bucket/"))
        assert all("bGVha2Vk" not in (a or "") for _, a in _Recorder.seen)  # base64("leaked")
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert retry_after_seconds("7", now=now) == 7.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == 30.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0  # already past
    for unreadable in (None, "", "soon", "-3", "1.5"):
        assert retry_after_seconds(unreadable, now=now) is None
