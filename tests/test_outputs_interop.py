"""What pybuild writes, read by the real tools: skopeo and umoci (marked interop)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.oci.layoutdir import OciLayoutDir
from builder.store.layout import Store
from builder.transfer import copy_image, export_image, parse_output
from builder.validate import validate_image
from ocireader import check_invariants, read_layout
from test_store import put_image

pytestmark = pytest.mark.interop

LAYERS = [
    {"etc/": None, "etc/motd": b"welcome\n", "usr/": None, "usr/bin/": None, "usr/bin/tool": b"#!/bin/sh\n",
     "old/": None, "old/file": b"x"},
    {"etc/motd": b"changed\n", ".wh.old": b"", "usr/bin/alias": "->tool"},
]


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def image(tmp_path: Path) -> tuple[Store, Digest]:
    store = Store(tmp_path / "store")
    return store, put_image(store, LAYERS, ("app:1",), cmd=("/usr/bin/tool",))


def test_skopeo_inspects_oci_dir_and_store(image: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = image
    out = tmp_path / "oci"
    export_image(store, "app:1", parse_output(f"type=oci,dest={out},tar=false"))
    info = json.loads(run("skopeo", "inspect", f"oci:{out}:1"))
    assert info["Digest"] == str(d)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert len(info["Layers"]) == 2
    raw = json.loads(run("skopeo", "inspect", "--config", f"oci:{out}:1"))
    assert raw["config"]["Cmd"] == ["/usr/bin/tool"]
    # the store itself is an OCI layout skopeo reads by full name
    info = json.loads(run("skopeo", "inspect", f"oci:{store.root}:docker.io/library/app:1"))
    assert info["Digest"] == str(d)


def test_skopeo_inspects_oci_archive(image: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = image
    out = tmp_path / "img.tar"
    export_image(store, "app:1", parse_output(f"type=oci,dest={out}"))
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out}:1"))
    assert info["Digest"] == str(d)


def test_umoci_unpacks_what_we_wrote(image: tuple[Store, Digest], tmp_path: Path) -> None:
    store, _ = image
    out = tmp_path / "oci"
    export_image(store, "app:1", parse_output(f"type=oci,dest={out},tar=false"))
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{out}:1", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "etc/motd").read_bytes() == b"changed\n"
    assert (rootfs / "usr/bin/alias").is_symlink()
    assert not (rootfs / "old").exists()
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/usr/bin/tool"]


def test_skopeo_inspects_docker_archive(image: tuple[Store, Digest], tmp_path: Path) -> None:
    store, _ = image
    out = tmp_path / "docker.tar"
    export_image(store, "app:1", parse_output(f"type=docker,dest={out}"))
    info = json.loads(run("skopeo", "inspect", f"docker-archive:{out}"))
    assert info["Architecture"] == "amd64"
    assert len(info["Layers"]) == 2
    # skopeo finds the image by the RepoTags of manifest.json
    tagged = json.loads(run("skopeo", "inspect", f"docker-archive:{out}:app:1"))
    assert tagged["Layers"] == info["Layers"]
    cfg = json.loads(run("skopeo", "inspect", "--config", f"docker-archive:{out}"))
    assert cfg["rootfs"]["diff_ids"] == store.image("app:1").config.rootfs.diff_ids
    # skopeo converts our docker archive to an OCI layout; it must still be a sound image
    run("skopeo", "copy", f"docker-archive:{out}", f"oci:{tmp_path / 'conv'}:latest")
    img = read_layout(tmp_path / "conv", "latest")
    check_invariants(img)


def test_we_read_what_skopeo_wrote(image: tuple[Store, Digest], tmp_path: Path) -> None:
    store, d = image
    src = tmp_path / "ours"
    export_image(store, "app:1", parse_output(f"type=oci,dest={src},tar=false"))
    run("skopeo", "copy", f"oci:{src}:1", f"oci:{tmp_path / 'theirs'}:latest")
    back = Store(tmp_path / "back")
    got = copy_image(OciLayoutDir(tmp_path / "theirs"), "latest", back, ("again",))
    validate_image(back, got)
    assert back.image("again").config.rootfs.diff_ids == store.image("app:1").config.rootfs.diff_ids


def test_zstd_output_is_accepted_by_skopeo(image: tuple[Store, Digest], tmp_path: Path) -> None:
    store, _ = image
    out = tmp_path / "z"
    export_image(store, "app:1", parse_output(f"type=oci,dest={out},tar=false,compression=zstd"))
    info = json.loads(run("skopeo", "inspect", "--raw", f"oci:{out}:1"))
    assert {layer_["mediaType"] for layer_ in info["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    check_invariants(read_layout(out, "1"))
