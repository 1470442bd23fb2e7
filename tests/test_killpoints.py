"""Kill points: SIGKILL at random moments (seeded) of pull, RUN (with its snapshot and layer
commit), COPY, base unpack, export, push, prune and cache export, 4 times each. After every kill
``store check`` is clean, or finds only what a dead process leaves (stale temp dirs, mounts,
leases) and ``--repair`` makes it clean; a tagged image never changes; the killed command then
succeeds. The test prints its figures (kills per operation, checks clean at once, repairs)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from registry_fixture import registry  # noqa: F401
from runutil import (
    REPO,
    build,
    export_digest,
    make_context,
    new_store,
    pybuild,
    pybuild_argv,
    pybuild_env,
    tag_digest,
)

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.registry]

ROUNDS = 4
STALE = {"stale-temp", "stale-mount", "stale-lease"}
KEEPER = "docker.io/library/keeper:latest"


def _kill_at(args: list[str], root: Path, delay: float) -> int | None:
    """Start ``pybuild ARGS``, SIGKILL it after ``delay`` s; its return code when it ended
    first (no kill happened), else None."""
    p = subprocess.Popen(pybuild_argv(args), cwd=REPO, env=pybuild_env(root), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        return p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None


def _check(root: Path, stats: Counter[str]) -> None:
    """store check; when not clean only stale state may be found, and --repair must fix it."""
    r = pybuild(["store", "check", "--format", "json"], root)
    report = json.loads(r.out)
    if report["clean"]:
        stats["checks clean at once"] += 1
        return
    kinds = {p["kind"] for p in report["problems"]}
    assert kinds <= STALE, report["problems"]
    for k in kinds:
        stats[f"repaired {k}"] += 1
    fixed = json.loads(pybuild(["store", "check", "--repair", "--format", "json"], root).out)
    assert fixed["clean"], fixed["problems"]
    stats["checks clean after --repair"] += 1


def test_sigkill_anywhere_leaves_a_sound_store(registry, tmp_path: Path) -> None:  # noqa: F811
    rng = random.Random(13)
    root = new_store(tmp_path)
    (tmp_path / "other").mkdir()
    other = new_store(tmp_path / "other")  # where the images to pull come from
    reg = registry.host
    insecure = ["--insecure-registry", reg]

    big = make_context(tmp_path / "big", "FROM localhost/busybox:latest\nARG N\nCOPY big.bin /big.bin\n")
    ctx_run = make_context(tmp_path / "run", "FROM localhost/busybox:latest\n"
                           "RUN dd if=/dev/urandom of=/f bs=64k count=64 && sync\nRUN echo done > /done\n")
    ctx_copy = make_context(tmp_path / "copy", "FROM localhost/busybox:latest\nCOPY big.bin /big.bin\nRUN true\n")
    for ctx in (big, ctx_copy):
        (ctx / "big.bin").write_bytes(os.urandom(4 << 20))
    build(ctx_copy, root, tag="keeper").ok()
    keeper = tag_digest(root, KEEPER)
    # distinct images in the registry, one per pull / unpack / push round
    for i in range(ROUNDS):
        (big / "big.bin").write_bytes(os.urandom(4 << 20))
        ref = f"{reg}/kill/img{i}:1"
        build(big, other, tag=ref).ok()
        pybuild(["push", *insecure, ref], other).ok()

    def unpack_ctx(i: int) -> Path:
        return make_context(tmp_path / f"unpack{i}", f"FROM {reg}/kill/img{i}:1\nRUN true\n")

    ops: dict[str, Callable[[int], list[str]]] = {
        "pull": lambda i: ["pull", *insecure, f"{reg}/kill/img{i}:1"],
        "run+snapshot+commit": lambda i: ["--no-cache", "--progress=plain", "-t", "ran", str(ctx_run)],
        "copy+commit": lambda i: ["--no-cache", "--progress=plain", "-t", "copied", str(ctx_copy)],
        "unpack": lambda i: ["--progress=plain", *insecure, "-t", f"unpacked{i}", str(unpack_ctx(i))],
        "export": lambda i: ["--progress=plain", "-t", "copied", "--output",
                             f"type=oci,dest={tmp_path / f'export{i}.tar'}", str(ctx_copy)],
        "cache export": lambda i: ["--progress=plain", "-t", "copied",
                                   f"--cache-to=type=local,dest={tmp_path / f'cache{i}'},mode=max", str(ctx_copy)],
        "push": lambda i: ["push", *insecure, "--compression", "zstd", f"{reg}/kill/img{i}:1",
                           f"{reg}/kill/pushed{i}:1"],
        "prune": lambda i: ["prune", "-a"],
    }
    stats: Counter[str] = Counter()
    durations = {name: 1.0 for name in ops}  # then how long the last uninterrupted run took
    for i in range(ROUNDS):
        for name, args in ops.items():
            if name == "prune":  # something to prune: a rebuild's old layers
                pybuild(["--no-cache", "-q", "-t", "copied", str(ctx_copy)], root).ok()
            for attempt in range(3):  # a command that ended before its kill is retried sooner
                delay = rng.uniform(0.05, 0.7) * durations[name] / (attempt + 1)
                rc = _kill_at(args(i), root, delay)
                stats[f"kills {name}" if rc is None else "ended before the kill"] += 1
                _check(root, stats)
                assert tag_digest(root, KEEPER) == keeper
                if rc is None:
                    break
            t0 = time.monotonic()
            pybuild(args(i), root).ok()  # the next command succeeds
            durations[name] = time.monotonic() - t0
    _check(root, stats)
    kills = sum(v for k, v in stats.items() if k.startswith("kills "))
    print("\nkill points:", dict(sorted(stats.items())), "durations:", {k: round(v, 2) for k, v in durations.items()})
    assert kills >= 30, stats
    assert tag_digest(root, KEEPER) == keeper
    assert export_digest(root, "keeper", tmp_path / "keeper.tar") == keeper
