"""Build inputs checked against BuildKit (dockerd 20.10's, tests/peers.py): the same git
context (git daemon, a tag, a .dockerignore with an exception), the same http tarball
context, a Dockerfile on stdin and a compressed tar on stdin give both builders the same
context, proven by the listing a RUN makes of it (paths and file contents).

One written deviation: BuildKit sends a remote (git, http tarball) context as fetched, without
applying its .dockerignore (maintainers: ".dockerignore only applies to transferring local
files", docker/cli#2827, docker/buildx#2353, still open), while Docker's documentation and
issue 15 ask for the context's .dockerignore to apply; pybuild applies it. The peer's listing
is compared with the ignored entries taken out, and they are checked to be there."""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import PeerBase
from inpututil import file_server, git_daemon, make_repo, run_script
from peers import Dockerd
from runutil import build, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.dockerd]

LIST_DF = ("FROM localhost/busybox:latest\nCOPY . /src/\n"
           "RUN cd /src && find . | sort > /listing && find . -type f | sort | xargs md5sum > /sums\n")
FILES = {
    "sub/Dockerfile": LIST_DF, "sub/keep.txt": "keep\n", "sub/logs/a.log": "log\n",
    "sub/logs/important.log": "important\n", "sub/deep/x/y.txt": "y\n", "sub/.dockerignore": "logs\n!logs/important.log\n*.tmp\n",
    "sub/scratch.tmp": "tmp\n", "top.txt": "outside the sub-directory\n",
}


IGNORED = ("./logs/a.log", "./scratch.tmp")


def _without_ignored(listing: str) -> str:
    """The peer's listing less the entries the context's .dockerignore names (see the module
    docstring), which must be there."""
    for path in IGNORED:
        assert path in listing, f"BuildKit applied .dockerignore to a remote context ({path})"
    return "".join(line + "\n" for line in listing.splitlines() if not line.endswith(IGNORED))


def _peer_listing(dockerd: Dockerd, context: str, *extra: str, stdin: bytes | None = None) -> str:
    tag = f"inputs-peer:{uuid.uuid4().hex[:12]}"
    if stdin is None:
        dockerd.build(context, tag=tag, extra=extra).ok()  # type: ignore[arg-type]
    else:
        dockerd.docker("build", "--network", "none", "-t", tag, *extra, context, input=stdin)
    return dockerd.docker("run", "--rm", "--network", "none", tag, "cat", "/listing", "/sums").stdout


def _our_listing(root: Path, out: Path, context: str, *extra: str, stdin: bytes | None = None) -> str:
    if stdin is None:
        build(context, root, *extra, "--output", f"type=local,dest={out}").ok()  # type: ignore[arg-type]
    else:
        run_script(["--output", f"type=local,dest={out}", *extra, context], root, stdin=stdin).ok()
    return (out / "listing").read_text() + (out / "sums").read_text()


def _tar(files: dict[str, str], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            if not name.startswith(prefix):
                continue
            data = text.encode()
            info = tarfile.TarInfo(name[len(prefix):])
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def test_git_context_same_as_buildkit(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    base = tmp_path / "repos"
    base.mkdir()
    # dockerd 20.10's BuildKit has no #REF:SUBDIR ("subdir not supported yet"): the tree is at the top
    make_repo(base / "ctx.git", [{k[4:]: v for k, v in FILES.items() if k.startswith("sub/")}], tags={0: "v1"})
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        context = f"{url}/ctx.git#v1"
        ours = _our_listing(root, tmp_path / "out", context)
        assert ours == _without_ignored(_peer_listing(dockerd, context))
    assert "./logs/important.log" in ours and "./logs/a.log" not in ours and ".git" not in ours


def test_http_tarball_context_same_as_buildkit(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "ctx.tar.gz").write_bytes(_tar(FILES, "sub/"))
    root = new_store(tmp_path)
    with file_server(www) as url:
        ours = _our_listing(root, tmp_path / "out", f"{url}/ctx.tar.gz")
        assert ours == _without_ignored(_peer_listing(dockerd, f"{url}/ctx.tar.gz"))


def test_stdin_inputs_same_as_buildkit(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    root = new_store(tmp_path)
    alone = LIST_DF.encode()
    assert _our_listing(root, tmp_path / "o1", "-", stdin=alone) == _peer_listing(dockerd, "-", stdin=alone)
    tar = _tar({"build/Dockerfile.alt" if k == "sub/Dockerfile" else k: v for k, v in FILES.items()}, "")
    ours = _our_listing(root, tmp_path / "o2", "-", "-f", "build/Dockerfile.alt", stdin=tar)
    assert ours == _peer_listing(dockerd, "-", "-f", "build/Dockerfile.alt", stdin=tar)


def test_add_url_mode_and_mtime_same_as_buildkit(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    import os

    www = tmp_path / "www"
    www.mkdir()
    (www / "file.bin").write_bytes(b"payload\n")
    os.utime(www / "file.bin", (1500000000, 1500000000))
    root = new_store(tmp_path)
    with file_server(www) as url:
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM localhost/busybox:latest\nADD {url}/file.bin /dl/\nADD {url}/file.bin /named\n"
                                        "RUN stat -c '%n %a %u:%g %Y %s' /dl/file.bin /named > /listing && : > /sums\n")
        ours = _our_listing(root, tmp_path / "out", str(ctx))
        assert ours == _peer_listing(dockerd, str(ctx))
    assert "/dl/file.bin 600 0:0 1500000000 8" in ours


def test_ssh_mount_same_as_buildkit(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    from inpututil import ssh_add_context, ssh_agent

    root = new_store(tmp_path)
    ctx = ssh_add_context(tmp_path / "ctx", (
        "RUN --mount=type=ssh ssh-add -l > /listing && echo \"$SSH_AUTH_SOCK\" >> /listing && "
        "stat -c '%a %u %g' $SSH_AUTH_SOCK >> /listing && : > /sums\n"
        "RUN --mount=type=ssh,id=deploy,target=/tmp/a.sock,mode=0640,uid=12,gid=34 "
        "stat -c '%a %u %g' /tmp/a.sock >> /listing && SSH_AUTH_SOCK=/tmp/a.sock ssh-add -l >> /listing\n"))
    with ssh_agent(tmp_path / "agent") as (sock, key, fingerprint):
        flags = ("--ssh", f"default={sock}", "--ssh", f"deploy={key}")
        ours = _our_listing(root, tmp_path / "out", str(ctx), *flags)
        assert ours == _peer_listing(dockerd, str(ctx), *flags)
    assert ours.count(fingerprint) == 2 and "/run/buildkit/ssh_agent.0\n600 0 0\n640 12 34\n" in ours


def test_add_host_same_as_buildkit(dockerd: Dockerd, dockerd_base: PeerBase, tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost/busybox:latest\n"
                                    "RUN cat /etc/hosts > /listing && ls /etc > /sums\n")
    flags = ("--add-host", "db.internal:10.11.12.13", "--add-host", "v6:fd00::1")
    ours = _our_listing(root, tmp_path / "out", str(ctx), *flags)
    assert ours == _peer_listing(dockerd, str(ctx), *flags)
    assert "10.11.12.13\tdb.internal\n" in ours
