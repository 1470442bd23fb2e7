"""Hostile inputs: symlinks in the image pointing out of it, ADD archives with escaping members,
a hand-made base layer with escaping entries and ``.wh.`` tricks.

The rule checked everywhere: the build either fails with a clear error (exit 1, a message, no
traceback) or writes inside the image root: no path of the flattened image lies under a
symlink, no member name escapes, no hardlink points outside, no host file changes (a sentinel
directory beside the output, uniquely named escape targets on the host) and no host secret ends
up in a layer. After a failure the store and its other tags are intact.

Builds run as subprocesses (a fresh process, its exit code and stderr as a user sees them).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
import pytest

from buildutil import BASE_TAG, busybox_store, run_cli, run_cli_subprocess, tree_fingerprint
from ocireader import Image, check_invariants, flatten, read_layout

TOKEN = uuid.uuid4().hex[:12]
SECRET = f"host-secret-{TOKEN}\n".encode()
HOST_DIRS = (Path("/"), Path("/tmp"), Path("/etc"), Path("/var/tmp"))


@dataclass
class Sandbox:
    """A tmp area: ``sentinel`` (host files that must not change, incl. a secret),
    ``out`` (the type=local destination, nested so ``..`` lands in ``outside``)."""

    root: Path
    store: Path
    sentinel: Path
    outside: Path
    out: Path

    def fingerprint(self) -> dict[str, tuple[int, int, str]]:
        fp = {"sentinel/" + k: v for k, v in tree_fingerprint(self.sentinel).items()}
        fp.update({"outside/" + k: v for k, v in tree_fingerprint(self.outside).items()
                   if not k.startswith("a/b/local")})
        return fp


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    store = busybox_store(tmp_path)
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "secret.txt").write_bytes(SECRET)
    (sentinel / "sub" / "keep.txt").write_text("keep\n")
    outside = tmp_path / "outside"
    (outside / "a" / "b").mkdir(parents=True)
    (outside / "a" / "sibling.txt").write_text("sibling\n")
    (outside / "a" / "b" / "neighbour.txt").write_text("neighbour\n")
    return Sandbox(tmp_path, store, sentinel, outside, outside / "a" / "b" / "local")


def host_escapes() -> list[Path]:
    """Files named with this run's token in well-known host directories (must be none)."""
    found = []
    for d in HOST_DIRS:
        try:
            found += [d / n for n in os.listdir(d) if TOKEN in n]
        except OSError:
            pass
    return found


def assert_inside(img: Image, first_own: int = 0) -> dict[str, object]:
    """The layers this build wrote (``img.layers[first_own:]``; a base image's layers are
    reused verbatim, hostile or not) are sane: no ``..`` or absolute member, no hardlink out, no
    path of theirs below a symlink of the flattened image, hardlinks resolve inside, the host
    secret is nowhere. Returns the flattened view."""
    check_invariants(img)
    own = set()
    for layer in img.layers[first_own:]:
        for m in layer:
            own.add(m.name.strip("/"))
            parts = m.name.strip("/").split("/")
            assert ".." not in parts, f"layer member escapes: {m.name!r}"
            assert not m.name.startswith("/"), f"absolute layer member: {m.name!r}"
            if m.type == "hardlink":
                assert ".." not in m.linkname.split("/") and not m.linkname.startswith("/"), \
                    f"hardlink {m.name!r} -> {m.linkname!r} escapes"
            assert m.data is None or SECRET not in m.data, f"host secret leaked into {m.name!r}"
    fs = flatten(img.layers)
    for path, m in fs.items():
        if path not in own:
            continue
        parts = path.split("/")
        for i in range(1, len(parts)):
            anc = fs.get("/".join(parts[:i]))
            assert anc is None or anc.type == "dir", f"{path!r} lies below {anc.type} {anc.name!r}"
        if m.type == "hardlink":
            assert m.linkname in fs, f"hardlink {path!r} -> {m.linkname!r} has no target in the image"
    return fs


def assert_clean_failure(res, codes: tuple[int, ...] = (1,)) -> None:
    assert res.rc in codes, f"exit {res.rc} (want {codes})\n{res.err}"
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err
    assert res.err.strip(), "a failure must say why"


def assert_store_intact(store: Path, before: dict[str, str]) -> None:
    """Every tag in ``before`` (name -> manifest digest) still points at a sound image."""
    for name, digest in before.items():
        img = read_layout(store, name)
        assert img.manifest_digest == digest, f"{name} moved"
        check_invariants(img)
    listed = run_cli(["images"], store).ok().out
    for name in before:
        repo = name.rsplit(":", 1)[0].removeprefix("docker.io/library/")
        assert repo in listed, listed


def tags(store: Path) -> dict[str, str]:
    index = json.loads((store / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
            for m in index["manifests"] if "org.opencontainers.image.ref.name" in (m.get("annotations") or {})}


def victim(box: Sandbox) -> dict[str, str]:
    """Tag a good image ``victim:latest`` and return the store's tags."""
    ctx = box.root / "victim-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost/busybox:latest\nCOPY v.txt /v.txt\n")
    (ctx / "v.txt").write_text("victim\n")
    run_cli(["--progress=quiet", "-t", "victim:latest", str(ctx)], box.store).ok()
    return tags(box.store)


def build(box: Sandbox, ctx: Path, *extra: str):
    return run_cli_subprocess(["--progress=plain", "-t", "victim:latest", *extra,
                               "--output", f"type=oci,dest={box.root / 'oci'},tar=false",
                               "--output", f"type=local,dest={box.out}", str(ctx)], box.store)


def check_outcome(box: Sandbox, res, before_fp, before_tags, first_own: int = 0,
                  codes: tuple[int, ...] = (1,)) -> dict[str, object] | None:
    """Common verdict: host untouched; clean failure (exit code in ``codes``) with the store
    intact, or a sane image (whose type=local export stays inside ``box.out``). Returns the
    flattened image on success."""
    assert box.fingerprint() == before_fp, "a host file outside the image root changed"
    assert not host_escapes(), f"written on the host: {host_escapes()}"
    if res.rc != 0:
        assert_clean_failure(res, codes)
        assert_store_intact(box.store, before_tags)
        return None
    assert "Traceback" not in res.err
    img = read_layout(box.root / "oci", "latest")
    fs = assert_inside(img, first_own)
    for p in box.out.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert p.read_bytes() != SECRET, f"host secret copied to {p}"
    return fs


# ---- 1. COPY into paths that are symlinks in the image ----------------------------------------

def test_copy_into_symlinks_stays_in_root(box: Sandbox) -> None:
    base = box.root / "base-ctx"
    rootfs = base / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("image\n")
    os.symlink("/etc", rootfs / "app")                     # absolute, into the image's /etc
    os.symlink("../../../../../../../../etc", rootfs / "rel")  # climbs above / : stays at /etc
    os.symlink(str(box.sentinel), rootfs / "sent")         # absolute host path, dangling inside
    os.symlink("../" * 12 + str(box.sentinel).lstrip("/"), rootfs / "relsent")
    (base / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    run_cli(["--progress=quiet", "-t", "hostile-base:latest", str(base)], box.store).ok()
    before_tags = tags(box.store)
    fp = box.fingerprint()

    ctx = box.root / "ctx"
    ctx.mkdir()
    name = f"payload-{TOKEN}.txt"
    (ctx / name).write_text("payload\n")
    (ctx / "Dockerfile").write_text(
        "FROM hostile-base:latest\n"
        f"COPY {name} /app/\n"
        f"COPY {name} /rel/rel-{name}\n"
        f"COPY {name} /app/sub/deeper-{name}\n"
        "WORKDIR /rel/wd\n"
        f"COPY {name} ./in-wd-{name}\n")
    res = build(box, ctx)
    assert res.rc == 0, res.err  # these symlinks resolve inside the image: the build must work
    fs = check_outcome(box, res, fp, before_tags)
    assert fs is not None
    assert f"etc/{name}" in fs and f"etc/rel-{name}" in fs and f"etc/sub/deeper-{name}" in fs, sorted(fs)
    assert fs["etc/wd"].type == "dir" and f"etc/wd/in-wd-{name}" in fs, sorted(fs)
    assert fs["app"].type == "symlink" and fs["app"].linkname == "/etc"
    assert (box.out / "etc" / name).is_file()
    assert not (Path("/etc") / name).exists()

    # through symlinks pointing at a host directory (dangling inside the image)
    (ctx / "Dockerfile").write_text(
        "FROM hostile-base:latest\n"
        f"COPY {name} /sent/\n"
        f"COPY {name} /relsent/rs-{name}\n")
    res = build(box, ctx)
    fs = check_outcome(box, res, fp, before_tags)
    if fs is not None:
        inside = str(box.sentinel).lstrip("/")
        assert f"{inside}/{name}" in fs and f"{inside}/rs-{name}" in fs, sorted(fs)
    assert not (box.sentinel / name).exists()


# ---- 2. ADD of hostile archives ---------------------------------------------------------------

def _tar(members: list[tuple[str, str, bytes | str]]) -> bytes:
    """Members as (kind, name, data|linkname): kind file|dir|symlink|hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1600000000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            elif kind in ("symlink", "hardlink"):
                ti.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                ti.linkname, ti.mode = str(data), 0o777 if kind == "symlink" else 0o644
                tar.addfile(ti)
            else:
                raw = data if isinstance(data, bytes) else str(data).encode()
                ti.size, ti.mode = len(raw), 0o644
                tar.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def _archives(box: Sandbox) -> dict[str, list[tuple[str, str, bytes | str]]]:
    s = str(box.sentinel)
    up = "../" * 12
    return {
        "dotdot": [("file", "ok.txt", b"ok\n"), ("file", f"../../../../../../tmp/dd-{TOKEN}.txt", b"x\n"),
                   ("file", f"{up}{s.lstrip('/')}/dd-{TOKEN}.txt", b"x\n")],
        "absolute": [("file", f"/tmp/abs-{TOKEN}.txt", b"abs\n"), ("file", f"{s}/abs-{TOKEN}.txt", b"abs\n")],
        "symlink-then-file": [("symlink", "s", s), ("file", f"s/pwned-{TOKEN}.txt", b"pwned\n")],
        "relsymlink-then-file": [("symlink", "r", up.rstrip("/")),
                                 ("file", f"r{s}/rpwned-{TOKEN}.txt", b"pwned\n")],
        "symlink-then-dir-then-file": [("symlink", "d", "/tmp"), ("dir", "d/x", b""),
                                       ("file", f"d/x/dpwned-{TOKEN}.txt", b"pwned\n")],
        "hardlink-escape": [("hardlink", "h", f"{up}{s.lstrip('/')}/secret.txt")],
        "hardlink-absolute": [("hardlink", "ha", f"{s}/secret.txt")],
        "hardlink-via-symlink": [("symlink", "l", s), ("hardlink", "hl", "l/secret.txt")],
    }


ARCHIVE_KINDS = ["dotdot", "absolute", "symlink-then-file", "relsymlink-then-file",
                 "symlink-then-dir-then-file", "hardlink-escape", "hardlink-absolute", "hardlink-via-symlink"]


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_add_hostile_archive(box: Sandbox, kind: str) -> None:
    before_tags = victim(box)
    fp = box.fingerprint()
    ctx = box.root / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar.gz").write_bytes(gzip.compress(_tar(_archives(box)[kind]), mtime=0))
    (ctx / "Dockerfile").write_text("FROM localhost/busybox:latest\nADD evil.tar.gz /dest/\n")
    res = build(box, ctx)
    fs = check_outcome(box, res, fp, before_tags)
    if fs is None:
        return
    assert tags(box.store)["docker.io/library/victim:latest"] != before_tags["docker.io/library/victim:latest"]
    if kind == "absolute":  # a leading "/" is relative to the destination
        assert f"dest/tmp/abs-{TOKEN}.txt" in fs, sorted(p for p in fs if p.startswith("dest"))
    if kind == "symlink-then-file":  # followed inside the image: /dest/s -> <sentinel> in the image
        inside = str(box.sentinel).lstrip("/")
        assert f"{inside}/pwned-{TOKEN}.txt" in fs or f"dest/s/pwned-{TOKEN}.txt" not in fs


def test_add_hostile_archive_keeps_store(box: Sandbox) -> None:
    """A refused archive leaves no tag behind and the busybox base still sound."""
    before = tags(box.store)
    ctx = box.root / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(_tar([("file", "../../../escape.txt", b"x")]))
    (ctx / "Dockerfile").write_text("FROM localhost/busybox:latest\nADD evil.tar /dest/\n")
    res = run_cli_subprocess(["--progress=plain", "-t", "evil:latest", str(ctx)], box.store)
    if res.rc != 0:
        assert_clean_failure(res)
        assert "escape" in res.err or ".." in res.err, res.err  # names the offending member
        assert tags(box.store) == before
    assert_store_intact(box.store, {BASE_TAG: before[BASE_TAG]})


# ---- 3. a hand-made hostile base layer (FROM oci-layout://) ------------------------------------

def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def write_layout(dest: Path, layers: list[bytes]) -> None:
    """An OCI layout with one image tagged ``v1`` made of ``layers`` (uncompressed tars, gzipped
    here), written by hand (no builder code)."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        d = _sha(data)
        (blobs / d.split(":")[1]).write_bytes(data)
        return d

    descs, diff_ids = [], []
    for tar in layers:
        gz = gzip.compress(tar, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
        diff_ids.append(_sha(tar))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": descs}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": put(manifest), "size": len(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def _base_layers(box: Sandbox) -> dict[str, list[tuple[str, str, bytes | str]]]:
    arch = _archives(box)
    return {
        "dotdot": arch["dotdot"],
        "absolute": arch["absolute"],
        "symlink-then-file": arch["symlink-then-file"],
        "hardlink-escape": arch["hardlink-escape"],
        "hardlink-via-symlink": arch["hardlink-via-symlink"],
        "wh-dotdot": [("file", ".wh...", b"")],                      # whiteout of ".."
        "wh-dot": [("file", "keep/.wh..", b"")],                     # whiteout of "."
        "wh-empty": [("file", "keep/.wh.", b"")],                    # whiteout of ""
        "wh-escape": [("file", "keep/.wh.../../sentinel", b"")],
        "wh-through-symlink": [("symlink", "s", str(box.sentinel)), ("file", "s/.wh.secret.txt", b"")],
        "wh-real": [("file", "keep/.wh.file.txt", b""), ("file", "other/.wh..wh..opq", b"")],
    }


BASE_KINDS = ["dotdot", "absolute", "symlink-then-file", "hardlink-escape", "hardlink-via-symlink",
              "wh-dotdot", "wh-dot", "wh-empty", "wh-escape", "wh-through-symlink", "wh-real"]


@pytest.mark.parametrize("kind", BASE_KINDS)
def test_hostile_base_layer(box: Sandbox, kind: str) -> None:
    before_tags = victim(box)
    fp = box.fingerprint()
    lower = _tar([("dir", "keep", b""), ("file", "keep/file.txt", b"kept\n"), ("dir", "other", b""),
                  ("file", "other/o.txt", b"o\n"), ("dir", "etc", b""), ("file", "etc/passwd", b"root:x:0:0::/:/\n")])
    layout = box.root / "layout"
    write_layout(layout, [lower, _tar(_base_layers(box)[kind])])
    ctx = box.root / "ctx"
    ctx.mkdir()
    (ctx / "p.txt").write_text("p\n")
    (ctx / "Dockerfile").write_text(f"FROM oci-layout://{layout}:v1\nCOPY p.txt /keep/p.txt\n")
    res = build(box, ctx)
    # a hostile base image is bad input from an image source: exit 1 (build input) or 4 (image
    # source/store, DESIGN.md's exit codes) are both accepted, with a clear message
    fs = check_outcome(box, res, fp, before_tags, first_own=2, codes=(1, 4))
    if fs is None:
        return
    assert "keep/p.txt" in fs, sorted(fs)
    assert (box.out / "keep" / "p.txt").is_file()
    if kind == "wh-real":  # legitimate whiteouts are applied, nothing else removed
        assert "keep/file.txt" not in fs and "other/o.txt" not in fs and "other" in fs
        assert not (box.out / "keep" / "file.txt").exists() and not (box.out / "other" / "o.txt").exists()
        assert not list(box.out.rglob(".wh.*"))
    if kind in ("wh-dotdot", "wh-dot", "wh-empty", "wh-escape"):  # ignored: nothing lost
        assert "keep/file.txt" in fs and "etc/passwd" in fs


def test_hostile_failure_message_names_member(box: Sandbox) -> None:
    """A refused base layer is reported naming the offending member, without a traceback."""
    layout = box.root / "layout"
    write_layout(layout, [_tar([("file", "../../escape-me.txt", b"x")])])
    ctx = box.root / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM oci-layout://{layout}:v1\nCMD [\"x\"]\n")
    res = run_cli_subprocess(["--progress=plain", "--output", f"type=local,dest={box.out}", str(ctx)], box.store)
    assert not host_escapes()
    assert not (box.outside / "a" / "escape-me.txt").exists() and not (box.outside / "escape-me.txt").exists()
    if res.rc != 0:
        assert "Traceback" not in res.err and "internal error" not in res.err, res.err
        assert "escape-me.txt" in res.err, res.err

