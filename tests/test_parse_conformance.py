"""BuildKit's own parser test files, run as-is (../shared/conformance/buildkit/parser).

- every ``testfiles/<case>``: our BuildKit dump equals ``result`` byte for byte, in-process and
  through the installed ``pybuild`` console script (or ``python3 -m builder.cli``);
- every ``testfiles-negative/<case>`` fails with a DockerfileError whose message we check;
- ``testfile-line``: the line ranges of its three instructions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import DockerfileError
from builder.syntax import dump
from builder.syntax.parser import parse_file, parse_text

from conftest import CONFORMANCE, REPO

PARSER = CONFORMANCE / "buildkit" / "parser"
TESTFILES = PARSER / "testfiles"
NEGATIVE = PARSER / "testfiles-negative"


def _cases(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "Dockerfile").is_file())


NEGATIVE_MESSAGES = {
    "empty_dockerfile": "file with no instructions",
    "only_comments": "file with no instructions",
    "env_no_value": "ENV must have two arguments",
    "shykes-nested-json": "when using JSON array syntax, arrays must be comprised of strings only",
}


def test_conformance_data_present() -> None:
    assert len(_cases(TESTFILES)) == 33, f"expected BuildKit's 33 parser cases under {TESTFILES}"
    assert {p.name for p in _cases(NEGATIVE)} == set(NEGATIVE_MESSAGES)


@pytest.mark.parametrize("case", _cases(TESTFILES), ids=lambda p: p.name)
def test_buildkit_testfile(case: Path) -> None:
    df = parse_file(str(case / "Dockerfile"))
    assert dump.buildkit(df) == (case / "result").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", _cases(NEGATIVE), ids=lambda p: p.name)
def test_buildkit_negative(case: Path) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_file(str(case / "Dockerfile"))
    assert info.value.message == NEGATIVE_MESSAGES[case.name]
    assert info.value.source is not None
    assert NEGATIVE_MESSAGES[case.name] in info.value.render()


def test_buildkit_negative_locations() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_file(str(NEGATIVE / "env_no_value" / "Dockerfile"))
    assert (info.value.span.line, info.value.span.col) == (3, 5)  # type: ignore[union-attr]
    with pytest.raises(DockerfileError) as info:
        parse_file(str(NEGATIVE / "shykes-nested-json" / "Dockerfile"))
    assert info.value.span.line == 1  # type: ignore[union-attr]


def test_buildkit_line_ranges() -> None:
    df = parse_file(str(PARSER / "testfile-line" / "Dockerfile"))
    assert [(n.keyword, n.span.line, n.span.end_line) for n in df.nodes] == [
        ("FROM", 5, 5), ("ENV", 11, 12), ("RUN", 17, 31)]
    assert df.nodes[0].span.line == 5 and df.nodes[-1].span.end_line == 31
    assert df.directives == (("escape", "\\"),)


def test_parse_text_matches_parse_file() -> None:
    for case in _cases(TESTFILES):
        text = (case / "Dockerfile").read_text(encoding="utf-8")
        assert dump.buildkit(parse_text(text)) == (case / "result").read_text(encoding="utf-8"), case.name


def _pybuild_command() -> list[str]:
    exe = shutil.which("pybuild")
    return [exe] if exe else [sys.executable, "-m", "builder.cli"]


def test_cli_on_every_testfile() -> None:
    """The command line gives the same bytes as ``result`` for every case."""
    env = dict(os.environ)
    if not shutil.which("pybuild"):
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = _pybuild_command()
    failures = []
    for case in _cases(TESTFILES):
        proc = subprocess.run([*cmd, "parse", "--format", "buildkit", str(case / "Dockerfile")],
                              capture_output=True, env=env, timeout=60)
        if proc.returncode != 0 or proc.stdout != (case / "result").read_bytes():
            failures.append((case.name, proc.returncode, proc.stderr.decode(errors="replace")[-300:]))
    assert not failures
