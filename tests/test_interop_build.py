"""What `pybuild` builds, accepted by the real tools: skopeo (OCI dir, OCI archive, docker
archive), umoci (unpack) and runc (runs the image's command). Marked ``interop``: they skip
locally without the tools and always run in CI. runc is used, not crun (crun 1.8 refuses hosts
with hybrid cgroups)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from buildutil import BUSYBOX, busybox_store, run_cli
from ocireader import check_invariants, read_layout

pytestmark = pytest.mark.interop


def run(*argv: str, timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, str]:
    """An image on the busybox base with metadata, exported as OCI dir, OCI tar and docker tar
    under ``tmp_path/out``; returns (out dir, manifest digest)."""
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(
        "FROM localhost/busybox:latest\n"
        "ENV GREETING=hi\n"
        "WORKDIR /srv\n"
        "COPY --chown=nobody:nogroup app/ /srv/app/\n"
        "EXPOSE 8080\n"
        "LABEL org.example=yes\n"
        "USER nobody\n"
        'CMD ["/bin/sh", "-c", "cat app/hello.txt"]\n')
    out = tmp_path / "out"
    meta = tmp_path / "meta.json"
    run_cli(["--progress=quiet", "-t", "interop/app:v1", "--metadata-file", str(meta),
             "--output", f"type=oci,dest={out}/oci,tar=false",
             "--output", f"type=oci,dest={out}/oci.tar",
             "--output", f"type=docker,dest={out}/docker.tar", str(ctx)], store).ok()
    return out, json.loads(meta.read_text())["containerimage.digest"]


def test_skopeo_inspect_oci_dir(built: tuple[Path, str]) -> None:
    out, digest = built
    check_invariants(read_layout(out / "oci", "v1"))
    info = json.loads(run("skopeo", "inspect", f"oci:{out / 'oci'}:v1"))
    assert info["Digest"] == digest
    assert info["Os"] == "linux" and info["Architecture"]
    assert len(info["Layers"]) == 3  # base, WORKDIR, COPY
    assert info["Labels"] == {"org.example": "yes"}
    assert "GREETING=hi" in info["Env"]
    cfg = json.loads(run("skopeo", "inspect", "--config", f"oci:{out / 'oci'}:v1"))
    assert cfg["config"]["Cmd"] == ["/bin/sh", "-c", "cat app/hello.txt"]
    assert cfg["config"]["User"] == "nobody" and cfg["config"]["WorkingDir"] == "/srv"
    assert cfg["config"]["ExposedPorts"] == {"8080/tcp": {}}


def test_skopeo_inspect_archives(built: tuple[Path, str]) -> None:
    out, digest = built
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out / 'oci.tar'}:v1"))
    assert info["Digest"] == digest
    info = json.loads(run("skopeo", "inspect", f"docker-archive:{out / 'docker.tar'}"))
    assert len(info["Layers"]) == 3  # base, WORKDIR, COPY
    assert "GREETING=hi" in info["Env"]
    # skopeo can copy it on, and the copy keeps the content (same diff_ids)
    run("skopeo", "copy", "-q", f"docker-archive:{out / 'docker.tar'}", f"oci:{out / 'copied'}:c")
    copied = read_layout(out / "copied", "c")
    check_invariants(copied)
    original = read_layout(out / "oci", "v1")
    assert copied.config["rootfs"]["diff_ids"] == original.config["rootfs"]["diff_ids"]


def test_umoci_unpack(built: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = built
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{out / 'oci'}:v1", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "srv" / "app" / "hello.txt").read_text() == "hello\n"
    st = (rootfs / "srv" / "app" / "hello.txt").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert (rootfs / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/sh", "-c", "cat app/hello.txt"]
    assert spec["process"]["cwd"] == "/srv"
    assert "GREETING=hi" in spec["process"]["env"]
    assert spec["process"]["user"]["uid"] == 65534


def _runc(bundle: Path, state: Path) -> str:
    """Run the bundle with runc (terminal off), return its stdout; the container is removed."""
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"pybuild-test-{uuid.uuid4().hex[:8]}"
    try:
        return run("runc", "--root", str(state), "run", "--bundle", str(bundle), name, timeout=60)
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", name], capture_output=True)


@pytest.mark.root
def test_runc_runs_scratch_busybox_cmd(tmp_path: Path) -> None:
    """FROM scratch + a static busybox + CMD: umoci unpacks it and runc runs the CMD, with the
    image's Env, WorkingDir and User applied."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy(BUSYBOX, ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "ENV GREETING=hello-from-runc\n"
        "WORKDIR /work/dir\n"
        "USER 1234:5678\n"
        'ENTRYPOINT ["/bin/busybox"]\n'
        'CMD ["sh", "-c", "echo $GREETING; /bin/busybox pwd; /bin/busybox id -u; /bin/busybox id -g"]\n')
    out = tmp_path / "oci"
    run_cli(["--progress=quiet", "-t", "runme:1", "--output", f"type=oci,dest={out},tar=false", str(ctx)],
            tmp_path / "store").ok()
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{out}:1", str(bundle))
    output = _runc(bundle, tmp_path / "runc-state")
    assert output.splitlines() == ["hello-from-runc", "/work/dir", "1234", "5678"]
