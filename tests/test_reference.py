"""builder.oci.reference: Docker's normalisation table and errors."""

from __future__ import annotations

import pytest

from builder.digest import Digest
from builder.errors import ReferenceError_
from builder.oci.reference import parse_reference

H = "a" * 64

CASES = [
    # text, str(ref), familiar, registry, repository, tag, digest
    ("ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04", "ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
    ("library/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
    ("docker.io/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
    ("index.docker.io/library/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "docker.io",
     "library/ubuntu", "latest", None),
    ("user/app:v1", "docker.io/user/app:v1", "user/app:v1", "docker.io", "user/app", "v1", None),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest", "localhost", "x", "latest", None),
    ("localhost:5000/a/b:1.0", "localhost:5000/a/b:1.0", "localhost:5000/a/b:1.0", "localhost:5000", "a/b", "1.0", None),
    ("quay.io/org/img_x.y-z:TAG_1", "quay.io/org/img_x.y-z:TAG_1", "quay.io/org/img_x.y-z:TAG_1", "quay.io",
     "org/img_x.y-z", "TAG_1", None),
    ("Host/app", "Host/app:latest", "Host/app:latest", "Host", "app", "latest", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest", "127.0.0.1:5000", "app",
     "latest", None),
    ("[::1]:5000/app:t", "[::1]:5000/app:t", "[::1]:5000/app:t", "[::1]:5000", "app", "t", None),
    (f"ubuntu@sha256:{H}", f"docker.io/library/ubuntu@sha256:{H}", f"ubuntu@sha256:{H}", "docker.io",
     "library/ubuntu", None, f"sha256:{H}"),
    (f"ubuntu:22.04@sha256:{H}", f"docker.io/library/ubuntu:22.04@sha256:{H}", f"ubuntu:22.04@sha256:{H}",
     "docker.io", "library/ubuntu", "22.04", f"sha256:{H}"),
    ("a__b/c--d", "docker.io/a__b/c--d:latest", "a__b/c--d:latest", "docker.io", "a__b/c--d", "latest", None),
]


@pytest.mark.parametrize("text,full,familiar,registry,repository,tag,digest", CASES)
def test_normalisation(text: str, full: str, familiar: str, registry: str, repository: str, tag: str | None,
                       digest: str | None) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert parse_reference(str(ref)) == ref  # normal form is a fixed point


ERRORS = [
    ("", "empty"),
    ("Ubuntu", "must be lowercase"),
    ("docker.io/Library/ubuntu", "must be lowercase"),
    ("ubuntu:", "invalid tag"),
    ("ubuntu:bad!tag", "invalid tag"),
    (":latest", "missing repository"),
    ("a//b", "invalid repository"),
    ("a/b/", "invalid repository"),
    ("-app", "invalid repository"),
    ("app_", "invalid repository"),
    ("ubuntu@sha256:abc", "invalid digest"),
    ("ubuntu@md5:" + "a" * 32, "invalid digest"),
    (H, "hexadecimal"),
    ("ho_st:5000/app", "invalid registry"),
    ("ubuntu:" + "t" * 129, "invalid tag"),
    ("a/" + "b" * 300, "255"),
]


@pytest.mark.parametrize("text,why", ERRORS)
def test_errors_name_the_reference(text: str, why: str) -> None:
    with pytest.raises(ReferenceError_) as ei:
        parse_reference(text)
    assert why in str(ei.value)
    if text:
        assert repr(text)[:40].rstrip("'") in str(ei.value)


def test_helpers() -> None:
    ref = parse_reference("ubuntu:22.04")
    assert ref.api_host == "registry-1.docker.io"
    assert parse_reference("localhost:5000/x").api_host == "localhost:5000"
    assert ref.name == "docker.io/library/ubuntu"
    assert str(ref.with_tag("24.04")) == "docker.io/library/ubuntu:24.04"
    assert ref.api_reference == "22.04"
    pinned = ref.with_digest(Digest.parse(f"sha256:{H}"))
    assert pinned.api_reference == f"sha256:{H}" and pinned.tag is None
    with pytest.raises(ReferenceError_):
        ref.with_tag("no/slash")
    assert parse_reference("ubuntu", default_tag=None).tag is None
    assert parse_reference("user/app").familiar_name == "user/app"
