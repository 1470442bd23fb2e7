"""Every cache miss says why (issue 16): one test per kind of miss, asserting the line under
the step in ``--progress=plain`` and the ``miss_reason`` field in ``rawjson``; values of build
args and secrets never appear; a fully cached rebuild touches none of the explanation records.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildutil import BASE_TAG, REPO, busybox_store, run_cli

from builder.engine.explain import Diff, StepInputs, compare, describe

_TAGS = itertools.count()


class Build:
    """One rawjson build: its StepFinished events by step text."""

    def __init__(self, err: str) -> None:
        self.events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        self.err = err

    def why(self, prefix: str) -> str:
        """The miss reason of the (last) step whose text starts with ``prefix``."""
        found = [e for e in self.events if e["type"] == "StepFinished" and e["text"].startswith(prefix)]
        assert found, f"no step {prefix!r} in {[e.get('text') for e in self.events]}"
        return str(found[-1]["miss_reason"])

    def reasons(self) -> list[str]:
        return [e["miss_reason"] for e in self.events if e["type"] == "StepFinished"]


def build(store: Path, ctx: Path, *args: str, env: dict[str, str] | None = None) -> Build:
    r = run_cli(["build", "--progress=rawjson", "-t", f"test/why:{next(_TAGS)}", *args, str(ctx)], store, env).ok()
    return Build(r.err)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return busybox_store(tmp_path)


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    (d / "src").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "src/c.py", "src/d.py"):
        (d / name).write_text(name + "\n")
    (d / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")  # COPY . reads only the files above
    (d / "Dockerfile").write_text(f"""FROM {BASE_TAG} AS app
ARG V=1
COPY . /app
RUN echo built > /built
RUN echo $V > /v
""")
    return d


# ------------------------------------------------------------------------ pure comparison

def test_describe_names_at_most_three_files_then_a_count() -> None:
    old = StepInputs(key="sha256:1", position="p", parent="sha256:p", base="", text="COPY . /",
                     files="sha256:a")
    new = StepInputs(key="sha256:2", position="p", parent="sha256:p", base="", text="COPY . /",
                     files="sha256:b")
    d = compare(old, new, {"a": "1", "b": "1", "c": "1", "gone": "1", "x": "1"},
                {"a": "2", "b": "2", "c": "2", "x": "1", "new": "1"})
    assert d.files == (("a", "modified"), ("b", "modified"), ("c", "modified"), ("gone", "removed"),
                       ("new", "added"))
    assert describe(d, first_step=False) == ["context files changed: a (modified), b (modified), "
                                             "c (modified) and 2 more"]
    assert describe(Diff(other=True), first_step=True) == [
        "other step options changed (flags, mounts, platform or cache version)"]


# ---------------------------------------------------------------------- one test per kind

@pytest.mark.root
def test_changed_context_file_is_named(store: Path, ctx: Path) -> None:
    first = build(store, ctx)
    assert first.why("COPY") == "first build of this step"
    assert build(store, ctx).reasons() == [""] * 5   # all hits: no reason anywhere
    (ctx / "src" / "d.py").write_text("changed\n")
    b = build(store, ctx)
    assert b.why("COPY") == "context files changed: src/d.py (modified)"
    assert b.why("RUN echo built") == "previous step changed"
    # and in --progress=plain, as one line under the step
    (ctx / "b.txt").unlink()
    r = run_cli(["build", "--progress=plain", str(ctx)], store).ok()
    lines = r.err.splitlines()
    i = next(n for n, line in enumerate(lines) if "COPY . /app" in line)
    assert lines[i + 1] == "  cache miss: context files changed: b.txt (removed)"


@pytest.mark.root
def test_changed_build_arg_is_named_never_its_value(store: Path, ctx: Path) -> None:
    build(store, ctx, "--build-arg", "V=first-value-7731")
    b = build(store, ctx, "--build-arg", "V=second-value-9917")
    assert b.why("ARG V=1") == "build arg V changed"
    assert b.why("RUN echo $V") == "build arg V changed; previous step changed"
    for value in ("first-value-7731", "second-value-9917"):
        assert all(value not in r for r in b.reasons())
        for f in (store / "cache" / "explain").rglob("*"):
            if f.is_file():
                assert value.encode() not in f.read_bytes(), f


@pytest.mark.root
def test_changed_env_is_named(store: Path, ctx: Path) -> None:
    df = ctx / "Dockerfile"
    df.write_text(f"FROM {BASE_TAG}\nARG MODE\nENV MODE=$MODE\nRUN echo $MODE > /m\n")
    build(store, ctx, "--build-arg", "MODE=a")
    b = build(store, ctx, "--build-arg", "MODE=b")
    assert b.why("ENV MODE") == "build arg MODE changed; previous step changed"
    # the RUN sees MODE through the ENV the ARG fed: named either way, never valued
    assert b.why("RUN echo $MODE") in ("env MODE changed; previous step changed",
                                       "build arg MODE changed; previous step changed")


@pytest.mark.root
def test_changed_base_image_digest(store: Path, ctx: Path, tmp_path: Path) -> None:
    base_ctx = tmp_path / "base"
    base_ctx.mkdir()
    (base_ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nCOPY v /v\n")
    (base_ctx / "v").write_text("1")
    run_cli(["build", "--progress=quiet", "-t", "localhost/whybase:1", str(base_ctx)], store).ok()
    (ctx / "Dockerfile").write_text("FROM localhost/whybase:1\nRUN echo hi > /hi\n")
    build(store, ctx)
    (base_ctx / "v").write_text("2")
    run_cli(["build", "--progress=quiet", "-t", "localhost/whybase:1", str(base_ctx)], store).ok()
    why = build(store, ctx).why("RUN echo hi")
    assert why.startswith("base image changed (sha256:") and " -> sha256:" in why


@pytest.mark.root
def test_changed_instruction_text(store: Path, ctx: Path) -> None:
    build(store, ctx)
    df = ctx / "Dockerfile"
    df.write_text(df.read_text().replace("echo built > /built", "echo rebuilt > /built"))
    b = build(store, ctx)
    assert b.why("RUN echo rebuilt") == "instruction changed (was: RUN echo built > /built)"
    assert b.why("RUN echo $V") == "previous step changed"


@pytest.mark.root
def test_no_cache_and_no_cache_filter(store: Path, ctx: Path) -> None:
    build(store, ctx)
    assert set(build(store, ctx, "--no-cache").reasons()[1:]) == {"--no-cache"}
    b = build(store, ctx, "--no-cache-filter", "app")
    assert b.why("COPY") == "--no-cache-filter app"


@pytest.mark.root
def test_remote_record_missing_and_remote_comparison(tmp_path: Path, ctx: Path) -> None:
    a = busybox_store(tmp_path / "a")
    cache = tmp_path / "cache"
    build(a, ctx, "--cache-to", f"type=local,dest={cache},mode=max")
    (ctx / "a.txt").write_text("new\n")
    b = build(busybox_store(tmp_path / "b"), ctx, "--cache-from", f"type=local,src={cache}")
    # an empty store compares with the entries the cache carries
    assert b.why("COPY") == f"context files changed: a.txt (modified); not in cache {cache}"
    assert b.why("RUN echo built") == f"previous step changed; not in cache {cache}"

    # a record whose blob the source lacks
    (ctx / "a.txt").write_text("a.txt\n")
    layout = json.loads((cache / "index.json").read_text())
    manifest_digest = layout["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((cache / "blobs" / "sha256" / manifest_digest).read_text())
    for layer in manifest["layers"]:
        (cache / "blobs" / "sha256" / layer["digest"].split(":")[1]).unlink()
    c = build(busybox_store(tmp_path / "c"), ctx, "--cache-from", f"type=local,src={cache}")
    assert f"cache {cache} lacks blob sha256:" in c.why("COPY")


@pytest.mark.root
def test_secret_values_never_appear(store: Path, ctx: Path, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("hunter2-secret-4412")
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nARG V\n"
                                    "RUN --mount=type=secret,id=tok,env=TOK --mount=type=secret,id=tok "
                                    "echo $V > /v && test -n \"$TOK\"\n")
    build(store, ctx, "--secret", f"id=tok,src={secret}", "--build-arg", "V=1")
    b = build(store, ctx, "--secret", f"id=tok,src={secret}", "--build-arg", "V=2")
    assert b.why("RUN") == "build arg V changed; previous step changed"
    assert "hunter2" not in b.err
    for f in (store / "cache").rglob("*"):
        if f.is_file():
            assert b"hunter2" not in f.read_bytes(), f


# ------------------------------------------------- a cached rebuild pays nothing for this

@pytest.mark.root
def test_fully_cached_rebuild_touches_no_explanation_record(store: Path, ctx: Path, tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is not installed"
    build(store, ctx)
    (ctx / "a.txt").write_text("again\n")
    build(store, ctx)   # a second entry at each position: the records exist
    assert list((store / "cache" / "explain" / "steps").iterdir())
    log = tmp_path / "strace.log"
    env = dict(os.environ, PYBUILD_ROOT=str(store), PYTHONPATH=str(REPO))
    env.pop("SOURCE_DATE_EPOCH", None)
    subprocess.run([strace, "-f", "-qq", "-e", "trace=%file,%desc", "-o", str(log), sys.executable, "-m",
                    "builder.cli", "build", "--progress=quiet", str(ctx)], env=env, check=True,
                   capture_output=True)
    touched = [line for line in log.read_text().splitlines()
               if "/cache/explain" in line or "/cache/mount-exports" in line]
    assert touched == []
    # and the trace did see the store (the filter matches real paths)
    assert "/cache/records/" in log.read_text()


@pytest.mark.root
def test_first_step_after_a_changed_parent_stage(store: Path, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG} AS base\nRUN echo one > /one\n"
                                    "FROM base AS app\nRUN echo two > /two\nRUN echo three > /three\n")
    build(store, ctx)
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG} AS base\nRUN echo uno > /one\n"
                                    "FROM base AS app\nRUN echo two > /two\nRUN echo three > /three\n")
    b = build(store, ctx)
    assert b.why("RUN echo uno") == "instruction changed (was: RUN echo one > /one)"
    assert b.why("RUN echo two") == "parent stage changed"
    assert b.why("RUN echo three") == "previous step changed"


@pytest.mark.parametrize("source", [".", "src", "src/c.py"])
def test_listing_from_the_steps_own_walk_is_the_listing_of_a_fresh_walk(ctx: Path, source: str) -> None:
    """A single-source COPY hands its miss explanation the lines it hashed for its key instead
    of a second walk of the context: the listing is the same."""
    from types import SimpleNamespace

    from builder.engine.context import BuildContext, TreeDigest
    from builder.engine.copy import SingleSourceCopy
    from builder.engine.dockerignore import load_ignore
    from builder.engine.explain import context_listing
    from builder.store.rootview import RootView

    (ctx / "src" / "sub").mkdir()
    (ctx / "src" / "sub" / "e.bin").write_bytes(b"\0" * 100)
    (ctx / "src" / "link").symlink_to("c.py")
    context = BuildContext(ctx, load_ignore(ctx))
    single = SingleSourceCopy(match=SingleSourceCopy.find(context, source), dest="/app/", context=context,
                              dest_view=RootView([]))
    digest = TreeDigest(context.view, owners=False, keep_lines=True)
    list(single.walk(digest))
    step = SimpleNamespace(sources=[source], excludes=())
    fresh = context_listing(context, step)
    assert fresh and context_listing(context, step, (single.item.display, digest.kept_lines or [])) == fresh
    assert context_listing(context, step, (single.item.display, [])) == {}  # (the lines given are used)
    assert context_listing(context, step, ("elsewhere", [])) == fresh       # (not when they are another path's)
