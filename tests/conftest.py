"""Shared fixtures and the rule for environment-dependent tests.

Tests marked root/overlay/userns/registry/interop/slow/emulation/dockerd/buildah/podman need
something of the host. Locally they skip with a reason when it is missing; under ``CI=true`` they never skip: a missing capability
fails the test, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import DOCKER, DOCKERD, Buildah, Dockerd, PeerBase

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PYBUILD_SHARED", REPO.parent / "shared"))
CONFORMANCE = SHARED / "conformance"
IN_CI = os.environ.get("CI") == "true"


def _missing(marker: str) -> str | None:
    """Why a test with ``marker`` cannot run here, or None when it can."""
    if marker in ("root", "overlay", "userns") and os.geteuid() != 0:
        return "needs root"
    if marker == "registry" and not (shutil.which("docker-registry") or Path("/usr/bin/docker-registry").exists()):
        return "docker-registry is not installed"
    if marker == "interop":
        for tool in ("skopeo", "umoci", "runc"):
            if not shutil.which(tool):
                return f"{tool} is not installed"
    if marker in ("dockerd", "buildah", "podman"):
        if os.geteuid() != 0:
            return "needs root"
        tools = {"dockerd": (DOCKERD, DOCKER), "buildah": ("buildah", "runc"), "podman": ("podman", "runc")}
        for tool in tools[marker]:
            if not shutil.which(tool):
                return f"{tool} is not installed: apt-get install docker.io buildah podman runc"
    if marker == "emulation":
        if os.geteuid() != 0:
            return "needs root (binfmt_misc registration)"
        if not Path("/usr/bin/qemu-aarch64-static").exists():
            return "qemu-user-static is not installed"
    if marker == "slow" and os.environ.get("PYBUILD_SLOW") != "1" and not IN_CI:
        return "slow test: set PYBUILD_SLOW=1 (always run in CI)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_CI:
        return  # under CI every test runs; a missing capability fails the test itself
    for item in items:
        for marker in ("root", "overlay", "userns", "registry", "interop", "slow", "dockerd", "buildah", "podman",
                       "emulation"):
            if item.get_closest_marker(marker) is None:
                continue
            why = _missing(marker)
            if why is not None:
                item.add_marker(pytest.mark.skip(reason=why))
                break


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    assert CONFORMANCE.is_dir(), f"missing {CONFORMANCE}: ../shared must sit beside the repository"
    return CONFORMANCE


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """ONE isolated dockerd 20.10 for the whole session (tests/peers.py); stopped and removed at
    the end. Tests must use unique tags and may not stop it."""
    with Dockerd(Path(tempfile.mkdtemp(prefix="pbd-"))) as d:
        yield d


@pytest.fixture(scope="session")
def buildah() -> Iterator[Buildah]:
    """One buildah store (overlay, runc) for the whole session; removed at the end."""
    with Buildah(Path(tempfile.mkdtemp(prefix="pbb-"))) as b:
        yield b


@pytest.fixture(scope="session")
def peer_base(tmp_path_factory: pytest.TempPathFactory) -> PeerBase:
    """The busybox base (``localhost/busybox:latest``) of the session's pybuild store
    (buildutil.busybox_store), exported by pybuild as a docker archive: the same bytes every
    builder starts from."""
    from buildutil import BASE_TAG, _base_store

    from builder.store.layout import Store
    from builder.transfer import export_image, parse_output

    archive = tmp_path_factory.mktemp("peer-base") / "base.tar"
    store = Store(_base_store())
    export_image(store, BASE_TAG, parse_output(f"type=docker,dest={archive}"))
    return PeerBase(BASE_TAG, archive, str(store.image(BASE_TAG).manifest.config.digest))


@pytest.fixture(scope="session")
def dockerd_base(dockerd: Dockerd, peer_base: PeerBase) -> PeerBase:
    """The session dockerd with the busybox base loaded (same bytes as pybuild's store)."""
    dockerd.load(peer_base.archive)
    return peer_base


@pytest.fixture(scope="session")
def buildah_base(buildah: Buildah, peer_base: PeerBase) -> PeerBase:
    """The session buildah store with the busybox base pulled from pybuild's docker archive."""
    buildah.run("pull", "-q", f"docker-archive:{peer_base.archive}")
    return peer_base
