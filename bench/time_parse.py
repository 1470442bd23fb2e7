"""Wall time of ``python3 -m builder.cli parse bench/parse_300.Dockerfile`` (interpreter start
included): 20 runs, median and min, beside a bare ``python3 -c pass`` for the machine's floor.

Usage: python3 bench/time_parse.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _runs(cmd: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 20
    for label, cmd in (("python3 -c pass", [sys.executable, "-c", "pass"]),
                       ("pybuild parse parse_300", [sys.executable, "-m", "builder.cli", "parse",
                                                    "bench/parse_300.Dockerfile"])):
        v = _runs(cmd, n)
        print(f"{label:26s} median {statistics.median(v):6.1f} ms   min {min(v):6.1f} ms   ({n} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
