"""Issue 5 through the CLI: builds FROM images in a real registry, pushes that others read,
login against a registry with basic auth. The registry is Debian's docker-registry started by
the fixtures in registry_fixture.py; skopeo cross-checks what we pushed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry_fixture import AUTH_PASS, AUTH_USER, auth_registry, registry  # noqa: F401
from registry_images import env_without_proxy, make_image, make_index, write_layout

pytestmark = [pytest.mark.registry, pytest.mark.interop]
REPO = Path(__file__).resolve().parent.parent


def pybuild(*args: str, store: Path, env: dict[str, str] | None = None, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = env_without_proxy()
    full_env.update(env or {})
    full_env["PYBUILD_ROOT"] = str(store)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "builder.cli", *args], env=full_env, text=True,
                          capture_output=True, input=stdin, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, env=env_without_proxy())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def small_context(root: Path, base: str = "scratch") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_text("hello registry\n")
    (root / "Dockerfile").write_text(f"FROM {base}\nCOPY hello.txt /hello.txt\nLABEL test=registry\n")
    return root


def config_of(store: Path, name: str) -> dict:
    out = pybuild("inspect", name, store=store).stdout
    return json.loads(out)


def test_push_is_read_by_skopeo(registry, tmp_path: Path) -> None:  # noqa: F811
    store = tmp_path / "store"
    ctx = small_context(tmp_path / "ctx")
    ref = f"{registry.host}/app/pushed:1"
    image_id = pybuild("-q", "-t", ref, "--push", str(ctx), store=store).stdout.strip()
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    digest = info["Digest"]
    cfg = json.loads(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}"))
    assert cfg["config"]["digest"] == image_id  # -q prints the image ID (config digest), as buildx
    assert info["Labels"] == {"test": "registry"}
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'copy'}:x")
    # the pushed image is also kept and tagged locally
    assert config_of(store, ref)["Digest"] == digest


def test_push_command_and_zstd(registry, tmp_path: Path) -> None:  # noqa: F811
    store = tmp_path / "store"
    ctx = small_context(tmp_path / "ctx")
    pybuild("-q", "-t", "local-app", str(ctx), store=store)
    ref = f"{registry.host}/app/zstd:1"
    pushed = pybuild("push", "--compression", "zstd", "local-app", ref, store=store).stdout.strip()
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    assert raw["layers"] and all(layer["mediaType"].endswith("tar+zstd") for layer in raw["layers"])
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"] == pushed
    # a fresh store can build FROM the zstd image
    store2 = tmp_path / "store2"
    ctx2 = small_context(tmp_path / "ctx2", base=ref)
    pybuild("-q", "-t", "child", str(ctx2), store=store2)
    cfg = config_of(store2, "child")["Config"]
    assert len(cfg["rootfs"]["diff_ids"]) == 2


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_from_multi_platform_image_pushed_by_skopeo(registry, tmp_path: Path, fmt: str) -> None:  # noqa: F811
    amd = make_image(f"amd-{fmt}", arch="amd64")
    arm = make_image(f"arm-{fmt}", arch="arm64", variant="v8")
    layout = write_layout(tmp_path / "layout", [amd, arm], "multi", index=make_index([amd, arm]))
    ref = f"{registry.host}/base/multi-{fmt}:1"
    extra = ["--format", "v2s2"] if fmt == "v2s2" else []
    skopeo("copy", "--all", *extra, "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{ref}")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    expected_list = ("application/vnd.docker.distribution.manifest.list.v2+json" if fmt == "v2s2"
                     else "application/vnd.oci.image.index.v1+json")
    assert raw["mediaType"] == expected_list
    for platform, img in (("linux/amd64", amd), ("linux/arm64", arm)):
        store = tmp_path / f"store-{platform.replace('/', '-')}"
        ctx = small_context(tmp_path / f"ctx-{platform.replace('/', '-')}", base=ref)
        pybuild("-q", "-t", "child", "--platform", platform, str(ctx), store=store)
        cfg = config_of(store, "child")["Config"]
        base_cfg = json.loads(img.blobs[img.config_digest])
        assert cfg["architecture"] == base_cfg["architecture"]
        # the base layer is the chosen platform's (v2s2 conversion keeps the tar, so diff_ids match)
        assert cfg["rootfs"]["diff_ids"][0] == base_cfg["rootfs"]["diff_ids"][0]


def test_stored_base_is_not_fetched_again_and_pull_command(registry, tmp_path: Path) -> None:  # noqa: F811
    store = tmp_path / "store"
    img = make_image("pulled")
    layout = write_layout(tmp_path / "layout", [img], "one")
    ref = f"{registry.host}/base/single:1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:one", f"docker://{ref}")
    pulled = pybuild("pull", ref, store=store).stdout.strip()
    assert pulled == img.digest
    # delete the image from the registry: a build FROM it must use the stored copy
    subprocess.run(["skopeo", "delete", "--tls-verify=false", f"docker://{ref}"], check=True,
                   capture_output=True, env=env_without_proxy())
    ctx = small_context(tmp_path / "ctx", base=ref)
    pybuild("-q", "-t", "child", str(ctx), store=store)
    # --pull insists on the registry: now it fails cleanly, naming the reference
    failed = pybuild("-q", "-t", "child2", "--pull", str(ctx), store=store, check=False)
    assert failed.returncode != 0
    assert "base/single" in failed.stderr and "Traceback" not in failed.stderr


def test_login_push_pull_with_basic_auth(auth_registry, tmp_path: Path) -> None:  # noqa: F811
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config"), "REGISTRY_AUTH_FILE": ""}
    store = tmp_path / "store"
    ctx = small_context(tmp_path / "ctx")
    ref = f"{auth_registry.host}/private/app:1"
    bad = pybuild("login", "-u", AUTH_USER, "--password-stdin", auth_registry.host, store=store, env=env,
                  stdin="wrong\n", check=False)
    assert bad.returncode == 4
    assert auth_registry.host in bad.stderr and "Traceback" not in bad.stderr
    empty = pybuild("login", "-u", AUTH_USER, "--password-stdin", auth_registry.host, store=store, env=env,
                    stdin="\n", check=False)
    assert empty.returncode == 2 and "password required" in empty.stderr
    assert not (tmp_path / "docker-config" / "config.json").exists()  # nothing stored
    denied = pybuild("-q", "-t", ref, "--push", str(ctx), store=store, env=env, check=False)
    assert denied.returncode == 4 and "Traceback" not in denied.stderr
    pybuild("login", "-u", AUTH_USER, "--password-stdin", auth_registry.host, store=store, env=env,
            stdin=AUTH_PASS + "\n")
    config = json.loads((tmp_path / "docker-config" / "config.json").read_text())
    assert auth_registry.host in config["auths"]
    meta = tmp_path / "meta.json"
    pybuild("-q", "-t", ref, "--push", "--metadata-file", str(meta), str(ctx), store=store, env=env)
    digest = json.loads(meta.read_text())["containerimage.digest"]
    store2 = tmp_path / "store2"
    assert pybuild("pull", ref, store=store2, env=env).stdout.strip() == digest
    pybuild("logout", auth_registry.host, store=store, env=env)
    assert auth_registry.host not in json.loads((tmp_path / "docker-config" / "config.json").read_text()).get(
        "auths", {})
