#!/usr/bin/env python3
"""Time whole pybuild commands on the shared workloads and print medians (and ratios).

Usage: python bench/run.py [--runs N] [--only NAME,...] [--work DIR]

``--only versus`` times pybuild, BuildKit (an isolated dockerd from tests/peers.py) and buildah
on the same workloads, alternating, and prints ratios; ``copyonly`` times ``COPY . /app`` against
``tar | gzip -1``, ``tar | pigz -1`` and ``tar | zstd -3 -T0``.

Every figure is the median wall time of N runs of a whole command (interpreter start included).
Competing commands are run alternately (A B A B ...), because file creation speed on these
machines varies between directories and over time: quote medians and ratios, not single times.
Workloads come from ../shared/bench/workloads; the base image localhost/busybox:latest is made
from the host's busybox-static by testdata/demo/make-base.sh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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
        dest = self.work / f"store-{name}"
        shutil.rmtree(dest, ignore_errors=True)
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
        shutil.rmtree(store, ignore_errors=True)
        return self.report(f"{workload} cold (--no-cache)", times)

    def cached(self, workload: str, context: Path | None = None) -> float:
        store = self.fresh_store(workload + "-cached")
        env = env_for(store)
        sh(self.build_cmd(workload, context), env=env)
        times = [sh(self.build_cmd(workload, context), env=env) for _ in range(self.runs)]
        shutil.rmtree(store, ignore_errors=True)
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
        shutil.rmtree(store, ignore_errors=True)

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
            (self.work / "floor-blob").unlink(missing_ok=True)
            # the same work as pybuild's layer writer with C tools: both digests, blob on disk
            same_work: list[float] = []
            blob = self.work / "pipeline-blob"
            compressor = compressors[0]
            like = (f"cd {ctx} && tar -cf - . | tee >(sha256sum >/dev/null) | {compressor} "
                    f"| tee >(sha256sum >/dev/null) | dd of={blob} conv=fsync bs=1M status=none")
            for _ in range(self.runs):
                same_work.append(sh(["bash", "-c", like]))
            blob.unlink(missing_ok=True)
            shutil.rmtree(store, ignore_errors=True)
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
        dwork = Path(tempfile.mkdtemp(prefix="pbd-"))  # short: unix socket paths are limited
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
                shutil.rmtree(store, ignore_errors=True)
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
        """Import our busybox base into buildah's storage as localhost/busybox:latest."""
        if not shutil.which("buildah"):
            print("buildah not installed (apt-get install buildah): peer comparison skipped")
            return False
        layout = self.work / "busybox-oci"
        if not layout.exists():
            sh(PYBUILD + ["-q", "-t", "localhost/busybox:latest", "--output",
                          f"type=oci,dest={layout},tar=false", str(self.work / "base")], env=env_for(self.template))
            pulled = subprocess.run(self.buildah() + ["pull", "-q", f"oci:{layout}:latest"], env=self.buildah_env(),
                                    check=True, capture_output=True, text=True).stdout.split()[-1]
            sh(self.buildah() + ["tag", pulled, "localhost/busybox:latest"], env=self.buildah_env())
        return True

    def buildah(self, root: Path | None = None) -> list[str]:
        """buildah with its storage in the work dir, beside pybuild's stores: the same
        filesystem and parent directory for both (file creation speed varies by directory)."""
        root = root or self.work / "buildah-root"
        return ["buildah", "--root", str(root), "--runroot", str(root) + "-run", "--storage-driver", "overlay"]

    def fresh_cold(self) -> None:
        """Both tools in brand-new storage each run (base image already imported and unpacked,
        not timed): every directory the build writes is new, for both."""
        if not self.buildah_ready():
            return
        contexts = {"bigcopy": self.bigcopy_context()}
        benv = self.buildah_env()
        layout = self.work / "busybox-oci"
        for workload in self.peer_workloads:
            ours: list[float] = []
            theirs: list[float] = []
            wl = WORKLOADS / workload
            ctx = contexts.get(workload) or wl
            for i in range(self.runs):
                store = self.fresh_store(f"{workload}-fresh{i}")
                ours.append(sh(self.build_cmd(workload, contexts.get(workload)), env=env_for(store)))
                root = self.work / f"buildah-fresh-{workload}-{i}"
                b = self.buildah(root)
                pulled = subprocess.run(b + ["pull", "-q", f"oci:{layout}:latest"], env=benv, check=True,
                                        capture_output=True, text=True).stdout.split()[-1]
                sh(b + ["tag", pulled, "localhost/busybox:latest"], env=benv)
                theirs.append(sh(b + ["bud", "-q", "--layers", "--isolation", "oci", "-t", f"bench-{workload}",
                                      "-f", str(wl / "Dockerfile"), str(ctx)], env=benv))
                shutil.rmtree(store, ignore_errors=True)
                subprocess.run(b + ["rmi", "-a", "-f"], env=benv, capture_output=True)
                shutil.rmtree(root, ignore_errors=True)
                shutil.rmtree(str(root) + "-run", ignore_errors=True)
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
            shutil.rmtree(store, ignore_errors=True)
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
    for name in wanted:
        if name in ("multistage", "deletes", "noop"):
            b.simple(name)
        else:
            getattr(b, name)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
