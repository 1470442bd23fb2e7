"""Fixtures that run Debian's real ``docker-registry`` (distribution v2) on 127.0.0.1.

Import the fixtures into a test module (``from registry_fixture import registry, ...``).
Each registry gets a temporary storage directory, a free port, ``delete`` enabled, and is
terminated at the end of the module.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
AUTH_USER, AUTH_PASS = "alice", "s3cret-pass"


@dataclass(frozen=True)
class RunningRegistry:
    host: str          # "127.0.0.1:PORT"
    root: Path         # storage root directory
    log: Path          # registry's stderr/stdout

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(host: str, proc: subprocess.Popen, log: Path, scheme: str = "http", attempts: int = 400) -> None:
    """Poll ``/v2/`` until the registry answers (up to ``attempts`` tries 50 ms apart); raise
    with its log if it exits or never answers. A start-up wait, not a measurement."""
    import requests
    import urllib3
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    for _ in range(attempts):
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            r = requests.get(f"{scheme}://{host}/v2/", timeout=1, verify=False)
            if r.status_code in (200, 401):
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer on {host}: {log.read_text()[-2000:]}")


def start_registry(workdir: Path, htpasswd: Path | None = None,
                   tls: tuple[Path, Path] | None = None) -> tuple[RunningRegistry, subprocess.Popen]:
    """Start a registry serving from ``workdir`` (https with ``tls=(cert, key)``); the caller
    terminates the process."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    root.mkdir(exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: pybuild-test\n    path: {htpasswd}\n"
    tls_conf = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        f"http:\n  addr: {host}\n  secret: pybuild-test-secret\n" + tls_conf
        + auth
    )
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    try:
        _wait_ready(host, proc, log, "https" if tls else "http")
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
    return RunningRegistry(host, root, log), proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def make_htpasswd(path: Path, user: str, password: str) -> Path:
    """Write a bcrypt htpasswd file with ``htpasswd -Bbn`` (apache2-utils)."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RuntimeError("htpasswd (apache2-utils) is needed for the auth registry fixture")
    out = subprocess.run([tool, "-Bbn", user, password], check=True, capture_output=True, text=True).stdout
    path.write_text(out.strip() + "\n")
    return path


def make_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost, made with openssl."""
    cert, key = workdir / "registry.crt", workdir / "registry.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """An open registry: ``RunningRegistry(host="127.0.0.1:PORT", ...)``."""
    reg, proc = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry requiring basic auth for AUTH_USER / AUTH_PASS."""
    work = tmp_path_factory.mktemp("auth-registry")
    htpasswd = make_htpasswd(work / "htpasswd", AUTH_USER, AUTH_PASS)
    reg, proc = start_registry(work, htpasswd)
    try:
        yield reg
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningRegistry, Path]]:
    """An https registry with a self-signed certificate: ``(registry, cert_path)``."""
    work = tmp_path_factory.mktemp("tls-registry")
    cert, key = make_cert(work)
    reg, proc = start_registry(work, tls=(cert, key))
    try:
        yield reg, cert
    finally:
        stop(proc)
