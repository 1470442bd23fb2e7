"""The .dockerignore language: Go filepath.Match, **, exceptions, last match wins, walking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.engine.context import BuildContext
from builder.engine.dockerignore import (BadPatternError, IgnoreMatcher, find_ignore_file,
                                         go_clean, go_match, load_ignore, parse_ignore_text)


@pytest.mark.parametrize("pattern,name,expected", [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("*x", "xxx", True),
])
def test_go_match_table(pattern: str, name: str, expected: bool) -> None:
    assert go_match(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["[]a]", "[-]", "[x-]", "[", "[^", "[^bc", "a[", "ab\\", "[a-b-c]", "*x\\"])
def test_go_match_bad_patterns(pattern: str) -> None:
    with pytest.raises(BadPatternError):
        go_match(pattern, "x")


def test_go_clean() -> None:
    assert go_clean("") == "."
    assert go_clean("./a/b/../c/") == "a/c"
    assert go_clean("//a//b") == "/a/b"
    assert go_clean("../x") == "../x"


def test_parse_ignore_text_cleans_and_strips() -> None:
    text = "\ufeff# comment\n\n  ./build/  \n/abs/path\n!  ./keep/../keep.txt\n  # not a comment\n!\n"
    assert parse_ignore_text(text) == ["build", "abs/path", "!keep.txt", "# not a comment", "!"]


def test_lone_exclamation_is_illegal() -> None:
    with pytest.raises(BadPatternError, match="illegal exclusion"):
        IgnoreMatcher.from_text("!\n")


def test_bad_pattern_is_reported(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n[\n")
    with pytest.raises(BadPatternError, match=r"\.dockerignore"):
        load_ignore(tmp_path)


@pytest.mark.parametrize("patterns,path,expected", [
    (["*.md"], "a.md", True),
    (["*.md"], "sub/a.md", False),           # * does not cross /
    (["**/*.md"], "sub/deep/a.md", True),
    (["**/*.md"], "a.md", True),              # **/ may match no directory
    (["docs/**"], "docs/a/b", True),
    (["docs/**"], "docs", False),
    (["**"], "anything/at/all", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/y/c", False),
    (["build"], "build/out/x.o", True),       # a directory excludes its contents
    (["build"], "builder/x", False),
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "keep/inner", False),    # the exception applies to the parent too
    (["*", "!keep", "keep/secret"], "keep/secret", True),   # last match wins
    (["!keep", "*"], "keep", True),           # an exception before the exclusion is void
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md", "README*"], "README.md", True),
    (["te?t"], "test", True),
    (["te?t"], "te/t", False),
    (["[a-c]at"], "bat", True),
    (["[^a-c]at"], "bat", False),
    (["/rooted"], "rooted", True),
    (["./dotted/x"], "dotted/x", True),
    (["a\\*"], "a*", True),
    (["a\\*"], "ab", False),
    (["foo.bar"], "fooxbar", False),          # regex metacharacters are literal
    (["(x)+"], "(x)+", True),
])
def test_ignore_matcher_table(patterns: list[str], path: str, expected: bool) -> None:
    assert IgnoreMatcher(patterns).matches(path) is expected


def test_may_contain_exceptions() -> None:
    prefix_only = IgnoreMatcher(["docs", "!docs/keep/**", "vendor"])
    assert prefix_only.may_contain_exceptions("docs") is True
    assert prefix_only.may_contain_exceptions("vendor") is False
    wildcard = IgnoreMatcher(["docs", "vendor", "!**/*.keep"])
    assert wildcard.may_contain_exceptions("vendor") is True
    none = IgnoreMatcher(["docs"])
    assert none.may_contain_exceptions("docs") is False


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)


def test_walk_skips_ignored_and_enters_dirs_with_exceptions(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "Dockerfile": "FROM scratch\n",
        ".dockerignore": "node_modules\nlogs\n!logs/keep.log\n**/*.tmp\n",
        "app/main.py": "print()\n",
        "app/cache.tmp": "x",
        "node_modules/pkg/index.js": "x",
        "logs/a.log": "x",
        "logs/keep.log": "x",
    })
    ctx = BuildContext(tmp_path, load_ignore(tmp_path))
    names = [rel for rel, _ in ctx.walk(".")]
    assert names == [".", ".dockerignore", "Dockerfile", "app", "app/main.py", "logs", "logs/keep.log"]
    assert ctx.is_ignored("node_modules/pkg/index.js")
    assert not ctx.is_ignored("logs/keep.log")


def test_ignored_dir_without_exceptions_is_not_opened(tmp_path: Path) -> None:
    _tree(tmp_path, {"secret/a": "x", "ok": "y"})
    os.chmod(tmp_path / "secret", 0)  # unreadable: opening it would fail (as root it would not)
    try:
        ctx = BuildContext(tmp_path, IgnoreMatcher(["secret"]))
        assert [rel for rel, _ in ctx.walk(".")] == [".", "ok"]
    finally:
        os.chmod(tmp_path / "secret", 0o755)


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    _tree(tmp_path, {".dockerignore": "a\n", "build.Dockerfile": "FROM scratch\n",
                     "build.Dockerfile.dockerignore": "b\n", "a": "", "b": ""})
    assert find_ignore_file(tmp_path, tmp_path / "build.Dockerfile") == tmp_path / "build.Dockerfile.dockerignore"
    m = load_ignore(tmp_path, tmp_path / "build.Dockerfile")
    assert m.matches("b") and not m.matches("a")
    m2 = load_ignore(tmp_path, tmp_path / "Dockerfile")
    assert m2.matches("a") and not m2.matches("b")
    assert not load_ignore(tmp_path / "nonexistent-dir")


def test_ignored_dockerfile_is_hidden_from_copy_but_readable(tmp_path: Path) -> None:
    _tree(tmp_path, {".dockerignore": "Dockerfile\n.dockerignore\n", "Dockerfile": "FROM scratch\n", "x": "1"})
    ctx = BuildContext(tmp_path, load_ignore(tmp_path))
    assert (tmp_path / "Dockerfile").read_text() == "FROM scratch\n"
    assert [rel for rel, _ in ctx.walk(".")] == [".", "x"]
