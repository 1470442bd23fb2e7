"""Fuzzing with a fixed budget (derandomized: the same examples on every run, so CI time is
stable): the layer extractor, Go's filepath.Match as the .dockerignore matcher uses it, the
parsing of registry JSON (manifest, index, config) and the word expander. Each property says
what may come out: a result, or one of *our* error types; nothing else, and for the extractor
nothing written outside its temporary root. Crashes found are kept below as plain tests.

Budget: ``BUDGET`` examples per property (about a minute for the whole file on 2 cores);
``PYBUILD_FUZZ_EXAMPLES`` raises it for a longer local run."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.engine.dockerignore import BadPatternError, IgnoreMatcher, go_match
from builder.errors import ExpansionError, PybuildError
from builder.layer.extract import extract_layer
from builder.oci import mediatypes as mt
from builder.oci.models import ImageConfig, Index, Manifest, parse_json
from builder.store.layout import children
from builder.syntax.expand import ShellLex

BUDGET = int(os.environ.get("PYBUILD_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=BUDGET, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------------------
# the layer extractor

OUTSIDE = Path(tempfile.gettempdir()) / "pybuild-fuzz-outside"  # must never change
SEGMENTS = ["a", "b", "c", "..", ".", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..wh.plnk", "dev", "x" * 120]
TARGETS = ["a", "../a", "../../..", "/", "/etc", str(OUTSIDE), str(OUTSIDE / "pwn"), "a/b", "b/../../x", ""]


def _name(parts: list[str], absolute: bool) -> str:
    return ("/" if absolute else "") + "/".join(parts)


@st.composite
def members(draw: st.DrawFn) -> tuple[str, str, str, int, bytes]:
    kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "chardev", "fifo", "file", "dir"]))
    name = _name(draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4)), draw(st.booleans()))
    target = draw(st.sampled_from(TARGETS)) if kind in ("symlink", "hardlink") else ""
    mode = draw(st.sampled_from([0o644, 0o755, 0o000, 0o4755, 0o1777, 0o7777]))
    data = draw(st.binary(max_size=64)) if kind == "file" else b""
    return kind, name, target, mode, data


def make_tar(items: list[tuple[str, str, str, int, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tw:
        for kind, name, target, mode, data in items:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                       "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            ti.linkname = target
            if kind == "file":
                ti.size = len(data)
                tw.addfile(ti, io.BytesIO(data))
            else:
                tw.addfile(ti)
    return buf.getvalue()


SEED_TAR = make_tar([("dir", "a", "", 0o755, b""), ("file", "a/f", "", 0o644, b"hello"),
                     ("symlink", "a/l", "../a/f", 0o777, b""), ("hardlink", "a/h", "a/f", 0o644, b""),
                     ("file", "a/.wh.gone", "", 0o644, b""), ("dir", "b", "", 0o755, b""),
                     ("file", "b/.wh..wh..opq", "", 0o644, b""), ("file", "b/g", "", 0o600, b"x" * 700)])


def _snapshot(path: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        for n in sorted(dirnames + filenames):
            st_ = os.lstat(os.path.join(dirpath, n))
            out.append((os.path.join(dirpath, n), st_.st_mode, st_.st_size))
    return sorted(out)


@pytest.fixture(scope="module")
def outside() -> list[tuple[str, int, int]]:
    OUTSIDE.mkdir(exist_ok=True)
    (OUTSIDE / "keep").write_text("keep\n")
    return _snapshot(OUTSIDE)


def _extract_all_ways(data: bytes, outside: list[tuple[str, int, int]]) -> None:
    """Extract ``data`` (plain and gzip) in both modes into a fresh temp root; only our errors
    may escape, and nothing outside the root may appear or change."""
    base = Path(tempfile.mkdtemp(prefix="pybuild-fuzz-"))
    try:
        for mode in ("overlay", "flatten"):
            for blob in (data, gzip.compress(data, mtime=0)):
                root = base / f"root-{mode}"
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir()
                try:
                    extract_layer(io.BytesIO(blob), root, mode=mode, size_limit=1 << 20)  # type: ignore[arg-type]
                except PybuildError:
                    pass
                assert sorted(os.listdir(base)) == [f"root-{m}" for m in ("flatten", "overlay") if (base / f"root-{m}").exists()]
        assert _snapshot(OUTSIDE) == outside
        assert not Path("/pwn").exists() and not Path("/etc/pwn").exists()
    finally:
        subprocess_rm(base)


def subprocess_rm(path: Path) -> None:
    """Remove a tree even when the fuzz made read-only directories in it."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.root
@FUZZ
@given(st.lists(members(), max_size=8), st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
def test_extractor_random_tars_stay_inside(outside: list[tuple[str, int, int]],
                                           items: list[tuple[str, str, str, int, bytes]], fmt: int) -> None:
    try:
        data = make_tar(items, fmt)
    except ValueError:  # a name the chosen format cannot hold
        data = make_tar(items)
    _extract_all_ways(data, outside)


@pytest.mark.root
@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SEED_TAR) - 1), st.integers(0, 255), st.sampled_from(["set", "ins", "del"])),
                min_size=1, max_size=12))
def test_extractor_mutated_tars_stay_inside(outside: list[tuple[str, int, int]],
                                            edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(SEED_TAR)
    for pos, value, how in edits:
        pos %= max(1, len(data))
        if how == "set":
            data[pos] = value
        elif how == "ins":
            data.insert(pos, value)
        else:
            del data[pos]
    _extract_all_ways(bytes(data), outside)


# ---------------------------------------------------------------------------------------------
# Go's filepath.Match, written again from its documented grammar (an independent reference)

class RefBadPattern(Exception):
    pass


def _ref_tokens(pattern: str) -> list[tuple[str, object]]:
    """Tokens of a Go pattern: ("star",), ("any",), ("lit", c), ("class", (neg, ranges)).
    Raises RefBadPattern as Go's ErrBadPattern: a trailing backslash; a class that is empty,
    unclosed, starts a range with ``-`` or ``]`` unescaped, or ends in the middle of a range."""
    out: list[tuple[str, object]] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(("star", None))
            i += 1
        elif c == "?":
            out.append(("any", None))
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise RefBadPattern(pattern)
            out.append(("lit", pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            neg = i < n and pattern[i] == "^"
            if neg:
                i += 1
            ranges: list[tuple[str, str]] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _ref_esc(pattern, i)
                hi = lo
                if pattern[i] == "-":
                    hi, i = _ref_esc(pattern, i + 1)
                ranges.append((lo, hi))
            out.append(("class", (neg, ranges)))
        else:
            out.append(("lit", c))
            i += 1
    return out


def _ref_esc(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) class character at ``i``; something must follow it."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise RefBadPattern(pattern)
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise RefBadPattern(pattern)
    if i + 1 >= len(pattern):
        raise RefBadPattern(pattern)
    return pattern[i], i + 1


def ref_match(pattern: str, name: str) -> bool:
    toks = _ref_tokens(pattern)

    def m(ti: int, ni: int) -> bool:
        if ti == len(toks):
            return ni == len(name)
        kind, arg = toks[ti]
        if kind == "star":
            j = ni
            while True:
                if m(ti + 1, j):
                    return True
                if j == len(name) or name[j] == "/":
                    return False
                j += 1
        if ni == len(name) or name[ni] == "/" and kind == "any":
            return False  # ``?`` never matches the separator (a class may: Go decodes any rune)
        c = name[ni]
        if kind == "any":
            return m(ti + 1, ni + 1)
        if kind == "lit":
            return c == arg and m(ti + 1, ni + 1)
        neg, ranges = arg  # type: ignore[misc]
        hit = any(lo <= c <= hi for lo, hi in ranges)
        return (hit != neg) and m(ti + 1, ni + 1)

    return m(0, 0)


PATTERN_CHARS = st.sampled_from(list("ab/*?[]^-\\c."))
NAME_CHARS = st.sampled_from(list("abc/.-]^*\\"))


@FUZZ
@given(st.text(PATTERN_CHARS, max_size=10), st.text(NAME_CHARS, max_size=8))
def test_go_match_agrees_with_the_reference(pattern: str, name: str) -> None:
    try:
        want: bool | None = ref_match(pattern, name)
    except RefBadPattern:
        want = None
    try:
        got: bool | None = go_match(pattern, name)
    except BadPatternError:
        got = None
    assert got == want, (pattern, name)


@FUZZ
@given(st.lists(st.text(st.sampled_from(list("ab/*?c.")), min_size=1, max_size=6), min_size=1, max_size=3),
       st.lists(st.sampled_from(["a", "b", "c", "ab", ".x"]), min_size=1, max_size=4))
def test_ignore_matcher_is_match_on_the_path_or_a_parent(patterns: list[str], parts: list[str]) -> None:
    """Without ``**`` and ``!``, a path is ignored when one pattern matches it or a parent."""
    from builder.engine.dockerignore import go_clean

    path = "/".join(parts)
    cleaned = [go_clean(p).lstrip("/") or "." for p in patterns]
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    want = any(ref_match(p, pre) for p in cleaned for pre in prefixes)
    assert IgnoreMatcher(patterns).matches(path) == want, (patterns, path)


# crashes / disagreements found by the fuzz, kept as plain cases
@pytest.mark.parametrize("pattern, name, want", [
    ("[", "a", None), ("a\\", "a", None), ("[]a]", "a", None), ("[-]", "-", None), ("[^]", "a", None),
    ("[a-", "a", None), ("[\\]]", "]", True), ("[^a]", "/", True), ("*", "a/b", False), ("a?", "a/", False),
    ("[b-a]", "a", False), ("\\*", "*", True),
])
def test_go_match_cases(pattern: str, name: str, want: bool | None) -> None:
    try:
        got: bool | None = go_match(pattern, name)
    except BadPatternError:
        got = None
    assert got == want
    try:
        ref: bool | None = ref_match(pattern, name)
    except RefBadPattern:
        ref = None
    assert ref == want


# ---------------------------------------------------------------------------------------------
# registry JSON: manifests, indexes, configs

DIGESTS = ["sha256:" + "a" * 64, "sha256:../../etc/passwd", "sha256:ABC", "md5:" + "0" * 32, "", "sha256:",
           "sha512:" + "b" * 128, 7, None]
MEDIA = [mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.OCI_CONFIG,
         "application/vnd.oci.image.layer.v1.tar+gzip", "", "text/plain", 3]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(DIGESTS), st.sampled_from(MEDIA))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@st.composite
def descriptors(draw: st.DrawFn) -> dict:
    d = {"mediaType": draw(st.sampled_from(MEDIA)), "digest": draw(st.sampled_from(DIGESTS)),
         "size": draw(st.one_of(st.integers(-5, 2**64), st.sampled_from(["1", None, 1.5])))}
    if draw(st.booleans()):
        d["platform"] = draw(st.one_of(json_values, st.fixed_dictionaries(
            {"os": st.sampled_from(["linux", "", 1]), "architecture": st.sampled_from(["amd64", "arm64", None])})))
    if draw(st.booleans()):
        d["annotations"] = draw(json_values)
    return d


@st.composite
def registry_docs(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["manifest", "index", "config", "random"]))
    if kind == "random":
        return draw(json_values)
    doc: dict = {"schemaVersion": draw(st.sampled_from([2, 1, "2", None]))}
    if draw(st.booleans()):
        doc["mediaType"] = draw(st.sampled_from(MEDIA))
    if kind == "manifest":
        doc["config"] = draw(descriptors())
        doc["layers"] = draw(st.lists(descriptors(), max_size=3))
    elif kind == "index":
        doc["manifests"] = draw(st.lists(descriptors(), max_size=3))
    else:
        doc.update(architecture=draw(st.sampled_from(["amd64", 5])), os="linux",
                   rootfs={"type": "layers", "diff_ids": draw(st.lists(st.sampled_from(DIGESTS), max_size=3))},
                   config=draw(json_values), history=draw(st.lists(json_values, max_size=2)))
    if draw(st.booleans()):
        doc[draw(st.text(max_size=6))] = draw(json_values)
    return doc


@FUZZ
@given(registry_docs(), st.sampled_from(MEDIA[:6]))
def test_registry_json_raises_only_our_errors(doc: object, media_type: str) -> None:
    data = json.dumps(doc).encode()
    for cls in (Manifest, Index, ImageConfig):
        try:
            parsed = parse_json(cls, data, origin="fuzz")
        except PybuildError:
            continue
        if isinstance(parsed, (Manifest, Index)):
            for d in ([parsed.config, *parsed.layers] if isinstance(parsed, Manifest) else parsed.manifests):
                try:
                    d.digest_value  # noqa: B018 - a descriptor that parsed must give its digest
                except PybuildError:
                    pass
    assert mt.contradiction(data, media_type) is None or isinstance(mt.contradiction(data, media_type), str)
    try:
        children(data, media_type)
    except PybuildError:
        pass


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(MEDIA[:4]))
def test_registry_bytes_raise_only_our_errors(data: bytes, media_type: str) -> None:
    for cls in (Manifest, Index, ImageConfig):
        try:
            parse_json(cls, data, origin="fuzz")
        except PybuildError:
            pass
    mt.contradiction(data, media_type)
    try:
        children(data, media_type)
    except PybuildError:
        pass


# ---------------------------------------------------------------------------------------------
# the word expander: nested expansions built from its grammar

NAMES = st.sampled_from(["A", "B", "EMPTY", "UNSET", "a_1", "1", "@", "#", ""])
OPS = st.sampled_from([":-", "-", ":+", "+", ":?", "?", "#", "##", "%", "%%", "/", "//", ":", ""])


words = st.recursive(
    st.text(st.sampled_from(list("ab \t'\"\\$*?/:-}{")), max_size=4),
    lambda inner: st.one_of(
        st.tuples(NAMES, OPS, inner).map(lambda t: "${" + t[0] + t[1] + t[2] + "}"),
        st.tuples(NAMES).map(lambda t: "$" + t[0]),
        st.tuples(inner, inner).map("".join),
        inner.map(lambda w: '"' + w + '"'),
        inner.map(lambda w: "'" + w + "'"),
    ),
    max_leaves=6)


@FUZZ
@given(words)
def test_word_expander_raises_only_expansion_errors(word: str) -> None:
    env = {"A": "x y", "B": "*", "EMPTY": "", "a_1": "v"}
    for lex in (ShellLex(), ShellLex("`"), ShellLex(process_quotes=False)):
        try:
            assert isinstance(lex.process_word(word, env), str)
            assert all(isinstance(w, str) for w in lex.process_words(word, env))
        except ExpansionError:
            pass
