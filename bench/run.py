#!/usr/bin/env python3
"""Time whole pybuild commands on the shared workloads and print medians (and ratios).

Usage: python bench/run.py [--runs N] [--only NAME,...] [--work DIR]

``--only versus`` times pybuild, BuildKit (an isolated dockerd from tests/peers.py) and buildah
on the same workloads, alternating, and prints ratios; ``copyonly`` times ``COPY . /app`` against
``tar | gzip -1``, ``tar | pigz -1`` and ``tar | zstd -3 -T0``.

Every figure is the median wall time of N runs of a whole command (interpreter start included).
Competing commands are run alternately (A B A B ...); quote medians and ratios, not single times.

Storage isolation. On a file system without a journal (these machines' ext4 root), the kernel
will not hand out an inode freed less than a minute ago (five more while its inode-table block
is unwritten) and scans past every such inode on each file creation in that block group: a
directory whose group another process has just emptied creates files up to 30x slower. One tool
deleting its containers beside another's store would then slow the other. So each tool gets a
root of its own under ``WORK/roots`` (marked as the top of directory hierarchies, ``chattr +T``,
so ext4 spreads them over different block groups), made fresh for the run, and nothing is
deleted until every timing is done (``Bench.discard``; stores are removed at the end). Each root
is probed first (2,000 files made) and one where that is not at the disk's clean speed, or that
lies within four flex groups of another tool's root (where that tool's deletions would reach it
as the stores grow), is passed over (``quiet_dir``: the same rule for every tool; printed). Because an
inode-table block that is written to again keeps its freed neighbours "recent" for six minutes,
a run that starts within ``--settle`` seconds (default 370) of the previous run's clean-up in the
same work dir first waits out the rest (it says so); other deletions on the machine in that
window (a test suite, another tool) disturb the figures the same way: run on a quiet machine.
Workloads come from ../shared/bench/workloads; the base image localhost/busybox:latest is made
from the host's busybox-static by testdata/demo/make-base.sh.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PYBUILD_SHARED", REPO.parent / "shared"))
WORKLOADS = SHARED / "bench" / "workloads"
PYBUILD = [shutil.which("pybuild") or "", ] if shutil.which("pybuild") else [sys.executable, "-m", "builder.cli"]


def sh(cmd: list[str] | str, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Run a command, return its wall time; raise on failure."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, shell=isinstance(cmd, str), env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {cmd}\n{r.stderr.decode(errors='replace')[-2000:]}")
    return dt


def sh_rss(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a command; return its wall time, its peak RSS in MB (from wait4's rusage) and its
    standard error."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {cmd}\n{err.decode(errors='replace')[-2000:]}")
    return dt, usage.ru_maxrss // 1024, err.decode(errors="replace")


def step_seconds(rawjson: str, prefix: str) -> float:
    """The time pybuild itself reports for the step whose text starts with ``prefix``."""
    import json

    for line in rawjson.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("type") == "StepFinished" and event.get("text", "").startswith(prefix):
                return float(event["seconds"])
    raise SystemExit(f"no {prefix!r} step in the output")


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread_children(path: Path) -> None:
    """Mark ``path`` as the top of directory hierarchies (ext4's ``T`` attribute): the kernel then
    places each new subdirectory in a block group of its own choosing (Orlov), as for
    directories in ``/``. A file system without the flag is left as it is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
    except OSError:
        pass
    finally:
        os.close(fd)


PROBE_FILES = 2000


def probe_creation(d: Path) -> float:
    """Seconds to create PROBE_FILES small files in a new directory under ``d`` (kept: deleting
    them would slow the next creations there)."""
    probe = d / ".probe"
    probe.mkdir()
    t0 = time.perf_counter()
    for i in range(PROBE_FILES):
        fd = os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"probe\n")
        os.close(fd)
    return time.perf_counter() - t0


INODES_PER_GROUP, GROUPS_PER_FLEX = 8192, 16  # ext4's defaults, as on these machines' disk
FLEX_APART = 4  # flex groups between two tools' roots: room for each run's stores to grow
CLEAN_SECONDS = 0.08  # PROBE_FILES made here: 25-40 ms clean, 200-400 ms where inodes were just freed


def flex_group(path: Path) -> int:
    """The ext4 flex group holding ``path``'s inode (where files made in it go first)."""
    return (os.stat(path).st_ino - 1) // INODES_PER_GROUP // GROUPS_PER_FLEX


def quiet_dir(parent: Path, tool: str, made: list[Path], taken: set[int], tries: int = 8) -> Path:
    """A new directory under ``parent`` (whose children ext4 spreads over block groups) where
    file creation runs at the disk's clean speed and which is at least FLEX_APART flex groups
    away from the ones in ``taken`` (other tools' roots: their deletions must not reach it as
    it fills up): each candidate is probed (:func:`probe_creation`); the first under
    CLEAN_SECONDS is taken, else the fastest of ``tries``. Every candidate goes into ``made``
    (removed at the end); the chosen one's flex group into ``taken``. The same rule for every
    tool."""
    times: list[tuple[float, Path]] = []
    for _ in range(tries):
        d = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=parent))
        made.append(d)
        if any(abs(flex_group(d) - t) < FLEX_APART for t in taken):
            continue
        times.append((probe_creation(d), d))
        if times[-1][0] < CLEAN_SECONDS:
            break
    if not times:
        raise SystemExit(f"no place for {tool}'s storage away from the other tools' in {parent}")
    seconds, chosen = min(times)
    taken.add(flex_group(chosen))
    print(f"{tool} storage: {chosen} (flex group {flex_group(chosen)}; {PROBE_FILES} files made in "
          f"{seconds * 1000:.0f} ms; probes: {', '.join(f'{t * 1000:.0f}' for t, _ in times)} ms)", flush=True)
    return chosen


def env_for(store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYBUILD_ROOT"] = str(store)
    # time pybuild as installed: with bytecode (pip compiles it), not recompiling every start
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Bench:
    def __init__(self, runs: int, work: Path) -> None:
        self.runs = runs
        self.work = work
        self.template = work / "template-store"
        self.results: dict[str, float] = {}
        self.peer_workloads = ("steps20", "multistage", "deletes", "bigcopy")
        self.roots = work / "roots"
        self._regions: dict[str, Path] = {}
        self._flex_taken: set[int] = set()
        self._stores = 0
        self.trash: list[Path] = []
        self._buildah_root: Path | None = None

    def region(self, tool: str) -> Path:
        """This run's own root for ``tool``'s storage (see the module docstring): a new
        directory under ``WORK/roots``, made on first use, in a quiet part of the disk (see
        :func:`quiet_dir`). Short, for unix socket paths."""
        if tool not in self._regions:
            self.roots.mkdir(parents=True, exist_ok=True)
            spread_children(self.roots)
            self._regions[tool] = quiet_dir(self.roots, tool, self.trash, self._flex_taken)
        return self._regions[tool]

    def discard(self, path: Path) -> None:
        """Remove ``path`` once every timing is done (:meth:`empty_trash`), never in between."""
        self.trash.append(path)

    def empty_trash(self) -> None:
        """Remove everything :meth:`discard` collected; remember when (see :meth:`settle`)."""
        if not self.trash:
            return
        for path in reversed(self.trash):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.trash.clear()
        self.roots.mkdir(parents=True, exist_ok=True)
        (self.roots / ".emptied").touch()

    def settle(self, seconds: float) -> None:
        """Wait until ``seconds`` have passed since the previous run's clean-up in this work dir
        (the mtime of ``roots/.emptied``): its freed inodes would slow file creation until then."""
        try:
            since = time.time() - (self.roots / ".emptied").stat().st_mtime
        except FileNotFoundError:
            return
        if since < seconds:
            print(f"waiting {seconds - since:.0f} s: the previous run in {self.work} deleted its stores "
                  f"{since:.0f} s ago (freed inodes slow file creation for six minutes)", flush=True)
            time.sleep(seconds - since)

    def report(self, name: str, times: list[float], note: str = "") -> float:
        med = statistics.median(times)
        self.results[name] = med
        spread = f"min {min(times):.3f} max {max(times):.3f}"
        print(f"{name:<34} median {med:8.3f} s   ({len(times)} runs, {spread}) {note}", flush=True)
        return med

    # -- setup ------------------------------------------------------------------------------
    def make_template(self) -> None:
        """A store holding only the busybox base image (its layer already unpacked)."""
        if self.template.exists():
            return
        base = self.work / "base"
        sh([str(REPO / "testdata" / "demo" / "make-base.sh"), str(base)])
        env = env_for(self.template)
        sh(PYBUILD + ["-q", "-t", "localhost/busybox:latest", str(base)], env=env)
        sh(PYBUILD + ["-q", "-t", "warm", str(WORKLOADS / "noop")], env=env)
        sh(PYBUILD + ["run", "localhost/busybox:latest", "true"], env=env)
        sh(PYBUILD + ["rmi", "warm"], env=env)
        sh(PYBUILD + ["prune", "--all"], env=env)

    def fresh_store(self, name: str) -> Path:
        """A copy of the template store in pybuild's own region, under a name never used before
        in this run (nothing is deleted to make room for it)."""
        self._stores += 1
        dest = self.region("pybuild") / f"store-{self._stores}-{name}"
        subprocess.run(["cp", "-a", str(self.template), str(dest)], check=True)
        return dest

    def build_cmd(self, workload: str, context: Path | None = None) -> list[str]:
        wl = WORKLOADS / workload
        return PYBUILD + ["-q", "-t", f"bench-{workload}", "-f", str(wl / "Dockerfile"), str(context or wl)]

    # -- benchmarks -----------------------------------------------------------------------------
    def parse(self) -> None:
        df = REPO / "bench" / "parse_300.Dockerfile"
        times = [sh(PYBUILD + ["parse", "--format", "buildkit", str(df)]) for _ in range(max(self.runs, 10))]
        self.report("parse 300-line Dockerfile", times, "(target < 0.150 s)")

    def cold(self, workload: str, context: Path | None = None) -> float:
        """``--no-cache`` builds in one long-lived store (as buildah's --no-cache in its storage):
        every step runs, nothing is reused; the base image is already unpacked."""
        store = self.fresh_store(workload + "-cold")
        env = env_for(store)
        sh(self.build_cmd(workload, context), env=env)  # warm-up: directories exist, as buildah's do
        times = [sh(self.build_cmd(workload, context) + ["--no-cache"], env=env) for _ in range(self.runs)]
        self.discard(store)
        return self.report(f"{workload} cold (--no-cache)", times)

    def cached(self, workload: str, context: Path | None = None) -> float:
        store = self.fresh_store(workload + "-cached")
        env = env_for(store)
        sh(self.build_cmd(workload, context), env=env)
        times = [sh(self.build_cmd(workload, context), env=env) for _ in range(self.runs)]
        self.discard(store)
        return self.report(f"{workload} fully cached", times)

    def steps20(self) -> None:
        noop = self.cold("noop")
        steps = self.cold("steps20")
        self.cached("steps20")
        per = (steps - noop) / 20
        print(f"{'per-RUN overhead (steps20-noop)/20':<34} median {per * 1000:8.1f} ms  (target < 60 ms)")

    def bigcopy_context(self) -> Path:
        ctx = self.work / "bigcopy-context"
        if not ctx.exists():
            sh(["bash", str(WORKLOADS / "bigcopy" / "gen-context.sh"), str(ctx)])
        return ctx

    def bigcopy(self) -> None:
        ctx = self.bigcopy_context()
        self.cold("bigcopy", ctx)
        self.cached("bigcopy", ctx)
        store = self.fresh_store("bigcopy-onefile")
        env = env_for(store)
        sh(self.build_cmd("bigcopy", ctx), env=env)
        target = ctx / "d00" / "e00" / "f00000.txt"
        original = target.read_bytes()
        times = []
        try:
            for i in range(self.runs):
                target.write_bytes(original + f"change {i} {time.time()}\n".encode())
                times.append(sh(self.build_cmd("bigcopy", ctx), env=env))
        finally:
            target.write_bytes(original)
            os.utime(target, (1700000000, 1700000000))
        self.report("bigcopy one file changed", times)
        self.discard(store)

    def baselines(self) -> None:
        ctx = self.bigcopy_context()
        pipes = {"tar | gzip -1": "tar -cf - . | gzip -1 > /dev/null",
                 "tar | zstd -3 -T0": "tar -cf - . | zstd -q -3 -T0 > /dev/null"}
        times: dict[str, list[float]] = {k: [] for k in pipes}
        for _ in range(self.runs):
            for name, cmd in pipes.items():
                times[name].append(sh(f"cd {ctx} && {cmd}"))
        for name, t in times.items():
            self.report(f"baseline {name}", t)

    def copyonly(self) -> None:
        """COPY . /app of the bigcopy context (no RUN): pybuild's whole command against
        tar | gzip -1, tar | pigz -1 (gzip) and tar | zstd -3 -T0 on the same context,
        alternating; peak RSS."""
        ctx = self.bigcopy_context()
        dockerfile = REPO / "bench" / "copyonly" / "Dockerfile"
        pipes = {"gzip": ["gzip -1", "pigz -1"], "zstd": ["zstd -q -3 -T0"]}
        for comp, compressors in pipes.items():
            ours: list[float] = []
            steps: list[float] = []
            rss: list[int] = []
            base: dict[str, list[float]] = {c: [] for c in compressors}
            store = self.fresh_store("copyonly-" + comp)
            cmd = PYBUILD + ["--progress=rawjson", "-t", "copyonly", "-f", str(dockerfile), "-o",
                             f"type=image,compression={comp}", str(ctx)]
            sh(cmd, env=env_for(store))
            floor: list[float] = []
            floor_cmd = [sys.executable, str(REPO / "bench" / "python_floor.py"), str(ctx),
                         str(self.work / "floor-blob"), "--compression", comp]
            for _ in range(self.runs):
                t, r, err = sh_rss(cmd + ["--no-cache"], env=env_for(store))
                ours.append(t)
                steps.append(step_seconds(err, "COPY"))
                rss.append(r)
                for c in compressors:
                    base[c].append(sh(f"cd {ctx} && tar -cf - . | {c} > /dev/null"))
                floor.append(sh(floor_cmd))
            self.discard(self.work / "floor-blob")
            # the same work as pybuild's layer writer with C tools: both digests, blob on disk
            same_work: list[float] = []
            blob = self.work / "pipeline-blob"
            compressor = compressors[0]
            like = (f"cd {ctx} && tar -cf - . | tee >(sha256sum >/dev/null) | {compressor} "
                    f"| tee >(sha256sum >/dev/null) | dd of={blob} conv=fsync bs=1M status=none")
            for _ in range(self.runs):
                same_work.append(sh(["bash", "-c", like]))
            self.discard(blob)
            self.discard(store)
            a = self.report(f"COPY 208 MB, {comp}, pybuild", ours, f"(peak RSS max {max(rss)} MB)")
            s_ = self.report("  its COPY step as pybuild reports", steps)
            for c in compressors:
                b = self.report(f"tar | {c}", base[c])
                print(f"{'ratio pybuild/(tar | ' + c + ')':<34} {a / b:8.2f}x   COPY step {s_ / b:.2f}x", flush=True)
            c_ = self.report(f"tar | {compressor} + 2 sha256 + file", same_work)
            print(f"{'ratio pybuild/same-work (' + comp + ')':<34} {a / c_:8.2f}x")
            f_ = self.report("bare Python writer (python_floor)", floor)
            print(f"{'ratio floor/(tar | ' + compressor + ')':<34} {f_ / statistics.median(base[compressor]):8.2f}x"
                  "  (the bare minimum in Python)")

    def simple(self, workload: str) -> None:
        self.cold(workload)

    # -- BuildKit (isolated dockerd, tests/peers.py) and buildah, alternating ----------------
    def versus(self) -> None:
        """pybuild, BuildKit (dockerd 20.10's, started isolated by tests/peers.py) and buildah
        on the shared workloads, one command of each in turn per round: ``--no-cache`` builds in
        warm stores, fully cached rebuilds, and bigcopy with one file changed before every
        build. Medians and the ratios pybuild/BuildKit and pybuild/buildah. BuildKit keeps
        layers uncompressed in its image store; pybuild writes gzip (ISA-L)."""
        sys.path.insert(0, str(REPO / "tests"))
        from peers import Dockerd  # the one dockerd launcher (helper diff's), never a second

        have_buildah = self.buildah_ready()
        benv = self.buildah_env()
        ctx_of = {"bigcopy": self.bigcopy_context()}
        archive = self.work / "busybox-docker.tar"
        if not archive.exists():
            sh(PYBUILD + ["-q", "-t", "localhost/busybox:latest", "--output", f"type=docker,dest={archive}",
                          str(self.work / "base")], env=env_for(self.template))
        dwork = self.region("buildkit")  # its own root; short: unix socket paths are limited
        rows: list[tuple[str, float, float, float | None]] = []
        with Dockerd(dwork) as d:
            d.load(archive)
            denv = dict(os.environ, **d.env)

            def kit(workload: str, cached: bool) -> list[str]:
                wl = WORKLOADS / workload
                return (["/usr/bin/docker", "build", "-q", "--network", "none"] + ([] if cached else ["--no-cache"])
                        + ["-t", f"bench-{workload}", "-f", str(wl / "Dockerfile"), str(ctx_of.get(workload, wl))])

            def ours(workload: str, cached: bool) -> list[str]:
                cmd = self.build_cmd(workload, ctx_of.get(workload))
                return cmd[:-1] + ["--network", "none"] + ([] if cached else ["--no-cache"]) + cmd[-1:]

            def theirs(workload: str, cached: bool) -> list[str]:
                cmd = self.buildah_cmd(workload, ctx_of.get(workload), cached=cached)
                return cmd[:-1] + ["--network", "none"] + cmd[-1:]

            def compare(label: str, workload: str, cached: bool, before: Any = None) -> None:
                store = self.fresh_store(f"{workload}-versus")
                env = env_for(store)
                sh(ours(workload, True), env=env)           # warm-up: every tool has built it once
                sh(kit(workload, True), env=denv)
                if have_buildah:
                    sh(theirs(workload, True), env=benv)
                times: dict[str, list[float]] = {"pybuild": [], "BuildKit": [], "buildah": []}
                for i in range(self.runs):
                    jobs = [("pybuild", ours(workload, cached), env), ("BuildKit", kit(workload, cached), denv)]
                    if have_buildah:
                        jobs.append(("buildah", theirs(workload, cached), benv))
                    if i % 2:
                        jobs.reverse()
                    for name, cmd, e in jobs:
                        if before is not None:
                            before()
                        times[name].append(sh(cmd, env=e))
                self.discard(store)
                a = self.report(f"{label} pybuild", times["pybuild"])
                b = self.report(f"{label} BuildKit", times["BuildKit"])
                c = self.report(f"{label} buildah", times["buildah"]) if have_buildah else None
                rows.append((label, a, b, c))

            for workload in self.peer_workloads:
                compare(f"{workload} --no-cache", workload, cached=False)
            for workload in self.peer_workloads:
                compare(f"{workload} fully cached", workload, cached=True)
            if "bigcopy" in self.peer_workloads:
                target = ctx_of["bigcopy"] / "d00" / "e00" / "f00000.txt"
                original = target.read_bytes()
                n = iter(range(10 ** 6))

                def change() -> None:
                    target.write_bytes(original + f"change {next(n)} {time.time()}\n".encode())
                try:
                    compare("bigcopy one file changed", "bigcopy", cached=True, before=change)
                finally:
                    target.write_bytes(original)
                    os.utime(target, (1700000000, 1700000000))
        print(f"\n{'':<30} {'pybuild':>8} {'BuildKit':>9} {'buildah':>8} {'pyb/BK':>7} {'pyb/bah':>8}")
        for label, a, b, c in rows:
            cs = f"{c:8.2f}" if c is not None else f"{'-':>8}"
            rc = f"{a / c:8.2f}" if c else f"{'-':>8}"
            print(f"{label:<30} {a:8.2f} {b:9.2f} {cs} {a / b:7.2f} {rc}", flush=True)

    # -- buildah, when installed -------------------------------------------------------------
    def buildah_ready(self) -> bool:
        """Import our busybox base into buildah's storage (this run's buildah region) as
        localhost/busybox:latest, once per run."""
        if not shutil.which("buildah"):
            print("buildah not installed (apt-get install buildah): peer comparison skipped")
            return False
        if self._buildah_root is None:
            self._buildah_root = self.region("buildah") / "root"
            self.import_base(self.buildah())
        return True

    def import_base(self, buildah: list[str]) -> None:
        """Pull the busybox base (an OCI layout pybuild wrote once into the work dir) into the
        storage of ``buildah`` (a command prefix from :meth:`buildah`)."""
        layout = self.work / "busybox-oci"
        if not layout.exists():
            sh(PYBUILD + ["-q", "-t", "localhost/busybox:latest", "--output",
                          f"type=oci,dest={layout},tar=false", str(self.work / "base")], env=env_for(self.template))
        pulled = subprocess.run(buildah + ["pull", "-q", f"oci:{layout}:latest"], env=self.buildah_env(),
                                check=True, capture_output=True, text=True).stdout.split()[-1]
        sh(buildah + ["tag", pulled, "localhost/busybox:latest"], env=self.buildah_env())

    def buildah(self, root: Path | None = None) -> list[str]:
        """buildah with its storage in ``root`` (default: this run's buildah region), on the
        same file system as pybuild's stores but in block groups of its own."""
        root = root or self._buildah_root or self.region("buildah") / "root"
        return ["buildah", "--root", str(root), "--runroot", str(root) + "-run", "--storage-driver", "overlay"]

    def fresh_cold(self) -> None:
        """Both tools in brand-new storage each run (base image already imported and unpacked,
        not timed): every directory the build writes is new, for both."""
        if not self.buildah_ready():
            return
        contexts = {"bigcopy": self.bigcopy_context()}
        benv = self.buildah_env()
        for workload in self.peer_workloads:
            ours: list[float] = []
            theirs: list[float] = []
            wl = WORKLOADS / workload
            ctx = contexts.get(workload) or wl
            for i in range(self.runs):
                store = self.fresh_store(f"{workload}-fresh{i}")
                ours.append(sh(self.build_cmd(workload, contexts.get(workload)), env=env_for(store)))
                root = self.region("buildah") / f"fresh-{workload}-{i}"
                b = self.buildah(root)
                self.import_base(b)
                theirs.append(sh(b + ["bud", "-q", "--layers", "--isolation", "oci", "-t", f"bench-{workload}",
                                      "-f", str(wl / "Dockerfile"), str(ctx)], env=benv))
                self.discard(store)
                self.discard(root)
                self.discard(Path(str(root) + "-run"))
            a = self.report(f"{workload} fresh storage pybuild", ours)
            c = self.report(f"{workload} fresh storage buildah", theirs)
            print(f"{'ratio ' + workload + ' buildah/pybuild':<34} {c / a:8.2f}x")

    @staticmethod
    def buildah_env() -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("BUILDAH_RUNTIME", shutil.which("runc") or "runc")  # crun 1.8 refuses these hosts
        return env

    def buildah_cmd(self, workload: str, context: Path | None, cached: bool) -> list[str]:
        wl = WORKLOADS / workload
        return (self.buildah() + ["bud", "-q", "--layers", "--isolation", "oci"] + ([] if cached else ["--no-cache"])
                + ["-t", f"bench-{workload}", "-f", str(wl / "Dockerfile"), str(context or wl)])

    def versus_buildah(self) -> None:
        """Cold builds of the peer workloads, pybuild and buildah alternating; medians and ratios."""
        if not self.buildah_ready():
            return
        contexts = {"bigcopy": self.bigcopy_context()}
        benv = self.buildah_env()
        for workload in self.peer_workloads:
            ours: list[float] = []
            theirs: list[float] = []
            store = self.fresh_store(workload + "-vs")
            env = env_for(store)
            ctx = contexts.get(workload)
            sh(self.build_cmd(workload, ctx), env=env)                         # warm-up, both sides
            sh(self.buildah_cmd(workload, ctx, cached=False), env=benv)
            for _ in range(self.runs):
                ours.append(sh(self.build_cmd(workload, ctx) + ["--no-cache"], env=env))
                theirs.append(sh(self.buildah_cmd(workload, ctx, cached=False), env=benv))
            self.discard(store)
            a = self.report(f"{workload} --no-cache pybuild", ours)
            b = self.report(f"{workload} --no-cache buildah", theirs)
            print(f"{'ratio ' + workload + ' buildah/pybuild':<34} {b / a:8.2f}x")
        # fully cached steps20
        store = self.fresh_store("steps20-vs-cached")
        env = env_for(store)
        sh(self.build_cmd("steps20"), env=env)
        sh(self.buildah_cmd("steps20", None, cached=True), env=benv)
        ours, theirs = [], []
        for _ in range(self.runs):
            ours.append(sh(self.build_cmd("steps20"), env=env))
            theirs.append(sh(self.buildah_cmd("steps20", None, cached=True), env=benv))
        a = self.report("steps20 cached pybuild", ours)
        b = self.report("steps20 cached buildah", theirs)
        print(f"{'ratio steps20 cached buildah/pybuild':<34} {b / a:8.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="parse,steps20,multistage,deletes,bigcopy,copyonly,versus")
    ap.add_argument("--work", help="work directory (default: a new temp dir)")
    ap.add_argument("--peers", default="steps20,multistage,deletes,bigcopy",
                    help="workloads compared with buildah")
    ap.add_argument("--settle", type=float, default=370.0,
                    help="seconds to leave between the previous run's clean-up and this run's timings")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pybuild-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if PYBUILD[0] == sys.executable:  # running from the source tree: compile it once
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "builder")], check=False,
                       stdout=subprocess.DEVNULL)
    b = Bench(args.runs, work)
    b.peer_workloads = tuple(args.peers.split(","))
    wanted = args.only.split(",")
    if any(w != "parse" for w in wanted):
        b.make_template()
    b.settle(args.settle)
    try:
        for name in wanted:
            if name in ("multistage", "deletes", "noop"):
                b.simple(name)
            else:
                getattr(b, name)()
    finally:
        b.empty_trash()
    return 0


if __name__ == "__main__":
    sys.exit(main())
