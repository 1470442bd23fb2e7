"""write_layer: determinism, digests, readability by tarfile and GNU tar, PAX, links, devices."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.layer.compress import (compression_for_media_type, detect_compression, media_type_for,
                                    open_decompressed)
from builder.layer.entries import Entry, EntryType
from builder.layer.tar import LayerError, write_layer
from builder.layer.walk import dir_entry, entries_from_dir, file_entry, symlink_entry

CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


def sample_entries(tmp_path: Path) -> list[Entry]:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20) + b"tail")
    long_dir = "d/" + "x" * 120
    return [
        dir_entry("d", mtime=1000),
        file_entry("d/hello.txt", b"hello\n", mode=0o600, uid=1000, gid=1000, mtime=2000),
        Entry(name="d/big.bin", type=EntryType.FILE, size=(3 << 20) + 4, source=str(big), mtime=3000),
        dir_entry(long_dir, mtime=5),
        file_entry(long_dir + "/" + "y" * 150, b"long\n"),
        file_entry("d/caf\u00e9-\u65e5\u672c.txt", b"utf8\n"),
        symlink_entry("d/link", "hello.txt"),
        symlink_entry("d/longlink", "/" + "t" * 200),
        Entry(name="d/hard", type=EntryType.HARDLINK, linkname="d/hello.txt"),
        Entry(name="d/ping", type=EntryType.FILE, size=4, data=b"ping", mode=0o4755,
              xattrs=(("security.capability", CAP), ("user.comment", b"hi"))),
        Entry(name="dev/null", type=EntryType.CHAR, mode=0o666, devmajor=1, devminor=3),
        Entry(name="dev/sda", type=EntryType.BLOCK, mode=0o660, devmajor=8, devminor=0),
        Entry(name="dev/fifo", type=EntryType.FIFO, mode=0o644),
        dir_entry("dev"),
        file_entry("big-ids", b"", uid=3_000_000, gid=4_000_000),
    ]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_digests_are_correct(tmp_path: Path, compression: str) -> None:
    out = io.BytesIO()
    info = write_layer(sample_entries(tmp_path), out, compression=compression)
    blob = out.getvalue()
    assert info.size == len(blob)
    assert info.digest == Digest("sha256", hashlib.sha256(blob).hexdigest())
    if compression == "gzip":
        raw = gzip.decompress(blob)
    elif compression == "zstd":
        import zstandard
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
    else:
        raw = blob
        assert info.digest == info.diff_id
    assert info.diff_id == Digest("sha256", hashlib.sha256(raw).hexdigest())
    assert info.media_type == media_type_for(compression)
    assert compression_for_media_type(info.media_type) == compression
    assert detect_compression(blob[:8]) == (None if compression == "uncompressed" else compression)
    assert len(raw) % 512 == 0 and raw[-1024:] == bytes(1024)


def test_discarded_layer_has_the_digests_of_a_written_one(tmp_path: Path) -> None:
    """A layer written only for its diff_id (into a Discard, framed without the helper
    thread) has the diff_id and size of the same layer written out, large or small."""
    from builder.layer.tar import Discard

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))  # several of the writer's 1 MiB buffers
    for ents in (sample_entries(tmp_path), sample_entries(tmp_path) + [Entry(
            name="big.bin", type=EntryType.FILE, size=3 << 20, source=str(big))]):
        out = io.BytesIO()
        written = write_layer(ents, out, compression="uncompressed")
        dropped = write_layer(ents, Discard(), compression="uncompressed")
        assert dropped == written and dropped.size == len(out.getvalue())


def test_deterministic_and_order_independent(tmp_path: Path) -> None:
    ents = sample_entries(tmp_path)
    a, b, c = io.BytesIO(), io.BytesIO(), io.BytesIO()
    ia = write_layer(ents, a)
    ib = write_layer(ents, b)
    ic = write_layer(list(reversed(ents)), c)
    assert a.getvalue() == b.getvalue() == c.getvalue()
    assert ia == ib == ic
    # gzip header is fixed: no mtime, no name, OS 255
    assert a.getvalue()[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


def test_zstd_deterministic(tmp_path: Path) -> None:
    ents = sample_entries(tmp_path)
    a, b = io.BytesIO(), io.BytesIO()
    write_layer(ents, a, compression="zstd")
    write_layer(list(reversed(ents)), b, compression="zstd")
    assert a.getvalue() == b.getvalue()


def test_python_tarfile_reads_everything(tmp_path: Path) -> None:
    out = io.BytesIO()
    write_layer(sample_entries(tmp_path), out)
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tf:
        members = {m.name: m for m in tf.getmembers()}
        names = [m.name for m in tf.getmembers()]
        assert names == sorted(names, key=lambda n: n.encode())
        assert names.index("d") < names.index("d/hello.txt")
        assert tf.extractfile("d/hello.txt").read() == b"hello\n"  # type: ignore[union-attr]
        big = tf.extractfile("d/big.bin").read()  # type: ignore[union-attr]
        assert len(big) == (3 << 20) + 4 and big.endswith(b"tail")
        long_dir = "d/" + "x" * 120
        assert members[long_dir].isdir()
        assert tf.extractfile(long_dir + "/" + "y" * 150).read() == b"long\n"  # type: ignore[union-attr]
        assert tf.extractfile("d/caf\u00e9-\u65e5\u672c.txt").read() == b"utf8\n"  # type: ignore[union-attr]
        assert members["d/link"].issym() and members["d/link"].linkname == "hello.txt"
        assert members["d/longlink"].linkname == "/" + "t" * 200
        # the hardlink group is re-rooted on the member sorting first ("d/hard" < "d/hello.txt")
        assert members["d/hard"].isreg() and members["d/hard"].size == 6
        assert members["d/hello.txt"].islnk() and members["d/hello.txt"].linkname == "d/hard"
        ping = members["d/ping"]
        assert ping.mode == 0o4755
        assert ping.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
        assert ping.pax_headers["SCHILY.xattr.user.comment"] == "hi"
        assert members["dev/null"].ischr() and (members["dev/null"].devmajor, members["dev/null"].devminor) == (1, 3)
        assert members["dev/sda"].isblk()
        assert members["dev/fifo"].isfifo()
        assert members["d/hello.txt"].uid == 1000 or members["d/hard"].uid == 1000
        assert members["big-ids"].uid == 3_000_000 and members["big-ids"].gid == 4_000_000
        assert all(m.uname == "" and m.gname == "" for m in tf.getmembers())


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar missing")
def test_gnu_tar_lists_and_extracts(tmp_path: Path) -> None:
    blob = tmp_path / "layer.tar.gz"
    with blob.open("wb") as f:
        write_layer([e for e in sample_entries(tmp_path) if not e.name.startswith("dev/")], f)
    listing = subprocess.run(["tar", "-tvzf", str(blob)], check=True, capture_output=True, text=True)
    assert "d/hello.txt link to d/hard" in listing.stdout
    assert "y" * 150 in listing.stdout
    assert listing.stderr == ""
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(blob), "-C", str(dest)], check=True)
    assert (dest / "d" / "hello.txt").read_bytes() == b"hello\n"
    assert os.stat(dest / "d" / "hello.txt").st_ino == os.stat(dest / "d" / "hard").st_ino
    assert (dest / "d" / ("x" * 120) / ("y" * 150)).read_bytes() == b"long\n"


def test_mtime_clamp(tmp_path: Path) -> None:
    ents = [file_entry("old", b"a", mtime=100), file_entry("new", b"b", mtime=5000)]
    out = io.BytesIO()
    write_layer(ents, out, compression="uncompressed", mtime_clamp=1000)
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        assert tf.getmember("old").mtime == 100
        assert tf.getmember("new").mtime == 1000


def test_walked_directory_roundtrip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"x" * 1000)
    os.link(src / "a" / "b" / "f", src / "a" / "g")
    os.symlink("b/f", src / "a" / "s")
    os.utime(src / "a" / "b" / "f", (1_600_000_000, 1_600_000_000))
    out = io.BytesIO()
    info = write_layer(entries_from_dir(src, "app"), out)
    out.seek(0)
    plain = open_decompressed(out, "auto")
    raw = plain.read()
    assert hashlib.sha256(raw).hexdigest() == info.diff_id.hex
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = tf.getnames()
        assert names == ["app", "app/a", "app/a/b", "app/a/b/f", "app/a/g", "app/a/s"]
        assert tf.getmember("app/a/g").islnk() and tf.getmember("app/a/g").linkname == "app/a/b/f"
        assert tf.getmember("app/a/b/f").mtime == 1_600_000_000


def test_bad_entries_raise_layer_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="not in the layer"):
        write_layer([Entry(name="l", type=EntryType.HARDLINK, linkname="missing")], io.BytesIO())
    with pytest.raises(LayerError, match="cannot read"):
        write_layer([Entry(name="f", type=EntryType.FILE, size=3, source=str(tmp_path / "nope"))], io.BytesIO())
    short = tmp_path / "short"
    short.write_bytes(b"ab")
    with pytest.raises(LayerError, match="shrank"):
        write_layer([Entry(name="f", type=EntryType.FILE, size=3, source=str(short))], io.BytesIO())


def test_dotdot_names_are_refused() -> None:
    with pytest.raises(LayerError, match="is not allowed in a layer path"):
        write_layer([file_entry("a/../../etc/passwd", b"x")], io.BytesIO())
    out = io.BytesIO()
    write_layer([file_entry("./a..b/c", b"x"), Entry(name="/l", type=EntryType.HARDLINK, linkname="./a..b/c")],
                out, compression="uncompressed")
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        assert tf.getnames() == ["a..b/c", "l"] and tf.getmember("l").linkname == "a..b/c"


def test_output_errors_propagate(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            raise OSError(28, "No space left on device")

    big = tmp_path / "big"
    big.write_bytes(os.urandom(8 << 20))
    with pytest.raises(OSError, match="No space"):
        write_layer([Entry(name="big", type=EntryType.FILE, size=8 << 20, source=str(big))], Broken())


def test_large_layer_streams_in_bounded_memory(tmp_path: Path) -> None:
    # 64 MiB of content written through a counting sink: never held whole in memory
    src = tmp_path / "huge"
    with src.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))

    class Counter(io.RawIOBase):
        n = 0

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            self.n += len(b)
            return len(b)

    sink = Counter()
    info = write_layer([Entry(name="huge", type=EntryType.FILE, size=64 << 20, source=str(src))],
                       sink, compression="uncompressed")
    assert sink.n == info.size == 512 + (64 << 20) + 1024
    buf = io.BytesIO()
    write_layer([Entry(name="huge", type=EntryType.FILE, size=64 << 20, source=str(src))], buf,
                compression="uncompressed")
    assert hashlib.sha256(buf.getvalue()).hexdigest() == info.diff_id.hex


@pytest.mark.parametrize("compression", ["gzip", "zstd", "bzip2", "xz", "uncompressed"])
def test_open_decompressed_streams_every_format(compression: str) -> None:
    import bz2
    import lzma

    import zstandard

    payload = os.urandom(100_000) * 3
    blob = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
            "zstd": zstandard.ZstdCompressor().compress, "uncompressed": bytes}[compression](payload)
    assert detect_compression(blob[:8]) == (None if compression == "uncompressed" else compression)
    for how in (compression, "auto"):
        with open_decompressed(io.BytesIO(blob), how) as f:
            out = b""
            while chunk := f.read(65536):
                out += chunk
        assert out == payload


def test_corrupt_compressed_stream_raises_compression_error() -> None:
    from builder.layer.compress import CompressionError

    blob = gzip.compress(os.urandom(50_000))
    bad = blob[:20] + bytes(100) + blob[120:]
    with pytest.raises(CompressionError, match="corrupt gzip"):
        open_decompressed(io.BytesIO(bad), "gzip").read()
    with pytest.raises(CompressionError, match="unknown compression"):
        open_decompressed(io.BytesIO(blob), "lz4")
    with pytest.raises(CompressionError, match="unsupported layer media type"):
        compression_for_media_type("application/json")


def test_zstd_bytes_do_not_depend_on_feeding_or_worker_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builder.layer.tar as tarmod

    src = tmp_path / "blob"
    src.write_bytes((b"compressible text " * 200_000) + os.urandom(1 << 20))
    ents = [Entry(name="f", type=EntryType.FILE, size=src.stat().st_size, source=str(src))]
    outs = []
    for buf_size, threads in ((1 << 20, -1), (64 << 10, 1), (4 << 20, 2)):
        monkeypatch.setattr(tarmod, "_BUF_SIZE", buf_size)
        monkeypatch.setattr(tarmod, "_ZSTD_THREADS", threads)
        out = io.BytesIO()
        write_layer(ents, out, compression="zstd")
        outs.append(out.getvalue())
    assert outs[0] == outs[1] == outs[2]
