"""The reference builders of tests/peers.py start isolated, build from pybuild's busybox base,
and leave nothing behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from peers import Buildah, Dockerd, PeerBase, _mounts_below, _processes_using


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello").write_text("hi\n")
    (ctx / "Dockerfile").write_text(
        "FROM localhost/busybox:latest\nCOPY hello /hello\nRUN cat /hello > /copy && id -u > /uid\n")
    return ctx


@pytest.mark.dockerd
def test_dockerd_builds_from_pybuild_base(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    images = dockerd.docker("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert f"{dockerd_base.tag} {dockerd_base.config_digest}" in images.splitlines()
    b = dockerd.build(_context(tmp_path), tag="peers-test:1").ok()
    assert b.image_id is not None and b.image_id.startswith("sha256:")
    out = dockerd.docker("run", "--rm", "--network", "none", "peers-test:1", "cat", "/copy", "/uid").stdout
    assert out == "hi\n0\n"
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM localhost/busybox:latest\nRUN exit 3\n")
    failed = dockerd.build(tmp_path / "ctx")
    assert failed.rc != 0 and failed.image_id is None and "exit code: 3" in failed.log


@pytest.mark.buildah
def test_buildah_builds_from_pybuild_base(buildah: Buildah, buildah_base: PeerBase, tmp_path: Path) -> None:
    b = buildah.build(_context(tmp_path), tag="localhost/peers-test:1").ok()
    assert b.image_id is not None
    cfg = buildah.run("inspect", "--type", "image", "--format", "{{.FromImageID}}", "localhost/peers-test:1")
    assert cfg.stdout.strip()
    ctr = buildah.run("from", "localhost/peers-test:1").stdout.strip()
    try:
        mnt = Path(buildah.run("mount", ctr).stdout.strip())
        assert (mnt / "copy").read_text() == "hi\n"
        assert (mnt / "uid").read_text() == "0\n"
    finally:
        buildah.run("rm", ctr)


@pytest.mark.dockerd
def test_dockerd_stop_leaves_nothing(peer_base: PeerBase) -> None:
    work = Path(tempfile.mkdtemp(prefix="pbd-"))
    with Dockerd(work) as d:
        d.load(peer_base.archive)
        d.docker("run", "-d", "--network", "none", "--name", "sleeper", peer_base.tag, "sleep", "600")
        assert _processes_using(work)
        assert _mounts_below(work)
    assert not work.exists()
    assert _processes_using(work) == []
    assert _mounts_below(work) == []
