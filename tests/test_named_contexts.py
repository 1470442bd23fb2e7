"""``--build-context NAME=VALUE`` (issue 15): a directory, ``docker-image://``, ``oci-layout://``
(git and http(s) values are in test_git_inputs.py). A named context replaces an image name used
by FROM, ``COPY --from`` and ``RUN --mount=from=``; its .dockerignore applies; the cache follows
its content; a context used nowhere draws a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocireader import check_invariants, read_layout
from runutil import assert_clean, build, make_context, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]

BASE = "FROM localhost/busybox:latest\n"


def _tools(tmp_path: Path) -> Path:
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "tool").write_text("tool v1\n")
    (tools / "notes.txt").write_text("ignored by the context's own .dockerignore\n")
    (tools / ".dockerignore").write_text("notes.txt\n")
    return tools


def test_named_contexts_replace_from_copy_from_and_mount_from(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    tools = _tools(tmp_path)
    ctx = make_context(tmp_path / "ctx", (
        "FROM alpine:3.19 AS base\n"       # an image that is not in the store: the named context wins
        "COPY --from=tools /bin/tool /usr/local/tool\n"
        "COPY --from=docker.io/library/golang:1.22 /bin/busybox /gobusybox\n"
        "RUN --mount=from=tools,target=/t ls -A /t > /tools-listing\n"))
    out, oci = tmp_path / "out", tmp_path / "oci"
    r = build(ctx, root, "--build-context", "alpine:3.19=docker-image://localhost/busybox:latest",
              "--build-context", f"tools={tools}", "--build-context", "golang:1.22=docker-image://localhost/busybox",
              "--output", f"type=local,dest={out}", "--output", f"type=oci,dest={oci},tar=false").ok()
    assert "warning" not in r.err
    assert (out / "bin" / "busybox").exists(), "FROM alpine:3.19 came from the busybox image"
    assert (out / "usr" / "local" / "tool").read_text() == "tool v1\n"
    assert (out / "gobusybox").read_bytes() == (out / "bin" / "busybox").read_bytes()
    assert (out / "tools-listing").read_text().split() == [".dockerignore", "bin"], "the named context's .dockerignore applies"
    check_invariants(read_layout(oci))
    assert_clean(root)


def test_named_context_cache_follows_its_content(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    tools = _tools(tmp_path)
    ctx = make_context(tmp_path / "ctx", BASE + "COPY --from=tools / /opt/tools/\n")
    args = ("--build-context", f"tools={tools}")
    build(ctx, root, *args).ok()
    (tools / "notes.txt").write_text("changed, but ignored\n")
    again = build(ctx, root, *args).ok()
    assert "COPY --from=tools / /opt/tools/  CACHED" in again.err
    (tools / "bin" / "tool").write_text("tool v2\n")
    changed = build(ctx, root, *args, "--output", f"type=local,dest={tmp_path / 'out'}").ok()
    assert "COPY --from=tools / /opt/tools/  CACHED" not in changed.err
    assert (tmp_path / "out" / "opt" / "tools" / "bin" / "tool").read_text() == "tool v2\n"


def test_from_a_directory_named_context(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    tools = _tools(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM rootfs\nCOPY marker /marker\n", {"marker": "m\n"})
    oci = tmp_path / "oci"
    build(ctx, root, "--build-context", f"rootfs={tools}", "--output", f"type=oci,dest={oci},tar=false").ok()
    img = read_layout(oci)
    check_invariants(img)
    names = {m.name.rstrip("/") for layer in img.layers for m in layer}
    assert {"bin/tool", "marker"} <= names and "notes.txt" not in names


def test_named_context_from_an_oci_layout(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    src = make_context(tmp_path / "src", BASE + "RUN echo from-layout > /layout-marker\n")
    layout = tmp_path / "layout"
    build(src, root, "--output", f"type=oci,dest={layout},tar=false", tag="layout/src:v1").ok()
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    ctx = make_context(tmp_path / "ctx", "FROM base\nCOPY --from=other /layout-marker /copied\n"
                                         "RUN cat /layout-marker /copied > /both\n")
    (tmp_path / "fresh").mkdir()
    fresh = new_store(tmp_path / "fresh")  # the layout image is not in this store
    out = tmp_path / "out"
    build(ctx, fresh, "--build-context", f"base=oci-layout://{layout}@{digest}",
          "--build-context", f"other=oci-layout://{layout}", "--output", f"type=local,dest={out}").ok()
    assert (out / "both").read_text() == "from-layout\nfrom-layout\n"
    assert_clean(fresh)


def test_unused_named_context_warns(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", BASE + "COPY Dockerfile /\n")
    r = build(ctx, root, "--build-context", f"spare={_tools(tmp_path)}").ok()
    assert "warning: build context 'spare'" in r.err and "not used" in r.err


@pytest.mark.parametrize("value, message", [
    ("nameonly", "--build-context 'nameonly': expected NAME=VALUE"),
    ("x=/does/not/exist", "--build-context x=/does/not/exist: not a directory"),
    ("x=docker-image://", "--build-context x=docker-image://: missing image reference"),
    ("x=oci-layout:///nowhere", "no OCI layout at /nowhere"),
])
def test_bad_named_context_names_the_flag(tmp_path: Path, value: str, message: str) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", BASE)
    r = build(ctx, root, "--build-context", value)
    assert r.rc == 2, r.err
    assert message in r.err and "Traceback" not in r.err
    assert_clean(root)


def test_named_context_replaces_a_stage_of_that_name(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    tools = _tools(tmp_path)
    ctx = make_context(tmp_path / "ctx", (
        "FROM localhost/busybox:latest AS deps\nRUN exit 3\n"          # replaced: never runs
        "FROM localhost/busybox:latest\nCOPY --from=deps /bin/tool /tool\n"))
    out = tmp_path / "out"
    r = build(ctx, root, "--build-context", f"deps={tools}", "--output", f"type=local,dest={out}").ok()
    assert (out / "tool").read_text() == "tool v1\n"
    assert "exit 3" not in r.err
