"""Median per-run overhead of builder.sandbox.runner.run() for `true` over a busybox lower dir.

Usage (as root): python3 bench/run_overhead.py [RUNS]

Alternates each run() with the baseline `unshare -m -p -f -u -i -n chroot ROOTFS /bin/true`
(no overlay, no /proc, no Python) when `unshare` and `chroot` exist, and with the bare start of
the init's interpreter (`python -S -s -B -c pass`), then prints the medians in milliseconds.
Each run() gets a fresh upper/work dir (created outside the timed region) and its upper dir is
checked to be empty (a `true` step adds no layer).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from builder.layer.whiteout import upper_is_empty  # noqa: E402
from builder.sandbox.runner import run  # noqa: E402
from builder.sandbox.spec import ProcessSpec  # noqa: E402


def make_rootfs(base: Path) -> Path:
    root = base / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for name in ("sh", "true"):
        os.symlink("busybox", root / "bin" / name)
    return root


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    if os.geteuid() != 0:
        sys.exit("run as root")
    base = Path(tempfile.mkdtemp(prefix="pbbench-"))
    try:
        rootfs = make_rootfs(base)
        unshare, chroot = shutil.which("unshare"), shutil.which("chroot")
        baseline = [unshare, "-m", "-p", "-f", "-u", "-i", "-n", chroot, str(rootfs), "/bin/true"] \
            if unshare and chroot else None
        pystart = [sys.executable, "-S", "-s", "-B", "-c", "pass"]
        t_run: list[float] = []
        t_base: list[float] = []
        t_py: list[float] = []
        # one warm-up run (probe_host is cached per process)
        for i in range(runs + 1):
            up, wk = base / f"u{i}", base / f"w{i}"
            up.mkdir()
            wk.mkdir()
            spec = ProcessSpec(argv=("/bin/true",), lowerdirs=(rootfs,), upperdir=up, workdir=wk,
                               env=(("PATH", "/bin"),))
            t0 = time.perf_counter()
            res = run(spec)
            t1 = time.perf_counter()
            assert res.exit_code == 0, res
            assert upper_is_empty(up), "a `true` step left something in the upper dir"
            if i:
                t_run.append(t1 - t0)
            if baseline:
                t0 = time.perf_counter()
                subprocess.run(baseline, check=True)
                t1 = time.perf_counter()
                if i:
                    t_base.append(t1 - t0)
            t0 = time.perf_counter()
            subprocess.run(pystart, check=True)
            t1 = time.perf_counter()
            if i:
                t_py.append(t1 - t0)
        ms = lambda xs: f"{statistics.median(xs) * 1000:.1f} ms"  # noqa: E731
        print(f"runs: {runs}")
        print(f"run() of /bin/true (overlay + namespaces + mounts + cleanup): median {ms(t_run)}, "
              f"min {min(t_run) * 1000:.1f} ms")
        if t_base:
            print(f"baseline unshare -m -p -f -u -i -n chroot true: median {ms(t_base)}")
        print(f"python -S -s -B -c pass (interpreter start): median {ms(t_py)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
