"""BuildKit shell-word expansion: builder.syntax.expand.

Part 1 runs BuildKit's own vector files as they are (conformance/buildkit/shell, harness rules in
its README sections 4 and 5), one test per line. Part 2 is our own table for what those files do
not cover: pattern modifiers, ``?`` error messages, the backtick escape, matched-variable
tracking, word-splitting corners, error hygiene; with a few property tests against an oracle.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import DockerfileError, ExpansionError, PybuildError
from builder.syntax.expand import MAX_DEPTH, Expansion, ShellLex

from conftest import CONFORMANCE

SHELL_DIR = CONFORMANCE / "buildkit" / "shell"

# ---------------------------------------------------------------------------------------------
# Part 1: the BuildKit vector files, read as they are.
# ---------------------------------------------------------------------------------------------

ENVVAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _lines(name: str) -> list[str]:
    path = SHELL_DIR / name
    if not path.is_file():
        return []
    # Go's bufio.Scanner: split on \n, drop one trailing \r.
    return [line[:-1] if line.endswith("\r") else line
            for line in path.read_text(encoding="utf-8").split("\n")]


def _envvar_cases() -> list:
    """One param per A/U line of envVarTest (W lines are Windows-only and skipped)."""
    cases = []
    for lineno, raw in enumerate(_lines("envVarTest"), 1):
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, f"envVarTest:{lineno}: needs exactly 3 fields: {raw!r}"
        platform, source, expected = (f.strip() for f in fields)
        assert platform in ("A", "U", "W"), f"envVarTest:{lineno}: bad platform {platform!r}"
        if platform == "W":
            continue
        cases.append(pytest.param(source, expected, id=f"envVarTest:{lineno}"))
    return cases


def _words_cases() -> list:
    """One param per test line of wordsTest, each with the environment accumulated so far."""
    cases = []
    env: dict[str, str] = {}
    lines = _lines("wordsTest")
    if lines and lines[-1] == "":
        lines.pop()  # what follows the file's final newline is not a line
    for lineno, line in enumerate(lines, 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[3:].lstrip(" ").partition("=")
            env[name] = value
            continue
        parts = line.split("|")
        assert len(parts) == 2, f"wordsTest:{lineno}: needs exactly one '|': {line!r}"
        source = parts[0].strip()
        expected = parts[1].lstrip(" ").split(",")
        cases.append(pytest.param(source, dict(env), expected, id=f"wordsTest:{lineno}"))
    return cases


ENVVAR_CASES = _envvar_cases()
WORDS_CASES = _words_cases()


def test_vector_files_are_present_and_complete(conformance_dir: Path) -> None:
    # README: 226 A + 2 U lines in envVarTest, 24 word lines in wordsTest.
    assert (conformance_dir / "buildkit" / "shell" / "envVarTest").is_file()
    assert len(ENVVAR_CASES) == 228
    assert len(WORDS_CASES) == 24
    assert sum(1 for c in ENVVAR_CASES if c.values[1] == "error") == 36


@pytest.mark.parametrize(("source", "expected"), ENVVAR_CASES)
def test_envvar_vectors(source: str, expected: str) -> None:
    lex = ShellLex("\\")
    if expected == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(source, ENVVAR_ENV)
    else:
        assert lex.process_word(source, ENVVAR_ENV) == expected


@pytest.mark.parametrize(("source", "env", "expected"), WORDS_CASES)
def test_words_vectors(source: str, env: dict[str, str], expected: list[str]) -> None:
    lex = ShellLex("\\")
    try:
        result = lex.process_words(source, env)
    except ExpansionError:
        result = ["error"]
    assert result == expected


def test_words_env_keeps_trailing_spaces() -> None:
    # Guard for the harness itself: the ENV line with 3 significant trailing spaces.
    envs = [c.values[1] for c in WORDS_CASES]
    assert any(e.get("trailing") == "ab c   " for e in envs)


# ---------------------------------------------------------------------------------------------
# Part 2: our own tables.
# ---------------------------------------------------------------------------------------------

LEX = ShellLex()

# (word, env, expected result, expected matched names)
PATTERN_TABLE = [
    # -- # and ## (prefix, shortest / longest)
    (r"${FOO#*x*y}", {"FOO": "xxyy"}, "y", {"FOO"}),
    (r"${FOO##*x*y}", {"FOO": "xxyy"}, "", {"FOO"}),
    (r"${FOO#*}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO##*}", {"FOO": "xxyy"}, "", {"FOO"}),
    (r"${FOO#}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO##}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO##*x}", {"FOO": "xxyy"}, "yy", {"FOO"}),
    (r"${FOO#*x}", {"FOO": "xxyy"}, "xyy", {"FOO"}),
    (r"${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy", {"FOO", "BAR"}),
    (r"${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}),
    (r"${FOO#?\?}", {"FOO": "???y"}, "?y", {"FOO"}),
    (r"${FOO#z}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO#*/}", {"FOO": "usr/local/bin"}, "local/bin", {"FOO"}),
    (r"${FOO##*/}", {"FOO": "usr/local/bin"}, "bin", {"FOO"}),
    (r"${FOO#()[]{\}^$.\*\?|\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x", {"FOO"}),
    (r"${FOO#[ab]}", {"FOO": "[ab]c"}, "c", {"FOO"}),  # brackets are literal, as in BuildKit
    (r"${FOO#[ab]}", {"FOO": "ac"}, "ac", {"FOO"}),
    (r"${UNSET#x}", {}, "", set()),
    # -- % and %% (suffix)
    (r"${FOO%x}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO%y}", {"FOO": "xxyy"}, "xxy", {"FOO"}),
    (r"${FOO%%y*}", {"FOO": "xxyy"}, "xx", {"FOO"}),
    (r"${FOO%y*}", {"FOO": "xxyy"}, "xxy", {"FOO"}),
    (r"${FOO%}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}),
    (r"${FOO%%\**}", {"FOO": "xx**"}, "xx", {"FOO"}),
    (r"${FOO%%\**\*}", {"FOO": "a***yy*"}, "a", {"FOO"}),
    (r"${FOO%.*}", {"FOO": "archive.tar.gz"}, "archive.tar", {"FOO"}),
    (r"${FOO%%.*}", {"FOO": "archive.tar.gz"}, "archive", {"FOO"}),
    (r"${FOO%???}", {"FOO": "한국어x"}, "한", {"FOO"}),
    (r"${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy.", {"FOO"}),
    # -- / and // (replace first / all; leftmost, longest)
    (r"${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
     "/foo.*/*.txt - /foo..*.txt", {"FOO", "NEEDLE"}),
    (r"${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
     "/tmp/bar.txt - /bar.txt", {"FOO", "NEEDLE"}),
    (r"${FOO/$N/$R} - ${FOO//$N/$R}", {"FOO": "/a/foo/b/c.txt", "N": "/?/", "R": "/"},
     "/foo/b/c.txt - /foo/c.txt", {"FOO", "N", "R"}),
    (r"${FOO/$N/$R}", {"FOO": "http://google.de", "N": "http://", "R": "https://"},
     "https://google.de", {"FOO", "N", "R"}),
    (r"${FOO//\//\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt", {"FOO"}),
    (r"${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy", {"FOO", "BAR"}),
    (r"${FOO///}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    (r"${FOO///}", {}, "", set()),
    (r"${FOO/x*/z}", {"FOO": "axbxc"}, "az", {"FOO"}),  # longest at the leftmost start
    (r"${FOO/x?/z}", {"FOO": "axbxc"}, "azxc", {"FOO"}),
    (r"${FOO//x?/z}", {"FOO": "axbxc"}, "azz", {"FOO"}),
    (r"${FOO//*/z}", {"FOO": "abc"}, "z", {"FOO"}),  # an empty match after a match is skipped
    (r"${FOO//*/z}", {"FOO": ""}, "z", {"FOO"}),
    (r"${FOO//o/0}", {"FOO": "foo boo"}, "f00 b00", {"FOO"}),
    (r"${FOO/o/a b}", {"FOO": "foo"}, "fa bo", {"FOO"}),
    (r"${FOO/}x/y}", {"FOO": "a}xb"}, "ayb", {"FOO"}),  # '}' is ordinary inside the pattern
    # -- the modifiers' words are expanded eagerly; all names looked up are tracked
    (r"${FOO:-$BAR}", {"FOO": "f", "BAR": "b"}, "f", {"FOO", "BAR"}),
    (r"${FOO:+$BAR}", {"BAR": "b"}, "", {"BAR"}),
    ("x", {"DUMMY": "dummy"}, "x", set()),
    ("x ${UNUSED}", {"DUMMY": "dummy"}, "x ", set()),
    ("x ${FOO}", {"FOO": "y"}, "x y", {"FOO"}),
    ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc", {"FOO", "BAR"}),
    ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc", {"FOO", "BAR"}),
    ("${FOO:-}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}),
    ("${FOO:-}", {}, "", set()),
    ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb ", {"FOO", "BAR"}),
    ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  ", {"FOO", "BAR"}),
    ("${FOO?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}),
    ("${BAR?bbb}", {"FOO": "xxx", "BAR": ""}, "", {"BAR"}),
    ("${FOO:?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}),
    ("$A$B", {"A": "1", "C": "3"}, "1", {"A"}),
    ("'$A'\"$B\"", {"A": "1", "B": "2"}, "$A2", {"B"}),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
     "something-v1.2.3.linux-arm-v7.tar.gz", {"VERSION", "TARGETOS", "TARGETARCH", "TARGETVARIANT"}),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "amd64"},
     "something-v1.2.3.linux-amd64.tar.gz", {"VERSION", "TARGETOS", "TARGETARCH"}),
    # -- names: Unicode letters are name characters (Go's unicode.IsLetter), as in BuildKit
    ("$café!", {"café": "1"}, "1!", {"café"}),
    ("$A_1-x", {"A_1": "v"}, "v-x", {"A_1"}),
    ("${_}", {"_": "u"}, "u", {"_"}),
]


@pytest.mark.parametrize(("word", "env", "expected", "matched"), PATTERN_TABLE,
                         ids=[f"{i}:{w}" for i, (w, *_rest) in enumerate(PATTERN_TABLE)])
def test_expansion_table(word: str, env: dict[str, str], expected: str, matched: set[str]) -> None:
    result, names = LEX.process_word_with_matches(word, env)
    assert result == expected
    assert names == frozenset(matched)
    assert LEX.process_word(word, env) == expected


def test_expand_reports_matched_and_unmatched() -> None:
    exp = LEX.expand("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""})
    assert isinstance(exp, Expansion)
    assert exp.result == "xxx  ccc"
    assert exp.words == ("xxx", "ccc")
    assert exp.matched == {"FOO", "BAR"}
    assert exp.unmatched == {"BAZ"}


ERROR_TABLE = [
    # (word, env, a fragment the message must contain)
    ("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"}, "VAR: message herex"),
    ("${VAR:?message here$ARG}", {"ARG": "x"}, "VAR: message herex"),
    ("${VAR?message here$ARG}", {"ARG": "x"}, "VAR: message herex"),
    ("${BAZ?ccc}", {"FOO": "xxx"}, "BAZ: ccc"),
    ("${BAR:?bbb}", {"BAR": ""}, "BAR: bbb"),
    ("${BAZ:?}", {}, "BAZ: is not allowed to be unset"),
    ("${BAR:?}", {"BAR": ""}, "BAR: is not allowed to be empty"),
    ("${BAZ?}", {}, "BAZ: is not allowed to be unset"),
    ("${PWD:-${NOPE?gone}}", {"PWD": "/"}, "NOPE: gone"),  # words are expanded eagerly
    ("${FOO=aaa}", {"FOO": "xxx"}, "unsupported modifier (=)"),
    ("${FOO=:aaa}", {"FOO": "xxx"}, "unsupported modifier"),
    ("${FOO=}", {}, "unsupported modifier"),
    ("${FOO:=x}", {}, "unsupported modifier (:=)"),
    ("${FOO:YYY}", {}, "unsupported modifier (:Y)"),
    ("${FOO//ww}", {"FOO": "xxyy"}, "missing '/'"),
    ("${FOO//}", {"FOO": "xxyy"}, "missing '/'"),
    ("${FOO/a/b", {"FOO": "xxyy"}, "missing '}'"),
    ("${FOO#\\x}", {"FOO": "xxyy"}, "invalid pattern"),
    ("${FOO#a\\}", {"FOO": "xxyy"}, "missing '}'"),  # the escaped } does not close
    ("${FOO%\\\\\\}x", {"FOO": "xxyy"}, "missing '}'"),
    ("${FOO/\\q/x}", {"FOO": "xxyy"}, "invalid pattern"),
    ("${}", {}, "bad substitution"),
    ("${:-x}", {}, "bad substitution"),
    ("${{x}", {}, "bad substitution"),
    ("${+x}", {}, "bad substitution"),
    ("${.}", {}, "bad substitution"),
    ("${FOO", {}, "missing '}'"),
    ("${FOO:", {}, "missing '}'"),
    ("${FOO:-a", {}, "missing '}'"),
    ("${FOO:-\"a}", {}, "missing '}'"),
    ("${", {}, "missing '}'"),
    ("\"abc", {}, "double-quote"),
    ("'abc", {}, "single-quote"),
    ("${#X}", {"X": "abc"}, "unsupported modifier (X)"),
]


@pytest.mark.parametrize(("word", "env", "fragment"), ERROR_TABLE,
                         ids=[f"{i}:{w}" for i, (w, *_rest) in enumerate(ERROR_TABLE)])
def test_expansion_errors(word: str, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ExpansionError) as info:
        LEX.process_word(word, env)
    message = str(info.value)
    assert fragment in message
    assert message.startswith('failed to process "')
    assert info.value.span is None  # the caller attaches the span
    assert isinstance(info.value, DockerfileError)
    assert info.value.exit_code == 1
    with pytest.raises(ExpansionError):
        LEX.process_words(word, env)
    with pytest.raises(ExpansionError):
        LEX.process_word_with_matches(word, env)


def test_error_message_names_the_word() -> None:
    with pytest.raises(ExpansionError) as info:
        LEX.process_word('a"b${X?is "required"}', {})
    assert str(info.value) == 'failed to process "a\\"b${X?is \\"required\\"}": X: is required'


# -- the backtick escape (``# escape=` ``) ---------------------------------------------------

BACKTICK = ShellLex("`")

BACKTICK_TABLE = [
    # (word, expected)
    ("C:\\Windows\\$PWD", "C:\\Windows\\/home"),  # backslash is an ordinary character
    ("he`$PWD", "he$PWD"),
    ("he``$PWD", "he`/home"),
    ("a`b", "ab"),
    ("hello`", "hello"),
    ("hello``", "hello`"),
    ("he`'llo", "he'llo"),
    ('"a`"b"', 'a"b'),
    ('"a`$PWD"', "a$PWD"),
    ('"a``b"', "a`b"),
    ('"a`b"', "a`b"),  # inside double quotes the escape only escapes " $ and itself
    ('"a\\"', "a\\"),  # ...and backslash has no meaning at all
    ("'a`b'", "a`b"),
    ("${X:-`}}", "}"),
    ("${PWD#`/}", "/home"),  # BuildKit's pattern syntax uses backslash whatever the escape token
    ("${PWD#/h}", "ome"),
]


@pytest.mark.parametrize(("word", "expected"), BACKTICK_TABLE,
                         ids=[f"{i}:{w}" for i, (w, _e) in enumerate(BACKTICK_TABLE)])
def test_backtick_escape(word: str, expected: str) -> None:
    assert BACKTICK.process_word(word, ENVVAR_ENV) == expected


def test_backtick_escape_words() -> None:
    assert BACKTICK.process_words("a` b c\\ d", {}) == ["a b", "c\\", "d"]
    with pytest.raises(ExpansionError):
        BACKTICK.process_word('"a`"', {})


def test_bad_escape_token_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        ShellLex("x")


# -- word splitting corners -----------------------------------------------------------------

WORDS_TABLE = [
    # (word, env, expected words)
    ("", {}, []),
    ("   ", {}, []),
    ('""', {}, []),  # empty words are dropped
    ("'' a ''", {}, ["a"]),
    ('a"" b', {}, ["a", "b"]),
    ("a\tb\nc", {}, ["a", "b", "c"]),
    ("a\\ b", {}, ["a b"]),
    ("$X", {"X": " a  b "}, ["a", "b"]),
    ('"$X"', {"X": " a  b "}, [" a  b "]),
    ("'$X'", {"X": " a  b "}, ["$X"]),
    ('${X:-"a b"}', {}, ["a", "b"]),  # an unquoted $ result splits even if its word was quoted
    ('"${X:-a b}"', {}, ["a b"]),
    ("x${E}y", {"E": ""}, ["xy"]),
    ("${E} x", {"E": ""}, ["x"]),
    ("a\u00a0b", {}, ["a", "b"]),  # Go's unicode.IsSpace
    ("a\x1cb", {}, ["a\x1cb"]),  # ...which, unlike str.isspace, excludes U+001C..U+001F
    ("COPY $SRC /dst", {"SRC": "a b"}, ["COPY", "a", "b", "/dst"]),
]


@pytest.mark.parametrize(("word", "env", "expected"), WORDS_TABLE,
                         ids=[f"{i}:{w!r}" for i, (w, *_rest) in enumerate(WORDS_TABLE)])
def test_words_table(word: str, env: dict[str, str], expected: list[str]) -> None:
    assert LEX.process_words(word, env) == expected


# -- quotes left alone (heredoc bodies) -----------------------------------------------------

def test_process_quotes_false_keeps_quotes() -> None:
    raw = ShellLex(process_quotes=False)
    assert raw.process_word("echo '$PWD' \"${SHELL}\"", ENVVAR_ENV) == "echo '/home' \"bash\""
    assert raw.process_word("it's", {}) == "it's"  # an odd quote is no error
    assert raw.process_word("a\\$PWD", ENVVAR_ENV) == "a$PWD"  # escapes still apply


# -- limits and robustness ------------------------------------------------------------------

def test_nesting_limit() -> None:
    ok = "${X:-" * MAX_DEPTH + "v" + "}" * MAX_DEPTH
    assert LEX.process_word(ok, {}) == "v"
    deep = "${X:-" * (MAX_DEPTH + 1) + "v" + "}" * (MAX_DEPTH + 1)
    with pytest.raises(ExpansionError, match="nested"):
        LEX.process_word(deep, {})
    hostile = "${X:-" * 5000
    with pytest.raises(ExpansionError):
        LEX.process_word(hostile, {})


def test_lexer_is_reusable_and_stateless() -> None:
    lex = ShellLex()
    assert lex.process_word_with_matches("$A", {"A": "1"}) == ("1", frozenset({"A"}))
    assert lex.process_word_with_matches("$B", {"A": "1"}) == ("", frozenset())
    with pytest.raises(ExpansionError):
        lex.process_word("${", {})
    assert lex.process_word("$A", {"A": "2"}) == "2"


_ALPHABET = st.sampled_from(list("ab$ {}:-+?#%/\\'\"`*1@x \t"))


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=24))
def test_only_expansion_errors_escape(word: str) -> None:
    env = {"a": "A", "x": "", "ab": "a b"}
    for lex in (LEX, BACKTICK, ShellLex(process_quotes=False)):
        try:
            single = lex.process_word(word, env)
            words = lex.process_words(word, env)
        except PybuildError as exc:
            assert isinstance(exc, ExpansionError)
            continue
        assert isinstance(single, str)
        assert all(w for w in words)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list("abc.-_/é")), max_size=30))
def test_plain_words_are_unchanged(word: str) -> None:
    assert LEX.process_word(word, {"a": "zzz"}) == word
    assert LEX.process_words(word, {}) == ([word] if word else [])


def _oracle_prefix(value: str, pattern: str, longest: bool) -> str:
    ks = [k for k in range(len(value) + 1) if fnmatch.fnmatchcase(value[:k], pattern)]
    if not ks:
        return value
    return value[(max(ks) if longest else min(ks)):]


def _oracle_suffix(value: str, pattern: str, longest: bool) -> str:
    ks = [k for k in range(len(value) + 1) if fnmatch.fnmatchcase(value[k:], pattern)]
    if not ks:
        return value
    return value[:(min(ks) if longest else max(ks))]


@settings(max_examples=400, deadline=None)
@given(st.text(st.sampled_from("abc"), max_size=8), st.text(st.sampled_from("ab*?"), max_size=5))
def test_prefix_suffix_removal_matches_glob_oracle(value: str, pattern: str) -> None:
    env = {"V": value}
    assert LEX.process_word("${V#" + pattern + "}", env) == _oracle_prefix(value, pattern, False)
    assert LEX.process_word("${V##" + pattern + "}", env) == _oracle_prefix(value, pattern, True)
    assert LEX.process_word("${V%" + pattern + "}", env) == _oracle_suffix(value, pattern, False)
    assert LEX.process_word("${V%%" + pattern + "}", env) == _oracle_suffix(value, pattern, True)


def _oracle_replace_first(value: str, pattern: str, repl: str) -> str:
    for a in range(len(value) + 1):
        ends = [b for b in range(a, len(value) + 1) if fnmatch.fnmatchcase(value[a:b], pattern)]
        if ends:
            return value[:a] + repl + value[max(ends):]
    return value


@settings(max_examples=400, deadline=None)
@given(st.text(st.sampled_from("abc"), max_size=8), st.text(st.sampled_from("ab*?"), min_size=1, max_size=5))
def test_replace_first_matches_glob_oracle(value: str, pattern: str) -> None:
    assert LEX.process_word("${V/" + pattern + "/R}", {"V": value}) == _oracle_replace_first(value, pattern, "R")
