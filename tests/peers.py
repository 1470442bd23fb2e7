"""Real reference builders, started isolated for tests and benchmarks: dockerd 20.10 (with its
built-in BuildKit), buildah and podman.

Nothing here touches the host's docker/containers configuration: every daemon, store and socket
lives under a work directory the caller owns, and is torn down (processes stopped, mounts
detached, files removed) by the context manager's exit.

    with Dockerd(Path(tempfile.mkdtemp())) as d:
        b = d.build(context, tag="x")            # PeerBuild(rc, log, image_id)
        d.docker("save", "-o", "x.tar", "x")     # CompletedProcess[str]; check=True raises

    with Buildah(Path(tempfile.mkdtemp())) as b:
        b.build(context, tag="x", fmt="docker")
        b.run("push", "x", "oci-archive:/tmp/x.tar")

Contracts:
- ``docker``/``run`` calls return a ``subprocess.CompletedProcess[str]`` (stdout/stderr decoded
  with errors="replace"); with ``check=True`` a non-zero exit raises ``PeerError`` showing argv,
  stdout and stderr. Binary data goes through files (``-o``, ``docker-archive:PATH``), never
  through stdout.
- ``build`` never raises for a failed build: look at ``PeerBuild.rc`` (both builders must fail
  on the same bad input).
- Teardown is best effort but thorough: SIGTERM then SIGKILL for the daemon and any process
  still running from the work directory (containerd, shims), ``umount -l`` of every mount
  below it (deepest first), then ``rm -rf``. It never signals a process it did not start (it
  matches processes by the work directory in their command line or executable's cwd).

This module imports no pytest and nothing from ``builder``: bench/ uses it too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

DOCKER = "/usr/bin/docker"  # the 20.10 client; /usr/local/bin/docker may be a newer CLI wanting buildx
DOCKERD = "/usr/sbin/dockerd"
BUILDAH = "buildah"
PODMAN = "podman"
RUNC = "runc"  # crun refuses the hybrid cgroup hierarchy of these hosts


class PeerError(AssertionError):
    """A peer command failed (argv, exit code, output in the message)."""


@dataclass(frozen=True)
class PeerBuild:
    """One peer build: exit code, combined log, and the image ID (``sha256:...``) when it built."""

    rc: int
    log: str
    image_id: str | None

    def ok(self) -> PeerBuild:
        """Self, or PeerError showing the log when the build failed."""
        if self.rc != 0:
            raise PeerError(f"peer build failed ({self.rc}):\n{self.log}")
        return self


@dataclass(frozen=True)
class PeerBase:
    """The busybox base image, built by pybuild once, as the same bytes in every builder."""

    tag: str            # the reference to use in FROM lines
    archive: Path       # pybuild's --output type=docker tar of it
    config_digest: str  # sha256:... of its config: the image ID docker shows


def environ_copy() -> dict[str, str]:
    """A copy of ``os.environ`` that a concurrent change cannot break: the differential runner
    copies it on worker threads while pytest sets and deletes ``PYTEST_CURRENT_TEST`` on the main
    thread (a key deleted mid-copy raised KeyError in one CI run: ``os.environ`` is read key by
    key), so a copy that met a change is made again."""
    for _ in range(100):
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):  # changed while it was being read
            continue
    return dict(os.environ)


def _run(argv: Sequence[str], env: Mapping[str, str] | None, input: bytes | None, check: bool,
         timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = environ_copy()
    full_env.update(env or {})
    p = subprocess.run(list(argv), check=False, input=input, capture_output=True, env=full_env, timeout=timeout,
                       cwd=cwd)
    res = subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode("utf-8", "replace"),
                                      p.stderr.decode("utf-8", "replace"))
    if check and res.returncode != 0:
        raise PeerError(f"{' '.join(argv)} exited {res.returncode}\nstdout:\n{res.stdout[-4000:]}\n"
                        f"stderr:\n{res.stderr[-4000:]}")
    return res


def _mounts_below(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def _processes_using(root: Path) -> list[int]:
    """PIDs (not ours) whose command line or cwd mentions ``root``: the daemons started there."""
    needle = str(root.resolve())
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if needle in cmd:
            pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _stop_pids(pids: Sequence[int], polls: int) -> None:
    """SIGTERM ``pids``, look ``polls`` times (0.1 s apart) for them to end, SIGKILL the rest."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for _ in range(polls):
        if not any(_alive(p) for p in pids):
            break
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def teardown_dir(root: Path) -> None:
    """Stop what still runs from ``root``, detach every mount below it, remove it."""
    if not root.exists():
        return
    _stop_pids(_processes_using(root), polls=100)
    for point in _mounts_below(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():  # a busy mount re-appeared below: one more pass
        for point in _mounts_below(root):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _build_args(dockerfile: Path | None, tag: str | None, build_args: Mapping[str, str],
                target: str | None) -> list[str]:
    argv: list[str] = []
    if dockerfile is not None:
        argv += ["-f", str(dockerfile)]
    if tag is not None:
        argv += ["-t", tag]
    for k, v in build_args.items():
        argv += ["--build-arg", f"{k}={v}"]
    if target is not None:
        argv += ["--target", target]
    return argv


class Dockerd:
    """An isolated dockerd (with its own containerd) under ``workdir``; a context manager.

    ``workdir`` should be short (unix socket paths are limited to 107 bytes): use
    ``tempfile.mkdtemp(prefix="pbd-")`` rather than a deep pytest directory.
    """

    def __init__(self, workdir: Path, start_polls: int = 450) -> None:
        self.workdir = workdir.resolve()
        self.socket = self.workdir / "docker.sock"
        self.start_polls = start_polls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for a docker client talking to this daemon."""
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1",
                "DOCKER_CONFIG": str(self.workdir / "client")}

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        """Start dockerd and wait until ``docker version`` answers; PeerError with its log if not."""
        w = self.workdir
        for d in ("data", "exec", "client"):
            (w / d).mkdir(parents=True, exist_ok=True)
        (w / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(w / "key.json")}))
        (w / "client" / "config.json").write_text("{}")
        argv = [DOCKERD, "--data-root", str(w / "data"), "--exec-root", str(w / "exec"),
                "-H", self.host, "--pidfile", str(w / "docker.pid"),
                "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
                "--bridge=none", "--storage-driver=overlay2", "--config-file", str(w / "daemon.json")]
        env = environ_copy()
        env.pop("DOCKER_HOST", None)
        with open(w / "dockerd.log", "wb") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        for _ in range(self.start_polls):  # 0.2 s apart: a start-up wait, not a timed assertion
            if self._proc.poll() is not None:
                raise PeerError(f"dockerd exited {self._proc.returncode}:\n{self.log()[-4000:]}")
            if self.socket.exists() and self.docker("version", check=False, timeout=20).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise PeerError(f"dockerd did not answer after {self.start_polls} polls:\n{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            return (self.workdir / "dockerd.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL), its containerd and shims; unmount; remove."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        teardown_dir(self.workdir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the 20.10 docker client against this daemon."""
        return _run([DOCKER, *args], self.env, input, check, timeout, cwd)

    def build(self, context: Path, dockerfile: Path | None = None, tag: str | None = None,
              build_args: Mapping[str, str] | None = None, target: str | None = None,
              extra: Sequence[str] = (), timeout: float = 600) -> PeerBuild:
        """``docker build --network none`` with BuildKit; never raises for a failed build."""
        iid = self.workdir / "client" / f"iid-{os.getpid()}-{time.monotonic_ns()}"
        argv = ["build", "--network", "none", "--progress", "plain", "--iidfile", str(iid),
                *_build_args(dockerfile, tag, build_args or {}, target), *extra, str(context)]
        res = self.docker(*argv, check=False, timeout=timeout)
        image_id = None
        if res.returncode == 0 and iid.exists():
            image_id = iid.read_text().strip()
        iid.unlink(missing_ok=True)
        return PeerBuild(res.returncode, res.stdout + res.stderr, image_id)

    def load(self, archive: Path) -> str:
        """``docker load -i archive``; its output (``Loaded image: ...`` lines)."""
        return self.docker("load", "-i", str(archive)).stdout

    def save(self, ref: str, dest: Path) -> Path:
        """``docker save -o dest ref``."""
        self.docker("save", "-o", str(dest), ref)
        return dest


class _ContainersTool:
    """Shared part of buildah and podman: a private --root/--runroot under ``workdir``."""

    program = ""

    def __init__(self, workdir: Path, storage_driver: str = "overlay") -> None:
        self.workdir = workdir.resolve()
        self.storage_driver = storage_driver
        for d in ("root", "runroot", "tmp"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)

    def global_args(self) -> list[str]:
        return ["--root", str(self.workdir / "root"), "--runroot", str(self.workdir / "runroot"),
                "--storage-driver", self.storage_driver]

    @property
    def env(self) -> dict[str, str]:
        # TMPDIR: the tools stage archives there; keep it inside the workdir.
        return {"TMPDIR": str(self.workdir / "tmp"),
                "CONTAINERS_REGISTRIES_CONF": str(self._registries_conf())}

    def _registries_conf(self) -> Path:
        p = self.workdir / "registries.conf"
        if not p.exists():
            p.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        return p

    def run(self, *args: str, input: bytes | None = None, check: bool = True,
            timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the tool with the private storage options."""
        return _run([self.program, *self.global_args(), *args], self.env, input, check, timeout, cwd)

    def close(self) -> None:
        """Detach every mount below the workdir and remove it."""
        teardown_dir(self.workdir)


class Buildah(_ContainersTool):
    """buildah with a private store under ``workdir``; RUN goes through runc with no network."""

    program = BUILDAH

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.run("rm", "--all", check=False, timeout=120)
        self.close()

    def build(self, context: Path, dockerfile: Path | None = None, tag: str | None = None,
              build_args: Mapping[str, str] | None = None, target: str | None = None,
              extra: Sequence[str] = (), fmt: str = "docker", timeout: float = 600) -> PeerBuild:
        """``buildah build --runtime runc --network none --format FMT``; never raises for a failed
        build. ``fmt="docker"`` keeps Healthcheck, Shell and OnBuild, which OCI configs lack."""
        iid = self.workdir / "tmp" / f"iid-{os.getpid()}-{time.monotonic_ns()}"
        argv = ["build", "--runtime", RUNC, "--network", "none", "--format", fmt, "--iidfile", str(iid),
                *_build_args(dockerfile, tag, build_args or {}, target), *extra, str(context)]
        res = self.run(*argv, check=False, timeout=timeout)
        image_id = None
        if res.returncode == 0 and iid.exists():
            image_id = iid.read_text().strip()
            if not image_id.startswith("sha256:"):
                image_id = "sha256:" + image_id
        iid.unlink(missing_ok=True)
        return PeerBuild(res.returncode, res.stdout + res.stderr, image_id)


class Podman(_ContainersTool):
    """podman with a private store; containers run with runc, cgroupfs, no network, file events."""

    program = PODMAN

    def global_args(self) -> list[str]:
        return [*super().global_args(), "--runtime", RUNC, "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--tmpdir", str(self.workdir / "libpod-tmp")]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.run("rm", "--all", "--force", check=False, timeout=120)
        self.close()

    def run_container(self, image: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman run --rm --network none`` of ``image`` with modest RLIMIT_NOFILE and
        RLIMIT_NPROC (1024, 4096): podman asks for more for root than the hard limits of some
        hosts' conmon allow, and runc then fails with EPERM; lowering is always allowed."""
        limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
        return self.run("run", "--rm", "--network", "none", *limits, image, *command, check=check)
