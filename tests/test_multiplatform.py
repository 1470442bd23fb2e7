"""Multi-platform builds (issue 14): an OCI index per build, RUN under QEMU emulation, the clear
errors without it, the cross-compile pattern, per-platform outputs, caches and pulls.

Every pybuild run is a child process (tests/runutil.py). The two-platform busybox base and the
binfmt_misc set-up come from tests/multiarch.py; images are read with tests/ocireader.py and
by skopeo and umoci.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from multiarch import (MULTI_TAG as MULTI, NO_HANDLER_PLATFORM, PLATFORMS, assert_no_handler, ensure_aarch64_handler,
                       multi_store)
from ocireader import check_invariants, flatten, read_layout
from registry_fixture import registry  # noqa: F401  (fixture)
from runutil import BASE_TAG, assert_clean, build, fingerprint, make_context, new_store, pybuild, tag_digest

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture(scope="module")
def emulation() -> None:
    """binfmt_misc mounted and QEMU's aarch64 handler registered (left registered)."""
    ensure_aarch64_handler()


def _run(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 0, f"{argv}: {p.stderr}"
    return p.stdout


def _file(img: object, path: str) -> bytes:
    member = flatten(img.layers)[path]  # type: ignore[attr-defined]
    assert member.data is not None, path
    return member.data


def _index_platforms(raw: dict) -> list[str]:
    return [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in raw["manifests"]]


RUN_DF = """\
FROM localhost/busybox-multi:latest
ARG TARGETPLATFORM
ARG BUILDPLATFORM
RUN uname -m > /arch && echo "$TARGETPLATFORM built on $BUILDPLATFORM" > /args && cat /arch
"""


@pytest.mark.emulation
@pytest.mark.interop
@pytest.mark.registry
def test_two_platforms_with_run_make_an_index(tmp_path: Path, emulation: None, registry) -> None:  # noqa: F811
    root = multi_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", RUN_DF)
    out = tmp_path / "oci"
    r = build(ctx, root, "--platform", PLATFORMS, "--output", f"type=oci,dest={out},tar=false",
              tag="localhost/app:1").ok()
    assert "linux/arm64 | aarch64" in r.err and "linux/amd64 | x86_64" in r.err, r.err
    # skopeo sees an index of two manifests with the right platforms
    raw = json.loads(_run("skopeo", "inspect", "--raw", f"oci:{out}:1"))
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert _index_platforms(raw) == ["linux/amd64", "linux/arm64"]
    # the tag in the store points at the same index
    index_digest = tag_digest(root, "localhost/app:1")
    assert index_digest is not None
    top = json.loads(_run("skopeo", "inspect", "--raw", f"oci:{root}:localhost/app:1"))
    assert top == raw
    # each platform's RUN ran where it says: natively or under QEMU
    for plat, machine in (("linux/amd64", b"x86_64\n"), ("linux/arm64", b"aarch64\n")):
        img = read_layout(out, "localhost/app:1", platform=plat)
        check_invariants(img)
        assert (img.config["os"], img.config["architecture"]) == tuple(plat.split("/"))
        assert _file(img, "arch") == machine
        assert _file(img, "args") == f"{plat} built on linux/amd64\n".encode()
    # skopeo picks the arm64 image; umoci unpacks it
    _run("skopeo", "copy", "--override-arch", "arm64", f"oci:{out}:1", f"oci:{tmp_path / 'arm'}:latest")
    bundle = tmp_path / "bundle"
    _run("umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'arm'}:latest", str(bundle))
    assert (bundle / "rootfs" / "arch").read_text() == "aarch64\n"
    assert json.loads(_run("skopeo", "inspect", "--config", f"oci:{tmp_path / 'arm'}:latest"))["architecture"] == "arm64"
    # pybuild run --platform picks a manifest
    assert pybuild(["run", "--platform", "linux/arm64", "localhost/app:1", "cat", "/arch"], root).ok().out == "aarch64\n"
    # push the index, pull each platform back into a fresh store: same digests
    name = f"{registry.host}/multi/app:1"
    build(ctx, root, "--platform", PLATFORMS, "--push", tag=name).ok()
    pushed = json.loads(_run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"))
    assert pushed == raw
    fresh = tmp_path / "fresh"
    for entry in raw["manifests"]:
        plat = f"{entry['platform']['os']}/{entry['platform']['architecture']}"
        got = pybuild(["pull", "--platform", plat, name], fresh).ok().out.strip()
        assert got == entry["digest"], plat
    # "arm64/v8" and "aarch64" name the same platform (containerd's normalisation)
    arm = raw["manifests"][1]["digest"]
    for alias in ("linux/arm64/v8", "linux/aarch64"):
        assert pybuild(["pull", "--platform", alias, name], fresh).ok().out.strip() == arm
    assert_clean(root)


def test_foreign_run_without_handler_fails_before_running(tmp_path: Path) -> None:
    assert_no_handler()
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY f /f\nRUN true\n", {"f": "x"})
    before = fingerprint(root / "index.json")
    r = build(ctx, root, "--platform", f"linux/amd64,{NO_HANDLER_PLATFORM}")
    assert r.rc == 3, r
    assert "Traceback" not in r.err
    assert f"Dockerfile:3: RUN true: cannot run {NO_HANDLER_PLATFORM} binaries" in r.err
    assert "no binfmt_misc handler for s390x" in r.err and "/usr/lib/binfmt.d/qemu-s390x.conf" in r.err
    assert "COPY" not in r.err  # failed before any step ran, on every platform
    assert fingerprint(root / "index.json") == before
    assert_clean(root)


def test_copy_only_foreign_stage_builds_without_emulation(tmp_path: Path) -> None:
    assert_no_handler()
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n", {"f": "data"})
    build(ctx, root, "--platform", f"{NO_HANDLER_PLATFORM},linux/amd64", "--output",
          f"type=oci,dest={tmp_path / 'o'},tar=false", tag="localhost/copy:1").ok()
    img = read_layout(tmp_path / "o", "localhost/copy:1", platform=NO_HANDLER_PLATFORM)
    check_invariants(img)
    assert img.config["architecture"] == "s390x"
    assert _file(img, "f-s390x") == b"data"
    # running it needs emulation too: refused before anything runs, with the fix
    r = pybuild(["run", "--platform", NO_HANDLER_PLATFORM, "localhost/copy:1", "/bin/true"], root)
    assert r.rc == 3 and "cannot run s390x binaries" in r.err and "qemu-s390x.conf" in r.err, r
    assert "Traceback" not in r.err
    assert_clean(root)


CROSS_DF = """\
FROM --platform=$BUILDPLATFORM localhost/busybox:latest AS build
ARG TARGETOS
ARG TARGETARCH
RUN mkdir /out && echo "for $TARGETOS/$TARGETARCH on $(uname -m)" > /out/app
FROM scratch
COPY --from=build /out/app /app
"""


def test_cross_compile_pattern_needs_no_emulation(tmp_path: Path) -> None:
    assert_no_handler()
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", CROSS_DF)
    out = tmp_path / "o"
    build(ctx, root, "--platform", f"linux/amd64,{NO_HANDLER_PLATFORM}", "--output",
          f"type=oci,dest={out},tar=false", tag="localhost/cross:1").ok()
    for plat in ("linux/amd64", NO_HANDLER_PLATFORM):
        img = read_layout(out, "localhost/cross:1", platform=plat)
        assert img.config["architecture"] == plat.split("/")[1]
        assert _file(img, "app") == f"for {plat} on x86_64\n".encode()
    assert_clean(root)


def test_single_platform_base_of_another_platform_is_an_error(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", f"FROM {BASE_TAG}\nCOPY f /f\n", {"f": "x"})
    before = fingerprint(root / "index.json")
    r = build(ctx, root, "--platform", "linux/arm64")
    assert r.rc == 1, r
    assert "Traceback" not in r.err
    assert "Dockerfile:1:1: image localhost/busybox:latest is for platform linux/amd64, " \
           "not the wanted linux/arm64" in r.err, r.err
    assert fingerprint(root / "index.json") == before
    # the same base for its own platform, spelled another way, is fine
    build(ctx, root, "--platform", "linux/x86_64", tag=None).ok()


def test_multi_platform_outputs_per_platform(tmp_path: Path) -> None:
    root = multi_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox-multi:latest\nARG TARGETARCH\n"
                                         "COPY f /from-$TARGETARCH\n", {"f": "x"})
    # docker archives hold one platform: refused before building, as buildx does
    r = build(ctx, root, "--platform", PLATFORMS, "--output", f"type=docker,dest={tmp_path / 'd.tar'}")
    assert r.rc == 2 and "docker exporter does not currently support exporting manifest lists" in r.err, r
    assert not (tmp_path / "d.tar").exists()
    # local: one directory per platform
    build(ctx, root, "--platform", PLATFORMS, "--output", f"type=local,dest={tmp_path / 'loc'}", tag=None).ok()
    assert sorted(p.name for p in (tmp_path / "loc").iterdir()) == ["linux_amd64", "linux_arm64"]
    assert (tmp_path / "loc" / "linux_arm64" / "from-arm64").read_text() == "x"
    arm_bb = (tmp_path / "loc" / "linux_arm64" / "bin" / "busybox").read_bytes()[:20]
    assert arm_bb[18] == 0xb7  # e_machine EM_AARCH64: the arm64 base's busybox
    # tar: the same, as one archive
    build(ctx, root, "--platform", PLATFORMS, "--output", f"type=tar,dest={tmp_path / 'fs.tar'}", tag=None).ok()
    with tarfile.open(tmp_path / "fs.tar") as tf:
        names = set(tf.getnames())
    assert {"linux_amd64/from-amd64", "linux_arm64/from-arm64", "linux_arm64/bin/busybox"} <= names
    assert not any(n.startswith("linux_amd64/from-arm64") for n in names)
    # the store: images / inspect / history pick a platform
    build(ctx, root, "--platform", PLATFORMS, tag="localhost/m:1").ok()
    info = json.loads(pybuild(["inspect", "--platform", "linux/arm64", "localhost/m:1"], root).ok().out)
    assert info["Config"]["architecture"] == "arm64" and info["Config"]["os"] == "linux"
    assert info["Index"]["Platforms"] == ["linux/amd64", "linux/arm64"]
    assert info["Index"]["Digest"] == tag_digest(root, "localhost/m:1")
    amd = json.loads(pybuild(["inspect", "localhost/m:1"], root).ok().out)  # the host's by default
    assert amd["Config"]["architecture"] == "amd64" and amd["Digest"] != info["Digest"]
    hist = pybuild(["history", "--platform", "linux/arm64", "localhost/m:1"], root).ok().out
    assert "COPY f /from-arm64" in hist or "/from-$TARGETARCH" in hist
    rows = json.loads(pybuild(["images", "--format", "json", "--platform", "linux/arm64"], root).ok().out)
    row = next(r for r in rows if r["repository"] == "localhost/m")
    assert row["digest"] == tag_digest(root, "localhost/m:1")
    assert row["id"] == info["Manifest"]["config"]["digest"].split(":")[1]


def test_cache_keys_and_records_are_per_platform(tmp_path: Path) -> None:
    root = multi_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox-multi:latest\nCOPY f /f\n", {"f": "same"})
    cache = tmp_path / "cache"
    first = build(ctx, root, "--platform", PLATFORMS, "--cache-to", f"type=local,dest={cache},mode=max").ok()
    assert "CACHED" not in first.err
    again = build(ctx, root, "--platform", PLATFORMS).ok()
    assert "[linux/amd64 stage 1/1] COPY f /f  CACHED" in again.err
    assert "[linux/arm64 stage 1/1] COPY f /f  CACHED" in again.err
    # a single-platform build reuses that platform's record
    lone = build(ctx, root, "--platform", "linux/arm64", tag="localhost/lone:1").ok()
    assert "COPY f /f  CACHED" in lone.err
    # the exported cache holds a record per platform: a fresh store hits both
    index = json.loads((cache / "index.json").read_text())
    man = json.loads((cache / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    cfg = json.loads((cache / "blobs" / "sha256" / man["config"]["digest"].split(":")[1]).read_text())
    keys = [r["key"] for r in cfg["records"]]
    assert len(keys) == len(set(keys)) == 2  # one COPY per platform, distinct keys
    fresh = multi_store(tmp_path / "other")
    hit = build(ctx, fresh, "--platform", PLATFORMS, "--cache-from", f"type=local,src={cache}").ok()
    assert "[linux/amd64 stage 1/1] COPY f /f  CACHED" in hit.err
    assert "[linux/arm64 stage 1/1] COPY f /f  CACHED" in hit.err
    assert tag_digest(fresh, "docker.io/library/test:latest") == tag_digest(root, "docker.io/library/test:latest")


def test_base_index_and_automatic_args_agree(tmp_path: Path) -> None:
    root = multi_store(tmp_path)
    df = ("FROM --platform=$BUILDPLATFORM localhost/busybox-multi:latest AS tool\n"
          "FROM localhost/busybox-multi:latest\n"
          "ARG TARGETPLATFORM\nARG TARGETARCH\nARG TARGETVARIANT\nARG BUILDPLATFORM\nARG BUILDARCH\n"
          "COPY --from=tool /bin/busybox /tool-busybox\n"
          "LABEL t=$TARGETPLATFORM a=$TARGETARCH v=x$TARGETVARIANT b=$BUILDPLATFORM ba=$BUILDARCH\n")
    ctx = make_context(tmp_path / "ctx", df)
    out = tmp_path / "o"
    build(ctx, root, "--platform", "linux/amd64,linux/arm64/v8", "--output", f"type=oci,dest={out},tar=false",
          tag="localhost/args:1").ok()
    raw = json.loads(_run("skopeo", "inspect", "--raw", f"oci:{out}:1"))
    assert _index_platforms(raw) == ["linux/amd64", "linux/arm64"]  # arm64/v8 is arm64
    assert all("variant" not in m["platform"] for m in raw["manifests"])
    for plat in ("linux/amd64", "linux/arm64"):
        img = read_layout(out, "localhost/args:1", platform=plat)
        labels = img.config["config"]["Labels"]
        assert labels == {"t": plat, "a": plat.split("/")[1], "v": "x", "b": "linux/amd64", "ba": "amd64"}
        # the build stage ran on the build platform whatever the target: amd64 busybox copied
        assert _file(img, "tool-busybox")[18] == 62  # e_machine EM_X86_64
        # the final stage's base is the target's: its busybox matches the platform
        assert _file(img, "bin/busybox")[18] == (62 if plat == "linux/amd64" else 0xb7)


@pytest.mark.registry
@pytest.mark.interop
def test_push_of_an_index_recompresses_each_platform(tmp_path: Path, registry) -> None:  # noqa: F811
    root = multi_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox-multi:latest\nARG TARGETARCH\n"
                                         "COPY f /f-$TARGETARCH\n", {"f": "x"})
    build(ctx, root, "--platform", PLATFORMS, tag="localhost/z:1").ok()
    name = f"{registry.host}/multi/z:zstd"
    pushed = pybuild(["push", "--compression", "zstd", "localhost/z:1", name], root).ok().out.strip()
    text = _run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}")
    assert pushed == "sha256:" + hashlib.sha256(text.encode()).hexdigest()  # the index as pushed
    raw = json.loads(text)
    assert pushed != tag_digest(root, "localhost/z:1")  # new child manifests, so a new index
    assert _index_platforms(raw) == ["linux/amd64", "linux/arm64"]
    for entry in raw["manifests"]:
        man = json.loads(_run("skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{registry.host}/multi/z@{entry['digest']}"))
        assert {layer["mediaType"] for layer in man["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    # the store's own index is untouched (gzip); the pushed one pulls back per platform
    fresh = tmp_path / "fresh"
    arm = pybuild(["pull", "--platform", "linux/arm64", name], fresh).ok().out.strip()
    assert arm == raw["manifests"][1]["digest"]


@pytest.mark.registry
def test_base_index_from_a_registry_and_an_oci_layout(tmp_path: Path, registry) -> None:  # noqa: F811
    """FROM an index that is not in the store: from a registry and from an OCI layout, each
    platform's build starts from that platform's manifest."""
    root = multi_store(tmp_path)
    layout = tmp_path / "layout"
    base = f"{registry.host}/multi/base:1"
    build(make_context(tmp_path / "b", f"FROM {MULTI}\n"), root, "--platform", PLATFORMS, "--push",
          "--output", f"type=oci,dest={layout},tar=false", tag=base).ok()
    for source in (base, f"oci-layout://{layout}:1"):
        fresh = tmp_path / f"fresh-{len(source)}"
        out = tmp_path / f"out-{len(source)}"
        ctx = make_context(tmp_path / f"c-{len(source)}", f"FROM {source}\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n",
                           {"f": "x"})
        build(ctx, fresh, "--platform", "linux/arm64,linux/amd64", "--output", f"type=local,dest={out}",
              tag=None).ok()
        for plat, machine in (("linux_arm64", 0xb7), ("linux_amd64", 62)):
            assert (out / plat / "bin" / "busybox").read_bytes()[18] == machine, (source, plat)
            assert (out / plat / f"f-{plat.split('_')[1]}").read_text() == "x"
    # a platform the index lacks is an error naming the image and the platforms it has
    r = build(make_context(tmp_path / "bad", f"FROM {base}\n"), tmp_path / "fresh-bad", "--platform", "linux/s390x")
    assert r.rc != 0 and "Traceback" not in r.err
    assert "linux/s390x" in r.err and "linux/amd64" in r.err and "linux/arm64" in r.err, r.err


@pytest.mark.registry
def test_pull_platform_refuses_a_single_platform_image_of_another(tmp_path: Path, registry) -> None:  # noqa: F811
    """``pybuild pull --platform`` agrees with FROM: a single-platform image of another platform
    is an error naming both (and no tag is written); the right platform pulls."""
    root = new_store(tmp_path)
    name = f"{registry.host}/single/bb:1"
    pybuild(["push", BASE_TAG, name], root).ok()
    fresh = tmp_path / "fresh"
    r = pybuild(["pull", "--platform", "linux/arm64", name], fresh)
    assert r.rc == 4 and "Traceback" not in r.err, r
    assert f"image {name} is for platform linux/amd64, not the wanted linux/arm64" in r.err, r.err
    assert tag_digest(fresh, name) is None
    got = pybuild(["pull", "--platform", "linux/amd64", name], fresh).ok().out.strip()
    assert tag_digest(fresh, name) == got
