"""Golden builds: testdata/builds/<case>/ is built with the real CLI, exported with
``--output type=oci,dest=DIR,tar=false`` and read back with tests/ocireader.py (no builder code).

A case directory holds:

``context/``
    the build context (Dockerfile, files, .dockerignore ...).
``args`` (optional)
    extra CLI arguments, one per line. Placeholders: ``{context}`` (the context dir),
    ``{layout}`` (the OCI layout written from ``pre/``), ``{layout_digest}`` (its manifest
    digest), ``{http}`` (base URL of a local HTTP
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

Regenerate an expectation from the product's current output with
``PYBUILD_REGEN=1 python3 -m pytest tests/test_builds_golden.py -k CASE``, then read the diff: an
expectation states what BuildKit does, not what pybuild happens to do (e.g. HEALTHCHECK/EXPOSE
``created_by`` use Go's ``%q``/``%v`` formatting, heredoc files are 0644).
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


_BASE_FS: dict[str, str] | None = None     # the busybox base: path -> line
_BASE_DIFF_ID: str | None = None           # and its (only) layer's diff_id


def base_lines(store: Path) -> dict[str, str]:
    """path -> line of the busybox base image (read once from a fresh store)."""
    global _BASE_FS, _BASE_DIFF_ID
    if _BASE_FS is None:
        img = read_layout(store, BASE_TAG)
        _BASE_DIFF_ID = img.config["rootfs"]["diff_ids"][0]
        _BASE_FS = {p: file_line(m) for p, m in flatten(img.layers).items()}
    return _BASE_FS


def fs_lines(img: Image, base: dict[str, str]) -> dict[str, str]:
    """escaped path -> line of every path of ``img``; for an image built on the busybox base
    (same first diff_id), paths identical to the base are left out."""
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
                if pre == "pre":
                    subst["layout_digest"] = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
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
    problems = []  # every difference at once: one run shows the whole picture
    for key in CONFIG_FIELDS:
        if view["config"].get(key) != expected["config"].get(key):
            problems.append(f"config {key}: want {expected['config'].get(key)!r}\n   got {view['config'].get(key)!r}")
    for i in range(max(len(view["history"]), len(expected["history"]))):
        want_h = expected["history"][i] if i < len(expected["history"]) else None
        got_h = view["history"][i] if i < len(view["history"]) else None
        if want_h != got_h:
            problems.append(f"history[{i}]: want {want_h!r}\n   got {got_h!r}")
    for key in ("os", "architecture", "layers"):
        if view[key] != expected[key]:
            problems.append(f"{key}: want {expected[key]!r}, got {view[key]!r}")
    want = parse_expected_files((case / "expected-files.txt").read_text())
    problems += [f"missing: {want[p]}" for p in sorted(set(want) - set(files))]
    problems += [f"unexpected: {files[p]}" for p in sorted(set(files) - set(want))]
    problems += [f"want {want[p]}\n   got {files[p]}" for p in sorted(set(want) & set(files)) if want[p] != files[p]]
    assert not problems, f"{name}: the image differs from its expectation:\n" + "\n".join(problems)


def test_every_case_has_expectations() -> None:
    assert CASES, "no cases under testdata/builds"
    for name in CASES:
        for f in ("expected.json", "expected-files.txt"):
            assert (BUILDS / name / f).is_file(), f"{name}: missing {f}"


# ---- errors of bad input ------------------------------------------------------------------------

BAD_BUILDS = {
    # name: (Dockerfile, files, regex the message must match)
    "syntax": ("FROM scratch\nCOPY a.txt\n", {}, r"Dockerfile:2:1: .*"),
    "unknown-instruction": ("FROM scratch\nFROBNICATE x\n", {}, r"Dockerfile:2:1: .*(?i:unknown instruction)"),
    "missing-source": ("FROM scratch\nCOPY nope.txt /x\n", {}, r"Dockerfile:2:1: .*nope\.txt"),
    # several sources onto /dir are copied in turn (BuildKit): a file, then a directory onto it fails
    "directory-onto-copied-file": ("FROM scratch\nCOPY a.txt d /dir\n", {"a.txt": "a", "d/x": "x"},
                                   r"Dockerfile:2:1: .*non-directory: /dir"),
    "stage-index": ("FROM scratch\nCOPY --from=3 /x /x\n", {}, r"Dockerfile:2:1: .*3"),
    "self-reference": ("FROM scratch AS me\nCOPY --from=me /x /x\n", {}, r"Dockerfile:2:1: .*(?i:circular)"),
    "missing-base": ("FROM localhost/not-in-store:1\n", {}, r"localhost/not-in-store:1"),
    # an unknown --chown *name* is 0 (BuildKit's file op, tests/test_fidelity.py); a negative id is refused
    "bad-chown-id": ("FROM localhost/busybox:latest\nCOPY --chown=-1 a.txt /a\n", {"a.txt": "a"},
                     r"Dockerfile:2:1: .*-1"),
    "checksum-local": (f"FROM scratch\nADD --checksum=sha256:{'a' * 64} a.txt /a\n", {"a.txt": "a"},
                       r"Dockerfile:2:1: .*(?i:checksum)"),
    "copy-url": ("FROM scratch\nCOPY http://127.0.0.1:9/x /x\n", {}, r"Dockerfile:2:1: .*(?i:url)"),
    "ignored-source": ("FROM scratch\nCOPY secret.txt /s\n", {"secret.txt": "s", ".dockerignore": "secret.txt\n"},
                       r"Dockerfile:2:1: .*secret\.txt"),
}


@pytest.mark.parametrize("name", sorted(BAD_BUILDS))
def test_bad_input_is_reported(name: str, tmp_path: Path) -> None:
    """Bad Dockerfiles and missing inputs: exit 1, ``Dockerfile:LINE:COL: message`` (where the
    error has a place), no traceback, and no image tagged."""
    import re

    from buildutil import run_cli_subprocess

    text, files, pattern = BAD_BUILDS[name]
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(text)
    for f, content in files.items():
        (ctx / f).parent.mkdir(parents=True, exist_ok=True)
        (ctx / f).write_text(content)
    res = run_cli_subprocess(["-t", "bad:latest", str(ctx)], store)
    assert res.rc == 1, res
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err
    assert re.search(pattern, res.err), res.err
    assert "bad:latest" not in run_cli(["images"], store).ok().out


def test_add_checksum_mismatch(tmp_path: Path) -> None:
    store = busybox_store(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    (served / "f.txt").write_text("content\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with http_server(served) as url:
        (ctx / "Dockerfile").write_text(f"FROM scratch\nADD --checksum=sha256:{'0' * 64} {url}/f.txt /f.txt\n")
        res = run_cli(["-t", "bad:latest", str(ctx)], store)
        assert res.rc == 1, res
        assert "checksum" in res.err.lower() or "digest" in res.err.lower(), res.err
        (ctx / "Dockerfile").write_text(f"FROM scratch\nADD {url}/missing.txt /f.txt\n")
        res = run_cli(["-t", "bad:latest", str(ctx)], store)
        assert res.rc == 1 and "404" in res.err, res
    assert "Traceback" not in res.err


# ---- outputs ------------------------------------------------------------------------------------

OUT_DOCKERFILE = "FROM localhost/busybox:latest\nCOPY f.txt /data/f.txt\nCMD [\"/bin/cat\", \"/data/f.txt\"]\n"


@pytest.fixture
def simple(tmp_path: Path) -> tuple[Path, Path]:
    """(store with busybox, context of a small image)."""
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(OUT_DOCKERFILE)
    (ctx / "f.txt").write_text("hello output\n")
    return store, ctx


def test_output_compression_applies_to_new_layers_unless_forced(simple: tuple[Path, Path], tmp_path: Path) -> None:
    """BuildKit's rule: compression= re-encodes the layers the build made; the base image's
    layers keep theirs unless force-compression=true. The store-only output changes nothing."""
    store, ctx = simple
    o = tmp_path / "o"
    run_cli(["--progress=quiet", "-t", "comp:1",
             "--output", f"type=oci,dest={o}/kept,tar=false,compression=zstd",
             "--output", f"type=oci,dest={o}/forced,tar=false,compression=zstd,force-compression=true",
             str(ctx)], store).ok()
    gz, zst = "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd"
    kept = read_layout(o / "kept", "1")
    forced = read_layout(o / "forced", "1")
    check_invariants(kept)
    check_invariants(forced)
    assert [ld["mediaType"] for ld in kept.manifest["layers"]] == [gz, zst]
    assert [ld["mediaType"] for ld in forced.manifest["layers"]] == [zst, zst]
    assert kept.manifest["layers"][0]["digest"] != forced.manifest["layers"][0]["digest"]
    assert kept.config["rootfs"]["diff_ids"] == forced.config["rootfs"]["diff_ids"]
    # the image in the store was written in zstd directly: the base layer kept, ours zstd
    res = run_cli(["inspect", "comp:1"], store)
    assert res.rc == 0
    assert [ld["mediaType"] for ld in json.loads(res.out)["Manifest"]["layers"]] == [gz, zst]


def test_output_types(simple: tuple[Path, Path], tmp_path: Path) -> None:
    import tarfile

    store, ctx = simple
    o = tmp_path / "o"
    iid = tmp_path / "iid"
    run_cli(["--progress=quiet", "-t", "out:1", "--iidfile", str(iid),
             "--output", f"type=oci,dest={o}/layout,tar=false",
             "--output", f"type=oci,dest={o}/layout.tar",
             "--output", f"type=oci,dest={o}/zstd,tar=false,compression=zstd",
             "--output", f"type=oci,dest={o}/raw,tar=false,compression=uncompressed",
             "--output", f"type=docker,dest={o}/docker.tar",
             "--output", f"type=local,dest={o}/rootfs",
             "--output", f"type=tar,dest={o}/rootfs.tar", str(ctx)], store).ok()
    image_id = iid.read_text().strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    layout = read_layout(o / "layout", "1")
    check_invariants(layout)
    check_layout(o / "layout")
    assert layout.manifest["config"]["digest"] == image_id  # the image ID is the config digest
    ann = layout.index["manifests"][0]["annotations"]
    assert ann == {"org.opencontainers.image.ref.name": "1", "io.containerd.image.name": "docker.io/library/out:1"}
    as_tar = read_layout(o / "layout.tar", "1")
    check_invariants(as_tar)
    assert as_tar.manifest_digest == layout.manifest_digest
    for name, media in (("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
                        ("raw", "application/vnd.oci.image.layer.v1.tar")):
        img = read_layout(o / name, "1")
        check_invariants(img)
        assert [ld["mediaType"] for ld in img.manifest["layers"]][-1] == media
        # same content, other compression: same diff_ids, same flattened files
        assert img.config["rootfs"]["diff_ids"] == layout.config["rootfs"]["diff_ids"]
        assert flatten(img.layers)["data/f.txt"].data == b"hello output\n"
    # docker archive: manifest.json names the config and the layers, RepoTags the tag
    with tarfile.open(o / "docker.tar") as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["out:1"] or manifest[0]["RepoTags"] == ["docker.io/library/out:1"]
        cfg = json.load(t.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        assert cfg["config"]["Cmd"] == ["/bin/cat", "/data/f.txt"]
        assert len(manifest[0]["Layers"]) == len(cfg["rootfs"]["diff_ids"]) == 2
        for member, diff_id in zip(manifest[0]["Layers"], cfg["rootfs"]["diff_ids"], strict=True):
            data = t.extractfile(member).read()  # type: ignore[union-attr]
            if data[:2] == b"\x1f\x8b":
                import gzip
                data = gzip.decompress(data)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
    # local and tar: the root file system
    assert (o / "rootfs" / "data" / "f.txt").read_text() == "hello output\n"
    assert (o / "rootfs" / "bin" / "busybox").is_file()
    assert os.readlink(o / "rootfs" / "bin" / "sh") == "busybox"
    with tarfile.open(o / "rootfs.tar") as t:
        names = {n.lstrip("./") for n in t.getnames()}
        assert "data/f.txt" in names and "bin/busybox" in names
        assert t.extractfile(next(m for m in t.getmembers() if m.name.lstrip("./") == "data/f.txt")).read() \
            == b"hello output\n"  # type: ignore[union-attr]


# ---- the CLI surface ----------------------------------------------------------------------------

def test_iidfile_metadata_quiet(simple: tuple[Path, Path], tmp_path: Path) -> None:
    store, ctx = simple
    meta = tmp_path / "meta.json"
    res = run_cli(["-q", "-t", "meta:1", "--iidfile", str(tmp_path / "iid"), "--metadata-file", str(meta),
                   str(ctx)], store).ok()
    image_id = (tmp_path / "iid").read_text().strip()
    assert res.out == image_id + "\n", res.out  # -q: only the image ID (buildx: the config digest)
    data = json.loads(meta.read_text())
    img = read_layout(store, "docker.io/library/meta:1")
    assert data["containerimage.digest"] == img.manifest_digest
    assert data["containerimage.config.digest"] == img.manifest["config"]["digest"] == image_id
    assert "meta:1" in data["image.name"]
    assert res.err.strip() == "", res.err  # quiet: no progress
    # plain progress names the same ID, as docker's "writing image" line, and `images` shows it too
    plain = run_cli(["--progress=plain", "-t", "meta:1", str(ctx)], store).ok()
    assert f"writing image {image_id} (docker.io/library/meta:1)" in plain.err, plain.err
    rows = json.loads(run_cli(["images", "--format", "json"], store).ok().out)
    assert any(r["tag"] == "1" and "sha256:" + r["id"] == image_id for r in rows), rows


def test_progress_rawjson(simple: tuple[Path, Path]) -> None:
    store, ctx = simple
    res = run_cli(["--progress=rawjson", "-t", "raw:1", str(ctx)], store).ok()
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert lines
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(e, dict) and "type" in e for e in events)
    assert any("COPY f.txt /data/f.txt" in json.dumps(e) for e in events)


def test_progress_plain_one_line_per_step(simple: tuple[Path, Path]) -> None:
    store, ctx = simple
    res = run_cli(["--progress=plain", "-t", "plain:1", str(ctx)], store).ok()
    steps = [line for line in res.err.splitlines() if line.startswith("[")]
    assert [s.split("] ", 1)[1].rsplit("  ", 1)[0] for s in steps] == \
        ["FROM localhost/busybox:latest", "COPY f.txt /data/f.txt", 'CMD ["/bin/cat", "/data/f.txt"]']
    assert all(s.startswith("[stage 1/1] ") for s in steps), steps


def test_images_inspect_history_tag_rmi_prune(simple: tuple[Path, Path]) -> None:
    store, ctx = simple
    run_cli(["--progress=quiet", "-t", "app:1", str(ctx)], store).ok()
    listed = run_cli(["images"], store).ok().out.splitlines()
    assert listed[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
    assert {tuple(line.split()[:2]) for line in listed[1:]} == {("app", "1"), ("localhost/busybox", "latest")}

    info = json.loads(run_cli(["inspect", "app:1"], store).ok().out)
    img = read_layout(store, "docker.io/library/app:1")
    assert info["Digest"] == img.manifest_digest
    assert info["Manifest"] == img.manifest and info["Config"] == img.config

    hist = run_cli(["history", "app:1"], store).ok().out.splitlines()
    assert "CREATED BY" in hist[0]
    assert 'CMD ["/bin/cat" "/data/f.txt"]' in hist[1]  # newest first
    assert "COPY f.txt /data/f.txt" in hist[2]
    assert "COPY rootfs/ /" in hist[-1]

    run_cli(["tag", "app:1", "app:2"], store).ok()
    assert read_layout(store, "docker.io/library/app:2").manifest_digest == img.manifest_digest
    res = run_cli(["rmi", "app:1"], store).ok()
    assert "app:1" in res.out
    assert {tuple(line.split()[:2]) for line in run_cli(["images"], store).ok().out.splitlines()[1:]} == \
        {("app", "2"), ("localhost/busybox", "latest")}
    bad = run_cli(["rmi", "app:1"], store)
    assert bad.rc != 0 and "app:1" in bad.err
    bad = run_cli(["inspect", "nothere:1"], store)
    assert bad.rc != 0 and "nothere" in bad.err

    # prune removes what no tag needs and keeps every tagged image whole
    ctx2 = ctx.parent / "ctx2"
    ctx2.mkdir()
    (ctx2 / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /big.bin\n")
    (ctx2 / "big.bin").write_bytes(os.urandom(200_000))
    run_cli(["--progress=quiet", "-t", "junk:1", str(ctx2)], store).ok()
    run_cli(["rmi", "junk:1"], store).ok()
    blobs_before = {p.name for p in (store / "blobs" / "sha256").iterdir()}
    res = run_cli(["prune", "--all"], store).ok()
    assert "reclaimed" in res.out.lower()
    blobs_after = {p.name for p in (store / "blobs" / "sha256").iterdir()}
    assert blobs_after < blobs_before, "prune removed nothing"
    for name in ("docker.io/library/app:2", BASE_TAG):
        kept = read_layout(store, name)
        check_invariants(kept)
    assert read_layout(store, "docker.io/library/app:2").manifest_digest == img.manifest_digest
    # the kept images still build on: FROM the tagged image works after prune
    (ctx2 / "Dockerfile").write_text("FROM app:2\nCOPY big.bin /again.bin\n")
    run_cli(["--progress=quiet", "-t", "after:1", str(ctx2)], store).ok()


def test_images_json(simple: tuple[Path, Path]) -> None:
    store, ctx = simple
    iid = ctx.parent / "iid"
    run_cli(["--progress=quiet", "-t", "app:1", "--iidfile", str(iid), str(ctx)], store).ok()
    rows = json.loads(run_cli(["images", "--format", "json"], store).ok().out)
    by_name = {(r["repository"], r["tag"]): r for r in rows}
    assert set(by_name) == {("app", "1"), ("localhost/busybox", "latest")}
    assert "sha256:" + by_name[("app", "1")]["id"] == iid.read_text().strip()
