"""ADD: local archives detected by content and extracted safely; URLs fetched and verified."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import lzma
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import pytest
import zstandard

from builder.engine.archive import (INLINE_LIMIT, ArchiveError, add_local_entries,
                                    archive_entries, detect_compression, is_archive)
from builder.engine.context import BuildContext
from builder.engine.dockerignore import IgnoreMatcher
from builder.engine.fetch import FetchError, fetch_url, url_entries, url_filename
from builder.engine.pathresolve import DirView
from builder.layer.entries import EntryType

BIG = INLINE_LIMIT + 10


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1_600_000_000
    return info, data


def _special(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info, None


def _sample_tar() -> bytes:
    return _tar_bytes([
        _special("pkg", tarfile.DIRTYPE),
        _file("pkg/small.txt", b"hello", mode=0o640, uid=1000, gid=1000),
        _file("pkg/big.bin", b"x" * BIG),
        _special("pkg/link", tarfile.SYMTYPE, "small.txt", 0o777),
        _special("pkg/hard", tarfile.LNKTYPE, "pkg/small.txt", 0o640),
        _file("deep/er/file", b"d"),
    ])


COMPRESSORS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    None: lambda b: b,
}


@pytest.fixture()
def img(tmp_path: Path) -> DirView:
    r = tmp_path / "image"
    (r / "opt").mkdir(parents=True)
    return DirView(r)


@pytest.mark.parametrize("compression", list(COMPRESSORS))
def test_archive_detected_by_content_and_extracted(tmp_path: Path, img: DirView, compression: str | None) -> None:
    archive = tmp_path / "misleading.name"  # the name says nothing
    archive.write_bytes(COMPRESSORS[compression](_sample_tar()))
    assert detect_compression(archive.read_bytes()[:8]) == compression
    assert is_archive(archive) == (compression or "none")
    ext = archive_entries(archive, "/opt/app", dest_view=img, scratch=tmp_path / "scratch")
    try:
        out = {e.name: e for e in ext.entries}
        assert set(out) == {"opt", "opt/app", "opt/app/pkg", "opt/app/pkg/small.txt", "opt/app/pkg/big.bin",
                            "opt/app/pkg/link", "opt/app/pkg/hard", "opt/app/deep", "opt/app/deep/er",
                            "opt/app/deep/er/file"}
        small = out["opt/app/pkg/small.txt"]
        assert small.data == b"hello" and (small.uid, small.gid, small.mode) == (1000, 1000, 0o640)
        assert small.mtime == 1_600_000_000
        big = out["opt/app/pkg/big.bin"]
        assert big.source is not None and Path(big.source).read_bytes() == b"x" * BIG
        assert ext.temp_dir is not None and Path(big.source).parent == ext.temp_dir
        assert out["opt/app/pkg/link"].type is EntryType.SYMLINK and out["opt/app/pkg/link"].linkname == "small.txt"
        assert out["opt/app/pkg/hard"].type is EntryType.HARDLINK
        assert out["opt/app/pkg/hard"].linkname == "opt/app/pkg/small.txt"
        assert out["opt/app/deep"].mode == 0o755
    finally:
        if ext.temp_dir:
            shutil.rmtree(ext.temp_dir)


def test_non_archives_are_not_archives(tmp_path: Path) -> None:
    plain = tmp_path / "notes.tar.gz"
    plain.write_text("just text, despite the name\n")
    assert is_archive(plain) is None
    gz_text = tmp_path / "text.gz"
    gz_text.write_bytes(gzip.compress(b"not a tar" * 100))
    assert is_archive(gz_text) is None
    broken = tmp_path / "broken"
    broken.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    assert is_archive(broken) is None


@pytest.mark.parametrize("members,why", [
    ([_file("../escape", b"x")], "escapes"),
    ([_file("a/../../escape", b"x")], "escapes"),
    ([_special("outside", tarfile.LNKTYPE, "/etc/passwd")], "outside the archive"),
    ([_special("outside", tarfile.LNKTYPE, "../../etc/passwd")], "escapes"),
    ([_special("lnk", tarfile.SYMTYPE, "/etc"), _file("lnk/passwd", b"owned")], "symbolic link"),
])
def test_hostile_archives_are_refused(tmp_path: Path, img: DirView, members: list, why: str) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar_bytes(members + [_file("big", b"y" * BIG)]))
    scratch = tmp_path / "scratch"
    with pytest.raises(ArchiveError, match=why):
        archive_entries(archive, "/opt/", dest_view=img, scratch=scratch)
    assert not scratch.exists() or not any(scratch.iterdir())


def test_absolute_member_names_stay_under_dest(tmp_path: Path, img: DirView) -> None:
    archive = tmp_path / "abs.tar"
    archive.write_bytes(_tar_bytes([_file("/etc/passwd", b"x")]))
    ext = archive_entries(archive, "/opt/", dest_view=img, scratch=tmp_path / "s")
    assert {e.name for e in ext.entries} == {"opt", "opt/etc", "opt/etc/passwd"}
    assert ext.temp_dir is None


def test_corrupt_archive_is_an_error(tmp_path: Path, img: DirView) -> None:
    archive = tmp_path / "cut.tar.xz"
    archive.write_bytes(lzma.compress(_sample_tar())[:200])
    with pytest.raises(ArchiveError, match="cut.tar.xz"):
        archive_entries(archive, "/opt/", dest_view=img, scratch=tmp_path / "s")


def test_add_local_mixes_archives_and_files(tmp_path: Path, img: DirView) -> None:
    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "bundle.tgz").write_bytes(gzip.compress(_sample_tar()))
    (ctx_dir / "readme.gz").write_bytes(gzip.compress(b"not a tar"))
    ctx = BuildContext(ctx_dir, IgnoreMatcher())
    res = add_local_entries(sources=["bundle.tgz", "readme.gz"], dest="/opt/", src_view=ctx.view,
                            src_is_context=True, context=ctx, dest_view=img, scratch=tmp_path / "scratch")
    try:
        out = {e.name: e for e in res.entries}
        assert "opt/pkg/small.txt" in out and "opt/bundle.tgz" not in out
        assert out["opt/readme.gz"].source == str(ctx_dir / "readme.gz")  # copied as is
        assert res.temp_dir is not None and res.temp_dir.parent == tmp_path / "scratch"
    finally:
        if res.temp_dir:
            shutil.rmtree(res.temp_dir)


# ---- URLs ----------------------------------------------------------------------------------

BODY = b"remote payload\n" * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_url_with_correct_checksum(tmp_path: Path, img: DirView, server: str) -> None:
    good = "sha256:" + hashlib.sha256(BODY).hexdigest()
    dl = fetch_url(server + "/files/tool.tar.gz?x=1", tmp_path / "scratch", checksum=good)
    try:
        assert dl.name == "tool.tar.gz" and dl.size == len(BODY) and dl.digest == good
        assert dl.mtime == 1445412480
        out = {e.name: e for e in url_entries(dl, "/opt/", dest_view=img)}
        entry = out["opt/tool.tar.gz"]
        assert entry.type is EntryType.FILE and entry.mode == 0o600 and entry.source == str(dl.path)
        assert entry.mtime == 1445412480  # not extracted, Last-Modified kept
        renamed = {e.name for e in url_entries(dl, "/opt/renamed", dest_view=img, chmod=0o644)}
        assert renamed == {"opt", "opt/renamed"}
    finally:
        dl.path.unlink()


def test_url_with_wrong_checksum(tmp_path: Path, server: str) -> None:
    bad = "sha256:" + "0" * 64
    scratch = tmp_path / "scratch"
    with pytest.raises(FetchError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/f/tool"):
        fetch_url(server + "/f/tool", scratch, checksum=bad)
    assert not any(scratch.iterdir())  # nothing left behind
    with pytest.raises(FetchError, match="invalid checksum"):
        fetch_url(server + "/f/tool", scratch, checksum="md5:abc")


def test_url_http_error(tmp_path: Path, server: str) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(server + "/missing/x", tmp_path / "s")


def test_url_filename() -> None:
    assert url_filename("https://example.com/a/b/c.txt?q=1") == "c.txt"
    assert url_filename("https://example.com/") == "__unnamed__"
    assert url_filename("https://example.com") == "__unnamed__"
    assert url_filename("https://example.com/dir/my%20file") == "my file"


def test_add_entries_whole_instruction(tmp_path: Path, img: DirView, server: str) -> None:
    from builder.engine.archive import add_entries
    from builder.engine.copy import CopyError

    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "bundle.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(_sample_tar()))
    ctx = BuildContext(ctx_dir, IgnoreMatcher())
    scratch = tmp_path / "scratch"
    common = dict(src_view=ctx.view, src_is_context=True, context=ctx, dest_view=img, scratch=scratch)
    res = add_entries(sources=["bundle.tar.zst", server + "/dl/tool.bin", "<<EOF"], dest="/opt/",
                      heredocs=[("EOF", "doc\n")], **common)
    try:
        out = {e.name: e for e in res.entries}
        assert {"opt/pkg/big.bin", "opt/tool.bin", "opt/EOF"} <= set(out)
        assert out["opt/tool.bin"].mode == 0o600
        assert Path(out["opt/tool.bin"].source).read_bytes() == BODY
        assert res.temp_dir is not None and res.temp_dir.parent == scratch
    finally:
        shutil.rmtree(res.temp_dir)
    # no "must end with /" (current BuildKit): the archive makes /opt/x a directory, the
    # download then goes inside it
    res = add_entries(sources=["bundle.tar.zst", server + "/dl/tool.bin"], dest="/opt/x", **common)
    try:
        out = {e.name: e for e in res.entries}
        assert out["opt/x"].type.name == "DIR" and {"opt/x/pkg/big.bin", "opt/x/tool.bin"} <= set(out)
    finally:
        shutil.rmtree(res.temp_dir)
    with pytest.raises(CopyError, match="checksum"):
        add_entries(sources=["bundle.tar.zst"], dest="/opt/", checksum="sha256:" + "0" * 64, **common)
    with pytest.raises(FetchError):
        add_entries(sources=[server + "/missing/x"], dest="/opt/", **common)
    assert not any(scratch.iterdir())
