"""Spare sandbox inits (builder.sandbox.spare): a RUN takes the init started ahead for it only
when its limits match and it has no stdin; stdin, cwd and cancel behave as with an init of its
own; the spare and its cgroup are gone after the build (in-process and CLI), a killed builder
takes its spare along, and a fully cached rebuild starts none."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buildutil import BASE_TAG, busybox_store
from runutil import assert_clean, build, make_context, new_store, pybuild_argv, pybuild_env, REPO
from test_run_failures import _StderrWatch
from test_sandbox import Step, rootfs, step  # noqa: F401  (the busybox root and step of the sandbox tests)

from builder.sandbox.cgroups import layout
from builder.sandbox.runner import run
from builder.sandbox.spare import Spares
from builder.sandbox.spec import ResourceLimits

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DEFAULTS = ResourceLimits(pids=4096)
INIT_CODE = b"builder.sandbox.init"


def _inits_of(pid: int) -> list[int]:
    """Sandbox inits below ``pid``: its children that are inits (or the fork server) and
    theirs (inits forked by the server)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if INIT_CODE in Path(f"/proc/{entry}/cmdline").read_bytes():
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found = [p for p, pp in parents.items() if pp == pid]
    return found + [p for p, pp in parents.items() if pp in found]


def _cgroups_of(pid: int) -> list[str]:
    """Step cgroups named for ``pid`` in this process's hierarchies."""
    lay = layout()
    dirs = list(lay.v1.values()) + ([lay.v2, lay.v2.parent] if lay.v2 else [])
    return [str(d / n) for d in dirs for n in os.listdir(d) if n.startswith(f"pybuild-{pid}-")]


def _own_cgroup(out: str) -> str:
    """The pids cgroup a step printed from /proc/self/cgroup (v1 ``pids`` line, else v2)."""
    lines = [line.split(":", 2) for line in out.splitlines() if line.count(":") >= 2]
    for _, names, path in lines:
        if "pids" in names.split(","):
            return path
    return next(path for _, names, path in lines if names == "")


@pytest.fixture
def spares() -> Iterator[Spares]:
    sp = Spares()
    yield sp
    sp.close()
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []


def test_steps_take_the_spare_and_leave_nothing(step: Step, spares: Spares) -> None:
    """Each step after the first runs on the init started ahead (in its own new cgroup); the
    close at the end kills the last spare and removes its cgroup (the fixture checks)."""
    seen = []
    for i in range(3):
        r = run(step.spec(("/bin/sh", "-c", f"cat /proc/self/cgroup; cat; pwd; echo {i} > /f"), cwd="/opt/sub",
                          limits=DEFAULTS), spares=spares)
        assert r.exit_code == 0, step.out
        assert step.out.splitlines()[-1] == "/opt/sub"  # stdin was /dev/null: cat read nothing
        assert (step.upper / "f").read_text() == f"{i}\n"
        seen.append(_own_cgroup(step.out))
    assert len(set(seen)) == 3 and all(f"pybuild-{os.getpid()}-" in c for c in seen), seen
    assert _inits_of(os.getpid())  # the spare for a next step, waiting (and maybe an exiting init)


def test_a_spare_is_never_used_with_other_limits(step: Step, spares: Spares) -> None:
    """A spare made for the default pids limit is not used by a step with --pids-limit 3:
    that step's forks fail at its own limit."""
    assert run(step.spec(("/bin/true",), limits=DEFAULTS), spares=spares).exit_code == 0
    tight = ResourceLimits(pids=3, explicit=True)
    r = run(step.spec(("/bin/sh", "-c", "for i in 1 2 3 4 5 6; do sleep 5 & done; wait"), limits=tight),
            spares=spares)
    assert r.exit_code != 0 and r.limit == "pids limit 3 reached", (r, step.out)


def test_stdin_steps_start_their_own_init(step: Step, spares: Spares) -> None:
    assert run(step.spec(("/bin/true",), limits=DEFAULTS), spares=spares).exit_code == 0
    r = run(step.spec(("/bin/sh", "-c", "cat"), stdin=b"from stdin\n", limits=DEFAULTS), spares=spares)
    assert r.exit_code == 0 and step.out == "from stdin\n"


def test_cancel_kills_a_step_on_a_spare(step: Step, spares: Spares) -> None:
    assert run(step.spec(("/bin/true",), limits=DEFAULTS), spares=spares).exit_code == 0
    cancel = threading.Event()
    started = threading.Event()

    def output(line: bytes) -> None:
        if line == b"running\n":
            started.set()

    spec = dataclasses.replace(step.spec(("/bin/sh", "-c", "echo running; sleep 1000"), limits=DEFAULTS),
                               on_output=output)
    threading.Thread(target=lambda: (started.wait(60), cancel.set()), daemon=True).start()
    r = run(spec, cancel=cancel, spares=spares)
    assert r.cancelled and r.exit_code == 137


def test_a_closed_pool_starts_no_spare(step: Step) -> None:
    sp = Spares()
    sp.close()
    assert run(step.spec(("/bin/true",), limits=DEFAULTS), spares=sp).exit_code == 0
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []


def test_library_build_ends_its_spare(tmp_path: Path) -> None:
    """builder.build in this process: after it returns no init of ours runs, no cgroup of ours
    is left; a fully cached rebuild starts no spare (the module is not even imported)."""
    import builder

    root = busybox_store(tmp_path)
    store = builder.open_store(root)
    ctx = make_context(tmp_path / "ctx", f"FROM {BASE_TAG}\nRUN echo 1 > /one\nRUN echo 2 > /two\n")
    builder.build(ctx, tags=["spare:1"], store=store, on_event=lambda ev: None)
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []
    code = ("import sys; from builder.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, *[m for m in ('builder.sandbox.spare', 'builder.sandbox.initproc') if m in sys.modules])")
    again = subprocess.run([sys.executable, "-c", code, "--progress=plain", "-t", "spare:1", str(ctx)],
                           capture_output=True, text=True, env=pybuild_env(root), check=True)
    assert "CACHED" in again.stderr, again.stderr
    assert again.stdout.split() == ["0"], again.stdout


def test_concurrent_library_builds_each_end_their_spares(tmp_path: Path) -> None:
    """Three builds at once in this process (threads, one store each, RUN steps without the
    cache): each gets its own spares and fork server (one keeper thread for all), every step
    sees its own build's files, and after they return no init or cgroup of ours is left."""
    import builder

    results: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            store = builder.open_store(busybox_store(tmp_path / f"b{i}"))
            steps = "".join(f"RUN echo {i}-{k} > /f{k}\n" for k in range(5))
            ctx = make_context(tmp_path / f"ctx{i}", f"FROM {BASE_TAG}\n{steps}RUN cat /f0 /f4 > /out\n")
            builder.build(ctx, tags=[f"conc:{i}"], store=store, on_event=lambda ev: None, no_cache=True,
                          outputs=[f"type=local,dest={tmp_path / f'out{i}'}"])
            results[i] = (tmp_path / f"out{i}" / "out").read_text()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i}-0\n{i}-4\n" for i in range(3)}
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []


def test_cli_build_and_a_killed_builder_leave_no_spare(tmp_path: Path) -> None:
    """A CLI build leaves nothing (no init, no cgroup of a dead builder); a builder killed
    (SIGKILL) while a RUN runs and a spare waits takes both along (parent-death signal / EOF on
    the spare's config pipe); its cgroups are swept by the next build."""
    root = new_store(tmp_path)
    quick = make_context(tmp_path / "quick", f"FROM {BASE_TAG}\nRUN echo 1 > /one\nRUN echo 2 > /two\n")
    build(quick, root, tag="quick:1").ok()
    assert_clean(root)
    token = "PBTEST_" + uuid.uuid4().hex
    slow = make_context(tmp_path / "slow", f"FROM {BASE_TAG}\nENV {token}=1\nRUN echo 1 > /one\n"
                        "RUN echo slow-started; sleep 1000\n")
    proc = subprocess.Popen(pybuild_argv(["--progress=plain", str(slow)]), cwd=REPO, env=pybuild_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = _StderrWatch(proc)
    assert watch.wait_for(b"slow-started", 120), watch.text()  # a hang guard, not a speed assertion
    inits = _inits_of(proc.pid)
    assert len(inits) >= 2, "the running step's init and the spare (and the fork server)"
    proc.kill()
    proc.wait()
    for _ in range(200):  # counted polls: the kernel delivers the parent-death signals
        if not any(_running(p) for p in inits):
            break
        threading.Event().wait(0.05)
    assert not any(_running(p) for p in inits)
    build(quick, root, "--no-cache", tag="quick:2").ok()
    assert _cgroups_of(proc.pid) == []
    assert_clean(root, [token])


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_pids_limit_one_on_a_spare_names_the_limit(step: Step, spares: Spares) -> None:
    """With pids.max 1 the init cannot fork PID 1: exit 125 and the limit named, also on a
    spare forked by the fork server (whose exit status the runner learns from the init)."""
    one = ResourceLimits(pids=1, explicit=True)
    for _ in range(2):
        r = run(step.spec(("/bin/true",), limits=one), spares=spares)
        assert (r.exit_code, r.limit) == (125, "pids limit 1 reached"), (r, step.out)


def _spy_early(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Record the pids of inits begun ahead (``spare._begin``) and of the inits steps take."""
    from builder.sandbox import spare as spare_mod

    begun: list[int] = []
    taken: list[int] = []
    real_begin, real_take = spare_mod._begin, Spares.take

    def begin(limits: ResourceLimits | None):  # type: ignore[no-untyped-def]
        ready = real_begin(limits)
        if ready is None:
            return None

        def wait():  # type: ignore[no-untyped-def]
            init = ready()
            if init is not None:
                begun.append(init.proc.pid)
            return init
        return wait

    def take(self: Spares, limits: ResourceLimits | None):  # type: ignore[no-untyped-def]
        init = real_take(self, limits)
        if init is not None:
            taken.append(init.proc.pid)
        return init

    monkeypatch.setattr(spare_mod, "_begin", begin)
    monkeypatch.setattr(Spares, "take", take)
    return begun, taken


def test_no_cache_build_runs_its_first_run_on_the_init_begun_before_planning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --no-cache build with RUN steps begins its first init (cgroup, interpreter, attach)
    as soon as the Dockerfile is parsed; the first RUN runs on exactly that init, with the
    build's explicit limits (--pids-limit 5: a step forking more fails naming it); nothing is
    left after the build, or after a build that fails before its first RUN."""
    import builder
    from builder.engine.limits import parse_limits
    from builder.engine.options import BuildOptions
    from builder.errors import PybuildError, StepFailed

    begun, taken = _spy_early(monkeypatch)
    store = builder.open_store(busybox_store(tmp_path))
    ctx = make_context(tmp_path / "ctx", f"FROM {BASE_TAG}\nRUN echo 1 > /one\nRUN cat /one > /two\n")
    builder.build(ctx, tags=["early:1"], store=store, on_event=lambda ev: None, no_cache=True,
                  outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert (tmp_path / "out" / "two").read_text() == "1\n"
    assert len(begun) == 1 and taken[:1] == begun, (begun, taken)
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []

    begun.clear()
    taken.clear()
    forks = make_context(tmp_path / "forks", f"FROM {BASE_TAG}\nRUN for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait\n")
    opts = BuildOptions(context=forks, dockerfile=forks / "Dockerfile", no_cache=True,
                        limits=parse_limits(pids="5"))
    with pytest.raises(StepFailed) as failed:
        builder.build_with(opts, store=store, on_event=lambda ev: None)
    assert failed.value.reason == "pids limit 5 reached", failed.value.render()
    assert len(begun) == 1 and taken[:1] == begun, (begun, taken)
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []

    missing = make_context(tmp_path / "missing", "FROM localhost/no-such-image:1\nRUN echo 1 > /one\n")
    with pytest.raises(PybuildError):
        builder.build(missing, store=store, on_event=lambda ev: None, no_cache=True)
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []


def test_a_stages_last_run_starts_no_spare_for_a_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each RUN that runs has the init of the stage's next RUN started while it runs; the
    stage's last RUN starts none (it would only compete with that RUN for the CPU): a
    --no-cache build with three RUN steps makes three inits and every one runs a step."""
    import builder

    made: list[int] = []
    _, taken = _spy_early(monkeypatch)
    real_make = Spares._make

    def make(self: Spares, key, limits, begun=None):  # type: ignore[no-untyped-def]
        made.append(1)
        return real_make(self, key, limits, begun)

    monkeypatch.setattr(Spares, "_make", make)
    store = builder.open_store(busybox_store(tmp_path))
    ctx = make_context(tmp_path / "ctx", f"FROM {BASE_TAG}\nRUN echo 1 > /one\nRUN echo 2 > /two\n"
                                         "RUN cat /one /two > /three\n")
    builder.build(ctx, tags=["last:1"], store=store, on_event=lambda ev: None, no_cache=True,
                  outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert (tmp_path / "out" / "three").read_text() == "1\n2\n"
    assert len(made) == 3 and len(taken) == 3 and len(set(taken)) == 3, (made, taken)
    assert _inits_of(os.getpid()) == [] and _cgroups_of(os.getpid()) == []


def test_a_spares_pid1_waits_in_its_namespaces_and_cgroup(spares: Spares) -> None:
    """As root, a spare forks its PID 1 before any step comes, and only once it is attached to
    the step's cgroup: the init reports PID 1's pid on its status pipe before it has a config,
    and that PID 1 is in a PID namespace of its own (the network stays the host's until a step
    asks for none) and in the spare's pids cgroup; closing the spares ends both (the fixture
    checks)."""
    import marshal
    import select
    import struct

    spares.prepare(DEFAULTS)
    spare = spares.take(DEFAULTS)  # waits for the spare being made; the caller owns it now
    assert spare is not None and spare.cgroup is not None
    try:
        # an init that forks PID 1 only with its config would never write: fail, do not hang
        assert select.select([spare.st_r], [], [], 120)[0], "no PID 1 before the config"
        with os.fdopen(os.dup(spare.st_r), "rb", buffering=0) as status:
            size = struct.unpack("<I", status.read(4))[0]  # the first message, no config sent
            first = marshal.loads(status.read(size))
        pid1 = first["pid"]
        assert Path(f"/proc/{spare.proc.pid}/task/{spare.proc.pid}/children").read_text().split() == [str(pid1)]
        assert os.readlink(f"/proc/{pid1}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert os.readlink(f"/proc/{pid1}/ns/net") == os.readlink("/proc/self/ns/net")
        cgroups = Path(f"/proc/{pid1}/cgroup").read_text()
        assert f"pybuild-{os.getpid()}-" in _own_cgroup(cgroups), cgroups
    finally:
        spare.discard()
        if spare.cgroup is not None:
            spare.cgroup.close()
