#!/usr/bin/env python3
"""A fully cached rebuild before and after a change: wall time (median, alternating runs) and
the file I/O it does (syscalls counted and bytes read/written, from one strace of each).

Usage: python bench/cached_rebuild_io.py [--base REV] [--runs N] [--workloads steps20,multistage] [--onefile]

``--onefile`` also times the bigcopy workload (20,000-file context) with one context file
changed before every build: the miss path, where the explanation's context listing is written.

``REV`` (default: the commit before issue 16 landed) is unpacked with ``git archive`` into a
temp dir; both trees run as ``python -m builder.cli`` with PYTHONPATH set to the tree, each in
its own store made from the same base image, after one warm-up build. The strace counts are
exact; the times are medians of runs taken alternately (A B A B ...), since the machine is shared.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, WORKLOADS, Bench, env_for, sh  # noqa: E402

DEFAULT_BASE = "17d78b70979e2e0341301887fa66e82c06ac1c02"   # main just before issue 16
_IO = re.compile(r"^\d+\s+(\w+)\(.*\)\s+=\s+(-?\d+)")


def unpack(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def command(tree: Path, workload: str, context: Path | None = None) -> list[str]:
    wl = WORKLOADS / workload
    return [sys.executable, "-m", "builder.cli", "-q", "-t", f"io-{workload}", "-f", str(wl / "Dockerfile"),
            str(context or wl)]


def onefile(bench: Bench, trees: dict[str, Path], runs: int) -> None:
    """bigcopy with one changed context file per build, before vs after (alternating)."""
    ctx = bench.bigcopy_context()
    changed = ctx / "bench-onefile.txt"
    stores = {}
    for label, tree in trees.items():
        stores[label] = bench.fresh_store(f"onefile-{label}")
        changed.write_text("0\n")
        sh(command(tree, "bigcopy", ctx), env=dict(env_for(stores[label]), PYTHONPATH=str(tree)), cwd=tree)
    times: dict[str, list[float]] = {label: [] for label in trees}
    for i in range(runs):
        changed.write_text(f"{i + 1}\n")
        for label, tree in trees.items():
            env = dict(env_for(stores[label]), PYTHONPATH=str(tree))
            times[label].append(sh(command(tree, "bigcopy", ctx), env=env, cwd=tree))
    med = {label: statistics.median(t) for label, t in times.items()}
    print(f"bigcopy one file changed: before {med['before']:.3f} s, after {med['after']:.3f} s "
          f"(ratio {med['after'] / med['before']:.3f}, {runs} runs each, alternating)")


def io_profile(tree: Path, store: Path, workload: str, log: Path) -> dict[str, int]:
    """Syscall counts of one run, plus ``read_bytes``/``write_bytes`` (sum of return values)."""
    env = dict(env_for(store), PYTHONPATH=str(tree))
    subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e",
                    "trace=openat,stat,newfstatat,statx,read,pread64,write,pwrite64,rename,unlink,mkdir,utimensat",
                    *command(tree, workload)], env=env, cwd=tree, check=True, capture_output=True)
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        m = _IO.match(line)
        if not m:
            continue
        name, ret = m.group(1), int(m.group(2))
        counts[name] += 1
        if name in ("read", "pread64") and ret > 0:
            counts["read_bytes"] += ret
        if name in ("write", "pwrite64") and ret > 0:
            counts["write_bytes"] += ret
    return dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=DEFAULT_BASE)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--workloads", default="steps20,multistage")
    ap.add_argument("--onefile", action="store_true", help="also bigcopy with one changed file (slow)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pybuild-io-"))
    try:
        bench = Bench(args.runs, work)
        bench.make_template()
        trees = {"before": unpack(args.base, work / "before"), "after": REPO}
        for workload in args.workloads.split(","):
            stores = {}
            for label, tree in trees.items():
                stores[label] = bench.fresh_store(f"{workload}-{label}")
                env = dict(env_for(stores[label]), PYTHONPATH=str(tree))
                sh(command(tree, workload), env=env, cwd=tree)    # cold build
                sh(command(tree, workload), env=env, cwd=tree)    # warm-up (bytecode written)
            times: dict[str, list[float]] = {label: [] for label in trees}
            for _ in range(args.runs):
                for label, tree in trees.items():
                    env = dict(env_for(stores[label]), PYTHONPATH=str(tree))
                    times[label].append(sh(command(tree, workload), env=env, cwd=tree))
            prof = {label: io_profile(tree, stores[label], workload, work / f"{workload}-{label}.strace")
                    for label, tree in trees.items()}
            med = {label: statistics.median(t) for label, t in times.items()}
            print(f"{workload} fully cached: before {med['before']:.3f} s, after {med['after']:.3f} s "
                  f"(ratio {med['after'] / med['before']:.3f}, {args.runs} runs each, alternating)")
            keys = sorted(set(prof["before"]) | set(prof["after"]))
            print(f"  {'syscall':<12} {'before':>10} {'after':>10}")
            for k in keys:
                print(f"  {k:<12} {prof['before'].get(k, 0):>10} {prof['after'].get(k, 0):>10}")
        if args.onefile:
            onefile(bench, trees, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
