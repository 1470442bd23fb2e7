"""The differential cases (data, one directory each under ``cases/``) and how one is built by
pybuild and by its peer.

A case directory holds ``Dockerfile``, optionally ``ctx/`` (the build context; empty when
absent), ``www/`` (served over HTTP on 127.0.0.1 during the build; ``{{HTTP}}`` in the
Dockerfiles becomes its base URL) and ``case.toml``:

    about = "what the case checks"             # one line
    peer = "dockerd"                           # or "buildah"
    args = { NAME = "value" }                  # --build-arg for both builders
    target = "stage"                           # --target
    epoch = 1710000000                         # SOURCE_DATE_EPOCH (env for pybuild, build arg for the peer)
    secrets = { id = "content" }               # --secret id=ID,src=FILE for both
    ssh = true                                 # --ssh default=SOCKET of a private ssh-agent for both
    prepare = "sh commands"                    # run in the copied context (as root) before building:
                                               # modes, owners, xattrs, hardlinks, empty dirs git cannot hold
    fail = true                                # both builders must fail
    mtimes = false                             # do not compare mtimes
    [equivalent]                               # the peer builds Dockerfile.peer instead: a feature the
    reason = "..."                             # peers here lack, written as the equivalent Dockerfile
    cite = "..."                               # current BuildKit's docs/tests/source saying so
    [difference]                               # a documented difference
    reason = "..."
    cite = "..."
    allow = ["fs:/path", "config:Env"]         # difference KEYs (fnmatch) it covers; each must occur;
                                               # "outcome": a fail case the peer builds

Context files get mtime CONTEXT_MTIME after ``prepare`` (git does not keep mtimes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CASES = Path(__file__).resolve().parent / "cases"
CONTEXT_MTIME = 1600000000
KNOWN_KEYS = {"about", "peer", "args", "target", "epoch", "secrets", "ssh", "prepare", "fail", "mtimes",
              "equivalent", "difference"}


@dataclass(frozen=True)
class Documented:
    """A written reason (with its citation of current BuildKit) and the KEYs it covers."""

    reason: str
    cite: str
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    dir: Path
    about: str = ""
    peer: str = "dockerd"
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    epoch: int | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    ssh: bool = False
    prepare: str = ""
    fail: bool = False
    mtimes: bool = True
    equivalent: Documented | None = None
    difference: Documented | None = None

    @property
    def peer_dockerfile(self) -> Path:
        return self.dir / ("Dockerfile.peer" if self.equivalent else "Dockerfile")


def _documented(raw: Any, where: str) -> Documented | None:
    if raw is None:
        return None
    assert isinstance(raw, dict), f"{where}: must be a table"
    unknown = set(raw) - {"reason", "cite", "allow"}
    assert not unknown, f"{where}: unknown keys {sorted(unknown)} (top-level keys go before the tables)"
    reason, cite = str(raw.get("reason", "")).strip(), str(raw.get("cite", "")).strip()
    assert reason and cite, f"{where}: needs a reason and a cite of current BuildKit"
    allow = raw.get("allow", [])
    assert isinstance(allow, list) and all(isinstance(a, str) for a in allow), f"{where}: allow is a list of KEYs"
    return Documented(reason, cite, tuple(allow))


def load_case(d: Path) -> Case:
    """The case in directory ``d`` (AssertionError on a malformed case.toml)."""
    spec: dict[str, Any] = {}
    if (d / "case.toml").exists():
        spec = tomllib.loads((d / "case.toml").read_text())
    unknown = set(spec) - KNOWN_KEYS
    assert not unknown, f"{d}/case.toml: unknown keys {sorted(unknown)}"
    assert (d / "Dockerfile").is_file(), f"{d}: no Dockerfile"
    assert spec.get("peer", "dockerd") in ("dockerd", "buildah"), f"{d}: peer is dockerd or buildah"
    eq = _documented(spec.get("equivalent"), f"{d}/case.toml [equivalent]")
    if eq is not None:
        assert (d / "Dockerfile.peer").is_file(), f"{d}: [equivalent] needs Dockerfile.peer"
    diff = _documented(spec.get("difference"), f"{d}/case.toml [difference]")
    if diff is not None:
        assert diff.allow, f"{d}: [difference] must list the KEYs it allows"
    return Case(d.name, d, str(spec.get("about", "")), spec.get("peer", "dockerd"),
                {str(k): str(v) for k, v in spec.get("args", {}).items()}, spec.get("target"),
                spec.get("epoch"), {str(k): str(v) for k, v in spec.get("secrets", {}).items()},
                bool(spec.get("ssh", False)), spec.get("prepare", ""), bool(spec.get("fail", False)), bool(spec.get("mtimes", True)),
                eq, diff)


def all_cases() -> list[Case]:
    return [load_case(d) for d in sorted(CASES.iterdir()) if d.is_dir()]


@dataclass(frozen=True)
class Prepared:
    """A case laid out for building: the context, both Dockerfiles (outside the context), the
    secret files."""

    context: Path
    dockerfile: Path
    peer_dockerfile: Path
    secrets: dict[str, Path]
    www: Path | None

    def set_http(self, url: str) -> None:
        """Replace ``{{HTTP}}`` in both Dockerfiles with ``url``."""
        for df in (self.dockerfile, self.peer_dockerfile):
            df.write_text(df.read_text().replace("{{HTTP}}", url))


def prepare(case: Case, work: Path) -> Prepared:
    """Copy the case to ``work`` (symlinks kept), run its ``prepare`` script in the context and
    fix every context mtime to CONTEXT_MTIME."""
    ctx = work / "ctx"
    if (case.dir / "ctx").is_dir():
        shutil.copytree(case.dir / "ctx", ctx, symlinks=True)
    else:
        ctx.mkdir(parents=True)
    df = work / "Dockerfile"
    shutil.copyfile(case.dir / "Dockerfile", df)
    pdf = work / "Dockerfile.peer"
    shutil.copyfile(case.peer_dockerfile, pdf)
    if case.prepare:
        p = subprocess.run(["sh", "-ec", case.prepare], cwd=ctx, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{case.name}: prepare failed:\n{p.stderr}"
    for dirpath, dirnames, filenames in os.walk(ctx, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (CONTEXT_MTIME, CONTEXT_MTIME), follow_symlinks=False)
    os.utime(ctx, (CONTEXT_MTIME, CONTEXT_MTIME))
    www = None
    if (case.dir / "www").is_dir():
        www = work / "www"
        shutil.copytree(case.dir / "www", www)
        for dirpath, _dirnames, filenames in os.walk(www):
            for n in filenames:
                os.utime(os.path.join(dirpath, n), (CONTEXT_MTIME, CONTEXT_MTIME))
    secrets: dict[str, Path] = {}
    for sid, content in case.secrets.items():
        f = work / "secrets" / sid
        f.parent.mkdir(exist_ok=True)
        f.write_text(content)
        secrets[sid] = f
    return Prepared(ctx, df, pdf, secrets, www)
