"""Resource limits of RUN (cgroups): a memory hog and a fork bomb are stopped with an error
naming the limit while a concurrent build and this test process carry on; limits and the
nofile default reach the step; the step's cgroups are gone afterwards; flag errors name the
flag; the cgroup layout detection knows v1, v2 and hybrid hosts."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
from pathlib import Path

import pytest
from runutil import build, make_context, new_store, pybuild
from test_sandbox import rootfs  # noqa: F401  (the busybox root of the sandbox tests)

from builder.sandbox.cgroups import detect, human, layout

HOG = "FROM localhost/busybox:latest\nRUN dd if=/dev/zero of=/dev/null bs=512M count=1\n"
BOMB = "FROM localhost/busybox:latest\nRUN f(){ while :; do f & done; }; f\n"
CALM = ("FROM localhost/busybox:latest\nRUN i=0; while [ $i -lt 20 ]; do i=$((i+1)); sleep 0.1; done; "
        "echo calm > /calm.txt\nRUN sh -c 'for i in 1 2 3 4 5 6 7 8; do true & done; wait'\n")


def _step_cgroups() -> list[str]:
    """pybuild-* cgroups of dead builders in this process's hierarchies: what a step left
    behind (other builds on this machine may be running: their live cgroups are not counted)."""
    from builder.store.stale import alive, owner_pid

    lay = layout()
    found = []
    for d in list(lay.v1.values()) + ([lay.v2] if lay.v2 else []):
        found += [str(d / n) for n in os.listdir(d)
                  if n.startswith("pybuild-") and not alive(owner_pid(n) or 0) and (d / n).exists()]
    return found


def _processes_running(needle: bytes) -> list[int]:
    """PIDs whose command line holds ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _with_concurrent_build(tmp_path: Path, root: Path, ctx: Path, *args: str) -> tuple[object, object]:
    """Run the abusive build and, at the same time, a calm build on the same store."""
    calm = make_context(tmp_path / "calm", CALM)
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.setdefault("calm", build(calm, root, tag="calm")))
    t.start()
    abusive = build(ctx, root, *args, tag="abusive")
    t.join()
    return abusive, result["calm"]


@pytest.mark.root
@pytest.mark.overlay
def test_memory_hog_is_stopped_with_the_limit_named(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "hog", HOG)
    hog, calm = _with_concurrent_build(tmp_path, root, ctx, "--memory", "256m", "--memory-swap", "256m")
    assert hog.rc == 1, hog.err  # type: ignore[attr-defined]
    assert "Dockerfile:2: RUN dd if=/dev/zero of=/dev/null bs=512M count=1: exit 137: memory limit 256MiB reached" \
        in hog.err  # type: ignore[attr-defined]
    assert "Traceback" not in hog.err  # type: ignore[attr-defined]
    calm.ok()  # type: ignore[attr-defined]
    assert subprocess.run(["true"]).returncode == 0  # this process is fine
    assert _step_cgroups() == []
    assert pybuild(["store", "check"], root).ok()


@pytest.mark.root
@pytest.mark.overlay
def test_fork_bomb_stops_at_the_pids_limit(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "bomb", BOMB)
    bomb, calm = _with_concurrent_build(tmp_path, root, ctx, "--pids-limit", "64")
    assert bomb.rc == 1, bomb.err  # type: ignore[attr-defined]
    assert "pids limit 64 reached" in bomb.err.splitlines()[-1] or \
        any(line.endswith("pids limit 64 reached") for line in bomb.err.splitlines())  # type: ignore[attr-defined]
    calm.ok()  # type: ignore[attr-defined]
    assert subprocess.run(["true"]).returncode == 0
    assert _step_cgroups() == []
    assert _processes_running(b"while :; do f & done") == []


@pytest.mark.root
@pytest.mark.overlay
def test_pids_limit_one_fails_the_step_naming_it(tmp_path: Path) -> None:
    """With ``--pids-limit 1`` the sandbox cannot even start the command: a step failure naming
    the limit and line (was exit 3 'sandbox init ended without a status' and a traceback)."""
    root = new_store(tmp_path)
    res = build(make_context(tmp_path / "one", "FROM localhost/busybox:latest\nRUN true\n"), root,
                "--pids-limit", "1")
    assert res.rc == 1 and "Dockerfile:2: RUN true: exit 125: pids limit 1 reached" in res.err, res.err
    assert "Traceback" not in res.err and _step_cgroups() == []


@pytest.mark.root
@pytest.mark.overlay
def test_limits_and_nofile_default_reach_the_step(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "show", "FROM localhost/busybox:latest\n"
                       "RUN echo nofile=$(ulimit -n); grep Cpus_allowed_list /proc/self/status\n")
    out = build(ctx, root, "--cpuset-cpus", "0", "--cpu-shares", "512", "--memory", "64m").ok().err
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 1048576 if hard == resource.RLIM_INFINITY else min(hard, 1048576)
    assert f"nofile={want}" in out
    assert any(line.split()[-1] == "0" for line in out.splitlines() if "Cpus_allowed_list" in line), out
    # an explicit --ulimit nofile wins over the default
    out = build(ctx, root, "--no-cache", "--ulimit", "nofile=1000:2000").ok().err
    assert "nofile=1000" in out
    assert _step_cgroups() == []


@pytest.mark.parametrize("args, flag", [
    (["--memory", "lots"], "--memory"),
    (["--memory", "1k"], "--memory"),
    (["--memory-swap", "1g"], "--memory-swap"),
    (["--memory", "512m", "--memory-swap", "256m"], "--memory-swap"),
    (["--pids-limit", "0"], "--pids-limit"),
    (["--cpu-shares", "1"], "--cpu-shares"),
    (["--cpuset-cpus", "zero"], "--cpuset-cpus"),
    (["--cpuset-cpus", "0,4096"], "--cpuset-cpus"),   # no such CPU: refused before building
])
def test_bad_limit_flags_name_the_flag(tmp_path: Path, args: list[str], flag: str) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\n")
    r = pybuild([*args, str(ctx)], tmp_path / "store")
    assert r.rc == 2 and flag in r.err and "Traceback" not in r.err


V1_SELF = "5:memory:/ci/job\n4:pids:/ci/job\n3:cpu,cpuacct:/ci/job\n2:cpuset:/\n1:name=systemd:/x\n0::/x\n"


def _v1_host(base: Path) -> str:
    """mountinfo of a v1 host whose hierarchies are mounted under ``base`` (dirs created)."""
    lines = []
    for i, (mnt, opts) in enumerate([("memory", "memory"), ("pids", "pids"), ("cpu,cpuacct", "cpu,cpuacct"),
                                     ("cpuset", "cpuset"), ("systemd", "name=systemd")]):
        own = "" if mnt in ("cpuset", "systemd") else "ci/job"
        (base / mnt / own).mkdir(parents=True, exist_ok=True)
        lines.append(f"{30 + i} 25 0:{26 + i} / {base / mnt} rw,relatime - cgroup cgroup rw,{opts}")
    return "\n".join(lines) + "\n"


def test_detect_v1_and_hybrid_without_v2_controllers(tmp_path: Path) -> None:
    mounts = _v1_host(tmp_path)
    v1 = detect(mounts, V1_SELF)
    assert v1.mode == "v1"
    assert v1.v1["memory"] == tmp_path / "memory" / "ci" / "job"
    assert v1.v1["cpuset"] == tmp_path / "cpuset"
    assert v1.where("pids") == "v1" and v1.v2 is None
    (tmp_path / "unified" / "x").mkdir(parents=True)
    (tmp_path / "unified" / "x" / "cgroup.controllers").write_text("\n")  # systemd's empty cgroup2
    hybrid = detect(mounts + f"35 25 0:31 / {tmp_path / 'unified'} rw,relatime - cgroup2 cgroup2 rw\n", V1_SELF)
    assert hybrid.mode == "hybrid" and hybrid.where("memory") == "v1" and hybrid.v2 is None


def test_detect_v2_reads_the_offered_controllers(tmp_path: Path) -> None:
    own = tmp_path / "cg" / "user.slice" / "job"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = f"40 25 0:40 / {tmp_path / 'cg'} rw,relatime - cgroup2 cgroup2 rw\n"
    v2 = detect(mounts, "0::/user.slice/job\n")
    assert v2.mode == "v2" and v2.v2 == own
    assert all(v2.where(c) == "v2" for c in ("memory", "pids", "cpu", "cpuset"))


def test_detect_this_host() -> None:
    lay = layout()
    assert lay.mode in ("v1", "v2", "hybrid", "none")
    if os.geteuid() == 0 and os.environ.get("CI") == "true":
        assert all(lay.where(c) is not None for c in ("memory", "pids")), lay


def test_human_sizes() -> None:
    assert [human(n) for n in (256 << 20, 1 << 30, 1536 << 10, 1000)] == ["256MiB", "1GiB", "1536KiB", "1000B"]


@pytest.mark.root
@pytest.mark.overlay
def test_default_limits_are_skipped_when_the_host_refuses_a_cgroup(rootfs: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults never break a RUN (a v2 host that will not delegate, a read-only cgroupfs);
    limits the user asked for do: HostError naming cgroups."""
    from builder.errors import HostError
    from builder.sandbox import cgroups
    from builder.sandbox.spec import ResourceLimits
    from test_sandbox import Step

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setattr(cgroups, "_layout", cgroups.Layout("v1", {"pids": blocker}))
    (tmp_path / "steps").mkdir()
    step = Step(rootfs, tmp_path / "steps")
    r = step.sh("echo ok", limits=ResourceLimits(pids=100))
    assert r.exit_code == 0 and step.out == "ok\n"
    with pytest.raises(HostError, match="cgroups"):
        step.sh("echo ok", limits=ResourceLimits(pids=100, explicit=True))


def test_v2_limits_are_written_and_a_busy_own_cgroup_falls_back_to_a_sibling(tmp_path: Path) -> None:
    """On a v2 tree (plain files here) the limits land in memory.max / memory.swap.max /
    pids.max / cpu.weight / cpuset.cpus; when our own cgroup cannot delegate (it holds
    processes) the step's cgroup is made beside it."""
    from builder.sandbox.cgroups import Layout, StepCgroup
    from builder.sandbox.spec import ResourceLimits

    parent = tmp_path / "slice"
    own = parent / "job"
    own.mkdir(parents=True)
    for d in (parent, own):
        (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (parent / "cgroup.subtree_control").write_text("")
    (own / "cgroup.subtree_control").mkdir()  # writing it fails, as EBUSY would
    (own / "memory.swap.max").touch()
    lay = Layout("v2", v2=own, v2_controllers=frozenset({"memory", "pids", "cpu", "cpuset"}))
    cg = StepCgroup(ResourceLimits(memory=256 << 20, memory_swap=512 << 20, pids=64, cpu_shares=1024,
                                   cpuset_cpus="0"), lay)
    cg.create()
    d = cg.dirs["v2"]
    assert d.parent == parent and d.name.startswith(f"pybuild-{os.getpid()}-")
    assert (parent / "cgroup.subtree_control").read_text().split() == ["+memory", "+pids", "+cpu", "+cpuset"]
    assert (d / "memory.max").read_text() == str(256 << 20)
    assert (d / "pids.max").read_text() == "64"
    assert (d / "cpu.weight").read_text() == str(1 + (1024 - 2) * 9999 // 262142)
    assert (d / "cpuset.cpus").read_text() == "0"


@pytest.mark.root
@pytest.mark.overlay
def test_cgroups_of_dead_builders_are_swept_by_a_build_with_run(tmp_path: Path) -> None:
    """A step cgroup left by a killed builder (its PID gone) is removed by the next build that
    runs a step (after its first spare init is ready; the build waits for the sweep)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    lay = layout()
    parent = next(iter(lay.v1.values()), None) or lay.v2
    assert parent is not None
    stale = parent / f"pybuild-{dead.pid}-left"
    stale.mkdir()
    try:
        root = new_store(tmp_path)
        ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nRUN true\n")
        build(ctx, root, "--no-cache").ok()
        assert not stale.exists()
    finally:
        if stale.exists():
            stale.rmdir()
