"""COPY rules: each rule against a temporary context and a DirView destination image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.engine.context import BuildContext, SourceNotFoundError
from builder.engine.copy import CopyError, copy_entries, parse_chmod
from builder.engine.dockerignore import IgnoreMatcher
from builder.engine.pathresolve import DirView
from builder.engine.userdb import resolve_chown
from builder.layer.entries import Entry, EntryType


def _write(root: Path, files: dict[str, str], mode: int | None = None) -> None:
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
        if mode is not None:
            os.chmod(p, mode)


@pytest.fixture()
def ctx_dir(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    _write(c, {
        "a.txt": "A", "b.txt": "B", "c.md": "C",
        "src/one.py": "1", "src/pkg/two.py": "2", "src/pkg/skip.log": "log",
        "secret.key": "k", "logs/x.log": "x",
    })
    os.chmod(c / "src/one.py", 0o750)
    return c


@pytest.fixture()
def img(tmp_path: Path) -> Path:
    r = tmp_path / "image"
    (r / "srv").mkdir(parents=True)
    os.chmod(r / "srv", 0o711)
    (r / "etc").mkdir()
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:44::/var/www:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\nwwwdata:x:44:\nops:x:70:\n")
    (r / "existing").mkdir()
    os.symlink("/srv", r / "app")
    os.symlink("../../..", r / "evil")
    return r


def run(ctx_dir: Path, img: Path, sources: list[str], dest: str, *, ignore: list[str] | None = None,
        **kw) -> dict[str, Entry]:
    ctx = BuildContext(ctx_dir, IgnoreMatcher(ignore or []))
    entries = copy_entries(sources=sources, dest=dest, src_view=ctx.view, src_is_context=True,
                           context=ctx, dest_view=DirView(img), **kw)
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    return {e.name: e for e in entries}


def test_directory_source_copies_its_contents(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["src"], "/opt/app/")
    assert set(out) == {"opt", "opt/app", "opt/app/one.py", "opt/app/pkg", "opt/app/pkg/two.py",
                        "opt/app/pkg/skip.log"}
    assert out["opt/app"].type is EntryType.DIR and out["opt/app"].mode == 0o755
    one = out["opt/app/one.py"]
    assert one.type is EntryType.FILE and one.mode == 0o750 and (one.uid, one.gid) == (0, 0)
    assert one.source == str(ctx_dir / "src/one.py") and one.size == 1 and one.data is None
    assert one.mtime == int((ctx_dir / "src/one.py").stat().st_mtime)


def test_file_into_directory_with_slash(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["a.txt"], "/dst/")
    assert set(out) == {"dst", "dst/a.txt"}


def test_file_renamed_without_slash(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["a.txt"], "/dst/renamed")
    assert set(out) == {"dst", "dst/renamed"}
    assert out["dst/renamed"].source == str(ctx_dir / "a.txt")


def test_file_into_existing_directory_without_slash(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["a.txt"], "/existing")
    assert "existing/a.txt" in out


def test_several_sources_are_copied_one_after_another(ctx_dir: Path, img: Path) -> None:
    """Current BuildKit has no "must end with /" check: each source (argument or wildcard
    match) is copied to the destination in turn, as fsutil's copy.Copy does."""
    out = run(ctx_dir, img, ["a.txt", "b.txt"], "/dst")  # a file, then replaced: the last wins
    assert set(out) == {"dst"} and out["dst"].source == str(ctx_dir / "b.txt")
    out = run(ctx_dir, img, ["*.txt"], "/dst")  # matches a.txt, b.txt in order
    assert set(out) == {"dst"} and out["dst"].source == str(ctx_dir / "b.txt")
    out = run(ctx_dir, img, ["src", "a.txt"], "/dst")  # the directory makes /dst one first
    assert {"dst", "dst/one.py", "dst/pkg", "dst/a.txt"} <= set(out) and out["dst"].type is EntryType.DIR
    with pytest.raises(CopyError, match="cannot copy to non-directory: /dst"):
        run(ctx_dir, img, ["a.txt", "src"], "/dst")  # a file, then a directory onto it
    out = run(ctx_dir, img, ["a.txt", "b.txt"], "/dst/")
    assert {"dst/a.txt", "dst/b.txt"} <= set(out)
    out = run(ctx_dir, img, ["a.txt", "b.txt"], "/existing")
    assert {"existing/a.txt", "existing/b.txt"} <= set(out)


def test_wildcards(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["*.txt", "src/*.py"], "/w/")
    assert set(out) == {"w", "w/a.txt", "w/b.txt", "w/one.py"}
    out = run(ctx_dir, img, ["[ab].tx?"], "/w/")
    assert set(out) == {"w", "w/a.txt", "w/b.txt"}
    out = run(ctx_dir, img, ["c.m*"], "/single")  # one match, no slash: renamed
    assert set(out) == {"single"}


def test_missing_source_is_an_error(ctx_dir: Path, img: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r'"/missing.txt": not found'):
        run(ctx_dir, img, ["missing.txt"], "/d/")
    assert run(ctx_dir, img, ["nomatch*"], "/d/") == {}  # a wildcard may match nothing (BuildKit)
    assert set(run(ctx_dir, img, ["a.txt", "nomatch*"], "/d/")) == {"d", "d/a.txt"}


def test_parent_navigation_stays_in_the_context(ctx_dir: Path, img: Path) -> None:
    # BuildKit removes ``../`` from context sources instead of failing (Dockerfile reference)
    assert set(run(ctx_dir, img, ["../a.txt"], "/d/")) == {"d", "d/a.txt"}
    assert set(run(ctx_dir, img, ["../../src/../a.txt"], "/e")) == {"e"}
    with pytest.raises(SourceNotFoundError, match=r'x": not found'):
        run(ctx_dir, img, ["../x"], "/d/")


def test_destination_symlinks_resolve_inside_the_root(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["a.txt"], "/app/")
    assert set(out) == {"srv", "srv/a.txt"}
    assert out["srv"].mode == 0o711  # existing directory keeps its metadata
    out = run(ctx_dir, img, ["a.txt"], "/evil/x")
    assert set(out) == {"x"}  # ../../.. from / stays at /
    out = run(ctx_dir, img, ["a.txt"], "/evil/evil/app/deep/")
    assert set(out) == {"srv", "srv/deep", "srv/deep/a.txt"}


def test_chmod(ctx_dir: Path, img: Path) -> None:
    os.symlink("a.txt", ctx_dir / "src/link")
    out = run(ctx_dir, img, ["src"], "/m/", chmod=parse_chmod("0640"))
    assert out["m/one.py"].mode == 0o640
    assert out["m/pkg"].mode == 0o640
    assert out["m/link"].type is EntryType.SYMLINK and out["m/link"].mode == 0o777
    for bad in ("u+q", "9", "08", "17777", "u", ",u+x", "u+x,", "x+u"):
        with pytest.raises(CopyError, match="--chmod"):
            parse_chmod(bad)


def test_symbolic_chmod_per_entry(ctx_dir: Path, img: Path) -> None:
    """u=rwX,go=rX: directories 0755, plain files 0644, executable files 0755."""
    os.chmod(ctx_dir / "src/one.py", 0o600)
    os.chmod(ctx_dir / "src/pkg", 0o700)
    (ctx_dir / "src/tool").write_text("#!/bin/sh\n")
    os.chmod(ctx_dir / "src/tool", 0o744)
    os.symlink("one.py", ctx_dir / "src/link")
    out = run(ctx_dir, img, ["src"], "/m/", chmod=parse_chmod("u=rwX,go=rX"))
    assert out["m/pkg"].mode == 0o755
    assert out["m/one.py"].mode == 0o644 and out["m/tool"].mode == 0o755
    assert out["m/link"].mode == 0o777  # symlinks keep theirs
    heredoc = run(ctx_dir, img, ["<<h"], "/h", heredocs=[("h", "x")], chmod=parse_chmod("+x"))
    assert heredoc["h"].mode == 0o755


SYMBOLIC_CASES = ["+x", "a+x", "u+x", "g-r", "o=", "u=rwx,g=rx,o=", "go-w", "g=u", "o=g", "u+s", "g+s",
                  "+t", "o+t", "a-x", "u=rwX,go=rX", "a+X", "a-X", "u+r-w", "=r", "ug=rw,o=r",
                  "u=,g=,o=", "g+w,o-rwx", "u-s", "=", "a=rwx", "u+x,g=u"]


@pytest.mark.parametrize("start", [0o644, 0o755, 0o600, 0o4711, 0o2750, 0o1777, 0o000])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_symbolic_chmod_agrees_with_gnu_chmod(tmp_path: Path, start: int, kind: str) -> None:
    """Each symbolic mode gives the bits coreutils' chmod gives on a real file or directory
    (umask 0, as a build has none)."""
    import subprocess

    for text in SYMBOLIC_CASES:
        path = tmp_path / f"{kind}-{abs(hash(text))}"
        path.mkdir() if kind == "dir" else path.write_text("")
        os.chmod(path, start)
        subprocess.run(["sh", "-c", 'umask 0; chmod -- "$1" "$2"', "sh", text, str(path)], check=True)
        want = os.stat(path).st_mode & 0o7777
        got = parse_chmod(text).apply(start, kind == "dir")
        assert got == want, f"{text} on {kind} {start:04o}: got {got:04o}, chmod gives {want:04o}"


def test_chown_by_name_from_image_passwd(ctx_dir: Path, img: Path) -> None:
    owner = resolve_chown("web", DirView(img))
    assert owner == (33, 44)
    out = run(ctx_dir, img, ["src"], "/w/new/", chown=owner)
    assert all((e.uid, e.gid) == (33, 44) for e in out.values())  # created dirs too (BuildKit)
    out = run(ctx_dir, img, ["a.txt"], "/srv/", chown=resolve_chown("web:ops", DirView(img)))
    assert (out["srv/a.txt"].uid, out["srv/a.txt"].gid) == (33, 70)
    assert (out["srv"].uid, out["srv"].gid) == (0, 0)  # existing dir unchanged


def test_exclude(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["src"], "/e/", excludes=["*.log"])
    assert "e/pkg/skip.log" in out  # * does not cross /
    out = run(ctx_dir, img, ["src"], "/e/", excludes=["**/*.log", "one.py"])
    assert set(out) == {"e", "e/pkg", "e/pkg/two.py"}
    out = run(ctx_dir, img, ["*"], "/e/", excludes=["*.txt", "src", "logs"])
    assert set(out) == {"e", "e/c.md", "e/secret.key"}


def test_parents(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["src/pkg/two.py", "a.txt"], "/p", parents=True)
    assert set(out) == {"p", "p/src", "p/src/pkg", "p/src/pkg/two.py", "p/a.txt"}
    out = run(ctx_dir, img, ["./src/./pkg/two.py"], "/p/", parents=True)
    assert set(out) == {"p", "p/pkg", "p/pkg/two.py"}
    out = run(ctx_dir, img, ["src/*/two.py"], "/p/", parents=True)
    assert "p/src/pkg/two.py" in out
    out = run(ctx_dir, img, ["src/pkg"], "/p/", parents=True)  # a directory keeps its own name
    assert {"p/src/pkg", "p/src/pkg/two.py"} <= set(out)


def test_heredoc_file(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["<<EOF"], "/etc/motd", heredocs=[("EOF", "hello\n")])
    motd = out["etc/motd"]
    assert motd.data == b"hello\n" and motd.size == 6 and motd.mode == 0o644 and motd.source is None
    out = run(ctx_dir, img, ["<<one", "<<two"], "/h/", heredocs=[("one", "1"), ("two", "2")], chmod=0o755)
    assert out["h/one"].data == b"1" and out["h/two"].mode == 0o755


def test_hardlinks_preserved(ctx_dir: Path, img: Path) -> None:
    os.link(ctx_dir / "src/one.py", ctx_dir / "src/pkg/again.py")
    out = run(ctx_dir, img, ["src"], "/hl/")
    first, second = out["hl/one.py"], out["hl/pkg/again.py"]
    assert first.type is EntryType.FILE
    assert second.type is EntryType.HARDLINK and second.linkname == "hl/one.py" and second.size == 0


def test_ignored_files_are_absent(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["."], "/ctx/", ignore=["*.key", "logs", "src/pkg/*.log"])
    assert "ctx/secret.key" not in out and "ctx/logs" not in out
    assert "ctx/src/pkg/skip.log" not in out and "ctx/src/pkg/two.py" in out
    with pytest.raises(SourceNotFoundError):
        run(ctx_dir, img, ["secret.key"], "/x/", ignore=["*.key"])
    out = run(ctx_dir, img, ["."], "/ctx/", ignore=["logs", "!logs/x.log"])
    assert {"ctx/logs", "ctx/logs/x.log"} <= set(out)


def test_source_symlink_followed_inner_symlink_kept(ctx_dir: Path, img: Path) -> None:
    os.symlink("a.txt", ctx_dir / "alias")
    os.symlink("../a.txt", ctx_dir / "src/inner")
    out = run(ctx_dir, img, ["alias"], "/s/")
    assert out["s/alias"].type is EntryType.FILE and out["s/alias"].source == str(ctx_dir / "a.txt")
    out = run(ctx_dir, img, ["src"], "/s/")
    assert out["s/inner"].type is EntryType.SYMLINK and out["s/inner"].linkname == "../a.txt"


def test_mtime_clamp_and_existing_parents(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["a.txt"], "/existing/deeper/", mtime_clamp=1000)
    assert all(e.mtime <= 1000 for e in out.values())
    assert out["existing"].mode == (img / "existing").stat().st_mode & 0o7777
    assert out["existing/deeper"].mode == 0o755


@pytest.mark.root
def test_copy_from_stage_keeps_owner_and_xattrs(tmp_path: Path, img: Path) -> None:
    stage = tmp_path / "stage"
    _write(stage, {"usr/lib/tool": "bin"})
    os.chown(stage / "usr/lib/tool", 123, 456)
    try:
        os.setxattr(stage / "usr/lib/tool", "user.test", b"v")
        has_xattr = True
    except OSError:
        has_xattr = False
    entries = copy_entries(sources=["/usr/lib/tool"], dest="/bin/", src_view=DirView(stage),
                           src_is_context=False, context=None, dest_view=DirView(img))
    tool = {e.name: e for e in entries}["bin/tool"]
    assert (tool.uid, tool.gid) == (123, 456)
    if has_xattr:
        assert ("user.test", b"v") in tool.xattrs
    entries = copy_entries(sources=["/usr/lib/tool"], dest="/bin/", src_view=DirView(stage),
                           src_is_context=False, context=None, dest_view=DirView(img), chown=(1, 2))
    assert {(e.uid, e.gid) for e in entries if e.name == "bin/tool"} == {(1, 2)}


def test_copy_from_stage_paths(tmp_path: Path, img: Path) -> None:
    stage = tmp_path / "stage"
    _write(stage, {"out/a.bin": "a", "out/b.bin": "b", "out/c.txt": "c"})
    entries = copy_entries(sources=["/out/*.bin"], dest="/dist/", src_view=DirView(stage),
                           src_is_context=False, context=None, dest_view=DirView(img))
    assert {e.name for e in entries} == {"dist", "dist/a.bin", "dist/b.bin"}
    with pytest.raises(SourceNotFoundError):
        copy_entries(sources=["/nope"], dest="/d/", src_view=DirView(stage), src_is_context=False,
                     context=None, dest_view=DirView(img))
    assert copy_entries(sources=["/out/*.none"], dest="/d/", src_view=DirView(stage), src_is_context=False,
                        context=None, dest_view=DirView(img)) == []


def test_content_digest(ctx_dir: Path) -> None:
    def digest(paths: list[str], **kw: object) -> str:
        # a BuildContext reads the directory once (one snapshot per build): a fresh one per look
        return BuildContext(ctx_dir, IgnoreMatcher(["*.key"])).content_digest(paths, **kw)  # type: ignore[arg-type]

    d1 = digest(["src", "a.txt"])
    os.utime(ctx_dir / "a.txt", (1, 1))
    assert digest(["src", "a.txt"]) == d1          # mtimes never count
    (ctx_dir / "secret.key").write_text("changed")
    assert digest(["src", "a.txt"]) == d1          # not a source
    d_all = digest(["."])
    (ctx_dir / "secret.key").write_text("again")
    assert digest(["."]) == d_all                  # ignored files never count
    (ctx_dir / "a.txt").write_text("A2")
    d2 = digest(["src", "a.txt"])
    assert d2 != d1
    os.chmod(ctx_dir / "a.txt", 0o600)
    assert digest(["src", "a.txt"]) != d2
    os.symlink("a.txt", ctx_dir / "src/l")
    d3 = digest(["src"])
    os.remove(ctx_dir / "src/l")
    os.symlink("b.txt", ctx_dir / "src/l")
    assert digest(["src"]) != d3                   # symlink targets count
    assert digest(["src"], excludes=["l"]) == digest(["src"], excludes=["l"])
    assert digest(["src"], excludes=["l"]) != digest(["src"])
    assert d1.startswith("sha256:") and len(d1) == 71


def test_context_is_read_once_per_build_context(ctx_dir: Path) -> None:
    ctx = BuildContext(ctx_dir)
    before = ctx.content_digest(["src"])
    (ctx_dir / "src" / "late.txt").write_text("added after the first walk")
    assert ctx.content_digest(["src"]) == before   # the same snapshot within one build
    assert BuildContext(ctx_dir).content_digest(["src"]) != before


def test_exclude_with_exception_reincludes(ctx_dir: Path, img: Path) -> None:
    out = run(ctx_dir, img, ["src"], "/e/", excludes=["pkg", "!pkg/two.py"])
    assert {"e/pkg", "e/pkg/two.py"} <= set(out) and "e/pkg/skip.log" not in out


@pytest.mark.root
def test_copy_from_layered_rootview_honours_whiteouts(tmp_path: Path, img: Path) -> None:
    from builder.store.rootview import RootView

    upper, lower = tmp_path / "upper", tmp_path / "lower"
    _write(lower, {"out/gone": "old", "out/keep": "k", "out/sub/x": "x"})
    _write(upper, {"out/new": "n"})
    os.mknod(upper / "out/gone", 0o600 | 0o020000, os.makedev(0, 0))  # overlay whiteout
    view = RootView([upper, lower])
    entries = copy_entries(sources=["/out"], dest="/dist/", src_view=view, src_is_context=False,
                           context=None, dest_view=DirView(img))
    out = {e.name: e for e in entries}
    assert set(out) == {"dist", "dist/new", "dist/keep", "dist/sub", "dist/sub/x"}
    assert out["dist/keep"].source == str(lower / "out/keep")
    assert out["dist/new"].source == str(upper / "out/new")
