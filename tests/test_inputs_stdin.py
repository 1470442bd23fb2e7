"""stdin inputs through the installed ``pybuild`` console script (issue 15): ``-f -`` reads
the Dockerfile; context ``-`` reads a tar (plain, gzip, bzip2, xz, zstd) holding the Dockerfile
and the context, or a lone Dockerfile with an empty context (Docker's rules)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest
from inpututil import run_script
from runutil import assert_clean, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def _tar(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.uid = info.gid = 4321  # a context's owners never reach the image (COPY writes 0:0)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {"plain": lambda b: b, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
               "zstd": _zstd}


def test_dockerfile_on_stdin_builds_with_an_empty_context(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    out = tmp_path / "out"
    df = b"FROM localhost/busybox:latest\nCOPY . /ctx/\nRUN ls -A /ctx > /listing && echo ran > /ran\n"
    r = run_script(["-t", "stdin:df", "--progress=plain", "--output", f"type=local,dest={out}", "-"], root, stdin=df)
    r.ok()
    assert (out / "ran").read_text() == "ran\n"
    assert (out / "listing").read_text() == "", "a Dockerfile on stdin means an empty context"
    assert "Traceback" not in r.err
    assert_clean(root)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_tar_context_on_stdin(tmp_path: Path, compression: str) -> None:
    root = new_store(tmp_path)
    out = tmp_path / "out"
    stream = COMPRESSORS[compression](_tar({
        "build/Dockerfile.alt": "FROM localhost/busybox:latest\nCOPY app /app\nRUN cat /app/msg > /seen\n",
        "app/msg": f"from a {compression} tar\n",
        ".dockerignore": "app/secret\n",
        "app/secret": "never copied\n",
    }))
    r = run_script(["-t", f"stdin:{compression}", "--progress=plain", "-f", "build/Dockerfile.alt",
                    "--output", f"type=local,dest={out}", "-"], root, stdin=stream)
    r.ok()
    assert (out / "seen").read_text() == f"from a {compression} tar\n"
    assert not (out / "app" / "secret").exists(), "the tar's .dockerignore applies"
    assert (out / "app" / "msg").stat().st_uid == 0
    assert_clean(root)


def test_dockerfile_from_stdin_with_a_context_directory(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data").write_text("context file\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /wrong\n")  # not used: -f - wins
    out = tmp_path / "out"
    df = b"FROM localhost/busybox:latest\nCOPY data /data\n"
    run_script(["-t", "stdin:f", "-f", "-", "--output", f"type=local,dest={out}", str(ctx)], root, stdin=df).ok()
    assert (out / "data").read_text() == "context file\n"
    assert not (out / "wrong").exists()
    assert_clean(root)


def test_stdin_for_both_is_a_usage_error(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    r = run_script(["-f", "-", "-"], root, stdin=b"FROM scratch\n")
    assert r.rc == 2
    assert "can't use stdin for both build context and dockerfile" in r.err
    assert "Traceback" not in r.err
    assert_clean(root)


def test_corrupt_tar_on_stdin_names_stdin(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    broken = gzip.compress(_tar({"Dockerfile": "FROM scratch\n"}))[:40]
    r = run_script(["-t", "broken", "-"], root, stdin=broken)
    assert r.rc != 0
    assert "stdin" in r.err and "Traceback" not in r.err
    assert_clean(root)


def test_errors_in_a_dockerfile_from_stdin_name_it_dockerfile(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    bad = b"FROM localhost/busybox:latest\nFORM x\n"
    for args in (["-"], ["-f", "-", str(tmp_path)]):
        r = run_script(args, root, stdin=bad)
        assert r.rc == 1 and r.err.startswith("Dockerfile:2:1: unknown instruction: FORM"), r.err
        assert str(root) not in r.err, "no temp path in the message"
    failing = b"FROM localhost/busybox:latest\nRUN exit 4\n"
    r = run_script(["--progress=plain", "-"], root, stdin=failing)
    assert r.rc == 1 and "Dockerfile:2: RUN exit 4: exit code 4" in r.err
    assert_clean(root)
