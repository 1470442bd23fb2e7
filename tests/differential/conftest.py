"""The session's differential runner: one dockerd, one buildah, the busybox base in all three
builders."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cases import all_cases
from runner import Runner

from peers import Buildah, Dockerd, PeerBase


@pytest.fixture(scope="session")
def differential(dockerd: Dockerd, dockerd_base: PeerBase, buildah: Buildah,
                 buildah_base: PeerBase) -> Iterator[Runner]:
    from buildutil import _base_store

    # the work is mostly waiting (sandbox and daemon start-up, fsync): more builds than cores
    runner = Runner(all_cases(), _base_store(), dockerd, buildah,
                    workers=int(os.environ.get("PYBUILD_DIFFERENTIAL_JOBS", "6")))
    try:
        yield runner
    finally:
        runner.close()
