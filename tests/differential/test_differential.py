"""pybuild against real builders, case by case (tests/differential/cases/*; see cases.py).

Each case is built by pybuild and by its peer (dockerd 20.10's BuildKit, or buildah) from the
same context and the same busybox base bytes; the image configs and flattened file systems must
be identical, except for a documented difference (a written reason citing current BuildKit,
covering named KEYs that must actually differ). Failure cases must fail in both builders.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from cases import all_cases
from runner import Runner
from snapshot import CompareRules, differences, unexplained, unused

from peers import Buildah, Dockerd, PeerBase

CASES = all_cases()

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.dockerd, pytest.mark.buildah]


@pytest.fixture(scope="session")
def differential(dockerd: Dockerd, dockerd_base: PeerBase, buildah: Buildah,
                 buildah_base: PeerBase) -> Iterator[Runner]:
    """The runner over the session's dockerd and buildah, the busybox base in all three builders.
    (Defined here, not in a conftest.py: a second module named ``conftest`` would shadow
    tests/conftest.py for ``from conftest import ...``.)"""
    from buildutil import _base_store

    # the work is mostly waiting (sandbox and daemon start-up, fsync): more builds than cores
    runner = Runner(CASES, _base_store(), dockerd, buildah,
                    workers=int(os.environ.get("PYBUILD_DIFFERENTIAL_JOBS", "6")))
    try:
        yield runner
    finally:
        runner.close()


def test_suite_has_enough_cases() -> None:
    assert len(CASES) >= 150, len(CASES)
    assert len({c.name.lower() for c in CASES}) == len(CASES)
    for c in CASES:
        assert c.about, f"{c.name}: case.toml needs an 'about' line"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, differential: Runner) -> None:
    r = differential.result(case.name)
    allowed = list(case.difference.allow) if case.difference else []
    if case.fail:
        if "outcome" in allowed and r.peer.rc != 0:
            pytest.fail("documented difference 'outcome' no longer occurs: the peer fails too", pytrace=False)
        if r.peer.rc == 0 and "outcome" not in allowed:
            pytest.fail(f"the peer built what should fail:\n{r.peer.log[-3000:]}", pytrace=False)
        if r.ours.rc == 0:
            pytest.fail(f"pybuild built what the peer refuses:\n{r.peer.log[-3000:]}", pytrace=False)
        assert "Traceback" not in r.ours.log, r.ours.log
        return
    if r.peer.rc != 0:
        pytest.fail(f"the peer failed:\n{r.peer.log[-3000:]}", pytrace=False)
    if r.ours.rc != 0:
        pytest.fail(f"pybuild failed where the peer built:\n{r.ours.log[-3000:]}", pytrace=False)
    assert r.ours.snapshot is not None and r.peer.snapshot is not None
    rules = CompareRules(history=case.peer == "dockerd" and case.equivalent is None, buildah=case.peer == "buildah",
                         mtime_floor=r.floor, epoch=case.epoch, mtimes=case.mtimes)
    diffs = differences(r.ours.snapshot, r.peer.snapshot, rules)
    bad = unexplained(diffs, allowed)
    if bad:
        pytest.fail("pybuild differs from the peer:\n  " + "\n  ".join(bad), pytrace=False)
    stale = unused(diffs, allowed)
    if stale:
        pytest.fail(f"documented differences that no longer occur: {stale}", pytrace=False)
    if case.epoch is not None:
        assert r.ours.snapshot.created == _iso(case.epoch)
        assert set(r.ours.snapshot.history_created[-1:]) == {_iso(case.epoch)}
