"""The floor of a layer write in Python on this machine: what any Python builder must at least do
for ``COPY . /app`` of a context, and nothing else.

    python3 bench/python_floor.py CONTEXT BLOB [--compression zstd|gzip]

Walks CONTEXT in tar order, frames each member with a plain ustar header, reads file content
straight into 1 MiB buffers, hashes the tar (sha256: the diff_id) in the walking thread while a
helper thread compresses (zstd level 3 with one native worker, or pybuild's gzip at level 1), hashes the
output (the blob digest) and writes BLOB, which is fsynced at the end. No cache key, no image,
no store, no PAX records, no ownership or xattrs: its time is a lower bound for pybuild's COPY
step, measured by
``bench/run.py copyonly`` beside the tar pipelines. Prints both digests.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import stat
import sys
import threading
from typing import Callable, Iterator

BUF = 1 << 20
BUFFERS = 6
MAGIC = b"ustar\x0000" + bytes(64)
TAIL = bytes(167)
CHK_BASE = sum(MAGIC) + 8 * 0x20


def walk(top: str, rel: bytes = b"") -> Iterator[tuple[bytes, os.stat_result, str]]:
    """(tar name, lstat, host path) under ``top`` in layer order (``d`` before ``d-x`` before
    ``d/...``), symlinks not followed."""
    with os.scandir(top) as it:
        items = [(os.fsencode(e.name), e.stat(follow_symlinks=False), e.path) for e in it]
    slots = []
    for name, st, path in items:
        slots.append((name, False, st, path))
        if stat.S_ISDIR(st.st_mode):
            slots.append((name + b"/", True, st, path))
    slots.sort(key=lambda s: s[0])
    for name, contents, st, path in slots:
        if contents:
            yield from walk(path, rel + name)
        else:
            yield rel + name, st, path


def header(name: bytes, typeflag: bytes, st: os.stat_result, size: int, link: bytes = b"") -> bytes:
    nums = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (st.st_mode & 0o7777, 0, 0, size, int(st.st_mtime))
    devs = b"%07o\0%07o\0" % (0, 0)
    chk = CHK_BASE + sum(name) + sum(nums) + typeflag[0] + sum(link) + sum(devs)
    return (name.ljust(100, b"\0") + nums + b"%06o\0 " % chk + typeflag + link.ljust(100, b"\0")
            + MAGIC + devs + TAIL)


def compressor(kind: str) -> tuple[Callable[[memoryview], bytes], Callable[[], bytes]]:
    if kind == "zstd":
        import zstandard

        z = zstandard.ZstdCompressor(level=3, threads=1, write_checksum=False,
                                     write_content_size=False).compressobj()
        return z.compress, z.flush
    # the same gzip as pybuild's (ISA-L when installed): the floor is about the Python around it
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from builder.layer.gz import GzipEncoder

    enc = GzipEncoder(1)
    return enc.compress, enc.flush


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("context")
    ap.add_argument("blob")
    ap.add_argument("--compression", choices=("zstd", "gzip"), default="zstd")
    args = ap.parse_args()
    compress, flush = compressor(args.compression)
    tar_hash, blob_hash = hashlib.sha256(), hashlib.sha256()
    free: queue.Queue[bytearray] = queue.Queue()
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(BUF))
    out = open(args.blob, "wb")

    def sink() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            with memoryview(buf) as mv:
                data = compress(mv[:n])
            free.put(buf)
            blob_hash.update(data)
            out.write(data)
        data = flush()
        blob_hash.update(data)
        out.write(data)

    helper = threading.Thread(target=sink)
    helper.start()
    buf, pos = free.get(), 0
    mv = memoryview(buf)

    def give() -> None:
        nonlocal buf, mv, pos
        mv.release()
        tar_hash.update(memoryview(buf)[:pos])
        full.put((buf, pos))
        buf, pos = free.get(), 0
        mv = memoryview(buf)

    def put(data: bytes) -> None:
        nonlocal pos
        if pos + len(data) > BUF:
            give()
        mv[pos:pos + len(data)] = data
        pos += len(data)

    for name, st, path in walk(args.context):
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            put(header(b"app/" + name + b"/", b"5", st, 0))
        elif stat.S_ISLNK(mode):
            put(header(b"app/" + name, b"2", st, 0, os.fsencode(os.readlink(path))))
        elif stat.S_ISREG(mode):
            put(header(b"app/" + name, b"0", st, st.st_size))
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            left = st.st_size
            while left:
                if pos == BUF:
                    give()
                got = os.readv(fd, [mv[pos:pos + min(left, BUF - pos)]])
                if not got:
                    raise SystemExit(f"{path} shrank while being read")
                pos += got
                left -= got
            os.close(fd)
            put(bytes(-st.st_size % 512))
    put(bytes(1024))
    mv.release()
    tar_hash.update(memoryview(buf)[:pos])
    full.put((buf, pos))
    full.put(None)
    helper.join()
    out.flush()
    os.fsync(out.fileno())
    out.close()
    print(f"diff_id sha256:{tar_hash.hexdigest()} digest sha256:{blob_hash.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
