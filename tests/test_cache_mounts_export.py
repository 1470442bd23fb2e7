"""Cache mounts in the exported build cache (issue 16): ``--cache-to ...,cache-mounts=true``
exports the contents of ``RUN --mount=type=cache`` mounts; ``--cache-from`` restores them into
an empty store before the first RUN that mounts them. Through Debian's real
``docker-registry`` (type=registry, with a counting proxy in front) and an OCI layout
directory (type=local).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from faultproxy import FaultProxy
from ocireader import flatten, read_layout
from registry_fixture import registry  # noqa: F401

from builder.engine.remotecache import CacheSpec, parse_cache_spec
from builder.errors import UsageError

FILES = 3000
# a package-manager-like RUN: downloads into the cache only what is not there yet, then
# writes what it found into the image
DOCKERFILE = f"""FROM {BASE_TAG}
COPY trigger /trigger
RUN --mount=type=cache,target=/var/cache/x,id=pkgs,uid=1000,gid=1000,mode=0750,sharing=locked \\
    cd /var/cache/x && if [ -f done ]; then echo prefilled > /state; else \\
    i=0; while [ $i -lt {FILES} ]; do echo "package $i" > pkg$i.deb; i=$((i+1)); done; \\
    touch done; echo empty > /state; fi; ls | wc -l > /count
"""
_TAGS = itertools.count()


class Built:
    def __init__(self, store: Path, err: str, tag: str) -> None:
        self.store = store
        self.err = err
        self.tag = "docker.io/" + tag
        self.events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        self.messages = [e["text"] for e in self.events if e["type"] == "Message"]

    def runs(self) -> list[bool]:
        """cached flag of each RUN step."""
        return [e["cached"] for e in self.events if e["type"] == "StepFinished" and e["text"].startswith("RUN")]

    def file(self, path: str) -> str:
        data = flatten(read_layout(self.store, self.tag).layers)[path].data
        assert data is not None
        return data.decode().strip()


def build(store: Path, ctx: Path, *args: str) -> Built:
    tag = f"test/mounts:{next(_TAGS)}"
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], store).ok()
    return Built(store, r.err, tag)


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    (d / "trigger").write_text("1\n")
    return d


def mount_dirs(store: Path) -> list[Path]:
    root = store / "cache" / "mounts"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def test_parse_cache_mounts_option() -> None:
    spec = parse_cache_spec("type=registry,ref=r.example/c:1,cache-mounts=true,cache-mounts-max=1GB", export=True)
    assert spec == CacheSpec("registry", ref="r.example/c:1", mounts=("*",), mounts_max=10**9)
    assert parse_cache_spec("type=local,dest=/d,cache-mounts=pkgs;/root/.cache", export=True).mounts == \
        ("pkgs", "/root/.cache")
    # buildx splits the value as CSV: a quoted field may hold commas
    assert parse_cache_spec('type=local,dest=/d,"cache-mounts=a,b"', export=True).mounts == ("a", "b")
    assert parse_cache_spec("type=local,dest=/d,cache-mounts=false", export=True).mounts == ()
    with pytest.raises(UsageError, match="cache-mounts-max"):
        parse_cache_spec("type=local,dest=/d,cache-mounts=true,cache-mounts-max=lots", export=True)
    with pytest.raises(UsageError, match="unknown option"):
        parse_cache_spec("type=inline,cache-mounts=true", export=True)


def _restore_flow(tmp_path: Path, ctx: Path, export: str, source: str) -> tuple[Built, Built]:
    """A fills the mount and exports; B (empty) imports after a context change."""
    a = build(busybox_store(tmp_path / "a"), ctx, "--cache-to", export)
    assert a.file("state") == "empty" and a.file("count") == str(FILES + 1)
    (ctx / "trigger").write_text("2\n")
    b_store = busybox_store(tmp_path / "b")
    assert mount_dirs(b_store) == []
    b = build(b_store, ctx, "--cache-from", source)
    assert b.runs() == [False]                       # the context change re-ran the RUN ...
    assert b.file("state") == "prefilled"            # ... which found the mount filled
    assert b.file("count") == str(FILES + 1)
    [restored] = mount_dirs(b_store)
    st = os.stat(restored)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o750)   # the mount's owner and mode
    assert (restored / "pkg2999.deb").read_text() == "package 2999\n"
    return a, b


def _assert_not_in_image(built: Built) -> None:
    layers = read_layout(built.store, built.tag)
    names = set(flatten(layers.layers))
    assert not any(n.startswith("var/cache/x/") for n in names)
    history = json.dumps(layers.config.get("history"))
    assert "pkg1.deb" not in history


@pytest.mark.root
@pytest.mark.registry
def test_registry_cache_mounts_survive_an_empty_runner(tmp_path: Path, ctx: Path, registry) -> None:  # noqa: F811
    ref = f"{registry.host}/cache/mounts:ci"
    a, b = _restore_flow(tmp_path, ctx, f"type=registry,ref={ref},cache-mounts=true", f"type=registry,ref={ref}")
    _assert_not_in_image(a)
    _assert_not_in_image(b)
    assert any("restored cache mount pkgs" in m for m in b.messages)

    # A builds the changed context too (its RUN runs and only reads the mount) and exports
    # again: the new step layers go up, the unchanged mount's layer does not
    with FaultProxy(registry.host) as proxy:
        proxied = f"{proxy.host}/cache/mounts:ci"
        again = build(a.store, ctx, "--cache-to", f"type=registry,ref={proxied},cache-mounts=true")
        assert again.runs() == [False]
        uploaded = {e.path.rsplit("digest=", 1)[1].replace("%3A", ":") for e in proxy.log
                    if e.method == "PUT" and "digest=" in e.path}
        run_layer = read_layout(a.store, again.tag).manifest["layers"][-1]["digest"]
        assert run_layer in uploaded
        mount_blob = json.loads(_registry_config(registry.host, "cache/mounts", "ci"))["mounts"][0]["layer"]["digest"]
        assert mount_blob not in uploaded
        # and a fully cached rebuild's export uploads nothing at all (not even the manifest)
        proxy.clear_log()
        build(a.store, ctx, "--cache-to", f"type=registry,ref={proxied},cache-mounts=true")
        assert [e for e in proxy.log if e.method not in ("GET", "HEAD")] == []


def _registry_config(host: str, repo: str, tag: str) -> bytes:
    import requests

    man = requests.get(f"http://{host}/v2/{repo}/manifests/{tag}",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10).json()
    return requests.get(f"http://{host}/v2/{repo}/blobs/{man['config']['digest']}", timeout=10).content


@pytest.mark.root
def test_local_cache_mounts_and_unchanged_export(tmp_path: Path, ctx: Path) -> None:
    cache = tmp_path / "cache"
    a, _b = _restore_flow(tmp_path, ctx, f"type=local,dest={cache},cache-mounts=true", f"type=local,src={cache}")
    mount_blob = cache / "blobs" / "sha256" / _local_config(cache)["mounts"][0]["layer"]["digest"][7:]
    exported_at = mount_blob.stat().st_mtime_ns
    # the mount's content is not part of the step's key: a changed mount does not re-run it
    build(a.store, ctx)
    [mount] = mount_dirs(a.store)
    (mount / "extra.deb").write_text("x")
    again = build(a.store, ctx)
    assert again.runs() == [True]
    (mount / "extra.deb").unlink()
    build(a.store, ctx, "--cache-to", f"type=local,dest={cache},cache-mounts=true")
    blobs = {p.name: p.stat().st_mtime_ns for p in (cache / "blobs" / "sha256").iterdir()}
    build(a.store, ctx, "--cache-to", f"type=local,dest={cache},cache-mounts=true")
    after = {p.name: p.stat().st_mtime_ns for p in (cache / "blobs" / "sha256").iterdir()}
    assert after == blobs       # nothing rewritten: the same manifest, config and layers
    assert mount_blob.stat().st_mtime_ns == exported_at   # the mount layer of the first export


def _local_config(cache: Path) -> dict:
    index = json.loads((cache / "index.json").read_text())
    man = json.loads((cache / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return json.loads((cache / "blobs" / "sha256" / man["config"]["digest"][7:]).read_text())


@pytest.mark.root
def test_a_cached_runner_passes_imported_mounts_on(tmp_path: Path, ctx: Path) -> None:
    """A runner whose RUNs all hit never mounts the cache (nothing restored) yet its export
    still carries the mount: passed through from the imported cache."""
    cache, cache2 = tmp_path / "cache", tmp_path / "cache2"
    build(busybox_store(tmp_path / "a"), ctx, "--cache-to", f"type=local,dest={cache},cache-mounts=true")
    c = build(busybox_store(tmp_path / "c"), ctx, "--cache-from", f"type=local,src={cache}",
              "--cache-to", f"type=local,dest={cache2},cache-mounts=true")
    assert c.runs() == [True] and mount_dirs(c.store) == []
    [mount] = _local_config(cache2)["mounts"]
    assert mount == _local_config(cache)["mounts"][0]
    assert (cache2 / "blobs" / "sha256" / mount["layer"]["digest"][7:]).exists()


@pytest.mark.root
def test_cache_mounts_max_leaves_a_big_mount_out_with_a_warning(tmp_path: Path, ctx: Path) -> None:
    cache = tmp_path / "cache"
    a = build(busybox_store(tmp_path / "a"), ctx, "--cache-to",
              f"type=local,dest={cache},cache-mounts=true,cache-mounts-max=10kB")
    assert any(m.startswith("cache mount pkgs (") and "cache-mounts-max=10.0kB" in m for m in a.messages), a.messages
    config = _local_config(cache)
    assert "mounts" not in config and config["records"]   # the records are still exported


@pytest.mark.root
def test_only_selected_mounts_are_exported(tmp_path: Path, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE + "RUN --mount=type=cache,target=/other echo x > /other/f\n")
    cache = tmp_path / "cache"
    b = build(busybox_store(tmp_path / "a"), ctx, "--cache-to", f"type=local,dest={cache},cache-mounts=/other;nosuch")
    config = _local_config(cache)
    assert [m["id"] for m in config["mounts"]] == ["/other"]
    assert config["mounts"][0]["files"] == 1
    # an id no RUN mounts is named in a warning instead of being ignored silently
    assert any(m.startswith("cache-mounts=nosuch: no RUN") for m in b.messages), b.messages
