"""The RUN sandbox, for real: namespaces, overlay, mounts, capabilities, cleanup, copy fallback.

Every test runs commands from the host's static busybox in a tiny root file system used as the
overlay lower dir. All need root (marker ``root``/``overlay``); under CI=true they always run.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import threading
import uuid
import sys
from pathlib import Path

import pytest

from builder.errors import HostError
from builder.layer.entries import EntryType
from builder.layer.whiteout import OPAQUE_MARKER, upper_entries, upper_is_empty
from builder.sandbox.caps import DEFAULT_MASK
from builder.sandbox import probe as probe_mod
from builder.sandbox.probe import probe_host
from builder.sandbox import initproc as initproc_mod
from builder.sandbox import runner as runner_mod
from builder.sandbox.runner import run
from builder.sandbox.spec import HostCaps, MountSpec, ProcessSpec, RunResult

pytestmark = [pytest.mark.root, pytest.mark.overlay]

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh echo cat ls hostname ps ip ifconfig id sleep touch rm mkdir readlink grep head tr wc "
           "kill true false env pwd ln chmod stat mount").split()
ENV = (("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),)


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/busybox + applet links, /etc with one file, /opt/sub/f. No /proc, /dev, /sys on purpose:
    the sandbox must create them as stubs and leave no trace in the upper dir."""
    if not BUSYBOX.exists():
        pytest.fail("busybox-static is not installed (/bin/busybox)")
    root = tmp_path_factory.mktemp("busybox-rootfs")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for name in APPLETS:
        os.symlink("busybox", root / "bin" / name)
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("hello\n")
    (root / "opt" / "sub").mkdir(parents=True)
    (root / "opt" / "sub" / "f").write_text("o\n")
    (root / "opt" / "g").write_text("g\n")
    (root / "var").mkdir()
    os.symlink("/run", root / "var" / "run")  # a dangling absolute link, as in many images
    return root


class Step:
    """Runs scripts over ``rootfs`` with a fresh upper/work dir per call; keeps the output."""

    def __init__(self, rootfs: Path, base: Path) -> None:
        self.rootfs = rootfs
        self.base = base
        self.n = 0
        self.upper = base
        self.lines: list[bytes] = []

    def spec(self, argv: tuple[str, ...], **kw) -> ProcessSpec:  # type: ignore[no-untyped-def]
        self.n += 1
        self.upper = self.base / f"u{self.n}"
        work = self.base / f"w{self.n}"
        self.upper.mkdir()
        work.mkdir()
        self.lines = []
        kw.setdefault("lowerdirs", (self.rootfs,))
        kw.setdefault("env", ENV)
        return ProcessSpec(argv=argv, upperdir=self.upper, workdir=work, on_output=self.lines.append, **kw)

    def sh(self, script: str, *, force_copy: bool = False, cancel: threading.Event | None = None,
           **kw) -> RunResult:  # type: ignore[no-untyped-def]
        return run(self.spec(("/bin/sh", "-c", script), **kw), cancel=cancel, force_copy=force_copy)

    @property
    def out(self) -> str:
        return b"".join(self.lines).decode()

    def entries(self) -> dict[str, tuple]:
        return {e.name: (e.type, e.mode, e.uid, e.gid, e.size, e.linkname) for e in upper_entries(self.upper)}


@pytest.fixture
def step(rootfs: Path, tmp_path: Path) -> Step:
    return Step(rootfs, tmp_path)


def _procs_with_marker(marker: str) -> list[int]:
    found = []
    for env_path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(env_path, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(env_path.split("/")[2]))
        except OSError:
            continue
    return found


def _mount_lines(fragment: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if fragment in line]


def test_probe_finds_overlay() -> None:
    caps = probe_host()
    assert caps.root and caps.overlay, caps.reason
    for opt in caps.overlay_options.split(",") if caps.overlay_options else ():
        assert opt in ("index=off", "metacopy=off", "redirect_dir=off", "volatile")


def test_rootless_probe_asks_for_no_volatile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rootless, the overlay keeps its sync: a volatile mount leaves mode-000 dirs with a file
    inside in the work dir, which an unprivileged builder could not remove."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    caps = probe_mod._probe(str(tmp_path), os.stat(tmp_path).st_dev)
    options = caps.overlay_options.split(",")
    assert "userxattr" in options and "volatile" not in options, options
    assert "volatile" in probe_mod._known_options()  # what root asks for on this kernel


def test_step_overlay_is_volatile(step: Step) -> None:
    """On Linux 5.10+ a step's root overlay is mounted ``volatile`` (its unmount does not sync
    the upper dir's file system); the mount options are read back inside the step."""
    assert probe_mod._kernel_at_least(5, 10), "these machines run Linux 6"
    r = step.sh("cat /proc/self/mountinfo")
    assert r.exit_code == 0, step.out
    root = [line.split(" - ", 1) for line in step.out.splitlines() if line.split(" ")[4] == "/"]
    assert len(root) == 1, step.out
    fstype, _source, super_options = root[0][1].split(" ", 2)
    assert fstype == "overlay"
    shown = super_options.strip().split(",")
    assert "volatile" in shown or "fsync=volatile" in shown, super_options  # newer kernels show the latter
    assert "upperdir=" in super_options  # the step's own overlay, not a bind of the host's root


def test_probe_is_cached_per_file_system(tmp_path: Path) -> None:
    """Every RUN has a new upper dir: the probe is keyed by the file system, not the path, so
    two new dirs on one file system share one probe (no temp dir left by it either)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    first = probe_host(a)
    assert probe_host(b) is first
    assert probe_host(tmp_path) is first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.fixture
def probe_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh process-level probe cache and a private state dir (instead of /run/pybuild)."""
    monkeypatch.setattr(probe_mod, "_STATE_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(probe_mod, "_cache", {})
    monkeypatch.setattr(probe_mod, "_persisted", set())
    return tmp_path / "run"


def _forget_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new process sees: no cached probe in memory (the state dir stays)."""
    monkeypatch.setattr(probe_mod, "_cache", {})
    monkeypatch.setattr(probe_mod, "_persisted", set())


def _state_file(state: Path, where: Path) -> Path:
    return state / f"overlay-{os.stat(where).st_dev}"


def test_probe_persisted_is_reused(probe_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A successful probe is persisted per boot and file system; a later process reuses it
    without mounting (no probe counted, no pbprobe- dir)."""
    where = tmp_path / "d"
    where.mkdir()
    before = probe_mod.overlay_probes
    first = probe_host(where)
    assert first.overlay and probe_mod.overlay_probes == before + 1
    state = _state_file(probe_state, where)
    assert os.stat(probe_state).st_mode & 0o777 == 0o700
    assert os.stat(state).st_mode & 0o777 == 0o600
    assert json.loads(state.read_text())["options"] == first.overlay_options
    _forget_in_process(monkeypatch)
    again = probe_host(where)
    assert again == first
    assert probe_mod.overlay_probes == before + 1
    assert list(where.iterdir()) == []
    assert sorted(p.name for p in probe_state.iterdir()) == [state.name]  # no temp file left


@pytest.mark.parametrize("damage", ["boot", "fsid", "kernel", "corrupt", "symlink"])
def test_probe_persisted_mismatch_reprobes(probe_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           damage: str) -> None:
    where = tmp_path / "d"
    where.mkdir()
    first = probe_host(where)
    state = _state_file(probe_state, where)
    good = json.loads(state.read_text())
    if damage == "corrupt":
        state.write_text('{"key": [')
    elif damage == "symlink":
        (tmp_path / "elsewhere").write_text(state.read_text())
        state.unlink()
        state.symlink_to(tmp_path / "elsewhere")
    else:
        bad = dict(good, key=list(good["key"]))
        bad["key"][{"boot": 0, "fsid": 2, "kernel": 3}[damage]] += "x"
        state.write_text(json.dumps(bad))
    _forget_in_process(monkeypatch)
    before = probe_mod.overlay_probes
    assert probe_host(where) == first
    assert probe_mod.overlay_probes == before + 1
    assert not state.is_symlink() and json.loads(state.read_text()) == good  # rewritten


def test_probe_persisted_options_refused_reprobe_once(probe_state: Path, step: Step,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Persisted options the kernel refuses: the step's mount fails, the runner forgets the file,
    probes again and the step runs; the file then holds the options that work."""
    first = probe_host(step.base)
    state = _state_file(probe_state, step.base)
    good = json.loads(state.read_text())
    state.write_text(json.dumps(dict(good, options="redirect_dir=bogus")))
    _forget_in_process(monkeypatch)
    before = probe_mod.overlay_probes
    r = step.sh("echo ran")
    assert r.exit_code == 0 and step.out == "ran\n"
    assert probe_mod.overlay_probes == before + 1
    assert json.loads(state.read_text()) == good
    assert probe_host(step.base) == first


def test_probe_not_persisted_elsewhere_refused(probe_state: Path, step: Step) -> None:
    """A refused mount with a probe of this process (not persisted): no retry, a clear error."""
    probe_host(step.base)
    key = os.stat(step.base).st_dev
    caps = probe_mod._cache[key]
    probe_mod._cache[key] = HostCaps(root=True, overlay=True, overlay_options="redirect_dir=bogus",
                                     userns=caps.userns)
    before = probe_mod.overlay_probes
    with pytest.raises(HostError, match="overlay mount"):
        step.sh("echo ran")
    assert probe_mod.overlay_probes == before and step.out == ""


@pytest.mark.parametrize("network", ["none", "host"])
def test_namespaces_are_new(step: Step, network: str) -> None:
    r = step.sh("for n in ipc mnt pid uts net; do echo $n $(readlink /proc/self/ns/$n); done", network=network)
    assert r.exit_code == 0, step.out
    inside = dict(line.split(" ", 1) for line in step.out.splitlines())
    for n in ("ipc", "mnt", "pid", "uts"):
        assert inside[n] != os.readlink(f"/proc/self/ns/{n}"), n
    host_net = os.readlink("/proc/self/ns/net")
    assert (inside["net"] == host_net) == (network == "host")


def test_hostname_pid1_and_ps(step: Step) -> None:
    r = step.sh("echo $$; hostname; cat /etc/hostname; ps -o pid,args")
    assert r.exit_code == 0, step.out
    lines = step.out.splitlines()
    assert lines[0] == "1"
    name = lines[1]
    assert name != os.uname().nodename and len(name) == 12 and int(name, 16) >= 0
    assert lines[2] == name
    procs = [line.split(None, 1) for line in lines[4:]]
    assert {p[0] for p in procs} <= {"1", "2", "3"}, procs  # only the step's own processes
    assert not any("python" in p[1] for p in procs)


def test_given_hostname_in_hosts(step: Step) -> None:
    r = step.sh("hostname; cat /etc/hosts", hostname="buildbox")
    assert r.exit_code == 0
    assert step.out.splitlines()[0] == "buildbox"
    assert "127.0.0.1\tlocalhost buildbox" in step.out


def test_network_none_has_only_lo_up(step: Step) -> None:
    r = step.sh("cat /proc/net/dev", network="none")
    assert r.exit_code == 0, step.out
    devs = [line.split(":")[0].strip() for line in step.out.splitlines()[2:]]
    assert devs == ["lo"]
    r = step.sh("ip -o link", network="none")
    assert r.exit_code == 0, step.out
    links = step.out.splitlines()
    assert len(links) == 1 and ": lo:" in links[0]
    assert "UP" in links[0].split("<")[1].split(">")[0].split(",")


def test_network_host_sees_host_interfaces(step: Step) -> None:
    r = step.sh("cat /proc/net/dev", network="host")
    assert r.exit_code == 0
    with open("/proc/net/dev") as f:
        host = {line.split(":")[0].strip() for line in f if ":" in line}
    inside = {line.split(":")[0].strip() for line in step.out.splitlines() if ":" in line}
    assert inside == host


def test_upper_dir_changes(step: Step) -> None:
    """The brief's script. /etc holds the bind-mounted hosts/resolv.conf/hostname (as in Docker and
    BuildKit), so ``rm -rf /etc`` cannot remove the directory: the result is a whiteout per file."""
    r = step.sh("touch /a; rm /bin/cat; rm -rf /etc; mkdir /etc; echo x >/etc/f")
    assert r.exit_code == 0
    assert "Device or resource busy" in step.out
    got = step.entries()
    assert set(got) == {"a", "bin", "bin/.wh.cat", "etc", "etc/.wh.motd", "etc/f"}
    assert got["bin/.wh.cat"][:1] == (EntryType.FILE,) and got["bin/.wh.cat"][4] == 0
    assert got["etc/f"][0] is EntryType.FILE and got["etc/f"][4] == 2


def test_opaque_directory(step: Step) -> None:
    r = step.sh("rm -rf /opt; mkdir /opt; echo x >/opt/f")
    assert r.exit_code == 0, step.out
    got = step.entries()
    assert set(got) == {"opt", f"opt/{OPAQUE_MARKER}", "opt/f"}


def test_exit_code_and_exec_failure(step: Step) -> None:
    assert step.sh("exit 7").exit_code == 7
    r = run(step.spec(("/no/such/tool", "x")))
    assert r.exit_code == 127 and "/no/such/tool" in step.out
    r = step.sh('sh -c "kill -9 \\$\\$"; echo status=$?')
    assert "status=137" in step.out


def test_orphan_is_killed_when_step_ends(step: Step) -> None:
    marker = "PBTEST_" + uuid.uuid4().hex
    r = step.sh("sleep 1000 & echo started", env=ENV + ((marker, "1"),))
    assert r.exit_code == 0 and "started" in step.out
    assert _procs_with_marker(marker) == []


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runner's temp dirs go to a directory of this test only (others may run steps too)."""
    base = tmp_path / "sbtmp"
    base.mkdir()
    monkeypatch.setattr(initproc_mod, "_tmp_base", str(base))
    return base


def test_cancel_kills_and_cleans(step: Step, private_tmp: Path) -> None:
    marker = "PBTEST_" + uuid.uuid4().hex
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        r = step.sh("echo running; sleep 1000", cancel=cancel, env=ENV + ((marker, "1"),))
    finally:
        timer.cancel()
    assert r.cancelled and r.exit_code == 137
    assert _procs_with_marker(marker) == []
    assert list(private_tmp.iterdir()) == []
    assert _mount_lines(str(private_tmp)) == [] and _mount_lines(str(step.upper)) == []


def test_etc_files_exist_but_not_in_upper(step: Step) -> None:
    r = step.sh("ls -l /etc/hosts /etc/resolv.conf /etc/hostname && ls /proc/1 /dev/null /sys/kernel >/dev/null")
    assert r.exit_code == 0, step.out
    assert upper_is_empty(step.upper), step.entries()


def test_only_std_fds_open(step: Step) -> None:
    r = step.sh("ls /proc/1/fd; true")  # the shell's (PID 1) descriptors, not ls's own
    assert r.exit_code == 0
    assert step.out.split() == ["0", "1", "2"]


def test_capabilities_are_dockers_default(step: Step) -> None:
    r = step.sh("grep Cap /proc/self/status; grep NoNewPrivs /proc/self/status")
    assert r.exit_code == 0
    caps = dict(line.split(":\t") for line in step.out.splitlines())
    want = f"{DEFAULT_MASK:016x}"
    assert want == "00000000a80425fb"
    assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"]) == (want, want, want)
    assert caps["CapInh"] == caps["CapAmb"] == "0" * 16
    assert caps["NoNewPrivs"] == "1"


def test_non_root_user(step: Step) -> None:
    r = step.sh("id -u; id -g; id -G; grep -E 'CapEff|CapBnd' /proc/self/status", uid=1000, gid=1001,
                groups=(1001, 27))
    assert r.exit_code == 0, step.out
    lines = step.out.splitlines()
    assert lines[:2] == ["1000", "1001"] and set(lines[2].split()) == {"1001", "27"}
    assert "CapEff:\t0000000000000000" in lines and "CapBnd:\t00000000a80425fb" in lines


def test_stdin_cwd_env(step: Step) -> None:
    r = step.sh("pwd; echo $GREETING; cat", stdin=b"from stdin\n", cwd="/opt/sub",
                env=ENV + (("GREETING", "hi there"),))
    assert r.exit_code == 0
    assert step.out.splitlines() == ["/opt/sub", "hi there", "from stdin"]


def test_long_line_is_never_clipped(step: Step) -> None:
    r = step.sh("head -c 300000 /dev/zero | tr '\\0' a; echo; echo end")
    assert r.exit_code == 0
    assert step.out == "a" * 300000 + "\nend\n"
    assert all(len(line) <= 65536 for line in step.lines)


def test_mounts_and_secrets_leave_no_trace(step: Step, tmp_path: Path) -> None:
    src = tmp_path / "ctx"
    src.mkdir()
    (src / "in.txt").write_text("context\n")
    (tmp_path / "scr").mkdir()
    r = step.sh(
        "cat /ctx/in.txt /run/secrets/token; touch /ctx/no 2>/dev/null && echo WRITABLE; "
        "echo c > /cache/c && cat /cache/c; echo s > /scratch/s",
        mounts=(MountSpec(target="/ctx", source=src), MountSpec(target="/cache", kind="tmpfs", size=1 << 20),
                MountSpec(target="/scratch", source=tmp_path / "scr", readonly=False)),
        extra_files=(("/run/secrets/token", b"s3cret\n"),),
    )
    assert r.exit_code == 0, step.out
    assert step.out.splitlines() == ["context", "s3cret", "c"]
    assert (tmp_path / "scr" / "s").read_text() == "s\n"
    assert upper_is_empty(step.upper), step.entries()


def test_scratch_root(step: Step) -> None:
    r = run(step.spec(("/busybox", "sh", "-c", "echo hi > /x; /busybox cat /x"), lowerdirs=(),
                      mounts=(MountSpec(target="/busybox", source=BUSYBOX),)))
    assert r.exit_code == 0, step.out
    assert step.out == "hi\n"
    assert set(step.entries()) == {"x"}


def test_bad_mount_source_is_host_error(step: Step) -> None:
    with pytest.raises(HostError, match="does not exist"):
        run(step.spec(("/bin/true",), mounts=(MountSpec(target="/m", source=Path("/no/such/dir")),)))


def test_mount_target_of_wrong_type_is_reported(step: Step, tmp_path: Path) -> None:
    with pytest.raises(HostError, match="not a directory|is a directory"):
        run(step.spec(("/bin/true",), mounts=(MountSpec(target="/etc/motd", kind="tmpfs"),)))
    assert _mount_lines(str(step.upper)) == []


SCRIPT = ("touch /a; rm /bin/cat; rm -rf /opt; mkdir /opt; echo x >/opt/f; mkdir -p /new/deep; "
          "ln /a /new/hard; ln -s /a /new/sym; chmod 700 /etc; rm /etc/motd; echo y > /etc/motd2")


def test_copy_fallback_matches_overlay(step: Step) -> None:
    assert step.sh(SCRIPT).exit_code == 0, step.out
    with_overlay = step.entries()
    r = step.sh(SCRIPT, force_copy=True)
    assert r.exit_code == 0, step.out
    assert step.entries() == with_overlay
    assert "new/hard" in with_overlay and f"opt/{OPAQUE_MARKER}" in with_overlay
    assert list((step.base / f"w{step.n}").iterdir()) == []  # the private root is gone


def test_copy_fallback_stacks_lower_layers(step: Step, tmp_path: Path) -> None:
    """A lower layer in overlay format (whiteout + opaque dir) over the busybox root."""
    top = tmp_path / "top"
    (top / "opt").mkdir(parents=True)
    os.setxattr(top / "opt", "trusted.overlay.opaque", b"y")
    (top / "opt" / "only").write_text("1\n")
    os.mknod(top / "etc", 0o020000, 0)  # whiteout of /etc
    script = "ls /opt; ls /etc 2>&1 | head -1; ls / | grep -c etc"
    assert step.sh(script, lowerdirs=(top, step.rootfs)).exit_code == 0
    expected = step.out
    assert step.sh(script, lowerdirs=(top, step.rootfs), force_copy=True).exit_code == 0
    assert step.out == expected
    assert expected.splitlines()[0] == "only"


def test_exception_in_callback_kills_and_cleans(step: Step, private_tmp: Path) -> None:
    """An exception while the step runs (here from on_output; KeyboardInterrupt takes the same
    path) kills the step, removes the temp dir and propagates."""
    marker = "PBTEST_" + uuid.uuid4().hex

    class Boom(Exception):
        pass

    def explode(line: bytes) -> None:
        raise Boom(line)

    spec = step.spec(("/bin/sh", "-c", "echo first; sleep 1000"), env=ENV + ((marker, "1"),))
    spec = ProcessSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, "on_output": explode})
    with pytest.raises(Boom):
        run(spec)
    assert _procs_with_marker(marker) == []
    assert list(private_tmp.iterdir()) == []
    assert upper_is_empty(step.upper)


def test_mount_through_image_symlink_leaves_no_stub(step: Step, tmp_path: Path) -> None:
    """/var/run -> /run (missing): the target is created as a stub in the upper dir, used, and
    removed after the step together with the directories made for it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x").write_text("via link\n")
    r = step.sh("cat /var/run/data/x; ls -d /run/data",
                mounts=(MountSpec(target="/var/run/data", source=tmp_path / "data"),))
    assert r.exit_code == 0, step.out
    assert step.out.splitlines() == ["via link", "/run/data"]
    assert upper_is_empty(step.upper), step.entries()


def test_parallel_steps_do_not_mix(rootfs: Path, tmp_path: Path) -> None:
    steps = [Step(rootfs, tmp_path / f"p{i}") for i in range(4)]
    for st in steps:
        st.base.mkdir()
    results: dict[int, RunResult] = {}

    def one(i: int) -> None:
        results[i] = steps[i].sh(f"echo {i} > /mine; hostname", hostname=f"host{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, st in enumerate(steps):
        assert results[i].exit_code == 0
        assert st.out == f"host{i}\n"
        assert (st.upper / "mine").read_text() == f"{i}\n"
        assert set(st.entries()) == {"mine"}


ROOTLESS_SCRIPT = r'''
import json, sys
from pathlib import Path
from builder.sandbox.runner import run
from builder.sandbox.spec import ProcessSpec
from builder.layer.whiteout import upper_entries
base = Path(sys.argv[1])
lines = []
spares = None
if sys.argv[3:] == ["spare"]:  # a first step, so that the real one runs on the spare it leaves
    from builder.sandbox.spare import Spares
    spares = Spares()
    (base / "up0").mkdir()
    (base / "wk0").mkdir()
    assert run(ProcessSpec(argv=("/bin/true",), lowerdirs=(base / "rootfs",), upperdir=base / "up0",
                           workdir=base / "wk0", env=(("PATH", "/bin"),)), spares=spares).exit_code == 0
r = run(ProcessSpec(argv=("/bin/sh", "-c", sys.argv[2]), lowerdirs=(base / "rootfs",), upperdir=base / "up",
                    workdir=base / "wk", env=(("PATH", "/bin"),), on_output=lines.append), spares=spares)
if spares is not None:
    spares.close()
entries = {e.name: [e.type.name, e.mode, e.uid, e.gid] for e in
           upper_entries(base / "up", userxattr=r.userxattr, uidmap=r.uidmap, gidmap=r.gidmap)}
print(json.dumps({"exit": r.exit_code, "warnings": r.warnings, "out": b"".join(lines).decode(),
                  "entries": entries}))
'''


def _interpreter_for(uid: int) -> str | None:
    import subprocess
    for cand in (sys.executable, "/usr/bin/python3"):
        ok = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "env", cand, "-c",
                             "import sys; assert sys.version_info >= (3, 11)"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if ok.returncode == 0:
            return cand
    return None


@pytest.mark.userns
@pytest.mark.parametrize("spare", [False, True], ids=["own-init", "spare-init"])
def test_rootless_step_as_nobody(rootfs: Path, spare: bool) -> None:
    """A non-root user (nobody) runs a step: user namespace (single-id map without a subuid
    range), overlay with userxattr, ids mapped back to 0 in the layer entries. The same on a
    spare init (builder.sandbox.spare: forked by the fork server)."""
    import json
    import subprocess
    import tempfile
    nobody = 65534
    py = _interpreter_for(nobody)
    if py is None or not shutil.which("setpriv"):
        pytest.fail("no Python >= 3.11 usable by uid 65534, or no setpriv")
    base = Path(tempfile.mkdtemp(prefix="pbrootless-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        shutil.copytree(Path(__file__).resolve().parent.parent / "builder", base / "pkg" / "builder")
        shutil.copytree(rootfs, base / "rootfs", symlinks=True)
        for d in ("up", "wk"):
            (base / d).mkdir()
        for p in [base, *base.rglob("*")]:
            os.lchown(p, nobody, nobody)
        script = "id -u; echo $$; touch /a; rm /bin/cat; rm -rf /opt; mkdir /opt; echo x >/opt/f"
        res = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                              "env", f"PYTHONPATH={base / 'pkg'}", py, "-c", ROOTLESS_SCRIPT, str(base), script,
                              *(["spare"] if spare else [])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=base)
        assert res.returncode == 0, res.stderr.decode()
        got = json.loads(res.stdout)
        assert got["exit"] == 0, got
        assert got["out"].splitlines() == ["0", "1"]
        assert set(got["entries"]) == {"a", "bin", "bin/.wh.cat", "opt", f"opt/{OPAQUE_MARKER}", "opt/f"}
        assert all(e[2] == 0 and e[3] == 0 for e in got["entries"].values()), got["entries"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.userns
@pytest.mark.parametrize("spare", [False, True], ids=["own-init", "spare-init"])
def test_rootless_step_with_subordinate_ids(rootfs: Path, spare: bool) -> None:
    """With a subordinate id range in /etc/subuid and /etc/subgid (and the setuid newuidmap /
    newgidmap of Debian's uidmap package), a rootless step has ids beyond 0: it can chown to
    1000:2000, and the layer entries carry 1000:2000 again (also on a spare init, whose maps
    newuidmap writes for an outer forked by the fork server). The host files are restored after."""
    import json
    import subprocess
    import tempfile
    nobody = 65534
    py = _interpreter_for(nobody)
    if py is None or not shutil.which("setpriv") or not shutil.which("newuidmap"):
        pytest.fail("needs a Python >= 3.11 usable by uid 65534, setpriv and newuidmap (uidmap package)")
    saved = {f: (Path(f).read_bytes() if Path(f).exists() else None) for f in ("/etc/subuid", "/etc/subgid")}
    base = Path(tempfile.mkdtemp(prefix="pbsubid-", dir="/tmp"))
    try:
        for f, old in saved.items():
            Path(f).write_bytes((old or b"") + f"{nobody}:400000:65536\n".encode())
        os.chmod(base, 0o755)
        shutil.copytree(Path(__file__).resolve().parent.parent / "builder", base / "pkg" / "builder")
        shutil.copytree(rootfs, base / "rootfs", symlinks=True)
        for d in ("up", "wk"):
            (base / d).mkdir()
        for p in [base, *base.rglob("*")]:
            os.lchown(p, nobody, nobody)
        script = "mkdir /d && echo x > /d/f && chown 1000:2000 /d /d/f && ls -ln /d | tail -1"
        res = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                              "env", f"PYTHONPATH={base / 'pkg'}", py, "-c", ROOTLESS_SCRIPT, str(base), script,
                              *(["spare"] if spare else [])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=base)
        assert res.returncode == 0, res.stderr.decode()
        got = json.loads(res.stdout)
        assert got["exit"] == 0, got
        assert not any("subordinate" in w or "newuidmap" in w for w in got["warnings"]), got["warnings"]
        assert got["out"].split()[2:4] == ["1000", "2000"], got["out"]
        assert got["entries"]["d"][2:] == [1000, 2000] and got["entries"]["d/f"][2:] == [1000, 2000], got
        host = os.lstat(base / "up" / "d" / "f")
        assert (host.st_uid, host.st_gid) == (400000 + 999, 400000 + 1999)  # container 1 = host 400000
    finally:
        for f, old in saved.items():
            if old is None:
                Path(f).unlink(missing_ok=True)
            else:
                Path(f).write_bytes(old)
        shutil.rmtree(base, ignore_errors=True)


def test_proc_masks_and_readonly_sys(step: Step) -> None:
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
              if os.path.isfile(p)]
    assert masked, "no maskable /proc file on this kernel"
    reads = "; ".join(f"cat {p} | wc -c" for p in masked)
    r = step.sh(f"{reads}; (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null || echo procsys-ro; "
                "(touch /sys/x) 2>/dev/null || echo sys-ro; mount | grep -E ' /(sys|proc/sys) '")
    assert r.exit_code == 0, step.out
    lines = step.out.splitlines()
    n = len(masked)
    assert lines[:n] == ["0"] * n, list(zip(masked, lines, strict=False))
    assert lines[n:n + 2] == ["procsys-ro", "sys-ro"]
    mounts = lines[n + 2:]
    assert len(mounts) == 2 and all("(ro," in line for line in mounts), mounts


def _nameservers(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]


def test_resolv_conf_for_host_network(step: Step) -> None:
    """BuildKit's resolv.conf (builder/sandbox/resolvconf.py, unit-tested in
    test_resolvconf.py): the host's servers on the host network, never a loopback one off it."""
    r = step.sh("cat /etc/resolv.conf", network="host")
    assert r.exit_code == 0
    host = Path("/etc/resolv.conf")
    host_servers = _nameservers(host.read_text()) if host.exists() else []
    if host_servers:
        assert _nameservers(step.out) == host_servers
    step.sh("cat /etc/resolv.conf", network="none")
    off = _nameservers(step.out)
    assert off and not [a for a in off if a.startswith("127.") or a == "::1"], step.out


def test_many_long_lower_dirs(step: Step, tmp_path: Path) -> None:
    """120 layers with 200-character paths: far beyond one page of mount options if passed
    as is; the runner's short links keep it small."""
    layers = []
    deep = tmp_path / ("L" * 180)
    for i in range(120):
        d = deep / f"layer-{i:04d}"
        (d / "layers").mkdir(parents=True)
        (d / "layers" / f"f{i}").write_text(f"{i}\n")
        layers.append(d)
    assert sum(len(str(p)) + 1 for p in layers) > 4096
    lowers = tuple(reversed(layers)) + (step.rootfs,)
    r = step.sh("ls /layers | wc -l; cat /layers/f0 /layers/f119", lowerdirs=lowers)
    assert r.exit_code == 0, step.out
    assert step.out.split() == ["120", "0", "119"]


@pytest.mark.parametrize("force_copy", [False, True])
def test_files_written_next_to_stubs_are_kept(step: Step, tmp_path: Path, force_copy: bool) -> None:
    """A root without /etc: the stubs for /etc/hosts... are removed, files the command wrote
    beside them stay (overlay and copy fallback alike)."""
    bare = tmp_path / "bare"
    (bare / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, bare / "bin" / "busybox")
    os.symlink("busybox", bare / "bin" / "sh")
    r = step.sh("echo mine > /etc/mine", lowerdirs=(bare,), force_copy=force_copy)
    assert r.exit_code == 0, step.out
    assert set(step.entries()) == {"etc", "etc/mine"}


def test_bare_command_found_through_path(step: Step) -> None:
    """argv[0] without a slash is looked up in the step's PATH inside the new root."""
    r = run(step.spec(("sh", "-c", "echo found $0")))
    assert r.exit_code == 0, step.out
    assert step.out == "found sh\n"
    r = run(step.spec(("no-such-command",)))
    assert r.exit_code == 127 and "no-such-command" in step.out and "Traceback" not in step.out
    r = run(step.spec(("sh", "-c", "echo default path"), env=()))  # no PATH: the usual default
    assert r.exit_code == 0 and step.out == "default path\n"


def test_stale_temp_dirs_of_dead_runners_are_swept(step: Step, private_tmp: Path) -> None:
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = private_tmp / f"pbsb-{dead.pid}-abcd"
    (stale / "f").mkdir(parents=True)
    (stale / "f" / "hosts").write_text("x")
    alive = private_tmp / f"pbsb-{os.getpid()}-live"
    alive.mkdir()
    runner_mod._swept.discard(str(private_tmp))
    assert step.sh("true").exit_code == 0
    assert not stale.exists() and alive.exists()
