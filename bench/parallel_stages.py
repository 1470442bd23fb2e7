"""Wall time of a build with independent stages, --jobs 1 against --jobs N (issue 14).

Usage (as root): python3 bench/parallel_stages.py [RUNS] [STAGES] [SECONDS] [JOBS]

The Dockerfile has STAGES (default 3) independent stages, each one ``RUN sleep SECONDS``
(default 2) plus a small computation, all copied into a final stage; the base is the busybox
image of testdata/demo/make-base.sh. Each run is ``pybuild --no-cache`` (a fresh build of every
stage) into one store; --jobs 1 and --jobs JOBS (default STAGES) alternate, RUNS times each
(default 5). Prints the medians, the sum of the stages' own times (from the build's step
lines) and the ratio. The machine is shared: compare ratios, not absolute figures.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pybuild(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYBUILD_ROOT=str(root), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], env=env, capture_output=True,
                          text=True, check=True)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    stages = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    jobs = int(sys.argv[4]) if len(sys.argv) > 4 else stages
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = Path(tempfile.mkdtemp(prefix="pbbench-par-"))
    try:
        root = work / "store"
        subprocess.run(["sh", str(REPO / "testdata/demo/make-base.sh"), str(work / "base")], check=True)
        pybuild(["-t", "localhost/busybox:latest", "--progress=quiet", str(work / "base")], root)
        ctx = work / "ctx"
        ctx.mkdir()
        names = [f"s{i}" for i in range(stages)]
        df = "".join(f"FROM localhost/busybox:latest AS {n}\nRUN sleep {seconds} && seq 1 20000 | md5sum > /{n}\n"
                     for n in names)
        df += "FROM scratch\n" + "".join(f"COPY --from={n} /{n} /{n}\n" for n in names)
        (ctx / "Dockerfile").write_text(df)
        walls: dict[int, list[float]] = {1: [], jobs: []}
        step_sums: list[float] = []
        for _ in range(runs):
            for j in (1, jobs):
                t0 = time.perf_counter()
                out = pybuild(["--no-cache", "--jobs", str(j), "--progress=plain", str(ctx)], root)
                walls[j].append(time.perf_counter() - t0)
                if j == jobs:  # the stages' own RUN times, as the build reports them
                    step_sums.append(sum(float(m) for m in re.findall(r"\] RUN sleep .*  ([0-9.]+)s$", out.stderr,
                                                                       re.MULTILINE)))
        seq, par = statistics.median(walls[1]), statistics.median(walls[jobs])
        print(f"{stages} independent stages of RUN sleep {seconds} (+ md5sum), --no-cache, {runs} runs each, "
              f"{os.cpu_count()} CPUs")
        print(f"  --jobs 1      median wall {seq:6.2f} s")
        print(f"  --jobs {jobs:<6} median wall {par:6.2f} s  (sum of the stages' RUN times in those builds: "
              f"{statistics.median(step_sums):.2f} s)")
        print(f"  ratio --jobs {jobs} / --jobs 1: {par / seq:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
