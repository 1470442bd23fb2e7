"""The local build cache: always right (inputs change -> steps rerun), almost free (same
inputs -> nothing reruns, same image digest), and the persistent content-hash memo.

Builds run the real CLI in-process (tests/buildutil.py) on a private copy of the busybox
store; which steps ran is read from ``--progress=rawjson`` StepFinished events.
"""

from __future__ import annotations

import itertools
import json
import marshal
import os
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from ocireader import flatten, read_layout

from builder.engine import context as ctxmod


# ------------------------------------------------------------------------------------- helpers

class Built:
    def __init__(self, err: str, tag: str) -> None:
        self.tag = "docker.io/" + tag
        self.events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        written = [e for e in self.events if e["type"] == "ImageWritten"]
        assert len(written) == 1, err
        self.digest: str = written[0]["digest"]

    def steps(self) -> list[tuple[str, str, bool]]:
        """(stage name, text, cached) of every finished RUN/COPY step, in order."""
        return [(e["stage_name"], e["text"], e["cached"]) for e in self.events
                if e["type"] == "StepFinished" and e["step"] > 0 and e["text"].split()[0] in ("RUN", "COPY", "ADD")]

    def ran(self) -> list[str]:
        return [text for _, text, cached in self.steps() if not cached]


_COUNTER = itertools.count()


def build(root: Path, ctx: Path, *args: str) -> Built:
    """Build ``ctx`` into store ``root`` under a fresh tag (so every result stays readable)."""
    tag = f"test/cache:b{next(_COUNTER)}"
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], root).ok()
    return Built(r.err, tag)


def image_file(root: Path, built: Built, path: str) -> bytes:
    img = read_layout(root, built.tag)
    assert img.manifest_digest == built.digest
    fs = flatten(img.layers)
    member = fs[path]
    assert member.data is not None
    return member.data


def write(ctx: Path, files: dict[str, str]) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return busybox_store(tmp_path)


# ------------------------------------------------------------------------------- RUN and clock

@pytest.mark.root
def test_clock_kept_on_cached_rebuild_and_renewed_by_no_cache(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {BASE_TAG}\nRUN date +%s > /t; cat /proc/uptime >> /t\n"})
    first = build(store, ctx)
    assert first.ran() == ["RUN date +%s > /t; cat /proc/uptime >> /t"]
    t1 = image_file(store, first, "t")

    again = build(store, ctx)
    assert again.ran() == []
    assert again.steps() == [("", "RUN date +%s > /t; cat /proc/uptime >> /t", True)]
    assert image_file(store, again, "t") == t1
    assert again.digest == first.digest

    fresh = build(store, ctx, "--no-cache")
    assert fresh.ran() == ["RUN date +%s > /t; cat /proc/uptime >> /t"]
    assert image_file(store, fresh, "t") != t1
    assert fresh.digest != first.digest


# ------------------------------------------------------------------------------ context files

CHAIN = f"""FROM {BASE_TAG}
COPY a.txt /a
RUN cat /a > /a2
COPY b.txt /b
RUN cat /b > /b2
RUN date +%s > /t; cat /proc/uptime >> /t
"""


@pytest.mark.root
def test_changed_file_reruns_its_copy_and_the_steps_after(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": CHAIN, "a.txt": "a\n", "b.txt": "b\n"})
    first = build(store, ctx)
    assert len(first.ran()) == 5

    (ctx / "b.txt").write_text("B\n")
    second = build(store, ctx)
    assert [c for _, _, c in second.steps()] == [True, True, False, False, False]
    assert image_file(store, second, "b2") == b"B\n"
    assert image_file(store, second, "a2") == b"a\n"

    (ctx / "a.txt").write_text("A\n")
    third = build(store, ctx)
    assert third.ran() == ["COPY a.txt /a", "RUN cat /a > /a2", "COPY b.txt /b", "RUN cat /b > /b2",
                           "RUN date +%s > /t; cat /proc/uptime >> /t"]

    (ctx / "a.txt").write_text("a\n")   # back to the first content: the first records hit again
    (ctx / "b.txt").write_text("b\n")
    back = build(store, ctx)
    assert back.ran() == []
    assert back.digest == first.digest


@pytest.mark.root
def test_touched_file_reruns_nothing(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": CHAIN, "a.txt": "a\n", "b.txt": "b\n"})
    first = build(store, ctx)
    st = (ctx / "a.txt").stat()
    os.utime(ctx / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    (ctx / "b.txt").write_text("b\n")            # rewritten with the same bytes: new mtime and ctime
    again = build(store, ctx)
    assert again.ran() == []
    assert again.digest == first.digest


@pytest.mark.root
def test_ignored_file_never_reaches_a_key(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": f"FROM {BASE_TAG}\nCOPY . /ctx\nRUN ls -R /ctx > /listing\n",
        ".dockerignore": "ignored.txt\nlogs/\n",
        "kept.txt": "k\n", "ignored.txt": "1\n", "logs/x.log": "1\n"})
    first = build(store, ctx)
    assert len(first.ran()) == 2
    (ctx / "ignored.txt").write_text("2, and longer\n")
    (ctx / "logs" / "x.log").write_text("2\n")
    (ctx / "logs" / "new.log").write_text("new\n")
    again = build(store, ctx)
    assert again.ran() == []
    assert again.digest == first.digest
    (ctx / "kept.txt").write_text("changed\n")
    assert build(store, ctx).ran() == ["COPY . /ctx", "RUN ls -R /ctx > /listing"]


# ---------------------------------------------------------------------------- args and stages

STAGES = f"""FROM {BASE_TAG} AS first
RUN cat /proc/uptime > /first

FROM {BASE_TAG} AS last
RUN cat /proc/uptime > /before-arg
ARG V=1
RUN echo "$V" > /v
COPY --from=first /first /first
"""


@pytest.mark.root
def test_build_arg_used_in_last_stage_reruns_only_its_steps_after_the_arg(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": STAGES})
    first = build(store, ctx)
    assert len(first.ran()) == 4
    changed = build(store, ctx, "--build-arg", "V=2")
    assert changed.steps() == [("first", "RUN cat /proc/uptime > /first", True),
                               ("last", "RUN cat /proc/uptime > /before-arg", True),
                               ("last", 'RUN echo "$V" > /v', False),
                               ("last", "COPY --from=first /first /first", False)]
    assert image_file(store, changed, "v") == b"2\n"
    assert image_file(store, changed, "first") == image_file(store, first, "first")
    # an unused build arg changes nothing
    assert build(store, ctx, "--build-arg", "UNUSED=x").ran() == []


@pytest.mark.root
def test_no_cache_filter_reruns_only_that_stage(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": STAGES})
    build(store, ctx)
    before = build(store, ctx)
    again = build(store, ctx, "--no-cache-filter", "first")
    steps = again.steps()
    # the first stage reruns and (reading the clock) makes new content: the last stage's own
    # steps stay cached, but COPY --from=first must copy the new output, never the old one
    assert steps[0] == ("first", "RUN cat /proc/uptime > /first", False)
    assert steps[1:3] == [("last", "RUN cat /proc/uptime > /before-arg", True), ("last", 'RUN echo "$V" > /v', True)]
    assert steps[3] == ("last", "COPY --from=first /first /first", False)
    assert image_file(store, again, "first") != image_file(store, before, "first")
    again = build(store, ctx, "--no-cache-filter", "last")
    assert [(s, c) for s, _, c in again.steps()] == [("first", True), ("last", False), ("last", False),
                                                      ("last", False)]


@pytest.mark.root
def test_comments_and_blank_lines_do_not_bust_the_cache(tmp_path: Path, store: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": CHAIN, "a.txt": "a\n", "b.txt": "b\n"})
    first = build(store, ctx)
    noisy = "# syntax comment\n\n" + "\n".join(
        f"# about step {i}\n   {line}   \n" for i, line in enumerate(CHAIN.splitlines())) + "\n# end\n"
    (ctx / "Dockerfile").write_text(noisy)
    again = build(store, ctx)
    assert again.ran() == []
    assert again.digest == first.digest


# ------------------------------------------------------------------------ persistent hash memo

def test_hash_memo_trusts_unchanged_stat_and_rehashes_touched_files(tmp_path: Path) -> None:
    f = tmp_path / "ctx" / "f.bin"
    f.parent.mkdir()
    f.write_bytes(b"x" * 100_000)
    memo_path = ctxmod.memo_path(tmp_path / "store", tmp_path / "ctx")
    real = ctxmod.file_sha256(str(f), f.stat())

    memo = ctxmod.open_hash_memo(memo_path, [tmp_path / "ctx"])
    memo.RACY_NS = 0                     # the file is brand new; accept it anyway
    ctxmod._HASH_CACHE.clear()
    assert ctxmod.file_sha256(str(f), f.stat()) == real
    ctxmod.close_hash_memo()
    version, saved = marshal.loads(memo_path.read_bytes())
    assert version == ctxmod.HashMemo.VERSION
    assert saved[str(f)][-1] == real
    st = f.stat()
    assert saved[str(f)][:4] == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    # a recorded digest is used as long as the stat fields match (no re-read) ...
    saved[str(f)] = saved[str(f)][:4] + ("0" * 64,)
    memo_path.write_bytes(marshal.dumps((version, saved)))
    ctxmod._HASH_CACHE.clear()
    ctxmod.open_hash_memo(memo_path, [tmp_path / "ctx"])
    try:
        assert ctxmod.file_sha256(str(f), f.stat()) == "0" * 64
        # ... and a touched file (same bytes) is hashed again, giving the true digest
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        assert ctxmod.file_sha256(str(f), f.stat()) == real
    finally:
        ctxmod.close_hash_memo()
        ctxmod._HASH_CACHE.clear()


def test_hash_memo_is_kept_per_context_directory(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a, b = ctxmod.memo_path(store, tmp_path / "a"), ctxmod.memo_path(store, tmp_path / "b")
    assert a != b and a.parent == b.parent == store / "cache" / ctxmod.MEMO_DIR
    assert ctxmod.memo_path(store, str(tmp_path / "a") + "/") == a   # one directory, one memo


def test_hash_memo_ignores_files_outside_its_roots_and_corrupt_files(tmp_path: Path) -> None:
    memo_path = tmp_path / "filehash"
    memo_path.write_text("{not marshal")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("o")
    memo = ctxmod.HashMemo(memo_path, [tmp_path / "ctx"])
    memo.RACY_NS = 0
    st = outside.stat()
    assert memo.get(str(outside), st) is None
    memo.put(str(outside), st, "ab" * 32)
    assert memo.get(str(outside), st) is None
    memo.save()
    assert memo_path.read_text() == "{not marshal"   # nothing worth writing
