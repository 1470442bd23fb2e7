"""Git and http(s) build inputs (issue 15) against servers the tests start on 127.0.0.1:
``git daemon`` (git://) and ``git http-backend`` behind a CGI HTTP server (smart HTTP, with
basic auth), and a static file server for tarball contexts and ADD URLs.

Covered: a git main context at a tag / branch / commit with a sub-directory (its .dockerignore
applies), ``BUILDKIT_CONTEXT_KEEP_GIT_DIR=1``, a git named context, ``ADD GITURL`` with
``--keep-git-dir`` and ``--checksum``, http(s) tarball contexts (main and named), bad refs and
unreachable repositories, and credentials found nowhere (store, outputs, printed log)."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from inpututil import file_server, git_daemon, git_http, make_repo
from ocireader import check_invariants, read_layout
from registry_fixture import free_port
from runutil import assert_clean, build, files_containing, make_context, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]

APP_DF = "FROM localhost/busybox:latest\nCOPY . /src/\nRUN ls -A /src > /listing\n"


@pytest.fixture()
def repos(tmp_path: Path) -> tuple[Path, list[str]]:
    base = tmp_path / "repos"
    base.mkdir()
    hashes = make_repo(base / "app.git", [
        {"README": "v1\n", "sub/Dockerfile": APP_DF, "sub/a.txt": "a1\n", "sub/.dockerignore": "skip.txt\n",
         "sub/skip.txt": "ignored\n"},
        {"README": "v2\n", "sub/a.txt": "a2\n", "lib/lib.txt": "library\n"},
    ], tags={0: "v1"}, branches={0: "old"})
    return base, hashes


def test_git_context_over_git_daemon_at_tag_branch_and_commit(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    base, hashes = repos
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        for ref, expect in (("v1", "a1\n"), ("old", "a1\n"), (hashes[1], "a2\n"), (hashes[1][:8], "a2\n"),
                            ("", "a2\n")):
            out = tmp_path / f"out-{ref or 'head'}"
            build(f"{url}/app.git#{ref}:sub", root, "--output", f"type=local,dest={out}").ok()  # type: ignore[arg-type]
            assert (out / "src" / "a.txt").read_text() == expect, ref
            assert sorted((out / "listing").read_text().split()) == [".dockerignore", "Dockerfile", "a.txt"], ref
    assert_clean(root)


def test_git_context_keep_git_dir_and_git_named_context(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    base, _hashes = repos
    root = new_store(tmp_path)
    with git_http(base) as (url, _seen):
        out = tmp_path / "out"
        ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nCOPY --from=lib lib.txt /lib.txt\n"
                                             "COPY . /src/\n")
        build(ctx, root, "--build-context", f"lib={url}/app.git#main:lib",
              "--output", f"type=local,dest={out}").ok()
        assert (out / "lib.txt").read_text() == "library\n"
        kept = tmp_path / "kept"
        build(f"{url}/app.git#main", root, "-f", "sub/Dockerfile",  # type: ignore[arg-type]
              "--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1", "--output", f"type=local,dest={kept}").ok()
        assert "HEAD" in os.listdir(kept / "src" / ".git")
        plain = tmp_path / "plain"
        build(f"{url}/app.git#main", root, "-f", "sub/Dockerfile",  # type: ignore[arg-type]
              "--output", f"type=local,dest={plain}").ok()
        assert not (plain / "src" / ".git").exists()
    assert_clean(root)


def test_add_git_with_keep_git_dir_and_checksum(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    base, hashes = repos
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        ctx = make_context(tmp_path / "ctx", (
            "FROM localhost/busybox:latest\n"
            f"ADD --checksum={hashes[0]} {url}/app.git#v1 /v1\n"
            f"ADD --keep-git-dir=true {url}/app.git#main /main\n"
            f"ADD --chown=7:8 {url}/app.git?branch=old&subdir=sub /old/\n"))
        oci, out = tmp_path / "oci", tmp_path / "out"
        build(ctx, root, "--output", f"type=local,dest={out}", "--output", f"type=oci,dest={oci},tar=false").ok()
        check_invariants(read_layout(oci))
        assert (out / "v1" / "README").read_text() == "v1\n"
        assert not (out / "v1" / ".git").exists(), "no .git unless --keep-git-dir"
        assert (out / "v1" / "sub" / "skip.txt").exists(), "ADD git copies the whole tree (no .dockerignore)"
        assert (out / "main" / "sub" / "a.txt").read_text() == "a2\n" and (out / "main" / ".git").is_dir()
        st = (out / "old" / "a.txt").stat()
        assert (st.st_uid, st.st_gid) == (7, 8)
        assert (out / "v1" / "README").stat().st_uid == 0

        bad = make_context(tmp_path / "bad", f"FROM localhost/busybox:latest\nADD --checksum={hashes[1]} "
                                              f"{url}/app.git#v1 /v1\n")
        r = build(bad, root)
        assert r.rc == 1 and "Dockerfile:2" in r.err and "expected checksum to match" in r.err, r.err
        assert "Traceback" not in r.err
    assert_clean(root)


def test_add_git_commit_mtimes_with_source_date_epoch(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    base, _ = repos
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        ctx = make_context(tmp_path / "ctx", f"FROM localhost/busybox:latest\nADD {url}/app.git#v1 /v1\n")
        oci = tmp_path / "oci"
        build(ctx, root, "--output", f"type=oci,dest={oci},tar=false",
              env={"SOURCE_DATE_EPOCH": "2000000000"}).ok()
        members = {m.name.rstrip("/"): m for m in read_layout(oci).layers[-1]}
        assert members["v1/README"].mtime == 1612325106  # the commit time (before SOURCE_DATE_EPOCH)


def test_bad_git_inputs_name_the_url(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    base, _ = repos
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        r = build(f"{url}/app.git#no-such-ref", root)  # type: ignore[arg-type]
        assert r.rc != 0 and f"{url}/app.git#no-such-ref" in r.err and "no-such-ref" in r.err, r.err
        r = build(f"{url}/app.git#main:nowhere", root)  # type: ignore[arg-type]
        assert r.rc != 0 and "sub-directory 'nowhere' not found" in r.err, r.err
        ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nCOPY . /\n")
        r = build(ctx, root, "--build-context", f"x={url}/missing.git#main")
        assert r.rc != 0 and "--build-context x=" in r.err and "missing.git" in r.err, r.err
        r = build(f"{url}/app.git#main", root, "-f", "nope/Dockerfile")  # type: ignore[arg-type]
        assert r.rc == 2 and "Dockerfile 'nope/Dockerfile' not found in the build context" in r.err, r.err
    closed = f"git://127.0.0.1:{free_port()}/app.git"
    r = build(closed, root)  # type: ignore[arg-type]
    assert r.rc == 1 and closed in r.err and "Traceback" not in r.err, r.err
    closed_http = f"http://127.0.0.1:{free_port()}/ctx.tar.gz"
    r = build(closed_http, root)  # type: ignore[arg-type]
    assert r.rc == 1 and r.err.startswith(f"error: build context: failed to fetch {closed_http}"), r.err
    assert_clean(root)


def _tarball(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def test_http_tarball_contexts_and_credentials_found_nowhere(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    base, _ = repos
    root = new_store(tmp_path)
    www = tmp_path / "www"
    www.mkdir()
    (www / "ctx.tar.gz").write_bytes(_tarball({"Dockerfile": "FROM localhost/busybox:latest\nCOPY . /ctx/\n",
                                               "hello.txt": "hello from a tarball\n"}))
    (www / "extra.tar.gz").write_bytes(_tarball({"e.txt": "extra\n"}))
    (www / "Dockerfile.only").write_text("FROM localhost/busybox:latest\nRUN echo df-only > /m\n")
    (www / "file.bin").write_bytes(b"payload\n")
    os.utime(www / "file.bin", (1500000000, 1500000000))
    user, password = "pbuser", "s3cr3t-pass-wOrd"
    log = []
    out = tmp_path / "out"
    with file_server(www, (user, password)) as plain_url, git_http(base, (user, password)) as (git_url, seen):
        def cred(u: str) -> str:
            return u.replace("http://", f"http://{user}:{password}@")
        r = build(cred(f"{plain_url}/ctx.tar.gz"), root, "--output", f"type=local,dest={out / 'tar'}")  # type: ignore[arg-type]
        log.append(r.ok())
        assert (out / "tar" / "ctx" / "hello.txt").read_text() == "hello from a tarball\n"
        log.append(build(cred(f"{plain_url}/Dockerfile.only"), root,  # type: ignore[arg-type]
                         "--output", f"type=local,dest={out / 'df'}").ok())
        assert (out / "df" / "m").read_text() == "df-only\n"
        ctx = make_context(tmp_path / "ctx", (
            "FROM localhost/busybox:latest\n"
            "COPY --from=extra e.txt /e.txt\n"
            f"ADD {cred(plain_url + '/file.bin')} /dl/\n"
            f"ADD {cred(git_url + '/app.git#v1')} /gitsrc\n"))
        log.append(build(ctx, root, "--build-context", f"extra={cred(plain_url + '/extra.tar.gz')}",
                         "--build-context", f"gitctx={cred(git_url + '/app.git#main')}",
                         "--output", f"type=local,dest={out / 'ctx'}",
                         "--output", f"type=oci,dest={out / 'oci.tar'}").ok())
        assert (out / "ctx" / "e.txt").read_text() == "extra\n"
        dl = (out / "ctx" / "dl" / "file.bin").stat()
        assert stat.S_IMODE(dl.st_mode) == 0o600 and int(dl.st_mtime) == 1500000000
        assert (out / "ctx" / "gitsrc" / "README").read_text() == "v1\n"
        assert any(a.startswith("Basic ") for a in seen), "git over http sent the credentials"
        # a wrong password: the error names the URL, never the password
        bad = build(f"{plain_url.replace('http://', f'http://{user}:wrong-{password}@')}/ctx.tar.gz", root)  # type: ignore[arg-type]
        assert bad.rc != 0 and "401" in bad.err
        log.append(bad)
    for res in log:
        text = res.out + res.err
        assert password not in text and "Traceback" not in text
    for where in (root, out):
        assert files_containing(where, password.encode()) == [], where
    assert_clean(root)


def test_git_over_ssh_with_the_forwarded_agent(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    from inpututil import ssh_agent, sshd

    base, _ = repos
    root = new_store(tmp_path)
    with ssh_agent(tmp_path / "agent") as (sock, key, _fp), sshd(tmp_path / "sshd", key) as port:
        url = f"ssh://root@127.0.0.1:{port}{base}/app.git"
        out = tmp_path / "out"
        ctx = make_context(tmp_path / "ctx", f"FROM localhost/busybox:latest\nADD {url}#old /old\n")
        build(ctx, root, "--ssh", "default", "--build-context", f"lib={url}#main:lib",
              "--output", f"type=local,dest={out / 'add'}", env={"SSH_AUTH_SOCK": sock}).ok()
        assert (out / "add" / "old" / "README").read_text() == "v1\n"
        build(f"{url}#v1:sub", root, "--ssh", "default",  # type: ignore[arg-type]
              "--output", f"type=local,dest={out / 'ctx'}", env={"SSH_AUTH_SOCK": sock}).ok()
        assert (out / "ctx" / "src" / "a.txt").read_text() == "a1\n"
        denied = build(f"{url}#v1:sub", root, env={"SSH_AUTH_SOCK": ""})  # type: ignore[arg-type]
        assert denied.rc != 0 and url in denied.err and "Traceback" not in denied.err, denied.err
    assert_clean(root)


def test_git_scp_form_url_over_ssh(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    """``root@HOST:PATH.git#REF`` (scp syntax: port 22), served by sshd on a loopback address of
    its own (127.0.0.0/8), so nothing else on this machine's port 22 is touched."""
    import random
    import socket

    from inpututil import ssh_agent, sshd

    base, _ = repos
    root = new_store(tmp_path)
    host = None
    for _ in range(20):  # a loopback address whose port 22 we can have
        candidate = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
        with socket.socket() as s:
            try:
                s.bind((candidate, 22))
            except OSError:
                continue
        host = candidate
        break
    # a machine whose own sshd holds *:22 leaves no such address: the same fetch then goes
    # through the ssh:// form on another port (the scp form's parsing is unit-tested)
    port = 22 if host is not None else free_port()
    with ssh_agent(tmp_path / "agent") as (sock, key, _fp), \
            sshd(tmp_path / "sshd", key, host=host or "127.0.0.1", port=port):
        out = tmp_path / "out"
        url = f"root@{host}:{base}/app.git" if host else f"ssh://root@127.0.0.1:{port}{base}/app.git"
        build(f"{url}#v1:sub", root, "--ssh", "default",  # type: ignore[arg-type]
              "--output", f"type=local,dest={out}", env={"SSH_AUTH_SOCK": sock}).ok()
        assert (out / "src" / "a.txt").read_text() == "a1\n"
    assert_clean(root)


def test_add_git_fetches_submodules(tmp_path: Path) -> None:
    base = tmp_path / "repos"
    base.mkdir()
    lib = make_repo(base / "lib.git", [{"libfile": "from the submodule\n"}])
    make_repo(base / "super.git", [{"top": "superproject\n"}], submodules={"vendor/lib": ("../lib.git", lib[0])})
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        ctx = make_context(tmp_path / "ctx", f"FROM localhost/busybox:latest\nADD {url}/super.git#main /src\n")
        out = tmp_path / "out"
        build(ctx, root, "--output", f"type=local,dest={out}").ok()
    assert (out / "src" / "top").read_text() == "superproject\n"
    assert (out / "src" / "vendor" / "lib" / "libfile").read_text() == "from the submodule\n"
    assert not (out / "src" / "vendor" / "lib" / ".git").exists()


def test_add_git_in_a_two_platform_build(tmp_path: Path, repos: tuple[Path, list[str]]) -> None:
    """Both platforms' stages ask for the same git source (at once when they run in parallel):
    it is fetched once and both images hold the tree."""
    base, _ = repos
    root = new_store(tmp_path)
    with git_daemon(base) as url:
        ctx = make_context(tmp_path / "ctx", f"FROM scratch\nADD {url}/app.git#v1 /src\n")
        oci = tmp_path / "oci"
        build(ctx, root, "--platform", "linux/amd64,linux/arm64", "--output", f"type=oci,dest={oci},tar=false").ok()
    for plat in ("linux/amd64", "linux/arm64"):
        img = read_layout(oci, platform=plat)
        check_invariants(img)
        assert "src/README" in {m.name for layer in img.layers for m in layer}
    assert_clean(root)
