"""Reproducible builds: SOURCE_DATE_EPOCH pins ``created``, history times and file mtimes, so
the same inputs give the same manifest digest in two empty stores; a fully cached rebuild gives
the same digest without it. Images are read with tests/ocireader.py (no builder code)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from buildutil import run_cli
from ocireader import check_invariants, read_layout

SDE = 1700000000
SDE_TEXT = "2023-11-14T22:13:20Z"
OLD = 1600000000  # older than SDE: must be kept as it is (clamping only lowers)

DOCKERFILE = """\
FROM scratch AS stage1
COPY gen/ /gen/

FROM scratch
ENV A=1
WORKDIR /work/dir
COPY files/ /app/
COPY --from=stage1 /gen/ /from-stage/
COPY <<EOF /app/heredoc.txt
made at build time
EOF
LABEL x=y
CMD ["/app/run"]
"""


def make_context(root: Path, mtime: int) -> Path:
    """A context whose files have ``mtime`` (except files/old.txt which has OLD)."""
    ctx = root / "ctx"
    (ctx / "files" / "sub").mkdir(parents=True)
    (ctx / "gen").mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "files" / "a.txt").write_text("a\n")
    (ctx / "files" / "sub" / "b.txt").write_text("b\n")
    (ctx / "files" / "old.txt").write_text("old\n")
    (ctx / "gen" / "g.txt").write_text("g\n")
    os.symlink("a.txt", ctx / "files" / "link")
    for dirpath, dirnames, filenames in os.walk(ctx):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
    os.utime(ctx / "files" / "old.txt", (OLD, OLD))
    return ctx


def build(ctx: Path, store: Path, out: Path, sde: bool = True) -> tuple[str, Path]:
    """Build ``ctx``; return the manifest digest (--metadata-file) and the exported layout.
    --iidfile holds the image ID, the config digest (checked against the layout)."""
    iid = out.parent / (out.name + ".iid")
    meta = out.parent / (out.name + ".json")
    env = {"SOURCE_DATE_EPOCH": str(SDE)} if sde else {}
    res = run_cli(["--progress=plain", "-t", "repro:latest", "--iidfile", str(iid), "--metadata-file", str(meta),
                   "--output", f"type=oci,dest={out},tar=false", str(ctx)], store, env).ok()
    assert res.rc == 0
    data = json.loads(meta.read_text())
    assert iid.read_text().strip() == data["containerimage.config.digest"]
    return data["containerimage.digest"], out


def test_same_inputs_two_stores_same_digest(tmp_path: Path) -> None:
    ctx1 = make_context(tmp_path / "one", SDE + 1000)
    ctx2 = make_context(tmp_path / "two", SDE + 987654)  # other paths, other (newer) mtimes
    d1, out1 = build(ctx1, tmp_path / "store1", tmp_path / "out1")
    d2, out2 = build(ctx2, tmp_path / "store2", tmp_path / "out2")
    assert d1 == d2
    img1, img2 = read_layout(out1, "latest"), read_layout(out2, "latest")
    check_invariants(img1)
    assert img1.manifest_digest == img2.manifest_digest == d1
    assert img1.config_raw == img2.config_raw
    assert img1.config["created"] == SDE_TEXT
    assert [h.get("created") for h in img1.config["history"]] == [SDE_TEXT] * len(img1.config["history"])
    mtimes = {m.name.rstrip("/"): m.mtime for layer in img1.layers for m in layer}
    assert mtimes, "no layer members"
    assert max(mtimes.values()) <= SDE, f"mtimes not clamped: {mtimes}"
    assert mtimes["app/a.txt"] == SDE
    assert mtimes["app/old.txt"] == OLD, "clamping must keep older mtimes"
    assert mtimes["app/heredoc.txt"] <= SDE


def test_store_and_export_agree(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "c", SDE + 5)
    digest, out = build(ctx, tmp_path / "store", tmp_path / "out")
    stored = read_layout(tmp_path / "store", "docker.io/library/repro:latest")
    check_invariants(stored)
    assert stored.manifest_digest == digest
    index = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]


def test_cached_rebuild_same_digest(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "c", SDE + 5)
    store = tmp_path / "store"
    build(ctx, store, tmp_path / "out1", sde=False)
    d1 = (tmp_path / "out1.iid").read_text().strip()  # the image ID, as --iidfile writes it below
    res = run_cli(["--progress=plain", "-t", "repro:latest", "--iidfile", str(tmp_path / "iid2"), str(ctx)],
                  store).ok()
    assert (tmp_path / "iid2").read_text().strip() == d1
    steps = [line for line in res.err.splitlines() if line.startswith("[")]
    layer_steps = [line for line in steps if " COPY " in line]
    assert layer_steps and all(line.endswith("CACHED") for line in layer_steps), res.err
    # touching the context (mtimes only) keeps the cache and the digest
    for p in ctx.rglob("*"):
        os.utime(p, (SDE + 99, SDE + 99), follow_symlinks=False)
    run_cli(["--progress=quiet", "-t", "repro:latest", "--iidfile", str(tmp_path / "iid3"), str(ctx)], store).ok()
    assert (tmp_path / "iid3").read_text().strip() == d1
    # a content change gives a new image
    (ctx / "files" / "a.txt").write_text("changed\n")
    run_cli(["--progress=quiet", "-t", "repro:latest", "--iidfile", str(tmp_path / "iid4"), str(ctx)], store).ok()
    assert (tmp_path / "iid4").read_text().strip() != d1


def test_exported_archives_byte_identical(tmp_path: Path) -> None:
    """With SOURCE_DATE_EPOCH the OCI and docker archives of two stores are the same bytes."""
    digests = []
    for n in ("one", "two"):
        ctx = make_context(tmp_path / n, SDE + (7 if n == "one" else 7777))
        run_cli(["--progress=quiet", "-t", "repro:1", "--output", f"type=oci,dest={tmp_path / n}/oci.tar",
                 "--output", f"type=docker,dest={tmp_path / n}/docker.tar", str(ctx)], tmp_path / f"store-{n}",
                {"SOURCE_DATE_EPOCH": str(SDE)}).ok()
        digests.append(tuple(hashlib.sha256((tmp_path / n / f).read_bytes()).hexdigest()
                             for f in ("oci.tar", "docker.tar")))
    assert digests[0] == digests[1]
