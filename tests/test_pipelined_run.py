"""RUN steps of a stage built without the cache run one after another without waiting for each
other's layer (builder.engine.step_run.PendingRun): the layer of a RUN is framed and hashed on
a thread while the next RUN runs on its upper dir. What that must not change: the image, the
cache records (a later cached build hits every step), the record of a RUN whose successor
failed, and what a failed build leaves behind (nothing mounted, no temp dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildutil import BASE_TAG, busybox_store, run_cli

pytestmark = pytest.mark.root

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}

# four RUNs in a row (files made, some deleted: whiteouts, a directory replaced: opaque, a
# file appended to), an ENV between two of them, then a stage that copies the result
DOCKERFILE = f"""FROM {BASE_TAG} AS build
RUN mkdir -p /d/sub /d/gone && for i in $(seq 1 40); do echo "f $i" > /d/f$i; done && echo x > /d/gone/x
RUN for i in $(seq 2 2 40); do rm /d/f$i; done && rm -rf /d/gone && mkdir /d/sub2 && echo y > /d/sub2/y
ENV STEP=three
RUN echo "$STEP" >> /d/f1 && ls /d > /d/listing
RUN cat /d/f1 /d/listing > /d/summary

FROM scratch
COPY --from=build /d /d
"""


def steps(err: str) -> list[tuple[str, bool]]:
    """(text, cached) of every finished step of a --progress=rawjson build."""
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [(e["text"], e["cached"]) for e in events if e["type"] == "StepFinished" and e["step"] > 0]


def image(err: str) -> str:
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    written = [e["digest"] for e in events if e["type"] == "ImageWritten"]
    assert len(written) == 1, err
    return str(written[0])


def build(root: Path, ctx: Path, *args: str) -> tuple[str, list[tuple[str, bool]]]:
    r = run_cli(["build", "--progress=rawjson", "-t", "t/pipe", *args, str(ctx)], root, env=EPOCH).ok()
    return image(r.err), steps(r.err)


def leftovers(root: Path) -> tuple[list[str], list[str]]:
    """Mounts under the store and entries of its build temp dir."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if str(root) in line.split()[4]]
    tmp = root / "tmp"
    names = sorted(p.name for p in tmp.iterdir() if p.name.startswith("build")) if tmp.is_dir() else []
    return mounts, names


def test_no_cache_runs_make_the_image_and_records_of_a_cached_build(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    piped_root = busybox_store(tmp_path / "piped")
    piped, piped_steps = build(piped_root, ctx, "--no-cache")
    assert not any(cached for _, cached in piped_steps)

    plain_root = busybox_store(tmp_path / "plain")
    plain, plain_steps = build(plain_root, ctx)  # every step a miss, one after another
    assert not any(cached for _, cached in plain_steps)
    assert piped == plain

    # the records the --no-cache build wrote chain as a cached build's do: every RUN and the
    # COPY hit now (ENV, config only, is never reported cached)
    again, again_steps = build(piped_root, ctx)
    assert again == piped
    layer_steps = [(text.split()[0], cached) for text, cached in again_steps if not text.startswith("ENV")]
    assert layer_steps == [("RUN", True)] * 4 + [("COPY", True)]

    # what the RUNs saw of each other (scratch has no shell: read it through a busybox stage)
    (ctx / "Dockerfile.check").write_text(f"FROM {BASE_TAG}\nCOPY --from=t/pipe /d /d\n")
    run_cli(["build", "-q", "-t", "t/check", "-f", str(ctx / "Dockerfile.check"), str(ctx)], piped_root).ok()
    summary = run_cli(["run", "t/check", "cat", "/d/summary"], piped_root).ok().out.splitlines()
    listing = ["f1", "f11", "f13", "f15", "f17", "f19", "f21", "f23", "f25", "f27", "f29", "f3", "f31", "f33",
               "f35", "f37", "f39", "f5", "f7", "f9", "sub", "sub2"]
    assert summary == ["f 1", "three"] + sorted(listing + ["listing"])  # (ls made /d/listing first)
    now = run_cli(["run", "t/check", "ls", "/d"], piped_root).ok().out.split()
    assert now == sorted(listing + ["listing", "summary"])


def test_a_failed_run_keeps_the_record_of_the_one_before_and_leaves_nothing(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nRUN echo kept > /kept\nRUN echo no; exit 3\n")
    root = busybox_store(tmp_path / "store")
    r = run_cli(["build", "--no-cache", "-t", "t/fail", str(ctx)], root, env=EPOCH)
    assert r.rc != 0
    assert "Dockerfile:3: RUN echo no; exit 3: exit code 3" in r.err and "Traceback" not in r.err
    assert leftovers(root) == ([], [])

    # the first RUN was recorded before the failure was reported: a cached build reuses it
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nRUN echo kept > /kept\nRUN cat /kept\n")
    _, done = build(root, ctx)
    assert [cached for _, cached in done] == [True, False]
    assert leftovers(root) == ([], [])
