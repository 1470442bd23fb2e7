"""Property: for any text, parse_text + to_instructions + check_structure either return or raise
DockerfileError; never another exception. Inputs: random text, random instruction-like lines,
and mutations of BuildKit's conformance Dockerfiles (characters inserted, deleted, duplicated;
random flags; random heredoc markers; escape directives)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import DockerfileError
from builder.syntax import dump
from builder.syntax.parser import check_structure, parse_text
from builder.syntax.typed import to_instructions

from conftest import CONFORMANCE

_TESTFILES = CONFORMANCE / "buildkit" / "parser" / "testfiles"
SEEDS = sorted((p / "Dockerfile").read_bytes().decode("utf-8", "surrogateescape")
               for p in _TESTFILES.iterdir() if (p / "Dockerfile").is_file()) if _TESTFILES.is_dir() else [""]

KEYWORDS = ["FROM", "RUN", "CMD", "COPY", "ADD", "ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "USER", "WORKDIR",
            "SHELL", "HEALTHCHECK", "ONBUILD", "STOPSIGNAL", "MAINTAINER", "ENTRYPOINT", "FORM", "onbuild"]
SNIPPETS = ["\\", "`", "\n", "\r\n", "#", "# escape=`\n", "# escape=\\\n", "# syntax=x\n", '"', "'", "[", "]",
            '["a", "b"]', '[["x"]]', "<<EOF", "<<-EOF", "<<'EOF'", '3<<"E"', "\nEOF\n", "--", "--link",
            "--from=x", "--mount=type=cache", "--interval=1s", "--retries=x", "=", " AS ", "\t", "\ufeff",
            "\x00", "\udcff", "\u00a0", "ONBUILD ", "$VAR", "${X:-y}", "80/tcp", "1m30s", "{", "}", ","]


def _check(text: str) -> None:
    try:
        df = parse_text(text)
        dump.buildkit(df)
        dump.json_dump(df)
        check_structure(to_instructions(df), df.source)
    except DockerfileError as exc:
        assert exc.render()  # rendering must not fail either


@st.composite
def mutated_seed(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "snippet"]))
        pos = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:pos] + draw(st.text(min_size=1, max_size=3)) + text[pos:]
        elif op == "delete":
            end = draw(st.integers(pos, min(len(text), pos + 8)))
            text = text[:pos] + text[end:]
        elif op == "duplicate":
            end = draw(st.integers(pos, min(len(text), pos + 20)))
            text = text[:pos] + text[pos:end] * 2 + text[end:]
        else:
            text = text[:pos] + draw(st.sampled_from(SNIPPETS)) + text[pos:]
    return text


@st.composite
def instruction_lines(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        parts = [draw(st.sampled_from(KEYWORDS))]
        parts += draw(st.lists(st.sampled_from(SNIPPETS + ["a", "b=c", "/x", "--chown=1:1", "NONE", "CMD"]),
                               max_size=6))
        lines.append(" ".join(parts))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\\", "\n<<EOF\n"]))


FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _check(text)


@FUZZ
@given(mutated_seed())
def test_mutated_conformance(text: str) -> None:
    _check(text)


@FUZZ
@given(instruction_lines())
def test_random_instructions(text: str) -> None:
    _check(text)


def test_deep_onbuild_nesting() -> None:
    _check("FROM a\n" + "ONBUILD " * 3000 + "RUN x\n")


def test_fuzz_seeds_loaded() -> None:
    assert len(SEEDS) == 33
