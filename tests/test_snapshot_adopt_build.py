"""A ``--no-cache`` rebuild that makes a layer whose snapshot exists: the redundant upper dir is
deleted in the background and the build waits for it (nothing left behind, failed build too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildutil import busybox_store, run_cli

from builder.store.snapshots import Snapshots

pytestmark = [pytest.mark.root, pytest.mark.overlay]

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}  # clamped mtimes: the same diff_id on every rebuild


def _leftovers(store: Path) -> list[str]:
    snaps = store / "snapshots"
    found = [p.name for p in snaps.iterdir() if p.name.startswith("tmp-")]
    return found + [p.name for p in (store / "tmp").iterdir()]


def _snapshots(store: Path) -> set[str]:
    return {p.name for p in (store / "snapshots").iterdir() if p.is_dir()}


@pytest.mark.parametrize("then", ["", "RUN false\n"])
def test_redundant_upper_is_deleted_by_the_end(tmp_path: Path, then: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost/busybox:latest\n"
                                    "RUN mkdir -p /d/e && for i in 1 2 3 4 5; do echo $i > /d/e/f$i; done\n"
                                    + then)
    args = ["build", "--no-cache", "--progress=plain", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", str(ctx)]
    first = run_cli(args, store, EPOCH)
    assert first.rc == (1 if then else 0), first.err
    made = _snapshots(store)
    discarded: list[Path] = []
    real = Snapshots._discard

    def spy(self: Snapshots, path: Path) -> None:
        discarded.append(path)
        real(self, path)

    monkeypatch.setattr(Snapshots, "_discard", spy)
    second = run_cli(args, store, EPOCH)
    assert len(discarded) == 1 and not discarded[0].exists()
    assert second.rc == first.rc, second.err
    assert _snapshots(store) == made  # the rebuilt layer was the same: its upper was redundant
    assert _leftovers(store) == []
    assert not any(name.startswith(f"tmp-{os.getpid()}-") for name in os.listdir(store / "snapshots"))
