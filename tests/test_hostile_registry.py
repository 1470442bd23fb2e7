"""Hostile registries: a fault-injecting proxy (tests/faultproxy.py, ``rewrite=``) in front of the
real docker-registry on 127.0.0.1 lies in one way per case. ``pybuild pull`` must refuse with a
registry error naming the problem, keep nothing of the lie (``store check`` clean, no tag), and
stop reading a blob at the size its descriptor gives; a redirect to another host never carries
our credentials there."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultproxy import Answer, FaultProxy
from registry_fixture import registry  # noqa: F401
from registry_images import RawImage, make_image, push
from runutil import pybuild, tag_digest

pytestmark = pytest.mark.registry

REPO = "hostile/img"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EXCESS = 256 << 20  # bytes a lying server sends past a blob's size


@pytest.fixture(scope="module")
def image(registry) -> RawImage:  # noqa: F811
    from builder.registry.destination import RegistryDestination

    img = make_image("hostile-registry", layers=1, layer_bytes=300_000)
    with RegistryDestination(f"{registry.host}/{REPO}", insecure=True) as dest:
        push(dest, img, ("1",))
    return img


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No host credentials: an empty DOCKER_CONFIG."""
    d = tmp_path / "docker-config"
    d.mkdir()
    return {"DOCKER_CONFIG": str(d), "REGISTRY_AUTH_FILE": str(d / "none.json")}


def _manifest_get(a: Answer) -> bool:
    return a.method == "GET" and "/manifests/" in a.path


def _blob_get(a: Answer, digest: str) -> bool:
    return a.method == "GET" and a.path.split("?")[0].endswith("/blobs/" + digest)


def _with_manifest(img: RawImage, change: Callable[[dict], None],
                   content_type: str | None = None) -> Callable[[Answer], Answer | None]:
    """A rewrite serving ``img``'s manifest changed by ``change`` (its digest header dropped,
    as a lying registry would)."""
    doc = json.loads(img.manifest)
    change(doc)
    body = json.dumps(doc).encode()

    def rewrite(a: Answer) -> Answer | None:
        if not _manifest_get(a):
            return None
        headers = a.without("Docker-Content-Digest", "Content-Type")
        headers.append(("Content-Type", content_type or doc.get("mediaType", "application/json")))
        return Answer(a.method, a.path, 200, headers, body)
    return rewrite


def _layer(doc: dict) -> dict:
    return doc["layers"][0]


def manifest_over_4mib(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: d.setdefault("annotations", {}).update(pad="x" * (5 << 20)))


def layer_size_smaller_than_blob(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: _layer(d).update(size=_layer(d)["size"] - 100))


def layer_size_larger_than_blob(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: _layer(d).update(size=_layer(d)["size"] + 100))


def content_type_says_index(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: None, content_type=OCI_INDEX)


def media_type_field_says_index(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: d.update(mediaType=OCI_INDEX))


def config_media_type_is_a_layer(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: d["config"].update(mediaType=_layer(d)["mediaType"]))


def digest_climbs_out(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: _layer(d).update(digest="sha256:../../../../../../tmp/pwned"))


def digest_wrong_length(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: _layer(d).update(digest="sha256:" + "ab" * 20))


def digest_unknown_algorithm(img: RawImage) -> Callable[[Answer], Answer | None]:
    return _with_manifest(img, lambda d: _layer(d).update(digest="md5:" + "ab" * 16))


def blob_longer_than_descriptor(img: RawImage) -> Callable[[Answer], Answer | None]:
    layer = img.layer_digests[0]

    def endless(data: bytes) -> Iterator[bytes]:
        yield data
        zero = b"\0" * (1 << 20)
        for _ in range(EXCESS >> 20):
            yield zero

    def rewrite(a: Answer) -> Answer | None:
        if not _blob_get(a, layer) or not isinstance(a.body, bytes):
            return None
        return Answer(a.method, a.path, 200, a.without(), endless(a.body), length=len(a.body) + EXCESS)
    return rewrite


CASES = [manifest_over_4mib, layer_size_smaller_than_blob, layer_size_larger_than_blob, content_type_says_index,
         media_type_field_says_index, config_media_type_is_a_layer, digest_climbs_out, digest_wrong_length,
         digest_unknown_algorithm, blob_longer_than_descriptor]
WHY = {
    "manifest_over_4mib": "4194304",
    "layer_size_smaller_than_blob": "more than the expected",
    "layer_size_larger_than_blob": "expected",
    "content_type_says_index": "its mediaType field says application/vnd.oci.image.manifest.v1+json",
    "media_type_field_says_index": "but has no manifests list",
    "config_media_type_is_a_layer": "not an image config",
    "digest_climbs_out": "digest",
    "digest_wrong_length": "digest",
    "digest_unknown_algorithm": "digest",
    "blob_longer_than_descriptor": "more than the expected",
}


@pytest.mark.parametrize("lie", CASES, ids=lambda f: f.__name__)
def test_pull_refuses_a_lying_registry(registry, image: RawImage, tmp_path: Path, env: dict[str, str],  # noqa: F811
                                       lie: Callable[[RawImage], Callable[[Answer], Answer | None]]) -> None:
    root = tmp_path / "store"
    with FaultProxy(registry.host, rewrite=lie(image)) as proxy:
        ref = f"{proxy.host}/{REPO}:1"
        r = pybuild(["pull", "--insecure-registry", proxy.host, ref], root, env=env)
        assert r.rc == 4, r.out + r.err
        assert "Traceback" not in r.err and WHY[lie.__name__] in r.err, r.err
        assert tag_digest(root, ref) is None
        if lie is blob_longer_than_descriptor:  # stopped at the size, not after the excess
            assert proxy.sent < len(image.blobs[image.layer_digests[0]]) + (64 << 20), proxy.sent
    assert not Path("/tmp/pwned").exists()
    assert pybuild(["store", "check"], root).ok()
    if lie in (layer_size_smaller_than_blob, blob_longer_than_descriptor):
        # what was refused left nothing behind: the honest registry fills the same store
        pybuild(["pull", "--insecure-registry", registry.host, f"{registry.host}/{REPO}:1"], root, env=env).ok()
        assert pybuild(["store", "check"], root).ok()


def test_redirect_to_another_host_carries_no_credentials(registry, image: RawImage, tmp_path: Path,  # noqa: F811
                                                         env: dict[str, str]) -> None:
    seen: list[dict[str, str]] = []

    def capture(a: Answer) -> Answer | None:
        seen.append(a.request_headers)
        return None

    layer = image.layer_digests[0]
    with FaultProxy(registry.host, rewrite=capture) as storage:
        def redirect(a: Answer) -> Answer | None:
            if not _blob_get(a, layer):
                return None
            return Answer(a.method, a.path, 307, [("Location", f"http://{storage.host}{a.path}")], b"")

        with FaultProxy(registry.host, bearer=("alice", "pw-for-alice"), rewrite=redirect) as proxy:
            pybuild(["login", "--insecure-registry", proxy.host, "-u", "alice", "-p", "pw-for-alice", proxy.host],
                    tmp_path / "store", env=env).ok()
            ref = f"{proxy.host}/{REPO}:1"
            pulled = pybuild(["pull", "--insecure-registry", proxy.host, ref], tmp_path / "store", env=env).ok()
            assert pulled.out.strip() == image.digest
            assert proxy.token_requests >= 1  # the registry itself did get credentials
    assert seen, "the blob was not fetched from the other host"
    assert all("authorization" not in {k.lower() for k in h} for h in seen), seen
    assert pybuild(["store", "check"], tmp_path / "store").ok()
