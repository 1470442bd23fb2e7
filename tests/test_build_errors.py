"""Errors a build reports before running anything (plan-level), as a user sees them: the
message names the Dockerfile and line, the offending line is shown with a caret, the exit code
is 1 (2 for usage), no traceback, and the store and its tags are untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(args: list[str], store: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYBUILD_ROOT=str(store), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], env=env, text=True,
                          capture_output=True, cwd=REPO)


def context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text("x\n")
    return ctx


@pytest.fixture
def store_with_tag(tmp_path: Path) -> tuple[Path, str]:
    """A store holding one tagged image, to check that failures leave it intact."""
    store = tmp_path / "store"
    ok = run(["-q", "-t", "keep:1", str(context(tmp_path, "FROM scratch\nCOPY f.txt /f.txt\n"))], store)
    assert ok.returncode == 0, ok.stderr
    manifests = json.loads((store / "index.json").read_text())["manifests"]
    assert len(manifests) == 1
    return store, manifests[0]["digest"]


CASES = [
    ("FROM scratch AS a\nCOPY --from=b /f /f\nFROM scratch AS b\nCOPY --from=a /f /f\n", [],
     "Dockerfile:4:1: circular dependency detected on stage: a\n    COPY --from=a /f /f\n    ^"),
    ("FROM scratch\nCOPY f.txt /\n", ["--target", "nope"], 'target stage "nope" could not be found'),
    ("FROM scratch\nFORM x\n", [], "Dockerfile:2:1: unknown instruction: FORM (did you mean FROM?)\n    FORM x\n    ^"),
    ("COPY f.txt /\nFROM scratch\n", [], "Dockerfile:1:1: no build stage in current context"),
    ("FROM scratch\nCOPY missing.txt /\n", [], "Dockerfile:2:1: "),
    ("FROM scratch\nEXPOSE 80/xyz\n", [], "Dockerfile:2"),
    ("FROM scratch\nHEALTHCHECK --interval=5parsecs CMD true\n", [], "Dockerfile:2"),
    ("FROM scratch\nCOPY --from=0 /f /f\n", [], "Dockerfile:2"),
    # an image that cannot be pulled for COPY --from / RUN --mount from= is located like FROM's
    ("FROM scratch\nCOPY --from=127.0.0.1:1/no/such:1 /f /f\n", [], "Dockerfile:2:1: "),
    ("FROM scratch\nCOPY f.txt [x /\n", [], "Dockerfile:2:1: syntax error in pattern '[x': unterminated ["),
    ("FROM scratch\nRUN --mount=type=bind,source=nope,target=/m true\n", [],
     'Dockerfile:2:1: failed to compute cache key: "/nope": not found (bind mount source)'),
]


@pytest.mark.parametrize("dockerfile,args,expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_error_is_located_and_nothing_is_lost(tmp_path: Path, store_with_tag: tuple[Path, str],
                                              dockerfile: str, args: list[str], expected: str) -> None:
    store, digest = store_with_tag
    before = (store / "index.json").read_bytes()
    ctx = context(tmp_path, dockerfile)
    proc = run(["-t", "keep:1", *args, str(ctx)], store)
    assert proc.returncode == 1, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (store / "index.json").read_bytes() == before
    index = json.loads(before)
    assert [m["digest"] for m in index["manifests"]] == [digest]
    assert not any((store / "tmp").glob("build-*"))


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = run(["-t", "x", "--output", "type=nosuch,dest=x", str(context(tmp_path, "FROM scratch\n"))], store)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run(["-t", "x", str(tmp_path / "no-such-dir")], store)
    assert proc.returncode == 2 and "no-such-dir" in proc.stderr
    # a --secret file that does not exist is refused before building, as buildx does
    proc = run(["-t", "x", "--secret", f"id=s,src={tmp_path / 'no-such-file'}", str(context(tmp_path, "FROM scratch\n"))],
               store)
    assert proc.returncode == 2 and "--secret" in proc.stderr and "no-such-file" in proc.stderr
    assert "Traceback" not in proc.stderr
    # an --output dest that cannot be written is refused before building (was an internal error after it)
    a_file = tmp_path / "a-file"
    a_file.write_text("keep\n")
    for output in (f"type=oci,dest={tmp_path}", f"type=local,dest={a_file}", f"type=tar,dest={a_file}/x.tar"):
        proc = run(["-t", "x", "--output", output, str(context(tmp_path, "FROM scratch\nCOPY f.txt /\n"))], store)
        assert proc.returncode == 2 and f"--output {output}" in proc.stderr and "Traceback" not in proc.stderr, output
    for flag in ("--iidfile", "--metadata-file"):
        proc = run(["-t", "x", flag, str(tmp_path), str(context(tmp_path, "FROM scratch\nCOPY f.txt /\n"))], store)
        assert proc.returncode == 2 and f"{flag} {tmp_path}" in proc.stderr and "Traceback" not in proc.stderr
    assert a_file.read_text() == "keep\n"


def test_bad_reference_names_it(tmp_path: Path) -> None:
    proc = run(["-t", "Bad:Name:x", str(context(tmp_path, "FROM scratch\n"))], tmp_path / "store")
    assert proc.returncode != 0 and "Bad:Name:x" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = run(["--debug", "-t", "x", str(context(tmp_path, "FROM scratch\nFORM x\n"))], tmp_path / "store")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_bare_flag_names_follow_buildx(tmp_path: Path) -> None:
    """``--label NAME`` is ``NAME=""`` (never the environment's value); ``--build-arg NAME``
    takes ``$NAME`` only when set, as buildx's listToMap does."""
    from buildutil import run_cli

    ctx = context(tmp_path, "FROM scratch\nARG A=default\nLABEL a=$A\n")
    store = tmp_path / "store"
    run_cli(["-q", "-t", "lab:1", "--label", "PB_QA_VAR", "--build-arg", "A", str(ctx)], store,
            env={"PB_QA_VAR": "from-env"}).ok()
    config = json.loads(run_cli(["inspect", "lab:1"], store).ok().out)["Config"]["config"]
    assert config["Labels"] == {"PB_QA_VAR": "", "a": "default"}


def test_output_to_a_closed_pipe_is_an_error(tmp_path: Path) -> None:
    """``-o -`` whose reader goes away: the output is incomplete, so the build fails (it
    exited 0 for type=tar, while type=oci already failed)."""
    ctx = context(tmp_path, "FROM scratch\nCOPY big /big\n")
    (ctx / "big").write_bytes(os.urandom(2 << 20))
    env = dict(os.environ, PYBUILD_ROOT=str(tmp_path / "store"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "-q", "-o", "-", str(ctx)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 3 and "broken pipe" in err and "Traceback" not in err, err


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["images"]])
def test_listing_into_a_closed_pipe_is_quiet(tmp_path: Path, args: list[str]) -> None:
    """``pybuild --help | head``: the reader may be gone before pybuild writes; that ends the
    command quietly (exit 0) without a traceback or "Exception ignored" at exit."""
    r, w = os.pipe()
    os.close(r)
    env = dict(os.environ, PYBUILD_ROOT=str(tmp_path / "store"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "builder.cli", *args], env=env, cwd=REPO, stdout=w,
                          stderr=subprocess.PIPE, text=True)
    os.close(w)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
