"""``pybuild du --verbose`` lists cache records and cache mounts with sizes and last use;
``pybuild prune --filter until=DURATION`` and ``--keep-storage`` cover cache mounts as buildx
prune does (issue 16)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli

from builder.errors import UsageError
from builder.units import parse_duration

DOCKERFILE = f"""FROM {BASE_TAG}
RUN --mount=type=cache,target=/var/cache/apt,id=apt head -c 200000 /dev/zero > /var/cache/apt/big && echo ok > /ok
"""


def test_parse_duration() -> None:
    assert parse_duration("24h") == 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("2d") == 172800
    for bad in ("", "10", "h", "1y", "-1h"):
        with pytest.raises(UsageError):
            parse_duration(bad)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    run_cli(["build", "--progress=quiet", str(ctx)], store).ok()   # untagged: its cache is prunable
    return store


def mounts(store: Path) -> list[Path]:
    return [p for p in (store / "cache" / "mounts").iterdir() if p.is_dir()]


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.root
def test_du_verbose_lists_records_and_mounts(store: Path) -> None:
    out = run_cli(["du", "--verbose"], store).ok().out
    rows = [line.split() for line in out.splitlines() if line.strip()]
    mount = next(r for r in rows if r[:2] == ["mount", "apt"])
    assert mount[2].endswith("kB") and float(mount[2][:-2]) >= 200   # the 200 kB file, on disk
    assert mount[3:5] == ["just", "now"]
    assert any(r[0] == "record" and "RUN" in r for r in rows)
    assert any(r[0] == "cache-mounts" for r in rows)


@pytest.mark.root
def test_prune_until_removes_old_records_and_mounts_only(store: Path) -> None:
    run_cli(["prune", "--filter", "until=1h"], store).ok()
    assert len(mounts(store)) == 1                       # used just now: kept
    [mount] = mounts(store)
    age(mount, 7200)
    for rec in (store / "cache" / "records").iterdir():
        age(rec, 7200)
    run_cli(["prune", "--filter", "until=1h"], store).ok()
    assert mounts(store) == []
    assert list((store / "cache" / "records").iterdir()) == []
    # the explanation records of removed records go with them
    assert list((store / "cache" / "explain" / "steps").iterdir()) == []


@pytest.mark.root
def test_prune_keep_storage_counts_cache_mounts(store: Path) -> None:
    run_cli(["prune", "--keep-storage", "10MB"], store).ok()
    assert len(mounts(store)) == 1
    run_cli(["prune", "--keep-storage", "0"], store).ok()
    assert mounts(store) == []


@pytest.mark.root
def test_prune_all_removes_mounts_and_bad_filter_is_a_usage_error(store: Path) -> None:
    r = run_cli(["prune", "--filter", "label=x"], store)
    assert r.rc == 2 and "until=DURATION" in r.err
    assert len(mounts(store)) == 1
    run_cli(["prune", "--all"], store).ok()
    assert mounts(store) == []
