"""The registry client against Debian's real docker-registry, cross-checked with skopeo."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from builder.digest import Digest
from builder.errors import RegistryError
from builder.oci import mediatypes as mt
from builder.registry.client import RegistryClient, login, logout
from builder.registry.destination import RegistryDestination
from builder.registry.source import RegistrySource
from faultproxy import FaultProxy
from registry_fixture import AUTH_PASS, AUTH_USER, auth_registry, registry, tls_registry  # noqa: F401
from registry_images import (OCI_LAYER_ZSTD, make_image, make_index, push, read_all, sha256,
                             verify_layout_blobs, verify_registry_storage, write_layout)

pytestmark = pytest.mark.registry


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


@pytest.fixture()
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG so no host credentials leak into tests."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return d


# ------------------------------------------------------------------ push / pull / skopeo

@pytest.mark.interop
def test_push_then_skopeo_inspect_and_copy(registry, tmp_path: Path, docker_config: Path) -> None:
    img = make_image("push1", layers=2, layer_bytes=50_000)
    with RegistryDestination(f"{registry.host}/test/push1") as dest:
        digest = push(dest, img, ("v1", "latest"))
        assert dest.stats["uploaded"] == 3
    assert digest == img.digest
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/test/push1:v1"))
    assert info["Digest"] == img.digest
    assert info["Layers"] == img.layer_digests
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/test/push1:latest")
    assert raw.encode() == img.manifest
    out = tmp_path / "oci"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/test/push1:v1", f"oci:{out}:v1")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == img.digest
    assert verify_layout_blobs(out) == 4  # config, 2 layers, manifest


def test_pull_roundtrip_and_errors(registry, docker_config: Path) -> None:
    img = make_image("pull1", layer_bytes=300_000)
    with RegistryDestination(f"{registry.host}/test/pull1:t") as dest:
        push(dest, img, ("t",))
    with RegistrySource(f"{registry.host}/test/pull1:t") as src:
        data, media_type = src.get_manifest()
        assert (data, media_type) == (img.manifest, mt.OCI_MANIFEST)
        assert src.get_manifest(img.digest) == (img.manifest, mt.OCI_MANIFEST)
        for d, blob in img.blobs.items():
            assert read_all(src.open_blob(Digest.parse(d))) == blob
        with pytest.raises(RegistryError) as e:
            src.get_manifest("nope")
        assert e.value.status == 404 and "MANIFEST_UNKNOWN" in e.value.codes
        assert registry.host in e.value.render()
        with pytest.raises(RegistryError) as e:
            src.open_blob(Digest.of_bytes(b"missing"))
        assert e.value.status == 404
        # a reader told the wrong size refuses to end quietly
        layer = Digest.parse(img.layer_digests[0])
        with pytest.raises(RegistryError, match="expected"):
            read_all(src.open_blob(layer, size=len(img.blobs[img.layer_digests[0]]) + 10))


@pytest.mark.interop
def test_pull_skopeo_pushed_oci_index_and_v2s2_list(registry, tmp_path: Path, docker_config: Path) -> None:
    amd = make_image("multi-amd", arch="amd64")
    arm = make_image("multi-arm", arch="arm64", variant="v8")
    index = make_index([amd, arm])
    layout = write_layout(tmp_path / "layout", [amd, arm], "multi", index)
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{registry.host}/test/multi:1")
    with RegistrySource(f"{registry.host}/test/multi:1") as src:
        data, media_type = src.get_manifest()
        assert media_type == mt.OCI_INDEX and data == index
        for plat, img in (("linux/arm64", arm), ("linux/arm64/v8", arm), ("linux/amd64", amd)):
            m, mtype, d = src.get_platform_manifest(plat)
            assert (m, mtype, str(d)) == (img.manifest, mt.OCI_MANIFEST, img.digest)
        with pytest.raises(RegistryError, match="available: linux/amd64, linux/arm64"):
            src.get_platform_manifest("linux/s390x")

    skopeo("copy", "--all", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{layout}:multi",
           f"docker://{registry.host}/test/multi-v2s2:1")
    with RegistrySource(f"{registry.host}/test/multi-v2s2:1") as src:
        data, media_type = src.get_manifest()
        assert media_type == mt.DOCKER_MANIFEST_LIST
        m, mtype, d = src.get_platform_manifest("linux/arm64")
        assert mtype == mt.DOCKER_MANIFEST and Digest.of_bytes(m) == d
        manifest = json.loads(m)
        config = read_all(src.open_blob(Digest.parse(manifest["config"]["digest"])))
        assert json.loads(config)["architecture"] == "arm64"
        layer = manifest["layers"][0]
        assert layer["digest"] == arm.layer_digests[0]  # gzip layers are copied as they are
        assert sha256(read_all(src.open_blob(Digest.parse(layer["digest"]), layer["size"]))) == layer["digest"]


@pytest.mark.interop
def test_push_zstd_layers(registry, tmp_path: Path, docker_config: Path) -> None:
    img = make_image("zstd1", compression="zstd", layers=2, layer_bytes=100_000)
    with RegistryDestination(f"{registry.host}/test/zstd") as dest:
        push(dest, img, ("z",))
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/test/zstd:z"))
    assert [layer["mediaType"] for layer in raw["layers"]] == [OCI_LAYER_ZSTD] * 2
    out = tmp_path / "oci"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/test/zstd:z", f"oci:{out}:z")
    assert verify_layout_blobs(out) == 4
    with RegistrySource(f"{registry.host}/test/zstd:z") as src:
        import zstandard
        blob = read_all(src.open_blob(Digest.parse(img.layer_digests[0])))
        assert zstandard.ZstdDecompressor().decompressobj().decompress(blob)[:1]  # a real zstd frame


def test_push_index_children_by_digest(registry, docker_config: Path) -> None:
    amd, arm = make_image("idx-amd"), make_image("idx-arm", arch="arm64", variant="v8")
    index = make_index([amd, arm])
    with RegistryDestination(f"{registry.host}/test/ourindex") as dest:
        for img in (amd, arm):
            assert push(dest, img, ()) == img.digest
        assert str(dest.put_manifest(index, mt.OCI_INDEX, ("multi",))) == sha256(index)
    with RegistrySource(f"{registry.host}/test/ourindex:multi") as src:
        m, _, d = src.get_platform_manifest("linux/arm64")
        assert str(d) == arm.digest


# ------------------------------------------------------------------ request counting, mounts, chunks

def test_repush_uploads_no_blob(registry, docker_config: Path) -> None:
    img = make_image("repush", layers=2)
    with FaultProxy(registry.host) as proxy:
        with RegistryDestination(f"{proxy.host}/test/repush") as dest:
            push(dest, img, ("a",))
        assert any(e.method == "PUT" and "/blobs/uploads/" in e.path for e in proxy.log)
        proxy.clear_log()
        with RegistryDestination(f"{proxy.host}/test/repush") as dest:
            push(dest, img, ("a",))
            assert dest.stats == {"exists": 3, "mounted": 0, "uploaded": 0}
        log = proxy.log
    assert not [e for e in log if "/blobs/uploads/" in e.path], log
    assert sorted(e.method for e in log) == ["HEAD"] * 3 + ["PUT"]


def test_cross_repo_mount(registry, docker_config: Path) -> None:
    img = make_image("mount", layers=2)
    with FaultProxy(registry.host) as proxy:
        with RegistryDestination(f"{proxy.host}/team-a/app") as dest:
            push(dest, img, ("1",))
        proxy.clear_log()
        # explicit mount source
        with RegistryDestination(f"{proxy.host}/team-b/app", mount_from=("team-a/app",)) as dest:
            push(dest, img, ("1",))
            assert dest.stats["mounted"] == 3
        mounts = [e for e in proxy.log if e.method == "POST" and "mount=" in e.path]
        assert len(mounts) == 3 and all(e.status == 201 and "from=team-a%2Fapp" in e.path for e in mounts)
        assert not [e for e in proxy.log if e.method in ("PUT", "PATCH") and "/blobs/" in e.path]
        # learnt source: this process saw team-a/app holding the blobs
        proxy.clear_log()
        with RegistryDestination(f"{proxy.host}/team-c/app") as dest:
            push(dest, img, ("1",))
            assert dest.stats["mounted"] == 3
        assert [e.status for e in proxy.log if e.method == "POST"] == [201, 201, 201]
    with RegistrySource(f"{registry.host}/team-c/app:1") as src:
        assert src.get_manifest()[0] == img.manifest
        assert read_all(src.open_blob(Digest.parse(img.layer_digests[1]))) == img.blobs[img.layer_digests[1]]


def test_chunked_upload(registry, docker_config: Path) -> None:
    img = make_image("chunked", layer_bytes=700_000)
    with FaultProxy(registry.host) as proxy:
        client = RegistryClient(proxy.host, chunk_size=128 * 1024, anonymous=True)
        with RegistryDestination(f"{proxy.host}/test/chunked", client=client) as dest:
            push(dest, img, ("c",))
        client.close()
        patches = [e for e in proxy.log if e.method == "PATCH"]
    layer = img.blobs[img.layer_digests[0]]
    assert len(patches) == -(-len(layer) // (128 * 1024)) and all(e.status == 202 for e in patches)
    with RegistrySource(f"{registry.host}/test/chunked:c") as src:
        assert read_all(src.open_blob(Digest.parse(img.layer_digests[0]))) == layer


def test_bad_stream_is_never_committed(registry, docker_config: Path) -> None:
    img = make_image("badstream", layer_bytes=200_000)
    d = img.layer_digests[0]
    corrupt = bytearray(img.blobs[d])
    corrupt[-1] ^= 0xFF
    for chunk in (None, 64 * 1024):
        client = RegistryClient(registry.host, chunk_size=chunk, anonymous=True)
        with RegistryDestination(f"{registry.host}/test/badstream", client=client) as dest:
            with pytest.raises(RegistryError, match="not uploaded"):
                dest.put_blob(Digest.parse(d), len(corrupt), io.BytesIO(bytes(corrupt)))
            with pytest.raises(RegistryError, match="ended"):
                dest.put_blob(Digest.parse(d), len(corrupt) + 5, io.BytesIO(bytes(corrupt)))
            assert not dest.has_blob(Digest.parse(d))
        client.close()
    verify_registry_storage(registry.root)


# ------------------------------------------------------------------ faults

@pytest.mark.interop
@pytest.mark.parametrize("seed", range(6))
def test_push_through_faults(registry, tmp_path: Path, docker_config: Path, seed: int) -> None:
    img = make_image(f"fault-push-{seed}", layers=2, layer_bytes=150_000)
    repo = f"faults/push{seed}"
    with FaultProxy(registry.host, seed=seed, rate=0.35, max_faults=6) as proxy:
        client = RegistryClient(proxy.host, backoff=0.01, anonymous=True, chunk_size=64 * 1024 if seed % 2 else None)
        try:
            with RegistryDestination(f"{proxy.host}/{repo}", client=client) as dest:
                push(dest, img, ("f",))
            pushed = True
        except RegistryError:
            pushed = False
        finally:
            client.close()
        assert proxy.faults > 0
    verify_registry_storage(registry.root)
    if pushed:
        out = tmp_path / "oci"
        skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:f", f"oci:{out}:f")
        assert verify_layout_blobs(out) == 4


@pytest.mark.parametrize("seed", range(6))
def test_pull_through_faults(registry, docker_config: Path, seed: int) -> None:
    img = make_image(f"fault-pull-{seed}", layers=2, layer_bytes=400_000)
    repo = f"faults/pull{seed}"
    with RegistryDestination(f"{registry.host}/{repo}") as dest:
        push(dest, img, ("f",))
    outcomes: list[str] = []
    with FaultProxy(registry.host, seed=100 + seed, rate=0.5, max_faults=8) as proxy:
        client = RegistryClient(proxy.host, backoff=0.01, anonymous=True)
        with RegistrySource(f"{proxy.host}/{repo}:f", client=client) as src:
            for _ in range(3):
                try:
                    manifest, _ = src.get_manifest()
                    assert manifest == img.manifest
                except RegistryError:
                    outcomes.append("error")
                    continue
                for d in [img.config_digest, *img.layer_digests]:
                    try:
                        data = read_all(src.open_blob(Digest.parse(d)))
                    except RegistryError:
                        outcomes.append("error")
                        continue
                    assert sha256(data) == d  # any bytes returned are the right ones
                    outcomes.append("ok")
        client.close()
        assert proxy.faults > 0
    assert "ok" in outcomes  # retries and resumes carry most pulls through bounded faults


def test_blob_download_resumes_with_range(registry, docker_config: Path) -> None:
    img = make_image("resume", layer_bytes=2_000_000)
    d = img.layer_digests[0]
    with RegistryDestination(f"{registry.host}/test/resume") as dest:
        push(dest, img, ("r",))
    with FaultProxy(registry.host, kinds=("truncate",)) as proxy:
        client = RegistryClient(proxy.host, backoff=0.01, anonymous=True)
        src = RegistrySource(f"{proxy.host}/test/resume:r", client=client)
        proxy.set_faults(rate=1.0, max_faults=2)
        reader = src.open_blob(Digest.parse(d))
        data = read_all(reader)
        assert data == img.blobs[d]
        assert reader.resumes == 2  # type: ignore[attr-defined]
        gets = [e for e in proxy.log if e.method == "GET"]
        client.close()
    assert [e.fault for e in gets] == ["truncate", "truncate", ""]


def test_unreachable_registry_is_a_registry_error(docker_config: Path) -> None:
    from registry_fixture import free_port
    client = RegistryClient(f"127.0.0.1:{free_port()}", retries=2, backoff=0.01, anonymous=True)
    with pytest.raises(RegistryError) as e:
        client.ping()
    client.close()
    assert "127.0.0.1" in e.value.render() and "failed after 2 tries" in str(e.value)
    with pytest.raises(RegistryError) as e:  # a digest reference is shown as written (repo@sha256:...)
        client.get_manifest("x/y", "sha256:" + "0" * 64)
    client.close()
    assert f"manifest x/y@sha256:{'0' * 64} at 127.0.0.1" in str(e.value)


# ------------------------------------------------------------------ auth

def test_basic_auth_login_push_pull(auth_registry, docker_config: Path) -> None:
    host = auth_registry.host
    with pytest.raises(RegistryError) as e:
        login(host, AUTH_USER, "wrong")
    assert host in str(e.value) and e.value.status == 401 and "alice" in str(e.value)
    assert not (docker_config / "config.json").exists()

    with pytest.raises(RegistryError, match="requires authentication"):
        with RegistrySource(f"{host}/private/app:1") as src:
            src.get_manifest()

    written = login(host, AUTH_USER, AUTH_PASS)
    assert written == docker_config / "config.json"
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    assert host in json.loads(written.read_text())["auths"]

    img = make_image("auth")
    with RegistryDestination(f"{host}/private/app") as dest:
        push(dest, img, ("1",))
    with RegistrySource(f"{host}/private/app:1") as src:
        assert src.get_manifest()[0] == img.manifest
        assert read_all(src.open_blob(Digest.parse(img.layer_digests[0]))) == img.blobs[img.layer_digests[0]]
    # skopeo reads the same file format
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--authfile", str(written), f"docker://{host}/private/app:1"))
    assert info["Digest"] == img.digest

    assert logout(host) is True
    assert host not in json.loads(written.read_text())["auths"]
    with pytest.raises(RegistryError) as e:
        RegistrySource(f"{host}/private/app:1").get_manifest()
    assert e.value.status == 401


def test_bearer_token_flow(registry, docker_config: Path) -> None:
    from builder.registry.auth import Credentials
    img = make_image("bearer", layers=2)
    with FaultProxy(registry.host, bearer=("bob", "tok-pass")) as proxy:
        creds = Credentials("bob", "tok-pass")
        client = RegistryClient(proxy.host, credentials=creds)
        with RegistryDestination(f"{proxy.host}/tok/app", client=client) as dest:
            push(dest, img, ("1",))
        with RegistrySource(f"{proxy.host}/tok/app:1", client=client) as src:
            assert src.get_manifest()[0] == img.manifest
            for d, blob in img.blobs.items():
                assert read_all(src.open_blob(Digest.parse(d))) == blob
        # a token per scope set, cached: far fewer token requests than registry requests. The
        # push first asks to pull (does the registry have the blobs?), then to push; the pull
        # afterwards reuses the push token, whose scope covers it
        scopes = proxy.token_scopes
        assert scopes == [frozenset({("tok/app", "pull")}), frozenset({("tok/app", "pull"), ("tok/app", "push")})]
        assert proxy.token_requests == 2
        assert len(scopes) == proxy.token_requests
        assert len(set(scopes)) == len(scopes), f"a scope set was asked for twice: {scopes}"
        assert ("tok/app", "push") in set().union(*scopes)
        assert len(proxy.log) > 3 * proxy.token_requests
        # mounts ask for pull on the source repository too
        with RegistryDestination(f"{proxy.host}/tok/other", client=client, mount_from=("tok/app",)) as dest:
            push(dest, img, ("1",))
            assert dest.stats["mounted"] == 3
        client.close()

        # an identity (refresh) token is exchanged with an OAuth2 POST
        refresh = RegistryClient(proxy.host, credentials=Credentials(identity_token="tok-pass"))
        with RegistrySource(f"{proxy.host}/tok/app:1", client=refresh) as src:
            assert src.get_manifest()[0] == img.manifest
        refresh.close()
        assert any(e.method == "POST" and e.path.startswith("/token") for e in proxy.log)

        bad = RegistryClient(proxy.host, credentials=Credentials("bob", "nope"))
        with pytest.raises(RegistryError) as e:
            RegistrySource(f"{proxy.host}/tok/app:1", client=bad).get_manifest()
        bad.close()
        assert proxy.host in str(e.value) and "rejected" in str(e.value)
        anon = RegistryClient(proxy.host, anonymous=True)
        with pytest.raises(RegistryError) as e:
            RegistrySource(f"{proxy.host}/tok/app:1", client=anon).get_manifest()
        anon.close()
        assert e.value.status == 401


def test_manifest_digest_checked(registry, docker_config: Path) -> None:
    img = make_image("digestcheck")
    with RegistryDestination(f"{registry.host}/test/dc") as dest:
        push(dest, img, ("1",))
    with RegistryClient(registry.host, anonymous=True) as client:
        head = client.head_manifest("test/dc", "1")
        assert head is not None and str(head[0]) == img.digest and head[2] == len(img.manifest)
        assert client.head_manifest("test/dc", "missing") is None
        _, _, d = client.get_manifest("test/dc", img.digest)
        assert str(d) == img.digest
        client.delete_manifest("test/dc", d)
        assert client.head_manifest("test/dc", img.digest) is None
    assert hashlib.sha256(img.manifest).hexdigest() == d.hex


# ------------------------------------------------------------------ TLS

def test_tls_trust_from_certs_dir_and_ca_bundle(tls_registry, tmp_path: Path, docker_config: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    reg, cert = tls_registry
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    empty = tmp_path / "certs.d"
    empty.mkdir()
    untrusted = RegistryClient(reg.host, insecure=False, certs_dir=empty, anonymous=True)
    assert untrusted.base_url.startswith("https://")
    with pytest.raises(RegistryError, match="TLS error.*certs.d"):
        untrusted.ping()
    untrusted.close()

    (empty / reg.host).mkdir()
    (empty / reg.host / "ca.crt").write_bytes(cert.read_bytes())
    img = make_image("tls")
    with RegistryClient(reg.host, insecure=False, certs_dir=empty, anonymous=True) as client:
        with RegistryDestination(f"{reg.host}/tls/app", client=client) as dest:
            push(dest, img, ("1",))

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with RegistryClient(reg.host, insecure=False, certs_dir=tmp_path / "none", anonymous=True) as client:
        with RegistrySource(f"{reg.host}/tls/app:1", client=client) as src:
            assert src.get_manifest()[0] == img.manifest
            assert read_all(src.open_blob(Digest.parse(img.layer_digests[0]))) == img.blobs[img.layer_digests[0]]


def test_retries_429_and_gives_up_after_bounded_tries(registry, docker_config: Path) -> None:
    img = make_image("retry")
    with RegistryDestination(f"{registry.host}/test/retry") as dest:
        push(dest, img, ("1",))
    with FaultProxy(registry.host, kinds=("429",)) as proxy:
        with RegistryClient(proxy.host, backoff=0.01, retries=5, anonymous=True) as client:
            proxy.set_faults(rate=1.0, max_faults=3)
            assert client.get_manifest("test/retry", "1")[0] == img.manifest
            assert [e.status for e in proxy.log] == [429, 429, 429, 200]
        proxy.clear_log()
        proxy.set_faults(rate=1.0, max_faults=100)
        with RegistryClient(proxy.host, backoff=0.01, retries=5, anonymous=True) as client:
            with pytest.raises(RegistryError) as e:
                client.get_manifest("test/retry", "1")
        assert e.value.status == 429 and e.value.codes == ("TOOMANYREQUESTS",)
        assert len(proxy.log) == 5  # bounded
        # uploads are not blindly retried from an unseekable stream
        proxy.clear_log()
        proxy.set_faults(rate=1.0, max_faults=100, methods=("POST",))

        class OneWay(io.RawIOBase):
            def __init__(self, data: bytes) -> None:
                self._b = io.BytesIO(data)

            def readable(self) -> bool:
                return True

            def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
                return self._b.readinto(b)

        blob = b"one way stream"
        with RegistryClient(proxy.host, backoff=0.01, retries=5, anonymous=True) as client:
            with pytest.raises(RegistryError):
                client.upload_blob("test/retry", Digest.of_bytes(blob), len(blob), OneWay(blob))  # type: ignore[arg-type]
        assert [e.method for e in proxy.log].count("POST") == 1
        # a seekable stream restarts the upload from a fresh session
        proxy.clear_log()
        proxy.set_faults(rate=1.0, max_faults=2, methods=("POST",))
        with RegistryClient(proxy.host, backoff=0.01, retries=5, anonymous=True) as client:
            assert client.upload_blob("test/retry", Digest.of_bytes(blob), len(blob), io.BytesIO(blob)) == "uploaded"
        assert [e.status for e in proxy.log if e.method == "POST"] == [429, 429, 202]
