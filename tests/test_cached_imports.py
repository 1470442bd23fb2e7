"""A fully cached rebuild pays only for what it uses: no pydantic (the OCI models), no registry
client, no compressors (the brief: import heavy modules lazily), and none of the standard
modules only a cache miss, an error or a help text needs (each costs 0.5-3 ms of every start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store

HEAVY = ("pydantic", "requests", "isal", "zstandard", "rich", "builder.oci.models")
# modules a fully cached rebuild does without (imported by the code of a miss only; csv is
# imported lazily too, but a RUN --mount needs it to be planned; dis and tokenize come with
# inspect, which the CLI defers: builder.lazymod)
NOT_ON_CACHED_PATH = ("lark", "concurrent.futures", "logging", "platform", "shutil", "tempfile",
                      "datetime", "zlib", "bz2", "lzma", "random", "dis", "tokenize", "builder.layer.tar",
                      "builder.sandbox.runner", "builder.syntax.lines", "builder.syntax.transform", "pickle")


def _rebuild_twice(store: Path, ctx: Path, also: tuple[str, ...] = ()) -> list[str]:
    """Build ``ctx`` twice; the modules of NOT_ON_CACHED_PATH + HEAVY + ``also`` the second
    build loaded. (``hashlib``, which loads OpenSSL, is left out by a build that hashes no
    file: builder.digest.small_hash.)"""
    env = {**os.environ, "PYBUILD_ROOT": str(store)}
    watched = HEAVY + NOT_ON_CACHED_PATH + also
    code = ("import sys; from builder.cli import main; rc = main(sys.argv[1:]); "
            f"print(rc, *[m for m in {watched!r} if m in sys.modules])")
    args = [sys.executable, "-c", code, "--progress=plain", "-t", "c", str(ctx)]
    first = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    assert first.stdout.split()[0] == "0", first.stderr
    again = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    assert "CACHED" in again.stderr, again.stderr
    assert again.stdout.split()[0] == "0", again.stderr
    return again.stdout.split()[1:]


def test_fully_cached_rebuild_imports_no_heavy_module(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\nENV A=1\n")
    assert _rebuild_twice(tmp_path / "store", ctx) == []


@pytest.mark.root
@pytest.mark.overlay
def test_cached_rebuild_with_run_steps_and_stages_imports_no_heavy_module(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE_TAG} AS build\n"
        "RUN mkdir /out && echo one > /out/a\n"
        "RUN --mount=type=tmpfs,target=/scratch echo two > /out/b\n"
        "FROM scratch\n"
        "COPY --from=build /out /out\n"
        "COPY --from=build /bin/busybox /bin/busybox\n"
        'CMD ["/bin/busybox", "cat", "/out/a"]\n')
    assert _rebuild_twice(busybox_store(tmp_path), ctx, also=("hashlib", "_hashlib")) == []


def test_every_dataclass_has_a_docstring() -> None:
    """dataclasses writes a ``__doc__`` with ``inspect.signature`` for a class without one: the
    CLI defers ``inspect`` (builder.lazymod, ~5 ms), and one such class would load it."""
    import ast

    package = Path(__file__).resolve().parent.parent / "builder"
    bare = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and ast.get_docstring(node) is None and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                bare.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name}")
    assert bare == []
