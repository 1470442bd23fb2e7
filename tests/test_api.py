"""The public Python API (issue 17): build, push, pull and run only through ``builder``'s
documented names, with the typed events in order. The registry is the real docker-registry
(tests/registry_fixture.py); nothing here goes through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from buildutil import BASE_TAG, busybox_store
from registry_fixture import RunningRegistry, registry  # noqa: F401
from runutil import make_context

import builder

HELLO = "hello from the api\n"


def _context(root: Path, run_line: str = "RUN echo first-line && echo built-line && cat /hello.txt > /out.txt") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_text(HELLO)
    (root / "Dockerfile").write_text(
        f"FROM {BASE_TAG}\n"
        "COPY hello.txt /hello.txt\n"
        f"{run_line}\n"
        'CMD ["cat", "/out.txt"]\n')
    return root


def _build(tmp_path: Path, ref: str, **options: object) -> tuple[builder.Store, builder.BuildResult,
                                                                   list[builder.Event]]:
    """Build _context() FROM the busybox base into a fresh store, tagged ``ref``; checks the
    events of the build; returns the store, the result and the events."""
    store = builder.open_store(busybox_store(tmp_path))
    events: list[builder.Event] = []
    result = builder.build(_context(tmp_path / "ctx"), tags=[ref], store=store, on_event=events.append,
                           **options)  # type: ignore[arg-type]
    _check_build_events(events, result)
    return store, result, events


def _check_build_events(events: list[builder.Event], result: builder.BuildResult) -> None:
    """StepStarted, then its output, then StepFinished, per step in order; ImageWritten last."""
    open_step: tuple[int, int] | None = None
    finished: list[builder.StepFinished] = []
    outputs: list[bytes] = []
    for ev in events[:-1]:
        assert isinstance(ev, (builder.StepStarted, builder.StepOutput, builder.StepFinished, builder.Message,
                               builder.BlobProgress)), ev
        if isinstance(ev, builder.StepStarted):
            assert open_step is None, f"{ev} started while {open_step} runs"
            open_step = (ev.stage, ev.step)
        elif isinstance(ev, builder.StepOutput):
            assert open_step == (ev.stage, ev.step)
            outputs.append(ev.line)
        elif isinstance(ev, builder.StepFinished):
            assert open_step == (ev.stage, ev.step)
            open_step = None
            finished.append(ev)
    assert open_step is None
    last = events[-1]
    assert isinstance(last, builder.ImageWritten)
    assert (last.digest, last.config_digest, last.tags) == (result.digest, result.config_digest, result.tags)
    assert [f.step for f in finished] == [0, 1, 2, 3]
    assert [f.text.split()[0] for f in finished] == ["FROM", "COPY", "RUN", "CMD"]
    assert [line.rstrip(b"\n") for line in outputs] == [b"first-line", b"built-line"]


def _check_progress(events: list[builder.Event], action: str) -> set[str]:
    """Every blob's BlobProgress runs from 0 (or a skip) up to one finished report; returns
    the digests sent."""
    seen: dict[str, int] = {}
    done: set[str] = set()
    for ev in events:
        if not isinstance(ev, builder.BlobProgress):
            continue
        assert ev.action == action
        assert ev.digest not in done, f"report after the end for {ev.digest}"
        assert 0 <= ev.done <= ev.total
        assert ev.done >= seen.get(ev.digest, 0)
        seen[ev.digest] = ev.done
        if ev.finished:
            assert ev.done == ev.total
            done.add(ev.digest)
    assert done == set(seen) and done
    return done


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.registry
def test_build_push_pull_run(registry: RunningRegistry, tmp_path: Path) -> None:  # noqa: F811
    ref = f"{registry.host}/api/app:1"
    store, result, events = _build(tmp_path, ref)
    assert isinstance(result, builder.BuildResult)
    assert result.tags == (f"{ref}",)
    assert not any(isinstance(e, builder.StepFinished) and e.cached for e in events)

    pushed: list[builder.Event] = []
    digest = builder.push(ref, store=store, on_event=pushed.append)
    assert digest == result.digest
    sent = _check_progress(pushed, "push")
    details = builder.inspect(ref, store=store)
    assert sent == {str(details.manifest["config"]["digest"]), *details.layers}  # type: ignore[index, call-overload]

    other = builder.open_store(tmp_path / "other")
    pulled: list[builder.Event] = []
    assert builder.pull(ref, store=other, on_event=pulled.append) == digest
    assert _check_progress(pulled, "pull") == sent
    info = builder.inspect(ref, store=other)
    assert (info.digest, info.cmd, info.layers) == (digest, ("cat", "/out.txt"), details.layers)
    lines: list[bytes] = []
    assert builder.run(ref, store=other, on_output=lines.append) == 0
    assert b"".join(lines).decode() == HELLO
    assert builder.run(ref, ["sh", "-c", "exit 7"], store=other) == 7
    assert [r.repository for r in builder.images(store=other)] == [f"{registry.host}/api/app"]

    again: list[builder.Event] = []
    rebuilt = builder.build(tmp_path / "ctx", tags=[ref], store=store, on_event=again.append)
    assert rebuilt.digest == result.digest
    steps = [e for e in again if isinstance(e, builder.StepFinished)]
    assert [(e.text.split()[0], e.cached) for e in steps[:3]] == [("FROM", False), ("COPY", True), ("RUN", True)]


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.registry
def test_build_with_push_output_reports_push_progress(registry: RunningRegistry, tmp_path: Path) -> None:  # noqa: F811
    ref = f"{registry.host}/api/out:2"
    store, _result, events = _build(tmp_path, ref, outputs=["type=registry"], build_args={"UNUSED": "1"})
    sent = _check_progress(events, "push")
    assert len(sent) == len(builder.inspect(ref, store=store).layers) + 1
    first_progress = next(i for i, e in enumerate(events) if isinstance(e, builder.BlobProgress))
    assert all(not isinstance(e, builder.StepStarted) for e in events[first_progress:])


@pytest.mark.root
@pytest.mark.overlay
def test_failed_step_raises_typed_error_and_keeps_tags(tmp_path: Path) -> None:
    store = builder.open_store(busybox_store(tmp_path))
    before = builder.images(store=store)
    ctx = _context(tmp_path / "ctx", run_line="RUN echo going-down && exit 3")
    events: list[builder.Event] = []
    with pytest.raises(builder.StepFailed) as info:
        builder.build(ctx, tags=["api/broken:1"], store=store, on_event=events.append)
    assert isinstance(info.value, builder.PybuildError)
    assert "exit code 3" in info.value.render()
    assert builder.images(store=store) == before
    assert not any(isinstance(e, builder.ImageWritten) for e in events)
    started = [e for e in events if isinstance(e, builder.StepStarted)]
    assert started[-1].text.startswith("RUN")
    assert b"going-down\n" in [e.line for e in events if isinstance(e, builder.StepOutput)]


def test_dockerfile_error_and_usage_error(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nFORM x\n")
    store = builder.open_store(tmp_path / "store")
    with pytest.raises(builder.DockerfileError) as info:
        builder.build(ctx, store=store)
    assert "Dockerfile:2" in info.value.render()
    with pytest.raises(builder.UsageError):
        builder.build(tmp_path / "missing", store=store)
    with pytest.raises(builder.StoreError):
        builder.inspect("nothing/here:1", store=store)


def test_images_tag_untag_prune_without_root(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", 'FROM scratch\nCOPY a.txt /\nENV A=1 B="two words"\nLABEL k=v\nCMD ["/x"]\n',
                       {"a.txt": "a\n"})
    store = builder.open_store(tmp_path / "store")
    result = builder.build(ctx, tags=["api/one:1"], store=store)
    builder.tag("api/one:1", "api/two:2", store=store)
    rows = {(r.repository, r.tag): r for r in builder.images(store=store)}
    assert set(rows) == {("api/one", "1"), ("api/two", "2")}
    with pytest.raises(builder.UsageError):  # not "no image of that platform"
        builder.images(store=store, platform="foo")
    assert rows["api/one", "1"].digest == result.digest == rows["api/two", "2"].digest
    details = builder.inspect("api/two:2", store=store)
    assert details.env["B"] == "two words" and details.labels == {"k": "v"} and details.cmd == ("/x",)
    assert details.as_json()["Digest"] == result.digest
    assert builder.untag("api/one:1", store=store) == ["docker.io/api/one:1"]
    with pytest.raises(builder.StoreError):  # gone already
        builder.untag("api/one:1", store=store)
    # the IMAGE ID images() shows names the image, as docker's: run, inspect, untag of its one tag
    image_id = rows["api/two", "2"].id[:12]
    assert builder.inspect(image_id, store=store).as_json()["Digest"] == result.digest
    assert builder.untag(image_id, store=store) == ["docker.io/api/two:2"]
    assert builder.images(store=store) == []
    assert builder.prune(store=store) > 0


def test_untag_by_the_id_images_shows_for_a_multi_platform_tag(tmp_path: Path) -> None:
    """images() shows one platform's config digest as a two-platform tag's ID; untag(ID) removes that tag."""
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /\n", {"a.txt": "a\n"})
    store = builder.open_store(tmp_path / "store")
    builder.build(ctx, tags=["api/multi:1"], platforms=["linux/amd64", "linux/arm64"], store=store)
    (row,) = builder.images(store=store)
    assert builder.untag(row.id[:12], store=store) == ["docker.io/api/multi:1"]
    assert builder.images(store=store) == []


def test_import_is_lazy_and_typed() -> None:
    """``import builder`` loads no engine; the package ships py.typed for type checkers."""
    code = ("import sys, builder; assert 'builder.api' not in sys.modules; "
            "from builder import build; assert 'builder.engine.build' not in sys.modules; "
            "import importlib.resources as r; assert (r.files('builder') / 'py.typed').is_file()")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(builder.__all__) >= {"build", "pull", "push", "images", "inspect", "run", "prune", "open_store"}


def _readme_script() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## From Python (CI scripts)", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.registry
def test_readme_ci_script(registry: RunningRegistry, tmp_path: Path) -> None:  # noqa: F811
    """The README's CI script, run as written: builds, pushes, prints its own progress."""
    ctx = _context(tmp_path / "ctx", run_line="ARG VERSION\nRUN echo version=$VERSION && cp /hello.txt /out.txt")
    (tmp_path / "ci.py").write_text(_readme_script())
    ref = f"{registry.host}/api/ci:1"
    root = busybox_store(tmp_path)
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    env["PYTHONPATH"] = str(Path(builder.__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, str(tmp_path / "ci.py"), ref], check=False, cwd=ctx, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "    version=1.2" in lines
    details = builder.inspect(ref, store=builder.open_store(root))
    assert lines[-1] == f"pushed {ref}@{details.digest}"
    assert sum(1 for line in lines if line.startswith("push sha256:")) == 1 + len(details.layers), proc.stdout
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == ["[1/1"] * 5
