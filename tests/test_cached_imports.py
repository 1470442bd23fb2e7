"""A fully cached rebuild pays only for what it uses: no pydantic (the OCI models), no registry
client, no compressors (the brief: import heavy modules lazily)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("pydantic", "requests", "isal", "zstandard", "rich", "builder.oci.models")


def test_fully_cached_rebuild_imports_no_heavy_module(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\nENV A=1\n")
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "store")}
    code = ("import sys; from builder.cli import main; rc = main(sys.argv[1:]); "
            f"print(rc, *[m for m in {HEAVY!r} if m in sys.modules])")
    args = [sys.executable, "-c", code, "--progress=plain", "-t", "c", str(ctx)]
    first = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    assert first.stdout.split()[0] == "0", first.stderr
    again = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    assert "CACHED" in again.stderr, again.stderr
    assert again.stdout.split() == ["0"], again.stdout
