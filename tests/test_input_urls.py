"""Parsing of build-input values (issue 15): git URLs with BuildKit's rules, credential
redaction, and the RUN flag parsers (pure functions, no host needs)."""

from __future__ import annotations

import pytest

from builder.errors import UsageError
from builder.inputs.flags import (
    parse_add_host,
    parse_annotation,
    parse_shm_size,
    parse_ulimit,
)
from builder.inputs.ssh import parse_ssh
from builder.inputs.urls import GitSpec, is_git_url, parse_git_url, redact, redact_text


@pytest.mark.parametrize("value, expected", [
    ("https://example.com/org/repo.git", True),
    ("https://example.com/org/repo.git#main:sub", True),
    ("http://example.com/org/repo", False),                # no .git: a tarball or Dockerfile URL
    ("https://example.com/ctx.tar.gz", False),
    ("git://127.0.0.1:9418/repo.git", True),
    ("git@github.com:org/repo.git#v1", True),
    ("ssh://git@example.com:2222/org/repo.git", True),
    ("github.com/org/repo", True),
    ("./relative/dir", False),
    ("docker-image://alpine", False),
])
def test_is_git_url(value: str, expected: bool) -> None:
    assert is_git_url(value) is expected


def test_parse_git_url_fragments_queries_and_credentials() -> None:
    spec = parse_git_url("https://user:pw@example.com/org/repo.git#v1.2:docker/app")
    assert spec == GitSpec(remote="https://example.com/org/repo.git", ref="v1.2", subdir="docker/app",
                           username="user", password="pw")
    assert spec.shown == "https://example.com/org/repo.git#v1.2:docker/app"
    q = parse_git_url("https://example.com/r.git?branch=dev&subdir=x&checksum=ABCDEF0&keep-git-dir=1&mtime=commit")
    assert (q.ref, q.subdir, q.checksum, q.keep_git_dir, q.mtime) == ("refs/heads/dev", "x", "abcdef0", True, "commit")
    assert parse_git_url("git@host:org/r.git#main").remote == "git@host:org/r.git"
    s = parse_git_url("ssh://git@host:2222/org/r.git")
    assert s.remote == "ssh://git@host:2222/org/r.git" and s.password is None and s.is_ssh
    assert parse_git_url("github.com/org/repo#abc").remote == "https://github.com/org/repo"


@pytest.mark.parametrize("value, message", [
    ("https://h/r.git#main:../up", "leaves the repository"),
    ("https://h/r.git#-x", "invalid git ref"),
    ("https://h/r.git?tag=a&ref=b", "ref given twice"),
    ("https://h/r.git?colour=blue", "unknown git URL query key"),
    ("https://h/r.git?checksum=nothex", "is not a commit hash"),
    ("https://u:secret@h/r.git?mtime=never", "mtime must be"),
])
def test_bad_git_urls(value: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_git_url(value)
    assert message in str(info.value) and "secret" not in str(info.value)


def test_redaction() -> None:
    assert redact("https://u:p@h:8080/x?q=1") == "https://h:8080/x?q=1"
    assert redact("git@host:org/r.git") == "git@host:org/r.git"
    assert redact_text("ADD https://u:p@h/a /b && http://x@y/z") == "ADD https://h/a /b && http://y/z"


def test_git_errors_lose_credentials_but_keep_their_words(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from builder.inputs.git import _Git

    spec = parse_git_url("https://u:tok3n@127.0.0.1:1/x.git#main")
    err = _Git(spec, tmp_path, {}).error("fetch", "fatal: unable to access 'https://u:tok3n@127.0.0.1:1/x.git/': "
                                                  "Couldn't connect to server (user u, token tok3n)")
    text = str(err)
    assert "tok3n" not in text and "u:" not in text and "(user ***, token ***)" in text
    assert "unable to access 'https://127.0.0.1:1/x.git/'" in text and "Couldn't connect" in text


def test_flag_parsers() -> None:
    assert parse_add_host("db:10.0.0.1") == ("db", "10.0.0.1")
    assert parse_add_host("v6=::1") == ("v6", "::1")
    assert parse_add_host("gw:host-gateway") == ("gw", "127.0.0.1")
    assert parse_shm_size("64m") == 64 << 20
    assert parse_ulimit("nofile=10:20") == ("nofile", 10, 20)
    assert parse_ulimit("core=-1") == ("core", -1, -1)
    a = parse_annotation("manifest,manifest-descriptor[linux/arm64]:org.k=v=w")
    assert (a.levels, a.platform, a.key, a.value) == (("manifest", "manifest-descriptor"), "linux/arm64", "org.k", "v=w")
    assert parse_annotation("org.opencontainers.image.title=x").levels == ("manifest",)
    assert parse_ssh("default").paths == () and parse_ssh("k=/a,/b").paths == ("/a", "/b")
    for bad in ("h", "h:1.2.3"):
        with pytest.raises(UsageError):
            parse_add_host(bad)
    with pytest.raises(UsageError):
        parse_ssh("id=")


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_key_files_join_the_agent_without_comment(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    """``--ssh ID=KEYFILE``: pybuild's private agent holds the key with an empty comment, as
    BuildKit's key-file agent does (the key file's comment is not shown by ``ssh-add -l``)."""
    import os
    import subprocess

    from builder.inputs.ssh import SshAgents, SshSpec

    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "comment-of-the-file", "-f", str(key)],
                   check=True)
    with SshAgents((SshSpec("k", (str(key),)),)) as agents:
        sock = agents.socket("k")
        assert sock is not None
        listed = subprocess.run(["ssh-add", "-l"], env=dict(os.environ, SSH_AUTH_SOCK=sock), capture_output=True,
                                text=True, check=True).stdout
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    assert fingerprint in listed and "comment-of-the-file" not in listed and str(tmp_path) not in listed
    assert not os.path.exists(sock), "the agent and its socket are gone after the build"
