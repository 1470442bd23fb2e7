"""Where one build's wall time goes: the pybuild CLI run in this process with timers around its
phases (each RUN step, its sandbox run, the layer framing and hashing of its upper dir, the
snapshot adoption, the build session's close), printed as start -> end offsets in milliseconds
from this script's start.

Usage: python3 bench/build_phases.py [--repeat N] [--pause S] -- PYBUILD-ARGS...
  e.g. PYBUILD_ROOT=/tmp/store python3 bench/build_phases.py --repeat 3 --pause 1.1 -- \\
       -q --no-cache --network none -t d -f ../shared/bench/workloads/deletes/Dockerfile \\
       ../shared/bench/workloads/deletes

Each repeat runs in a fresh interpreter (a child of this script), so imports and first-use costs
count every time, as for a real command. ``--pause`` sleeps between repeats (two ``--no-cache``
builds in the same second make the same layers, which takes another path through the store).
Timers wrap functions by name; a phase that a build does not reach is simply absent.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (module, attribute path, label): the phases a RUN-heavy build spends its time in
PHASES = (
    ("builder.engine.step_run", "apply_run", "RUN step"),
    ("builder.sandbox.runner", "run", "  sandbox run (command included)"),
    ("builder.engine.layers", "store_records_soon", "  frame + hash the upper dir"),
    ("builder.store.snapshots", "Snapshots.adopt", "  adopt as snapshot"),
    ("builder.engine.build", "_build", "build"),
    ("builder.engine.session", "BuildSession.close", "session close"),
)


def _timed(fn: Callable[..., object], label: str, log: list[tuple[float, float, str]],
           t0: float) -> Callable[..., object]:
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            log.append((start - t0, time.perf_counter() - t0, label))
    return wrapper


def child(args: list[str]) -> int:
    """Run the CLI with the phase timers in this process; print the timeline to stderr."""
    t0 = time.perf_counter()
    log: list[tuple[float, float, str]] = []
    sys.path.insert(0, str(REPO))
    for modname, attr, label in PHASES:
        owner: object = importlib.import_module(modname)
        *parents, name = attr.split(".")
        for part in parents:
            owner = getattr(owner, part)
        setattr(owner, name, _timed(getattr(owner, name), label, log, t0))
    from builder.cli import main

    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    for start, end, label in sorted(log):
        print(f"{start * 1000:8.1f} -> {end * 1000:8.1f} ms  {(end - start) * 1000:7.1f} ms  {label}",
              file=sys.stderr)
    print(f"{'':8} exit   {(time.perf_counter() - t0) * 1000:8.1f} ms  (exit status {rc})", file=sys.stderr)
    return rc


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    rc = 0
    for i in range(opts.repeat):
        if i and opts.pause:
            time.sleep(opts.pause)
        print(f"-- build {i + 1} of {opts.repeat}", file=sys.stderr, flush=True)
        rc = subprocess.run([sys.executable, __file__, "--child", *args]).returncode or rc
    return rc


if __name__ == "__main__":
    sys.exit(main())
