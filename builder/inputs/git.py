"""Fetch a git source with the system ``git``: a shallow fetch of one ref into a new
directory, checked out, ``.git`` removed unless asked to keep it.

Credentials of an http(s) URL travel only as an ``http.extraHeader`` in the child's
environment (``GIT_CONFIG_*``), never in argv, ``.git/config``, a message or a file the
build keeps. ssh URLs use ``SSH_AUTH_SOCK`` when the caller forwards an agent (``--ssh``).
Errors: :class:`GitError` naming the redacted URL and ref; :class:`HostError` without git.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import HostError
from .urls import GitSpec, InputError, is_commit_like, redact_text


class GitError(InputError):
    """A git source could not be fetched or did not match its checksum."""


@dataclass(frozen=True, slots=True)
class Checkout:
    """A fetched tree: ``top`` is the repository's working tree, ``commit`` the full hash."""

    top: Path
    commit: str


def _env(spec: GitSpec, ssh_sock: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GIT_ASKPASS="/bin/false",
               LC_ALL="C",
               GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
                               "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    env.pop("SSH_AUTH_SOCK", None)
    if ssh_sock:
        env["SSH_AUTH_SOCK"] = ssh_sock
    if spec.username is not None or spec.password is not None:
        token = base64.b64encode(f"{spec.username or ''}:{spec.password or ''}".encode()).decode()
        # scoped to the repository's host: submodules elsewhere never see the credentials
        from urllib.parse import urlsplit

        parts = urlsplit(spec.remote)
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {token}")
    return env


class _Git:
    def __init__(self, spec: GitSpec, dest: Path, env: dict[str, str]) -> None:
        self.spec = spec
        self.dest = dest
        self.env = env

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["git", "-C", str(self.dest), *args], env=self.env, capture_output=True, check=False,
                           text=True, errors="replace", stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise self.error(args[0], p.stderr)
        return p

    def error(self, what: str, stderr: str) -> GitError:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        detail = self._clean(lines[-1] if lines else f"git {what} failed")
        ref = f" (ref {self.spec.ref!r})" if self.spec.ref else ""
        return GitError(f"git source {self.spec.shown}{ref}: {detail}")

    def _clean(self, text: str) -> str:
        """git's message without credentials: the userinfo of every URL goes, then any other
        occurrence of the password or user name (a token). A short one is replaced only where it
        stands alone, so that user ``u`` does not turn "unable" into "***nable"."""
        text = redact_text(text)
        for secret in (self.spec.password, self.spec.username):
            if secret:
                word = re.escape(secret)
                text = re.sub(word if len(secret) >= 8 else rf"(?<![A-Za-z0-9]){word}(?![A-Za-z0-9])", "***", text)
        return text


def fetch_git(spec: GitSpec, dest: Path, *, keep_git_dir: bool = False, ssh_sock: str | None = None,
              mtime: str = "checkout") -> Checkout:
    """Fetch ``spec`` into the new directory ``dest`` (must not exist; the caller removes it).

    ``mtime="commit"`` sets every file's mtime to the commit time (BuildKit does so when
    SOURCE_DATE_EPOCH is set); ``"checkout"`` leaves git's. ``spec.checksum`` must be a
    prefix of the commit (or of an annotated tag's object) the ref resolves to."""
    if shutil.which("git") is None:
        raise HostError("git sources need the git program (apt-get install git)")
    dest.mkdir(parents=True)
    git = _Git(spec, dest, _env(spec, ssh_sock))
    git("init", "-q")
    git("remote", "add", "origin", spec.remote)
    ref = spec.ref
    fetched = ""
    if ref is None:
        p = git("fetch", "-q", "--depth=1", "--no-tags", "origin", "HEAD", check=False)
    else:
        p = git("fetch", "-q", "--depth=1", "--no-tags", "origin", ref, check=False)
    if p.returncode == 0:
        fetched = git("rev-parse", "FETCH_HEAD").stdout.strip()
        target = "FETCH_HEAD"
    elif ref is not None and is_commit_like(ref):
        # an abbreviated commit (or a server refusing a bare commit): fetch the branches and tags
        git("fetch", "-q", "--no-tags", "origin", "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*")
        r = git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
        if r.returncode != 0:
            raise GitError(f"git source {spec.shown}: commit {ref!r} not found in the repository")
        target = fetched = r.stdout.strip()
    else:
        raise git.error("fetch", p.stderr)
    git("-c", "advice.detachedHead=false", "checkout", "-q", target)
    commit = git("rev-parse", "HEAD").stdout.strip()
    if spec.checksum and not (commit.startswith(spec.checksum) or fetched.startswith(spec.checksum)):
        raise GitError(f"git source {spec.shown}: expected checksum to match {spec.checksum}, got {commit}")
    if (dest / ".gitmodules").exists():
        git("submodule", "update", "-q", "--init", "--recursive", "--depth=1")
    if mtime == "commit":
        stamp = int(git("log", "-1", "--format=%ct", "HEAD").stdout.strip() or 0)
        _set_mtimes(dest, stamp)
    if not keep_git_dir:
        shutil.rmtree(dest / ".git")
        for dirpath, dirnames, filenames in os.walk(dest):  # submodules' ".git" pointer files
            if ".git" in filenames:
                os.unlink(os.path.join(dirpath, ".git"))
            if ".git" in dirnames:
                shutil.rmtree(os.path.join(dirpath, ".git"))
                dirnames.remove(".git")
    return Checkout(top=dest, commit=commit)


def _set_mtimes(top: Path, stamp: int) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        if ".git" in dirnames and dirpath == str(top):
            dirnames.remove(".git")
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (stamp, stamp), follow_symlinks=False)
    os.utime(top, (stamp, stamp))
