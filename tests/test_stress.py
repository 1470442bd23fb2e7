"""Stress on one store: 8 builds sharing their base and first step, 2 pushes and 2 pulls against
the local registry, ``prune -a`` in a loop and two tag/rmi loops, all at once. Every command
succeeds, no tag is lost, nothing a running build needs is pruned, and ``store check`` is clean
afterwards. Prints its figures (commands run per kind)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from registry_fixture import registry  # noqa: F401
from runutil import REPO, build, make_context, new_store, pybuild, pybuild_argv, pybuild_env, tag_digest

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.registry]

BUILDS = 8
TAG_ROUNDS = 12


def _spawn(args: list[str], root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(pybuild_argv(args), cwd=REPO, env=pybuild_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_builds_pushes_pulls_prune_and_tags_at_once(registry, tmp_path: Path) -> None:  # noqa: F811
    reg = registry.host
    insecure = ["--insecure-registry", reg]
    root = new_store(tmp_path)
    (tmp_path / "other").mkdir()
    other = new_store(tmp_path / "other")
    # two images to pull (pushed from another store) and two of this store to push
    for i in range(2):
        ctx = make_context(tmp_path / f"src{i}", f"FROM localhost/busybox:latest\nCOPY f /f{i}\n")
        (ctx / "f").write_bytes(os.urandom(1 << 20))
        build(ctx, other, tag=f"{reg}/stress/pull{i}:1").ok()
        pybuild(["push", *insecure, f"{reg}/stress/pull{i}:1"], other).ok()
        build(ctx, root, tag=f"topush{i}").ok()
    build(make_context(tmp_path / "keep", "FROM localhost/busybox:latest\nLABEL keep=1\n"), root, tag="keeper").ok()

    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for i in range(BUILDS):
        ctx = make_context(tmp_path / f"b{i}", "FROM localhost/busybox:latest\n"
                           "RUN echo shared > /shared && dd if=/dev/urandom of=/blob bs=64k count=8 2>/dev/null\n"
                           f"COPY own.txt /own{i}.txt\nRUN cat /own{i}.txt /shared > /both\n",
                           {"own.txt": f"build {i}\n"})
        procs.append(("build", _spawn(["--progress=plain", "-t", f"stress{i}", str(ctx)], root)))
    for i in range(2):
        procs.append(("push", _spawn(["push", *insecure, f"topush{i}", f"{reg}/stress/pushed{i}:1"], root)))
        procs.append(("pull", _spawn(["pull", *insecure, f"{reg}/stress/pull{i}:1"], root)))

    done = threading.Event()
    counts: Counter[str] = Counter()
    failures: list[str] = []

    def prune_loop() -> None:
        while not done.is_set():
            r = pybuild(["prune", "-a"], root)
            counts["prune"] += 1
            if r.rc != 0:
                failures.append("prune: " + r.err)

    def tag_loop(n: int) -> None:
        for k in range(TAG_ROUNDS):
            r = pybuild(["tag", "keeper", f"t{n}-{k}"], root)
            counts["tag"] += 1
            if r.rc != 0:
                failures.append("tag: " + r.err)
            if k % 2 == 1:  # every second round removes the tag made just before
                r = pybuild(["rmi", f"t{n}-{k - 1}"], root)
                counts["rmi"] += 1
                if r.rc != 0:
                    failures.append("rmi: " + r.err)

    threads = [threading.Thread(target=prune_loop)] + [threading.Thread(target=tag_loop, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for kind, p in procs:
        out, err = p.communicate(timeout=600)
        counts[kind] += 1
        if p.returncode != 0:
            failures.append(f"{kind} {p.args[3:]}: exit {p.returncode}: {err.decode(errors='replace')[-2000:]}")
    done.set()
    for t in threads:
        t.join(timeout=600)
    print("\nstress:", dict(counts))
    assert not failures, "\n".join(failures)
    assert counts["prune"] >= 2

    for i in range(BUILDS):  # every build is tagged and its image whole (check below)
        assert tag_digest(root, f"docker.io/library/stress{i}:latest") is not None
    for i in range(2):
        assert tag_digest(root, f"{reg}/stress/pull{i}:1") is not None
    keeper = tag_digest(root, "docker.io/library/keeper:latest")
    for n in range(2):  # no lost tag, no revived one
        for k in range(TAG_ROUNDS):
            want = None if (k % 2 == 0 and k + 1 < TAG_ROUNDS) else keeper
            assert tag_digest(root, f"docker.io/library/t{n}-{k}:latest") == want, (n, k)
    assert pybuild(["store", "check"], root).ok()
    # the pushed images are whole in the registry: pull them into a fresh store
    fresh = tmp_path / "fresh"
    for i in range(2):
        pybuild(["pull", *insecure, f"{reg}/stress/pushed{i}:1"], fresh).ok()
    assert pybuild(["store", "check"], fresh).ok()
    # and every build's image still runs
    r = pybuild(["run", "stress3", "cat", "/both"], root).ok()
    assert r.out == "build 3\nshared\n"


@pytest.mark.root
@pytest.mark.overlay
def test_prune_keeps_what_a_running_build_uses(tmp_path: Path) -> None:
    """While a build sits in a RUN, its base image is untagged and ``prune -a`` runs: the base's
    blobs and snapshot are pinned by the build's lease, so the build still writes a whole image."""
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nRUN sleep 2 && echo slept > /slept\n"
                       "COPY f /f\n", {"f": "after the prune\n"})
    p = _spawn(["--progress=plain", "-t", "survivor", str(ctx)], root)
    deadline = 100
    while not any(n.startswith("build-") for n in os.listdir(root / "tmp")) and deadline:
        deadline -= 1
        p.poll()
        threading.Event().wait(0.05)
    threading.Event().wait(0.8)  # inside the RUN by now
    pybuild(["rmi", "localhost/busybox:latest"], root).ok()
    pybuild(["prune", "-a"], root).ok()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    assert tag_digest(root, "docker.io/library/survivor:latest") is not None
    assert pybuild(["store", "check"], root).ok()
    assert pybuild(["run", "survivor", "cat", "/slept", "/f"], root).ok().out == "slept\nafter the prune\n"
    # once the build is over nothing is pinned any more: the old cache goes, the image stays
    pybuild(["prune", "-a"], root).ok()
    assert pybuild(["store", "check"], root).ok()
    assert pybuild(["run", "survivor", "cat", "/f"], root).ok().out == "after the prune\n"
