"""Disk full: the store lives on a small tmpfs the test mounts. For each place a build can run
out of space (a layer blob, unpacking a layer, RUN's upper dir, a pull, a cache export) the
command fails with an error saying what was written where, nothing partial stays (no temp
file, half blob, index entry or record pointing at nothing: ``store check`` is clean), and
the same command succeeds once space is freed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_fixture import registry  # noqa: F401
from runutil import build, make_context, pybuild, tag_digest, template_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]

SIZE_MB = 10
BIG = 3 << 20  # bytes of incompressible data: more than the space left


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 10 MiB tmpfs at ``tmp_path/small`` holding a copy of the busybox store (``store``),
    its base layer already unpacked (as after any earlier build with a RUN)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt)], check=True)
    try:
        subprocess.run(["cp", "-a", str(template_store()), str(mnt / "store")], check=True)
        warm = make_context(tmp_path / "warm", "FROM localhost/busybox:latest\nRUN true\n")
        build(warm, mnt / "store", tag=None).ok()
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    """A ballast file leaving about ``leave`` bytes free on ``mnt``; delete it to free space."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    ballast = mnt / "ballast"
    with open(ballast, "wb") as f:
        f.truncate(0)
        remaining = max(0, free - leave)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            n = min(remaining, len(chunk))
            f.write(chunk[:n])
            remaining -= n
    return ballast


def _clean_after_failure(root: Path, result: object, where: str) -> None:
    err = result.err  # type: ignore[attr-defined]
    assert result.rc != 0, err  # type: ignore[attr-defined]
    assert "no space left on device" in err and where in err, err
    assert "Traceback" not in err
    assert os.listdir(root / "tmp") == []
    check = pybuild(["store", "check"], root)
    assert check.rc == 0, check.out


def _big_context(path: Path, dockerfile: str) -> Path:
    ctx = make_context(path, dockerfile)
    (ctx / "big.bin").write_bytes(os.urandom(BIG))
    return ctx


def test_layer_write(small: Path, tmp_path: Path) -> None:
    root = small / "store"
    ctx = _big_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nCOPY big.bin /big.bin\n")
    ballast = _fill(small, 1 << 20)
    failed = build(ctx, root, tag="big")
    _clean_after_failure(root, failed, f"writing a blob in {root}")
    assert tag_digest(root, "docker.io/library/big:latest") is None
    ballast.unlink()
    build(ctx, root, tag="big").ok()
    assert pybuild(["store", "check"], root).ok()


def test_unpack(small: Path, tmp_path: Path) -> None:
    root = small / "store"
    for snap in (root / "snapshots").iterdir():  # the base must be unpacked again for RUN
        subprocess.run(["rm", "-rf", str(snap)], check=True)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nRUN echo hi > /hi\n")
    ballast = _fill(small, 512 << 10)
    failed = build(ctx, root, tag="unpacked")
    _clean_after_failure(root, failed, "unpacking")
    assert "(layer sha256:" in failed.err
    assert [p.name for p in (root / "snapshots").iterdir()] == []
    ballast.unlink()
    build(ctx, root, tag="unpacked").ok()
    assert pybuild(["store", "check"], root).ok()


def test_run_upper_dir(small: Path, tmp_path: Path) -> None:
    root = small / "store"
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\n"
                       "RUN dd if=/dev/urandom of=/big bs=1024 count=3072\n")
    ballast = _fill(small, 1 << 20)
    failed = build(ctx, root, tag="upper")
    _clean_after_failure(root, failed, "for RUN's changes")
    assert "Dockerfile:2: RUN dd" in failed.err
    ballast.unlink()
    build(ctx, root, tag="upper").ok()
    assert pybuild(["store", "check"], root).ok()


@pytest.mark.registry
def test_pull(small: Path, tmp_path: Path, registry) -> None:  # noqa: F811
    big_store = tmp_path / "big-store"
    subprocess.run(["cp", "-a", str(template_store()), str(big_store)], check=True)
    ctx = _big_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nCOPY big.bin /big.bin\n")
    ref = f"{registry.host}/enospc/big:1"
    build(ctx, big_store, tag=ref).ok()
    pybuild(["push", "--insecure-registry", registry.host, ref], big_store).ok()
    root = small / "store"
    ballast = _fill(small, 1 << 20)
    failed = pybuild(["pull", "--insecure-registry", registry.host, ref], root)
    _clean_after_failure(root, failed, f"writing a blob in {root}")
    assert tag_digest(root, ref) is None
    ballast.unlink()
    pulled = pybuild(["pull", "--insecure-registry", registry.host, ref], root).ok()
    assert tag_digest(root, ref) == tag_digest(big_store, ref) and pulled.out.strip()
    assert pybuild(["store", "check"], root).ok()


def test_cache_export(small: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"  # the store has room; the cache destination does not
    subprocess.run(["cp", "-a", str(template_store()), str(root)], check=True)
    ctx = _big_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nCOPY big.bin /big.bin\n")
    dest = small / "cache"
    ballast = _fill(small, 1 << 20)
    failed = build(ctx, root, f"--cache-to=type=local,dest={dest},mode=max", tag="cached")
    err = failed.err
    assert failed.rc != 0 and "no space left on device" in err and str(dest) in err and "Traceback" not in err
    assert not (dest / "index.json").exists() or b"sha256" not in (dest / "index.json").read_bytes()
    assert pybuild(["store", "check"], root).ok()
    ballast.unlink()
    build(ctx, root, f"--cache-to=type=local,dest={dest},mode=max", tag="cached").ok()
    assert b"sha256" in (dest / "index.json").read_bytes()
    assert pybuild(["store", "check"], root).ok()
