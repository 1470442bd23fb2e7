"""Shared fixtures and the rule for environment-dependent tests.

Tests marked root/overlay/userns/registry/interop/slow need something of the host. Locally they
skip with a reason when it is missing; under ``CI=true`` they never skip: a missing capability
fails the test, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
    if marker == "slow" and os.environ.get("PYBUILD_SLOW") != "1" and not IN_CI:
        return "slow test: set PYBUILD_SLOW=1 (always run in CI)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_CI:
        return  # under CI every test runs; a missing capability fails the test itself
    for item in items:
        for marker in ("root", "overlay", "userns", "registry", "interop", "slow"):
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
