"""A real Debian build (issue 4, "must show" 3): a bookworm minbase rootfs made by debootstrap,
imported with ``FROM scratch`` + ``COPY rootfs/ /``, then apt-get, useradd, USER and python3
inside RUN steps.

The rootfs is cached under /tmp/pybuild-debootstrap-cache/bookworm-minbase-YYYYMMDD (UTC date;
made in a ``.partial`` dir and renamed when complete, older days removed), so reruns on the same
day skip debootstrap. The mirror is the one /etc/apt sources name for Debian (a local mirror or
proxy when configured), else http://deb.debian.org/debian.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runutil import assert_clean, build, make_context

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.overlay]

CACHE = Path("/tmp/pybuild-debootstrap-cache")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"


def debian_mirror() -> str:
    """The Debian (not -security) mirror URL of this host's apt sources, else Debian's own."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.suffix in (".list", ".sources") and p.is_file():
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        # one-line format: deb [opts] URL SUITE COMPONENTS
        for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            url, suite = m.group(1), m.group(2)
            if suite == SUITE and "security" not in url:
                return url.rstrip("/")
        # deb822 format: a stanza with URIs: and Suites: naming bookworm
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1).rstrip("/")
    return DEFAULT_MIRROR


def bookworm_rootfs() -> Path:
    """The cached minbase rootfs of today (UTC), made with debootstrap when missing."""
    key = f"{SUITE}-minbase-{time.strftime('%Y%m%d', time.gmtime())}"
    final = CACHE / key
    if (final / "rootfs" / "etc" / "debian_version").is_file():
        return final / "rootfs"
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed (apt-get install debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{SUITE}-minbase-*"):
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    partial = CACHE / (key + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "rootfs").mkdir(parents=True)
    p = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(partial / "rootfs"), debian_mirror()],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"debootstrap failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    partial.rename(final)
    return final / "rootfs"


def test_debian_build_with_apt_useradd_and_user(tmp_path: Path) -> None:
    rootfs = bookworm_rootfs()
    root = tmp_path / "store"
    # the cache dir is the import context (no 200 MB copy); the Dockerfile lives in tmp_path
    importer = make_context(tmp_path / "import", "FROM scratch\nCOPY rootfs/ /\nCMD [\"/bin/bash\"]\n")
    build(rootfs.parent, root, "-f", str(importer / "Dockerfile"), tag="localhost/bookworm:minbase").ok()

    app = make_context(tmp_path / "app", (
        "FROM localhost/bookworm:minbase\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3-minimal && useradd -m app\n"
        "USER app\n"
        "RUN python3 -c \"import os; print(os.getuid())\" > /home/app/uid\n"))
    out = tmp_path / "out"
    res = build(app, root, "--output", f"type=local,dest={out}", tag="localhost/debian-app:latest")
    res.ok()
    passwd = {line.split(":")[0]: line.split(":") for line in (out / "etc" / "passwd").read_text().splitlines()}
    assert "app" in passwd, "useradd did not run"
    assert passwd["app"][2] == "1000"
    assert (out / "home" / "app" / "uid").read_text().strip() == passwd["app"][2]
    assert (out / "home" / "app").stat().st_uid == 1000
    assert (out / "usr" / "bin" / "python3").exists()
    assert "Setting up python3-minimal" in res.err, "apt-get output was not streamed"
    assert_clean(root)
