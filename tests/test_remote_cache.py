"""Shared build cache: ``--cache-to`` in store A, ``--cache-from`` in a fresh store B (only the
base image present) -> no RUN executes and the image digest equals A's. Through Debian's real
``docker-registry`` (type=registry, inline) and an OCI layout directory (type=local).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli
from ocireader import flatten, read_layout
from registry_fixture import registry  # noqa: F401

from builder.engine.remotecache import (CACHE_CONFIG_MEDIA_TYPE, INLINE_FIELD, CacheSpec, parse_cache_spec,
                                        parse_records)
from builder.errors import UsageError

DOCKERFILE = f"""FROM {BASE_TAG} AS builder
RUN cat /proc/uptime > /built && echo x > /x
WORKDIR /work
COPY a.txt .
RUN cat a.txt /built > out

FROM {BASE_TAG}
ENV K=v
COPY --from=builder /work/out /out
RUN cat /proc/uptime > /final
"""

_COUNTER = itertools.count()


class Built:
    def __init__(self, err: str, tag: str) -> None:
        self.tag = "docker.io/" + tag
        self.events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        self.digest = next(e["digest"] for e in self.events if e["type"] == "ImageWritten")
        self.messages = [e["text"] for e in self.events if e["type"] == "Message"]

    def executed_runs(self) -> list[str]:
        """RUN steps that executed (StepFinished with cached=false)."""
        return [e["text"] for e in self.events
                if e["type"] == "StepFinished" and e["text"].startswith("RUN") and not e["cached"]]

    def file(self, store: Path, path: str) -> bytes:
        data = flatten(read_layout(store, self.tag).layers)[path].data
        assert data is not None
        return data


def build(store: Path, ctx: Path, *args: str) -> Built:
    tag = f"test/remote:b{next(_COUNTER)}"
    r = run_cli(["build", "--progress=rawjson", "-t", tag, *args, str(ctx)], store).ok()
    return Built(r.err, tag)


def push(store: Path, digest: str, ref: str) -> None:
    """Copy an image of ``store`` to the registry (library call: the CLI's push lives elsewhere)."""
    from builder.registry.destination import RegistryDestination
    from builder.store.layout import Store
    from builder.transfer import copy_image

    with RegistryDestination(ref) as dst:
        copy_image(Store(store), digest, dst, tags=(ref.rsplit(":", 1)[1],))


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    (d / "a.txt").write_text("a\n")
    return d


def fresh_store(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return busybox_store(d)


# --------------------------------------------------------------------------------- spec parsing

def test_parse_cache_specs() -> None:
    assert parse_cache_spec("type=registry,ref=r.example/c:x,mode=max", export=True) == \
        CacheSpec("registry", ref="r.example/c:x", mode="max")
    assert parse_cache_spec("type=local,dest=/tmp/c", export=True) == CacheSpec("local", path="/tmp/c")
    assert parse_cache_spec("type=local,src=/tmp/c", export=False) == CacheSpec("local", path="/tmp/c")
    assert parse_cache_spec("type=inline", export=True) == CacheSpec("inline")
    assert parse_cache_spec("r.example/app:1", export=False) == CacheSpec("registry", ref="r.example/app:1")
    for bad, export in [("type=registry", True), ("type=local,src=/x", True), ("type=gha", True),
                        ("type=inline,mode=max", True), ("type=registry,ref=a,mode=all", True),
                        ("type=inline", False), ("type=registry,ref=a,bogus=1", False), ("r.example/a", True),
                        ("", False)]:
        with pytest.raises(UsageError):
            parse_cache_spec(bad, export=export)


def test_parse_records_skips_invalid_entries_and_foreign_layers() -> None:
    good = "sha256:" + "a" * 64
    layer = {"digest": "sha256:" + "b" * 64, "diff_id": "sha256:" + "c" * 64, "size": 3,
             "media_type": "application/vnd.oci.image.layer.v1.tar+gzip"}
    items = [{"key": good, "layer": layer, "created_by": "RUN x", "time": 5},
             {"key": "sha256:" + "d" * 64, "layer": dict(layer, digest="sha256:" + "e" * 64)},  # not in manifest
             {"key": "nope", "layer": None}, {"layer": None}, "junk",
             {"key": "sha256:" + "f" * 64, "layer": dict(layer, size=-1)}]
    recs = parse_records(items, {layer["digest"]})
    assert list(recs) == [good]
    assert recs[good].layer == layer and recs[good].extra == {"created_by": "RUN x", "time": 5.0}
    assert parse_records({"not": "a list"}, None) == {}


def test_bad_cache_spec_is_a_usage_error(tmp_path: Path, ctx: Path) -> None:
    r = run_cli(["build", "--progress=quiet", "--cache-to", "type=nope", str(ctx)], fresh_store(tmp_path, "s"))
    assert r.rc == 2 and "type=nope" in r.err


# ---------------------------------------------------------------------------------- registry

@pytest.mark.root
@pytest.mark.registry
def test_registry_cache_max_mode_reuses_every_step(tmp_path: Path, ctx: Path, registry) -> None:  # noqa: F811
    ref = f"{registry.host}/cache/app:max"
    a = fresh_store(tmp_path, "a")
    built_a = build(a, ctx, "--cache-to", f"type=registry,ref={ref},mode=max")
    assert len(built_a.executed_runs()) == 3

    # the cache is an OCI manifest with our config type; skopeo can read it like an image
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == CACHE_CONFIG_MEDIA_TYPE
    image_a = read_layout(a, built_a.tag)
    assert {layer["digest"] for layer in image_a.manifest["layers"][1:]} <= {layer["digest"] for layer in manifest["layers"]}

    b = fresh_store(tmp_path, "b")
    built_b = build(b, ctx, "--cache-from", f"type=registry,ref={ref}")
    assert built_b.executed_runs() == []
    assert built_b.digest == built_a.digest
    assert built_b.file(b, "final") == built_a.file(a, "final")   # the recorded clock, not a new one

    # a changed context file reruns what depends on it, and only that
    (ctx / "a.txt").write_text("changed\n")
    c = fresh_store(tmp_path, "c")
    built_c = build(c, ctx, "--cache-from", ref)
    assert built_c.executed_runs() == ["RUN cat a.txt /built > out", "RUN cat /proc/uptime > /final"]
    assert built_c.file(c, "out").startswith(b"changed\n")


@pytest.mark.root
@pytest.mark.registry
def test_registry_cache_min_mode_holds_only_the_target_chain(tmp_path: Path, ctx: Path, registry) -> None:  # noqa: F811
    ref = f"{registry.host}/cache/app:min"
    a = fresh_store(tmp_path, "a")
    built_a = build(a, ctx, "--cache-to", f"type=registry,ref={ref}")   # mode=min is the default
    image_layers = [layer["digest"] for layer in read_layout(a, built_a.tag).manifest["layers"]]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    assert [layer_["digest"] for layer_ in json.loads(raw)["layers"]] == image_layers[1:]   # base layer excluded

    b = fresh_store(tmp_path, "b")
    built_b = build(b, ctx, "--cache-from", f"type=registry,ref={ref}")
    # the builder stage is not in a min cache: its RUNs execute. They read the clock, so what
    # COPY --from copies is new content, and the final stage's RUN after it must run again:
    # reusing it would be a wrong hit
    assert built_b.executed_runs() == ["RUN cat /proc/uptime > /built && echo x > /x", "RUN cat a.txt /built > out",
                                       "RUN cat /proc/uptime > /final"]
    assert built_b.file(b, "out") != built_a.file(a, "out")


@pytest.mark.root
@pytest.mark.registry
def test_inline_cache_read_from_the_pushed_image(tmp_path: Path, ctx: Path, registry) -> None:  # noqa: F811
    a = fresh_store(tmp_path, "a")
    image_ref = f"{registry.host}/app/inline:1"
    built_a = build(a, ctx, "--cache-to", "type=inline")
    config = read_layout(a, built_a.tag).config
    assert INLINE_FIELD in config and "config" in config
    assert INLINE_FIELD not in (config["config"].get("Labels") or {})
    push(a, built_a.digest, image_ref)

    b = fresh_store(tmp_path, "b")
    built_b = build(b, ctx, "--cache-to", "type=inline", "--cache-from", image_ref)
    # inline caches are min mode: the builder stage runs again, and since it reads the clock
    # the final stage's steps after COPY --from run again too (never a stale hit)
    assert built_b.executed_runs() == ["RUN cat /proc/uptime > /built && echo x > /x", "RUN cat a.txt /built > out",
                                       "RUN cat /proc/uptime > /final"]

    # an image built FROM it does not inherit the cache field
    child_ctx = tmp_path / "child"
    child_ctx.mkdir()
    (child_ctx / "Dockerfile").write_text(f"FROM {built_a.tag}\nENV C=1\n")
    child = build(a, child_ctx)
    assert INLINE_FIELD not in read_layout(a, child.tag).config


@pytest.mark.root
@pytest.mark.registry
def test_missing_remote_cache_is_a_warning(tmp_path: Path, ctx: Path, registry) -> None:  # noqa: F811
    b = fresh_store(tmp_path, "b")
    built = build(b, ctx, "--cache-from", f"type=registry,ref={registry.host}/cache/none:x")
    assert len(built.executed_runs()) == 3
    assert any("cache import" in m and "skipped" in m for m in built.messages)


@pytest.mark.root
def test_cache_from_is_not_contacted_when_the_local_cache_hits(tmp_path: Path, ctx: Path) -> None:
    a = fresh_store(tmp_path, "a")
    first = build(a, ctx)
    unreachable = "127.0.0.1:9/nobody/cache:x"      # discard port: nothing listens
    again = build(a, ctx, "--cache-from", unreachable)
    assert again.executed_runs() == [] and again.digest == first.digest
    assert not any("cache import" in m for m in again.messages)
    (ctx / "a.txt").write_text("other\n")           # a local miss: now the source is tried, and skipped
    third = build(a, ctx, "--cache-from", unreachable)
    assert any("cache import from" in m and "skipped" in m for m in third.messages)


# -------------------------------------------------------------------------------------- local

@pytest.mark.root
def test_local_cache_dir_round_trip(tmp_path: Path, ctx: Path) -> None:
    cache_dir = tmp_path / "cachedir"
    a = fresh_store(tmp_path, "a")
    built_a = build(a, ctx, "--cache-to", f"type=local,dest={cache_dir},mode=max")
    assert (cache_dir / "oci-layout").is_file()
    b = fresh_store(tmp_path, "b")
    built_b = build(b, ctx, "--cache-from", f"type=local,src={cache_dir}")
    assert built_b.executed_runs() == []
    assert built_b.digest == built_a.digest
    # a second export into the same directory is idempotent
    build(a, ctx, "--cache-to", f"type=local,dest={cache_dir},mode=max")
    assert len(json.loads((cache_dir / "index.json").read_text())["manifests"]) == 1


@pytest.mark.root
def test_corrupt_cache_blob_is_never_used(tmp_path: Path, ctx: Path) -> None:
    cache_dir = tmp_path / "cachedir"
    a = fresh_store(tmp_path, "a")
    built_a = build(a, ctx, "--cache-to", f"type=local,dest={cache_dir},mode=max")
    final_layer = read_layout(a, built_a.tag).manifest["layers"][-1]["digest"]
    blob = cache_dir / "blobs" / "sha256" / final_layer.split(":", 1)[1]
    blob.write_bytes(b"not the layer")
    b = fresh_store(tmp_path, "b")
    built_b = build(b, ctx, "--cache-from", f"type=local,src={cache_dir}")
    assert built_b.executed_runs() == ["RUN cat /proc/uptime > /final"]
    assert any("unusable" in m for m in built_b.messages)
    assert built_b.file(b, "final") != b"not the layer"
    shutil.rmtree(cache_dir)
