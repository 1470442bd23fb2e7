"""Multi-platform test set-up: Debian's arm64 busybox-static, QEMU's aarch64 binfmt_misc handler
and a two-platform (linux/amd64 + linux/arm64) busybox base index.

Contracts:
- ``arm64_busybox()`` is the path of a static arm64 busybox: ``$PYBUILD_ARM64_BUSYBOX`` (CI's
  .ci/run extracts Debian's package and exports it), else one extracted here once per session
  from ``apt-get download busybox-static:arm64`` (adds the arm64 dpkg architecture; needs root
  and the Debian archive). AssertionError when neither works.
- ``ensure_aarch64_handler()`` mounts binfmt_misc when it is not mounted and registers the line
  of ``/usr/lib/binfmt.d/qemu-aarch64.conf`` (qemu-user-static, flag F) when no handler for
  aarch64 exists. It never unregisters anything: registrations are machine-global and other
  tests (or processes) may rely on them. Tests of "no handler" use an architecture nobody
  registers here (s390x), checked by ``assert_no_handler``.
- ``multi_store(tmp_path)`` is a ``cp -a`` copy of a session template store holding
  ``localhost/busybox:latest`` (amd64 only) and ``localhost/busybox-multi:latest`` (an index:
  linux/amd64 and linux/arm64, made by ``pybuild --platform linux/amd64,linux/arm64`` from the
  two busybox builds of testdata/demo/make-base.sh).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from runutil import BUSYBOX, MAKE_BASE, build, template_store

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_AARCH64_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
MULTI_TAG = "localhost/busybox-multi:latest"
PLATFORMS = "linux/amd64,linux/arm64"
NO_HANDLER_PLATFORM = "linux/s390x"  # no test here registers s390x


@functools.lru_cache(maxsize=1)
def arm64_busybox() -> Path:
    """A static arm64 busybox (see the module contract)."""
    env = os.environ.get("PYBUILD_ARM64_BUSYBOX")
    if env:
        path = Path(env)
        assert path.is_file(), f"PYBUILD_ARM64_BUSYBOX={env} does not exist"
        return path
    work = Path(tempfile.mkdtemp(prefix="pybuild-arm64-busybox-"))
    atexit.register(shutil.rmtree, work, True)
    if "arm64" not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                     text=True, check=True).stdout.split():
        subprocess.run(["dpkg", "--add-architecture", "arm64"], check=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    got = subprocess.run(["apt-get", "download", "busybox-static:arm64"], cwd=work, capture_output=True, text=True)
    if got.returncode != 0:  # lists not fetched for arm64 yet
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "download", "busybox-static:arm64"], cwd=work, check=True, capture_output=True)
    deb = next(work.glob("busybox-static_*_arm64.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
    path = work / "x" / "bin" / "busybox"
    assert path.is_file(), f"{deb} holds no bin/busybox"
    return path


def aarch64_handler() -> Path | None:
    """The registered binfmt_misc entry whose magic is aarch64's ELF header, if any."""
    if not (BINFMT / "status").exists():
        return None
    for entry in sorted(BINFMT.iterdir()):
        if entry.name in ("status", "register"):
            continue
        try:
            text = entry.read_text()
        except OSError:
            continue
        if "magic 7f454c460201010000000000000000000200b700" in text:
            return entry
    return None


def ensure_aarch64_handler() -> Path:
    """Mount binfmt_misc and register QEMU's aarch64 handler when needed; returns its entry."""
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    entry = aarch64_handler()
    if entry is None:
        line = QEMU_AARCH64_CONF.read_text().strip()
        try:
            (BINFMT / "register").write_text(line)
        except FileExistsError:  # registered concurrently by another process
            pass
        entry = aarch64_handler()
    assert entry is not None, "could not register the aarch64 binfmt_misc handler"
    assert "enabled" in entry.read_text().splitlines()[0], f"{entry} is disabled"
    return entry


def assert_no_handler(platform: str = NO_HANDLER_PLATFORM) -> None:
    """Fail the test's premise loudly if someone registered a handler for ``platform``."""
    from builder.sandbox.binfmt import emulation_problem

    arch = platform.split("/")[1]
    assert emulation_problem(arch, "amd64") is not None, f"a binfmt_misc handler for {arch} is registered"


def _multi_context(dest: Path) -> Path:
    """A context whose Dockerfile copies ``rootfs-$TARGETARCH/`` (amd64 and arm64 busybox)."""
    dest.mkdir(parents=True)
    for arch, binary in (("amd64", BUSYBOX), ("arm64", arm64_busybox())):
        env = dict(os.environ, BUSYBOX=str(binary), APPLETS_FROM=str(BUSYBOX))
        subprocess.run(["sh", str(MAKE_BASE), str(dest / arch)], check=True, capture_output=True, env=env)
        (dest / arch / "rootfs").rename(dest / f"rootfs-{arch}")
        shutil.rmtree(dest / arch)
    (dest / "Dockerfile").write_text('FROM scratch\nARG TARGETARCH\nCOPY rootfs-$TARGETARCH/ /\nCMD ["/bin/sh"]\n')
    return dest


@functools.lru_cache(maxsize=1)
def multi_template() -> Path:
    """The template store of :func:`multi_store`, built once per session."""
    work = Path(tempfile.mkdtemp(prefix="pybuild-multi-"))
    atexit.register(shutil.rmtree, work, True)
    root = work / "store"
    subprocess.run(["cp", "-a", str(template_store()), str(root)], check=True)
    build(_multi_context(work / "ctx"), root, "--platform", PLATFORMS, tag=MULTI_TAG).ok()
    return root


def multi_store(tmp_path: Path) -> Path:
    """A private copy of :func:`multi_template` at ``tmp_path/store``."""
    dest = tmp_path / "store"
    tmp_path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(multi_template()), str(dest)], check=True)
    return dest
