"""``RUN --mount`` through the engine (issue 4): cache mounts persist between builds and never
reach a layer; bind mounts from a stage and from the context (rw discards writes); tmpfs;
secrets as files and environment variables that never reach a layer, the config, the history
or the cache records, and ``required=true`` without a secret is a clear error."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from ocireader import check_invariants, flatten, read_layout
from runutil import (assert_clean, build, copy_context, files_containing, fingerprint, layer_names,
                     make_context, new_store)

pytestmark = [pytest.mark.root, pytest.mark.overlay]

BASE = "FROM localhost/busybox:latest\n"


def _names(img) -> set[str]:  # type: ignore[no-untyped-def]
    """Every member name of every layer but the base's."""
    return {n for layer in img.layers[1:] for n in layer_names(layer)}


def test_cache_mount_persists_between_builds_and_stays_out_of_layers(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    mount = "--mount=type=cache,id=pbtest,target=/var/cache/pbtest"
    # the cached value is made inside the step, so it is in no Dockerfile text or history
    first = make_context(tmp_path / "first", BASE + f"RUN {mount} echo cache-$(cat /proc/sys/kernel/random/uuid)"
                                                    " > /var/cache/pbtest/f && echo first > /first-ran\n")
    second = make_context(tmp_path / "second", BASE + f"RUN {mount} cat /var/cache/pbtest/f > /seen\n")
    oci1, oci2, out2 = tmp_path / "oci1", tmp_path / "oci2", tmp_path / "out2"
    build(first, root, "--output", f"type=oci,dest={oci1},tar=false").ok()
    build(second, root, "--output", f"type=local,dest={out2}", "--output", f"type=oci,dest={oci2},tar=false").ok()

    content = (out2 / "seen").read_text().strip()
    assert content.startswith("cache-") and len(content) > 20, "the second build did not see the cache"
    assert files_containing(root / "cache", content.encode()), "the cache is not kept in the store"
    for oci in (oci1, oci2):
        img = read_layout(oci)
        check_invariants(img)
        names = _names(img)
        assert not any(n.startswith("var/cache/pbtest/") for n in names), names
        assert "var/cache/pbtest" not in names, "the cache mount point stub reached the layer"
        holders = {n for layer in img.layers for n, m in zip(layer_names(layer), layer, strict=True)
                   if m.data and content.encode() in m.data}
        assert holders <= {"seen"}, f"cache content reached a layer in {holders}"
    assert "first-ran" in _names(read_layout(oci1))
    assert not files_containing(oci1, content.encode()), "cache content reached a blob of the first image"
    assert_clean(root)


def test_cache_mount_owner_mode_and_sharing(tmp_path: Path) -> None:
    """``uid``, ``gid`` and ``mode`` shape a new cache dir; a step running as that user can write
    to it; ``sharing=locked`` and ``private`` are accepted."""
    root = new_store(tmp_path)
    opts = "type=cache,id=owned,target=/c,uid=1000,gid=1000,mode=0700"
    ctx = make_context(tmp_path / "ctx", BASE + "RUN mkdir -m 1777 /out\n"
                       f"RUN --mount={opts},sharing=locked stat -c '%u %g %a' /c > /out/stat\n"
                       "USER 1000:1000\n"
                       f"RUN --mount={opts},sharing=private touch /c/by-1000 && ls -n /c > /out/ls\n"
                       f"RUN --mount={opts} ls /c > /out/seen\n")
    dest = tmp_path / "out"
    build(ctx, root, "--output", f"type=local,dest={dest}").ok()
    assert (dest / "out" / "stat").read_text().split() == ["1000", "1000", "700"]
    assert "by-1000" in (dest / "out" / "ls").read_text()
    assert (dest / "out" / "seen").read_text().split() == ["by-1000"]
    assert not (dest / "c").exists() or not any((dest / "c").iterdir())
    assert_clean(root)


def test_bind_and_tmpfs_mounts(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = copy_context("mounts", tmp_path / "ctx")
    before = fingerprint(ctx)
    dest, oci = tmp_path / "out", tmp_path / "oci"
    build(ctx, root, "--output", f"type=local,dest={dest}", "--output", f"type=oci,dest={oci},tar=false").ok()
    out = dest / "out"

    assert (out / "stage").read_text() == "from-stage\n"
    assert (out / "ctx").read_text() == "from-the-context\n"
    assert (out / "rw").read_text() == "scribble\n", "rw bind mount not writable"
    assert (out / "ro-status").read_text().strip() != "0", "a read-only bind mount accepted a write"
    after = (out / "ctx-after").read_text()
    assert "new" not in after.split() and "ro-write" not in after, "writes to a bind mount persisted"
    assert "inner.txt" in after and after.endswith("from-the-context\n"), after
    assert fingerprint(ctx) == before, "a RUN changed the build context"
    assert " tmpfs " in (out / "tmpfs").read_text()

    img = read_layout(oci)
    check_invariants(img)
    names = _names(img)
    for n in names:
        assert not n.startswith(("mnt/stage/", "ctx/", "scratch/")), f"mounted content {n} reached a layer"
    assert not {"mnt/stage", "mnt/ctx.txt", "ctx", "scratch"} & names, "mount point stubs reached a layer"
    fs = flatten(img.layers)
    assert "data/payload" not in fs, "the source stage's files leaked into the target"
    assert_clean(root)


def test_secrets_never_reach_the_image_or_the_store(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    secret = f"s3cr3t-file-{uuid.uuid4().hex}"
    env_secret = f"s3cr3t-env-{uuid.uuid4().hex}"
    (tmp_path / "secret.txt").write_text(secret)
    ctx = copy_context("secrets", tmp_path / "ctx")
    dest, oci = tmp_path / "out", tmp_path / "oci"
    res = build(ctx, root, "--secret", f"id=tok,src={tmp_path / 'secret.txt'}",
                "--secret", "id=envtok,env=PB_TEST_SECRET_VALUE",
                "--output", f"type=local,dest={dest}", "--output", f"type=oci,dest={oci},tar=false",
                env={"PB_TEST_SECRET_VALUE": env_secret}).ok()
    out = dest / "out"
    sha = hashlib.sha256(secret.encode()).hexdigest()
    assert (out / "file-sha").read_text().strip() == sha
    assert (out / "target-sha").read_text().strip() == sha
    assert (out / "env-sha").read_text().strip() == sha
    assert (out / "envsrc-sha").read_text().strip() == hashlib.sha256(env_secret.encode()).hexdigest()
    assert (out / "absent").read_text().strip() == "absent-ok"

    img = read_layout(oci)
    check_invariants(img)
    fs = flatten(img.layers)
    assert not {"run/secrets/tok", "run/secrets", "etc/custom-secret"} & set(fs), "a secret file reached a layer"
    for value in (secret, env_secret):
        needle = value.encode()
        assert not files_containing(oci, needle), "a secret reached the exported image"
        assert not files_containing(root, needle), "a secret reached the store (blobs, cache, snapshots)"
        assert not files_containing(dest, needle), "a secret reached the exported file system"
        assert value not in res.out + res.err
    assert_clean(root)


def test_required_secret_missing_is_a_clear_error(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", BASE + "RUN echo fine\n"
                                                "RUN --mount=type=secret,id=needed,required=true cat /run/secrets/needed\n")
    res = build(ctx, root, tag="needs-secret:latest")
    assert res.rc == 1, res
    assert "Traceback" not in res.err + res.out
    assert "Dockerfile:3" in res.err and "needed" in res.err and "required" in res.err, res.err
    assert_clean(root)
