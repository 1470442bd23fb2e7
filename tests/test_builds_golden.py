"""Golden builds: testdata/builds/<case>/ is built with the real CLI, exported with
``--output type=oci,dest=DIR,tar=false`` and read back with tests/ocireader.py (no builder code).

A case directory holds:

``context/``
    the build context (Dockerfile, files, .dockerignore ...).
``args`` (optional)
    extra CLI arguments, one per line. Placeholders: ``{context}`` (the context dir),
    ``{layout}`` (the OCI layout written from ``pre/``), ``{http}`` (base URL of a local HTTP
    server serving ``served/``).
``pre/``, ``pre2/`` (optional)
    contexts built first, in this order, into the same store as ``pre:latest`` / ``pre2:latest``;
    ``pre/`` is also exported to ``{layout}`` (an OCI layout directory, tag ``latest``).
``served/`` (optional)
    files served over HTTP on 127.0.0.1 for ADD URL cases.
``expected.json``
    ``{"os", "architecture", "layers": N, "history": [[created_by, empty_layer], ...],
    "config": {Env, WorkingDir, Labels, ExposedPorts, Volumes, User, StopSignal, Healthcheck,
    OnBuild, Shell, Entrypoint, Cmd}}``: each config field is compared exactly (null = absent).
``expected-files.txt``
    the flattened root file system (whiteouts applied), one line per path::

        PATH TYPE MODE UID:GID EXTRA

    PATH is relative to / (no leading slash); in PATH and EXTRA a backslash, space, tab and
    newline are written ``\\134``, ``\\040``, ``\\011``, ``\\012`` (as in fstab);
    TYPE is file|dir|symlink|hardlink|char|block|fifo;
    MODE is 4 octal digits (permission + setuid/setgid/sticky bits); EXTRA is ``SIZE SHA`` for a
    file (SHA = first 16 hex digits of the content's sha256), the target for a symlink or
    hardlink, ``-`` otherwise. Blank lines and lines starting with ``#`` are ignored.
    The listing is exact: every path of the image must be listed, except paths identical to the
    busybox base image (localhost/busybox:latest) when they were not changed.

Every case also checks the image invariants (manifest/config digest and size, diff_ids =
sha256 of each decompressed layer, non-empty history entries = layers) and validates index,
manifest and config against the OCI JSON schemas.

Regenerate an expectation after reviewing the product's behaviour by hand with
``PYBUILD_REGEN=1 python3 -m pytest tests/test_builds_golden.py -k CASE`` (then read the diff!).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from buildutil import BASE_TAG, BUILDS, busybox_store, http_server, run_cli
from ocireader import Image, Member, check_invariants, check_layout, flatten, read_layout

CONFIG_FIELDS = ("Env", "WorkingDir", "Labels", "ExposedPorts", "Volumes", "User", "StopSignal",
                 "Healthcheck", "OnBuild", "Shell", "Entrypoint", "Cmd")
REGEN = os.environ.get("PYBUILD_REGEN") == "1"
CASES = sorted(p.name for p in BUILDS.iterdir() if (p / "context").is_dir()) if BUILDS.is_dir() else []


def file_line(m: Member) -> str:
    """One ``expected-files.txt`` line for a flattened member."""
    if m.type == "file":
        data = m.data or b""
        extra = f"{m.size} {hashlib.sha256(data).hexdigest()[:16]}"
    elif m.type in ("symlink", "hardlink"):
        extra = _esc(m.linkname)
    else:
        extra = "-"
    return f"{_esc(m.name)} {m.type} {m.mode & 0o7777:04o} {m.uid}:{m.gid} {extra}"


def _esc(text: str) -> str:
    """fstab-style escapes so that a line splits on spaces: backslash, space, tab, newline."""
    return text.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


_BASE_FS: dict[str, str] | None = None


def base_lines(store: Path) -> dict[str, str]:
    """path -> line of the busybox base image (read once from a fresh store)."""
    global _BASE_FS, _BASE_DIFF_ID
    if _BASE_FS is None:
        img = read_layout(store, BASE_TAG)
        _BASE_DIFF_ID = img.config["rootfs"]["diff_ids"][0]
        _BASE_FS = {p: file_line(m) for p, m in flatten(img.layers).items()}
    return _BASE_FS


_BASE_DIFF_ID: str | None = None


def fs_lines(img: Image, base: dict[str, str]) -> dict[str, str]:
    """escaped path -> line of every path of ``img``; for an image built on the busybox base (same first
    diff_id), paths identical to the base are left out."""
    diff_ids = img.config.get("rootfs", {}).get("diff_ids") or []
    on_base = bool(diff_ids) and diff_ids[0] == _BASE_DIFF_ID
    out = {}
    for p, m in flatten(img.layers).items():
        line = file_line(m)
        if not (on_base and base.get(p) == line):
            out[_esc(p)] = line
    return out


def parse_expected_files(text: str) -> dict[str, str]:
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        out[line.split(" ", 1)[0]] = line
    return out


def config_view(img: Image, subst: dict[str, str]) -> dict[str, Any]:
    """The compared part of the config; the values of ``subst`` (tmp paths, the HTTP server's
    URL) are replaced by their ``{placeholder}`` so the expectation is stable."""
    text = json.dumps(img.config)
    for k, v in subst.items():
        text = text.replace(v, "{" + k + "}")
    cfg = json.loads(text)
    inner = cfg.get("config") or {}
    return {
        "os": cfg.get("os"),
        "architecture": cfg.get("architecture"),
        "layers": len(img.manifest["layers"]),
        "history": [[h.get("created_by"), bool(h.get("empty_layer", False))] for h in cfg.get("history") or []],
        "config": {k: inner.get(k) for k in CONFIG_FIELDS},
    }


def _args(case: Path, subst: dict[str, str]) -> list[str]:
    f = case / "args"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        if not line:
            continue
        for k, v in subst.items():
            line = line.replace("{" + k + "}", v)
        out.append(line)
    return out


def build_case(case: Path, tmp_path: Path) -> tuple[Image, Path, dict[str, str]]:
    """Build ``case`` into a fresh busybox store; return the image read from its OCI export."""
    store = busybox_store(tmp_path)
    base_lines(store)
    layout = tmp_path / "pre-layout"
    with contextlib.ExitStack() as stack:
        subst = {"layout": str(layout)}
        if (case / "served").is_dir():
            subst["http"] = stack.enter_context(http_server(case / "served"))
        for pre in ("pre", "pre2"):
            if (case / pre).is_dir():
                extra = ["--output", f"type=oci,dest={layout},tar=false"] if pre == "pre" else []
                run_cli(["--progress=plain", "-t", f"{pre}:latest", *extra, str(case / pre)], store).ok()
        # the context is copied: builds must not depend on the repository's mtimes or leftovers
        ctx = tmp_path / "context"
        shutil.copytree(case / "context", ctx, symlinks=True)
        subst["context"] = str(ctx)
        out = tmp_path / "out"
        run_cli(["--progress=plain", "-t", f"golden/{case.name}:latest", *_args(case, subst),
                 "--output", f"type=oci,dest={out},tar=false", str(ctx)], store).ok()
    check_layout(out)
    img = read_layout(out, "latest")
    check_invariants(img)
    ann = img.index["manifests"][0].get("annotations") or {}
    assert ann.get("org.opencontainers.image.ref.name") == "latest"
    assert ann.get("io.containerd.image.name") == f"docker.io/golden/{case.name}:latest"
    return img, store, subst


@pytest.mark.parametrize("name", CASES)
def test_golden_build(name: str, tmp_path: Path) -> None:
    case = BUILDS / name
    img, store, subst = build_case(case, tmp_path)
    view = config_view(img, subst)
    files = fs_lines(img, base_lines(store))
    if REGEN:
        (case / "expected.json").write_text(json.dumps(view, indent=2, sort_keys=True) + "\n")
        header = f"# {name}: flattened file system (format: see tests/test_builds_golden.py)\n"
        (case / "expected-files.txt").write_text(header + "".join(v + "\n" for v in files.values()))
        pytest.skip("expectations regenerated")
    expected = json.loads((case / "expected.json").read_text())
    assert view["config"] == expected["config"]
    assert view["history"] == expected["history"]
    assert (view["os"], view["architecture"], view["layers"]) == \
        (expected["os"], expected["architecture"], expected["layers"])
    want = parse_expected_files((case / "expected-files.txt").read_text())
    missing = sorted(set(want) - set(files))
    extra = sorted(set(files) - set(want))
    differ = [f"want {want[p]}\n   got {files[p]}" for p in sorted(set(want) & set(files)) if want[p] != files[p]]
    assert not (missing or extra or differ), (
        f"file system differs from expected-files.txt\nmissing: {missing}\nunexpected: "
        f"{[files[p] for p in extra]}\n" + "\n".join(differ))


def test_every_case_has_expectations() -> None:
    assert CASES, "no cases under testdata/builds"
    for name in CASES:
        for f in ("expected.json", "expected-files.txt"):
            assert (BUILDS / name / f).is_file(), f"{name}: missing {f}"
