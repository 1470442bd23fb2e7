"""pybuild's outputs used by the real consumers: ``docker load`` + ``docker run`` (by name and by
the image ID pybuild printed), ``podman load`` + ``podman run``, and ``skopeo copy`` into
``docker-daemon:``. The dockerd is the session's isolated one (tests/peers.py); podman gets a
private store. Every image runs with no network.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from buildutil import BASE_TAG, busybox_store, run_cli
from peers import Dockerd, PeerBase, Podman, _run

pytestmark = [pytest.mark.root, pytest.mark.overlay]

TAG = "localhost/consumer:1"
EXPECTED = "hello consumer\nbuilt by RUN\nhi from ENV\n"


@dataclass(frozen=True)
class Built:
    docker_tar: Path   # --output type=docker
    oci_tar: Path      # --output type=oci
    image_id: str      # what pybuild -q printed (and --iidfile holds)
    manifest_digest: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("consumer")
    store = busybox_store(tmp)
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello consumer\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE_TAG}\n"
        "COPY hello.txt /app/hello.txt\n"
        "RUN echo 'built by RUN' > /app/built\n"
        "ENV GREETING='hi from ENV'\n"
        "WORKDIR /app\n"
        'CMD ["/bin/sh", "-c", "cat hello.txt built && echo \\"$GREETING\\""]\n')
    out = tmp / "out"
    res = run_cli(["-q", "-t", TAG, "--iidfile", str(tmp / "iid"), "--metadata-file", str(tmp / "meta.json"),
                   "--output", f"type=docker,dest={out}/docker.tar", "--output", f"type=oci,dest={out}/oci.tar",
                   str(ctx)], store).ok()
    image_id = res.out.strip()
    assert (tmp / "iid").read_text() == image_id
    meta = json.loads((tmp / "meta.json").read_text())
    assert meta["containerimage.config.digest"] == image_id  # the image ID is the config digest
    return Built(out / "docker.tar", out / "oci.tar", image_id, meta["containerimage.digest"])


def _tags_and_ids(lines: str) -> dict[str, str]:
    pairs = (line.split() for line in lines.splitlines() if line.strip())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


@pytest.mark.dockerd
def test_docker_load_then_run_by_name_and_by_id(dockerd: Dockerd, dockerd_base: PeerBase, built: Built) -> None:
    loaded = dockerd.load(built.docker_tar)
    assert f"Loaded image: {TAG}" in loaded, loaded
    images = dockerd.docker("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert _tags_and_ids(images)[TAG] == built.image_id, images  # docker's IMAGE ID = what pybuild printed
    by_name = dockerd.docker("run", "--rm", "--network", "none", TAG).stdout
    by_id = dockerd.docker("run", "--rm", "--network", "none", built.image_id).stdout
    by_short_id = dockerd.docker("run", "--rm", "--network", "none", built.image_id[7:19]).stdout
    assert by_name == by_id == by_short_id == EXPECTED
    inspect = json.loads(dockerd.docker("image", "inspect", built.image_id).stdout)[0]
    assert inspect["Id"] == built.image_id and inspect["RepoTags"] == [TAG]
    assert inspect["Config"]["WorkingDir"] == "/app" and "GREETING=hi from ENV" in inspect["Config"]["Env"]
    # the busybox base pybuild wrote is shared, not loaded twice
    assert inspect["RootFS"]["Layers"][0] == json.loads(
        dockerd.docker("image", "inspect", dockerd_base.tag).stdout)[0]["RootFS"]["Layers"][0]


@pytest.fixture
def podman() -> Iterator[Podman]:
    with Podman(Path(tempfile.mkdtemp(prefix="pbp-"))) as p:
        yield p


@pytest.mark.podman
def test_podman_load_then_run(podman: Podman, built: Built) -> None:
    loaded = podman.run("load", "-i", str(built.docker_tar)).stdout
    assert TAG in loaded, loaded
    images = podman.run("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert _tags_and_ids(images)[TAG] == built.image_id, images
    by_name = podman.run_container(TAG).stdout
    by_id = podman.run_container(built.image_id.removeprefix("sha256:")).stdout
    assert by_name == by_id == EXPECTED
    # the OCI archive output is accepted as well
    podman.run("load", "-i", str(built.oci_tar))
    assert podman.run_container(built.image_id[7:19]).stdout == EXPECTED


@pytest.mark.dockerd
@pytest.mark.interop
def test_skopeo_copy_into_docker_daemon(dockerd: Dockerd, built: Built) -> None:
    ref = "localhost/skopeo-copied:2"
    _run(["skopeo", "copy", "-q", "--dest-daemon-host", dockerd.host, f"oci-archive:{built.oci_tar}",
          f"docker-daemon:{ref}"], None, None, True, 300)
    inspect = json.loads(dockerd.docker("image", "inspect", ref).stdout)[0]
    assert inspect["Id"] == built.image_id  # skopeo keeps the config bytes: the same image ID
    assert dockerd.docker("run", "--rm", "--network", "none", ref).stdout == EXPECTED
    # and from the docker archive (skopeo 1.9's docker-daemon: ignores DOCKER_HOST: the flag names the socket)
    _run(["skopeo", "copy", "-q", "--dest-daemon-host", dockerd.host, f"docker-archive:{built.docker_tar}",
          "docker-daemon:localhost/skopeo-copied:3"], None, None, True, 300)
    assert dockerd.docker("run", "--rm", "--network", "none", "localhost/skopeo-copied:3").stdout == EXPECTED
