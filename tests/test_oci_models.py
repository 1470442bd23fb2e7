"""builder.oci.models and mediatypes: parsing, canonical JSON, platform selection."""

from __future__ import annotations

import json

import pytest

from builder.digest import Digest
from builder.errors import StoreError, UsageError
from builder.oci import mediatypes as mt
from builder.oci.models import (ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest,
                                Parsed, Platform, RootFS, canonical_json, parse_json, parse_platform,
                                platform_matches, select_manifest)
from ocireader import schema_errors

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def test_canonical_json_is_compact_ordered_and_omits_none() -> None:
    m = Manifest(mediaType=mt.OCI_MANIFEST,
                 config=Descriptor(mediaType=mt.OCI_CONFIG, digest=D1, size=10),
                 layers=[Descriptor(mediaType=mt.OCI_LAYER_GZIP, digest=D2, size=20)])
    out = canonical_json(m)
    assert out == (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                   b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"' + D1.encode()
                   + b'","size":10},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",'
                   b'"digest":"' + D2.encode() + b'","size":20}]}')
    assert schema_errors(json.loads(out), "image-manifest-schema.json") == []
    assert canonical_json(parse_json(Manifest, out)) == out


def test_image_config_keeps_docker_fields_and_unknown_keys() -> None:
    raw = json.dumps({
        "architecture": "amd64", "os": "linux", "docker_version": "24.0",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}},
                   "Volumes": {"/data": {}}, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5},
                   "OnBuild": ["RUN x"], "Shell": ["/bin/sh", "-c"], "ArgsEscaped": True,
                   "StopSignal": "SIGTERM", "Labels": {"a": "b"}, "Custom": 7},
        "rootfs": {"type": "layers", "diff_ids": [D1]},
        "history": [{"created_by": "x", "empty_layer": True}, {"created_by": "y"}],
    }).encode()
    cfg = parse_json(ImageConfig, raw)
    assert cfg.config is not None and cfg.config.Healthcheck is not None
    assert cfg.config.Healthcheck.Interval == 5
    assert cfg.config.ExposedPorts == {"80/tcp": {}}
    assert cfg.config.model_extra == {"Custom": 7}
    out = json.loads(canonical_json(cfg))
    assert out["docker_version"] == "24.0"
    assert out["config"]["Custom"] == 7
    assert out["config"]["Volumes"] == {"/data": {}}
    assert out["history"][1] == {"created_by": "y"}
    assert schema_errors(out, "config-schema.json") == []


def test_built_config_is_schema_valid() -> None:
    cfg = ImageConfig(architecture="arm64", os="linux", variant="v8", created="2024-01-01T00:00:00Z",
                      config=ContainerConfig(Env=["A=1"], Entrypoint=["/app"], WorkingDir="/w", User="1000",
                                             Healthcheck=HealthConfig(Test=["NONE"])),
                      rootfs=RootFS(diff_ids=[D1]), history=[History(created_by="COPY . /")])
    out = json.loads(canonical_json(cfg))
    assert list(out) == ["created", "architecture", "os", "variant", "config", "rootfs", "history"]
    assert schema_errors(out, "config-schema.json") == []


def test_parse_errors_are_store_errors_naming_the_origin() -> None:
    with pytest.raises(StoreError, match="somewhere: invalid JSON"):
        parse_json(Manifest, b"{not json", origin="somewhere")
    with pytest.raises(StoreError, match="config"):
        parse_json(Manifest, b'{"layers": []}', origin="m")
    with pytest.raises(StoreError, match="expected a JSON object"):
        parse_json(Index, b"[]")
    with pytest.raises(StoreError, match="digest"):
        parse_json(Manifest, json.dumps({"config": {"mediaType": "x", "digest": "nope", "size": 1}}).encode())


def test_parsed_keeps_raw_bytes_and_digest() -> None:
    raw = b'{ "schemaVersion": 2, "manifests": [] }'
    p = Parsed.of(Index, raw)
    assert p.raw == raw and p.digest == Digest.of_bytes(raw) and p.model.manifests == []


def test_platforms_and_selection() -> None:
    assert str(parse_platform("linux/amd64")) == "linux/amd64"
    assert str(parse_platform("linux/aarch64/v8")) == "linux/arm64"
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    with pytest.raises(UsageError):
        parse_platform("linux")
    arm7 = Platform(os="linux", architecture="arm", variant="v7")
    assert platform_matches(Platform(os="linux", architecture="arm"), arm7)
    assert not platform_matches(Platform(os="linux", architecture="arm", variant="v6"), arm7)
    idx = Index(manifests=[
        Descriptor(mediaType=mt.OCI_MANIFEST, digest=D1, size=1, platform=Platform(os="linux", architecture="amd64")),
        Descriptor(mediaType=mt.OCI_MANIFEST, digest=D2, size=1, platform=arm7),
    ])
    assert select_manifest(idx, parse_platform("linux/arm/v7")).digest == D2
    assert select_manifest(idx, parse_platform("linux/amd64")).digest == D1
    with pytest.raises(StoreError, match="linux/s390x"):
        select_manifest(idx, parse_platform("linux/s390x"), origin="img")


def test_mediatype_helpers() -> None:
    assert mt.layer_compression(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert mt.layer_compression(mt.OCI_LAYER_ZSTD) == "zstd"
    assert mt.oci_layer_type("uncompressed") == mt.OCI_LAYER_TAR
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST) and mt.is_manifest(mt.OCI_MANIFEST)
    with pytest.raises(ValueError):
        mt.docker_layer_type("zstd")
