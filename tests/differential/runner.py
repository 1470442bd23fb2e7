"""Build one differential case with pybuild and with its peer, in parallel with other cases.

``Runner.result(case)`` returns the ``CaseResult`` of a case; the first call submits every case
to a small thread pool (pybuild runs as a child process with its own store copy; the peer is
the session's dockerd or buildah), so the peer builds and pybuild builds of many cases overlap.
Nothing here raises for a failed build: the test looks at the exit codes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildutil import http_server, run_cli_subprocess
from cases import Case, Prepared, prepare
from peers import Buildah, Dockerd, PeerError
from snapshot import Snapshot, read_docker_archive, read_oci, snapshot_from_inspect

TAG = "localhost/differential:latest"


@dataclass(frozen=True)
class Outcome:
    rc: int
    log: str
    snapshot: Snapshot | None


@dataclass(frozen=True)
class CaseResult:
    ours: Outcome
    peer: Outcome
    floor: float   # before both builds started: older mtimes came from the inputs


def _build_args(case: Case, prep: Prepared, *, peer: bool, ssh: str | None = None) -> list[str]:
    argv: list[str] = []
    if case.ssh:
        assert ssh is not None
        argv += ["--ssh", f"default={ssh}"]
    args = dict(case.args)
    if peer and case.epoch is not None:
        args.setdefault("SOURCE_DATE_EPOCH", str(case.epoch))
    for k, v in args.items():
        argv += ["--build-arg", f"{k}={v}"]
    if case.target:
        argv += ["--target", case.target]
    for sid, path in prep.secrets.items():
        argv += ["--secret", f"id={sid},src={path}"]
    return argv


def build_ours(case: Case, prep: Prepared, store: Path, ssh: str | None = None) -> Outcome:
    """``pybuild build`` of the case into ``store`` (a private copy of the busybox store)."""
    env = {"SOURCE_DATE_EPOCH": str(case.epoch)} if case.epoch is not None else {}
    argv = ["build", "-t", TAG, "-f", str(prep.dockerfile), "--network", "none", "--progress", "plain",
            *_build_args(case, prep, peer=False, ssh=ssh), str(prep.context)]
    r = run_cli_subprocess(argv, store, env=env, timeout=300)
    snap = read_oci(store, TAG) if r.rc == 0 else None
    return Outcome(r.rc, r.out + r.err, snap)


def build_dockerd(case: Case, prep: Prepared, dockerd: Dockerd, work: Path, ssh: str | None = None) -> Outcome:
    tag = f"differential-{case.name.lower()}:latest"
    # --no-cache: a step another case built already must not bring that build's mtimes
    b = dockerd.build(prep.context, dockerfile=prep.peer_dockerfile, tag=tag,
                      extra=["--no-cache", *_build_args(case, prep, peer=True, ssh=ssh)])
    if b.rc != 0:
        return Outcome(b.rc, b.log, None)
    saved = dockerd.docker("save", "-o", str(work / "peer.tar"), tag, check=False)
    if saved.returncode != 0 and "empty export" in saved.stderr:
        # an image without layers (a metadata-only scratch image): docker cannot save it
        inspect = json.loads(dockerd.docker("image", "inspect", tag).stdout)[0]
        snap = snapshot_from_inspect(inspect)
    else:
        if saved.returncode != 0:
            raise PeerError(f"docker save {tag} failed:\n{saved.stderr}")
        snap = read_docker_archive(work / "peer.tar")
    return Outcome(0, b.log, snap)


def build_buildah(case: Case, prep: Prepared, buildah: Buildah, work: Path, ssh: str | None = None) -> Outcome:
    tag = f"localhost/differential-{case.name.lower()}:latest"
    b = buildah.build(prep.context, dockerfile=prep.peer_dockerfile, tag=tag,
                      extra=_build_args(case, prep, peer=True, ssh=ssh))
    if b.rc != 0:
        return Outcome(b.rc, b.log, None)
    archive = work / "peer.tar"
    buildah.run("push", "-q", tag, f"docker-archive:{archive}:{tag}")
    return Outcome(0, b.log, read_docker_archive(archive))


class Runner:
    """Builds cases on demand; every case is submitted on the first request."""

    def __init__(self, cases: list[Case], base_store: Path, dockerd: Dockerd,
                 buildah: Buildah | None, workers: int = 3) -> None:
        self.cases = {c.name: c for c in cases}
        self.base_store = base_store
        self.dockerd = dockerd
        self.buildah = buildah
        self.work = Path(tempfile.mkdtemp(prefix="pybuild-differential-"))
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures: dict[str, Future[CaseResult]] = {}
        self.lock = threading.Lock()
        self.stack = contextlib.ExitStack()
        self.agent: str | None = None

    def _run(self, case: Case) -> CaseResult:
        work = self.work / case.name
        work.mkdir()
        try:
            prep = prepare(case, work / "in")
            store = work / "store"
            shutil.copytree(self.base_store, store, symlinks=True)
            floor = time.time() - 2
            with contextlib.ExitStack() as stack:
                if prep.www is not None:
                    prep.set_http(stack.enter_context(http_server(prep.www)))
                ssh = self._ssh_agent() if case.ssh else None
                if case.peer == "buildah":
                    assert self.buildah is not None
                    peer = build_buildah(case, prep, self.buildah, work, ssh)
                else:
                    peer = build_dockerd(case, prep, self.dockerd, work, ssh)
                ours = build_ours(case, prep, store, ssh)
            return CaseResult(ours, peer, floor)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _ssh_agent(self) -> str:
        """The socket of one private ssh-agent (with a key) for the session's ssh cases."""
        with self.lock:
            if self.agent is None:
                from inpututil import ssh_agent

                self.agent = self.stack.enter_context(ssh_agent(self.work / "ssh"))[0]
            return self.agent

    def result(self, name: str) -> CaseResult:
        with self.lock:
            if not self.futures:
                for c in self.cases.values():
                    self.futures[c.name] = self.pool.submit(self._run, c)
        return self.futures[name].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.stack.close()
        shutil.rmtree(self.work, ignore_errors=True)
