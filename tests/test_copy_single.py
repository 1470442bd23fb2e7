"""COPY of one context source, streamed (builder.engine.copy.SingleSourceCopy): the same
entries and the same cache-key digest as the general path, in layer order, so the tar writer
can take them as they come; and at build level, a --no-cache build (one walk writes the layer
and gives the key) records the key a cached build looks up.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from test_copy import img  # noqa: F401  (the destination image fixture)

from builder.engine.context import BuildContext, SourceNotFoundError, TreeDigest
from builder.engine.copy import NotSingleSource, SingleSourceCopy, copy_entries, parse_chmod
from builder.engine.dockerignore import IgnoreMatcher
from builder.engine.pathresolve import DirView
from builder.layer.entries import Entry, EntryType
from builder.layer.tar import LayerError, write_layer, write_records

# names whose byte order differs from a plain pre-order walk: siblings of a directory that
# sort between "d" and "d/" (bytes below "/"), a digit, upper case, non-ASCII and non-UTF-8
TRICKY = ["d/x", "d/y/z", "d-x", "d.x", "d0", "D", "d!", "é/f", "zz", "a b/c"]


def _make(root: Path, names: list[str], *, raw: bytes | None = None) -> Path:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"content of {name}\n")
    if raw is not None:
        with open(os.path.join(os.fsencode(root), raw), "wb") as f:
            f.write(b"raw name\n")
    return root


@pytest.fixture()
def ctx_dir(tmp_path: Path) -> Path:
    c = _make(tmp_path / "ctx", TRICKY + ["src/one.py", "src/pkg/two.py", "src/pkg/skip.log", "logs/x.log"],
              raw=b"n\xffame")
    os.chmod(c / "src/one.py", 0o750)
    os.symlink("src/one.py", c / "link")
    os.link(c / "src/pkg/two.py", c / "src/hard.py")
    os.mkfifo(c / "fifo")
    return c


CASES = [
    (".", "/app/", {}, []),
    (".", "/", {}, []),
    ("src", "/opt/src", {}, []),
    ("src/", "/srv/", {"chmod": "u+x,go-w"}, []),
    ("src/one.py", "/bin/one", {}, []),
    ("src/one.py", "/srv/", {"chown": "web:wwwdata"}, []),
    ("z*", "/w/", {}, []),          # a wildcard that matches one path
    ("link", "/l/", {}, []),         # a top symlink is followed
    (".", "/app", {"mtime_clamp": 5}, ["*.log", "logs"]),
    (".", "/app", {"chmod": "0600"}, ["src/pkg"]),
]


def _single(ctx_dir: Path, img: Path, source: str, dest: str, kw: dict, ignore: list[str]):
    """(context, the general path's entries, the SingleSourceCopy) of one case."""
    ctx = BuildContext(ctx_dir, IgnoreMatcher(ignore))
    view = DirView(img)
    chown = None
    if "chown" in kw:
        from builder.engine.userdb import resolve_chown

        chown = resolve_chown(kw["chown"], view)
    chmod = parse_chmod(kw["chmod"]) if "chmod" in kw else None
    clamp = kw.get("mtime_clamp")
    general = copy_entries(sources=[source], dest=dest, src_view=ctx.view, src_is_context=True, context=ctx,
                           dest_view=view, chown=chown, chmod=chmod, mtime_clamp=clamp)
    single = SingleSourceCopy(match=SingleSourceCopy.find(ctx, source), dest=dest, context=ctx, dest_view=view,
                              chown=chown, chmod=chmod, mtime_clamp=clamp)
    return ctx, general, single


def _both(ctx_dir: Path, img: Path, source: str, dest: str, kw: dict, ignore: list[str]):
    ctx, general, single = _single(ctx_dir, img, source, dest, kw, ignore)
    digest = TreeDigest(ctx.view, owners=False)
    streamed = list(single.entries(single.walk(digest)))
    rel = ctx.match_sources(source)
    return general, streamed, digest.hexdigest(), ctx.content_digest(rel, owners=False)


@pytest.mark.parametrize("source,dest,kw,ignore", CASES)
def test_same_entries_and_digest_as_the_general_path(ctx_dir: Path, img: Path, source: str, dest: str,
                                                     kw: dict, ignore: list[str]) -> None:
    general, streamed, digest, expected_digest = _both(ctx_dir, img, source, dest, kw, ignore)
    assert streamed, "the case copies something"
    assert sorted(streamed, key=lambda e: e.name) == sorted(general, key=lambda e: e.name)
    names = [os.fsencode(e.name) for e in streamed]
    assert names == sorted(names) and len(set(names)) == len(names), "layer order, one entry per name"
    assert digest == expected_digest


def test_layer_bytes_equal_the_sorted_writer(ctx_dir: Path, img: Path) -> None:
    general, streamed, _, _ = _both(ctx_dir, img, ".", "/app/", {}, [])
    kinds = {e.type for e in streamed}
    assert {EntryType.FILE, EntryType.DIR, EntryType.SYMLINK, EntryType.HARDLINK, EntryType.FIFO} <= kinds
    sorted_out, streamed_out = io.BytesIO(), io.BytesIO()
    a = write_layer(list(reversed(general)), sorted_out, compression="gzip")
    b = write_layer(iter(streamed), streamed_out, compression="gzip", presorted=True)
    assert (a.digest, a.diff_id, a.size) == (b.digest, b.diff_id, b.size)
    assert sorted_out.getvalue() == streamed_out.getvalue()


@pytest.mark.parametrize("layer_clamp", [None, 3])
@pytest.mark.parametrize("source,dest,kw,ignore", CASES)
def test_framed_records_give_the_bytes_of_the_entry_writer(ctx_dir: Path, img: Path, source: str, dest: str,
                                                           kw: dict, ignore: list[str], layer_clamp: int | None) -> None:
    # the streamed COPY frames plain files and directories itself: byte for byte what
    # write_layer makes of the general path's entries, with both mtime clamps in play
    long_dir = ctx_dir / ("x" * 60) / ("y" * 60)  # a name that needs PAX under /app/
    long_dir.mkdir(parents=True)
    (long_dir / "f").write_text("deep\n")
    os.utime(ctx_dir / "src" / "one.py", (1, 1))  # an mtime below the clamps
    ctx, general, single = _single(ctx_dir, img, source, dest, kw, ignore)
    entry_out, record_out = io.BytesIO(), io.BytesIO()
    a = write_layer(general, entry_out, compression="uncompressed", mtime_clamp=layer_clamp)
    b = write_records(single.records(single.walk(), layer_clamp), record_out, compression="uncompressed")
    assert record_out.getvalue() == entry_out.getvalue()
    assert (a.digest, a.diff_id, a.size) == (b.digest, b.diff_id, b.size)


def test_framed_records_refuse_a_walk_out_of_order(ctx_dir: Path, img: Path) -> None:
    _, _, single = _single(ctx_dir, img, "src", "/s/", {}, [])
    walked = list(single.walk())
    with pytest.raises(LayerError, match="out of order"):
        list(single.records(iter([walked[0]] + walked[1:][::-1])))


def test_hardlink_follows_its_first_member(ctx_dir: Path, img: Path) -> None:
    _, streamed, _, _ = _both(ctx_dir, img, "src", "/s/", {}, [])
    by_name = {e.name: e for e in streamed}
    order = [e.name for e in streamed]
    link = by_name["s/pkg/two.py"]
    assert by_name["s/hard.py"].type is EntryType.FILE
    assert link.type is EntryType.HARDLINK and link.linkname == "s/hard.py"
    assert order.index("s/hard.py") < order.index("s/pkg/two.py")


def test_presorted_writer_refuses_entries_out_of_order() -> None:
    entries = [Entry("b", EntryType.DIR, 0o755), Entry("a", EntryType.DIR, 0o755)]
    with pytest.raises(LayerError, match="out of order"):
        write_layer(iter(entries), io.BytesIO(), compression="gzip", presorted=True)
    dup = [Entry("a", EntryType.DIR, 0o755), Entry("a", EntryType.DIR, 0o755)]
    with pytest.raises(LayerError, match="out of order"):
        write_layer(iter(dup), io.BytesIO(), compression="gzip", presorted=True)


def test_what_it_does_not_stream(ctx_dir: Path) -> None:
    with pytest.raises(NotSingleSource):  # a wildcard matching several paths
        SingleSourceCopy.find(BuildContext(ctx_dir), "src/*")
    with pytest.raises(NotSingleSource):  # ignore exceptions: hidden directories may be entered
        SingleSourceCopy.find(BuildContext(ctx_dir, IgnoreMatcher(["src", "!src/one.py"])), ".")
    with pytest.raises(SourceNotFoundError):
        SingleSourceCopy.find(BuildContext(ctx_dir), "nope")


# ------------------------------------------------------------------------------------ builds

def _build(store: Path, ctx: Path, tag: str, *args: str, env: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], store, env).ok()
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    digest = next(e["digest"] for e in events if e["type"] == "ImageWritten")
    return digest, [e for e in events if e["type"] == "StepFinished" and e["text"].startswith("COPY")]


def test_no_cache_build_records_the_key_a_cached_build_finds(tmp_path: Path) -> None:
    store = busybox_store(tmp_path)
    ctx = _make(tmp_path / "bctx", TRICKY + ["big/f%03d.txt" % i for i in range(300)])
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nCOPY . /app\nLABEL x=1\n")
    (ctx / ".dockerignore").write_text("Dockerfile\n")
    # SOURCE_DATE_EPOCH: /app is made by the step (mtime: when it ran, as in BuildKit)
    sde = {"SOURCE_DATE_EPOCH": "1700000000"}
    first, steps = _build(store, ctx, "t:1", "--no-cache", env=sde)  # one walk: layer and key together
    assert [s["cached"] for s in steps] == [False]
    second, steps = _build(store, ctx, "t:2", env=sde)               # walk first, then look up
    assert [s["cached"] for s in steps] == [True]
    assert second == first
    third, steps = _build(store, ctx, "t:3", "--no-cache", env=sde)
    assert [s["cached"] for s in steps] == [False]
    # built anew, the same layer and (every time being the epoch) the same image
    from ocireader import read_layout

    assert (read_layout(store, "docker.io/library/t:3").manifest["layers"]
            == read_layout(store, "docker.io/library/t:1").manifest["layers"])
    assert third == first
