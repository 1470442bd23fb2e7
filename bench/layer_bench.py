"""Benchmark: write_layer over the bigcopy context against tar | gzip -1 and tar | zstd -3 -T0.

Usage: python3 bench/layer_bench.py [--runs 5] [--context /tmp/bigcopy-ctx]

Generates the context with ../shared/bench/workloads/bigcopy/gen-context.sh when it is missing.
Runs alternate (ours, pipeline, ours, ...) to spread the machine's noise evenly; prints medians,
the ratio ours/pipeline per compression, and peak RSS. "ours" includes walking the directory
(entries_from_dir) because `tar` walks too; the walk alone is reported as well. Output goes to
/dev/null for both sides.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("PYBUILD_SHARED", REPO.parent / "shared"))
GEN = SHARED / "bench" / "workloads" / "bigcopy" / "gen-context.sh"

PIPELINES = {
    "gzip": "tar -cf - . | gzip -1 > /dev/null",
    "zstd": "tar -cf - . | zstd -q -3 -T0 > /dev/null",
}


def ensure_context(ctx: Path) -> None:
    if (ctx / "README.txt").exists() and (ctx / "link-to-first").is_symlink():
        return
    print(f"generating {ctx} with {GEN}", flush=True)
    subprocess.run(["bash", str(GEN), str(ctx)], check=True)


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_ours(ctx: Path, compression: str) -> tuple[float, float, int, float]:
    from builder.layer.tar import write_layer
    from builder.layer.walk import entries_from_dir

    c0 = _cpu(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    entries = list(entries_from_dir(ctx))
    t1 = time.perf_counter()
    with open(os.devnull, "wb") as out:
        info = write_layer(entries, out, compression=compression)
    t2 = time.perf_counter()
    return t2 - t0, t1 - t0, info.size, _cpu(resource.RUSAGE_SELF) - c0


def run_pipeline(ctx: Path, compression: str) -> tuple[float, float]:
    c0 = _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", "set -o pipefail; " + PIPELINES[compression]], cwd=ctx, check=True)
    return time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--context", type=Path, default=Path("/tmp/bigcopy-ctx"))
    ap.add_argument("--compression", action="append", choices=sorted(PIPELINES))
    args = ap.parse_args()
    ensure_context(args.context)
    comps = args.compression or ["gzip", "zstd"]
    # warm the page cache once so the first run is not penalised
    run_pipeline(args.context, "zstd")
    for comp in comps:
        ours: list[float] = []
        walks: list[float] = []
        pipe: list[float] = []
        ours_cpu: list[float] = []
        pipe_cpu: list[float] = []
        size = 0
        for i in range(args.runs):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    t, w, size, c = run_ours(args.context, comp)
                    ours.append(t)
                    walks.append(w)
                    ours_cpu.append(c)
                else:
                    t, c = run_pipeline(args.context, comp)
                    pipe.append(t)
                    pipe_cpu.append(c)
        mo, mp = statistics.median(ours), statistics.median(pipe)
        print(f"{comp:5s} write_layer (walk+tar+{comp}+2 digests): median {mo:.2f} s "
              f"(walk {statistics.median(walks):.2f} s) runs {[round(x, 2) for x in ours]}")
        print(f"{comp:5s} {PIPELINES[comp]!r}: median {mp:.2f} s runs {[round(x, 2) for x in pipe]}")
        co, cp = statistics.median(ours_cpu), statistics.median(pipe_cpu)
        print(f"{comp:5s} ratio ours/pipeline {mo / mp:.2f}  (blob {size / 1e6:.1f} MB)")
        print(f"{comp:5s} CPU seconds (user+sys, all threads/processes): ours {co:.2f}, pipeline {cp:.2f}, "
              f"ratio {co / cp:.2f}")
        print(f"{comp:5s} load average during the runs: {os.getloadavg()[0]:.2f}", flush=True)
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (walk + write_layer, all runs): {self_rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
