"""gzip through one module (builder.layer.gz): ISA-L when installed, zlib otherwise; the bytes
depend only on the input, the level and the backend."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from builder.layer import gz
from builder.layer.entries import Entry, EntryType
from builder.layer.tar import write_layer
from builder.transfer import recompress

BACKENDS = ("isal", "zlib")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    saved = gz._backend
    gz._backend = request.param
    try:
        yield request.param
    finally:
        gz._backend = saved


def sample(n: int = 3 * gz.BLOCK + 12345) -> bytes:
    rng = random.Random(7)
    text = b"".join(b"%d layer digest snapshot\n" % rng.randrange(10**6) for _ in range(n // 40))
    return (text + rng.randbytes(n))[:n]


def test_isal_is_the_backend_when_installed() -> None:
    # isal is a runtime dependency (pyproject.toml): in this environment it must be chosen
    import isal  # noqa: F401

    assert gz.backend() == "isal"


def test_environment_forces_zlib() -> None:
    code = "from builder.layer import gz; print(gz.backend())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYBUILD_GZIP": "zlib"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "zlib"


def test_output_does_not_depend_on_how_input_is_split(backend: str) -> None:
    data = sample()
    whole = gz.GzipEncoder()
    ref = whole.compress(data) + whole.flush()
    rng = random.Random(3)
    for _ in range(3):
        enc = gz.GzipEncoder()
        parts, pos = [], 0
        while pos < len(data):
            n = rng.choice((1, 511, 4096, gz.BLOCK - 1, gz.BLOCK, gz.BLOCK + 7))
            parts.append(enc.compress(data[pos:pos + n]))
            pos += n
        assert b"".join(parts) + enc.flush() == ref
    assert gzip.decompress(ref) == data
    assert gz.open_reader(io.BytesIO(ref)).read() == data
    # fixed header: no name, no mtime, XFL 4 (fast), OS 255
    assert ref[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


def test_empty_input(backend: str) -> None:
    enc = gz.GzipEncoder()
    out = enc.compress(b"") + enc.flush()
    assert gzip.decompress(out) == b""
    assert out == gz.header(None) + b"\x03\x00" + bytes(8)


def test_backends_differ_but_each_reads_the_other() -> None:
    data = sample(gz.BLOCK + 100)
    saved = gz._backend
    outs = {}
    try:
        for name in BACKENDS:
            gz._backend = name
            enc = gz.GzipEncoder()
            outs[name] = enc.compress(data) + enc.flush()
        for name in BACKENDS:
            gz._backend = name
            for blob in outs.values():
                assert gz.open_reader(io.BytesIO(blob)).read() == data
    finally:
        gz._backend = saved
    assert outs["isal"] != outs["zlib"]


def test_levels_are_mapped_onto_isal() -> None:
    saved = gz._backend
    try:
        gz._backend = "isal"
        assert [gz.backend_level(x) for x in (None, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] == \
            [1, 1, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        gz._backend = "zlib"
        assert [gz.backend_level(x) for x in (None, 0, 6, 9)] == [1, 0, 6, 9]
        for bad in (-2, 10, 22):
            with pytest.raises(gz.GzipLevelError, match="gzip levels are 0-9"):
                gz.backend_level(bad)
    finally:
        gz._backend = saved


def test_level_changes_bytes_and_header(backend: str) -> None:
    data = sample(gz.BLOCK // 2)
    outs = {}
    for level in (1, 9):
        enc = gz.GzipEncoder(level)
        outs[level] = enc.compress(data) + enc.flush()
        assert gzip.decompress(outs[level]) == data
    assert outs[9][8] == 2 and outs[1][8] == 4
    assert outs[9] != outs[1]


def _entries(tmp_path: Path) -> list[Entry]:
    big = tmp_path / "big.bin"
    big.write_bytes(sample(2 * gz.BLOCK + 999))
    return [Entry(name="d", type=EntryType.DIR, mode=0o755, mtime=1),
            Entry(name="d/big.bin", type=EntryType.FILE, mode=0o644, mtime=1, size=big.stat().st_size,
                  source=str(big)),
            Entry(name="d/small", type=EntryType.FILE, mode=0o600, mtime=1, data=b"small\n")]


def test_recompressed_layer_equals_the_written_one(tmp_path: Path, backend: str) -> None:
    """A layer written by the layer writer and the same tar re-compressed (push/export with
    another compression, a blob made from an unpacked layer) get the same bytes."""
    ents = _entries(tmp_path)
    written, plain = io.BytesIO(), io.BytesIO()
    info = write_layer(ents, written)
    write_layer(ents, plain, compression="uncompressed")
    again = io.BytesIO()
    diff_id, size = recompress(io.BytesIO(plain.getvalue()), "uncompressed", "gzip", again)
    assert again.getvalue() == written.getvalue()
    assert str(diff_id) == str(info.diff_id) and size == len(plain.getvalue())
    assert hashlib.sha256(written.getvalue()).hexdigest() == info.digest.hex
    # and back: gzip -> zstd -> gzip gives the first blob again
    z = io.BytesIO()
    recompress(io.BytesIO(written.getvalue()), "gzip", "zstd", z)
    back = io.BytesIO()
    recompress(io.BytesIO(z.getvalue()), "zstd", "gzip", back)
    assert back.getvalue() == written.getvalue()


def _layer_blob(root: Path, tag: str) -> bytes:
    import json

    from ocireader import read_layout

    img = read_layout(root, tag)
    digest = json.loads(img.manifest_raw)["layers"][-1]["digest"].split(":")[1]
    return (root / "blobs" / "sha256" / digest).read_bytes()


def test_build_honours_compression_level(tmp_path: Path) -> None:
    """``--output type=image,compression-level=N`` makes the build's new layers at level N
    (buildx: the level applies to the blobs an export creates); a level gzip does not have is
    a usage error before anything is built."""
    from buildutil import run_cli

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data.txt").write_bytes(sample(gz.BLOCK // 4))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY data.txt /data.txt\n")
    root = tmp_path / "store"
    run_cli(["build", "-q", "-t", "t/lvl:default", str(ctx)], root).ok()
    run_cli(["build", "-q", "--no-cache", "-t", "t/lvl:nine", "-o", "type=image,compression-level=9", str(ctx)],
            root).ok()
    default, nine = _layer_blob(root, "docker.io/t/lvl:default"), _layer_blob(root, "docker.io/t/lvl:nine")
    assert default[8] == 4 and nine[8] == 2   # XFL: fastest / best
    assert default != nine and gzip.decompress(default) == gzip.decompress(nine)
    bad = run_cli(["build", "-q", "--no-cache", "-o", "type=image,compression-level=12", str(ctx)], root)
    assert bad.rc == 2 and "compression-level=12: gzip levels are 0-9" in bad.err
    assert "Traceback" not in bad.err
