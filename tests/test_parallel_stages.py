"""Independent stages build concurrently, bounded by --jobs; a failing stage stops the others.

Overlap is proven from times the stages record themselves (the kernel's /proc/uptime inside
each RUN), never from the build's wall clock: three ~2 s stages overlapped when each started
before any of them ended. The wall-time figures are bench/parallel_stages.py's.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from runutil import (
    BASE_TAG,
    assert_clean,
    build,
    fingerprint,
    make_context,
    new_store,
    tag_digest,
)

from builder.engine.cachemounts import mount_dir

pytestmark = [pytest.mark.root, pytest.mark.overlay]

STAGE = """\
FROM {base} AS {name}
RUN echo started-{name} && cut -d' ' -f1 /proc/uptime > /start && sleep 2 && cut -d' ' -f1 /proc/uptime > /end
"""
THREE = "".join(STAGE.format(base=BASE_TAG, name=n) for n in "abc") + "FROM scratch\n" + "".join(
    f"COPY --from={n} /start /{n}.start\nCOPY --from={n} /end /{n}.end\n" for n in "abc")


def _intervals(out: Path) -> dict[str, tuple[float, float]]:
    return {n: (float((out / f"{n}.start").read_text()), float((out / f"{n}.end").read_text())) for n in "abc"}


def test_three_independent_stages_overlap(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", THREE)
    out = tmp_path / "out"
    r = build(ctx, root, "--jobs", "3", "--output", f"type=local,dest={out}").ok()
    spans = _intervals(out)
    assert all(end - start >= 1.9 for start, end in spans.values()), spans  # each really took ~2 s
    # all three were running at once: every stage started before any stage ended
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), spans
    # progress lines name their stage
    for n in "abc":
        assert f"  {n} | started-{n}" in r.err, r.err
        assert f"[{n} " in r.err


def test_one_job_builds_one_stage_at_a_time(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", THREE)
    out = tmp_path / "out"
    build(ctx, root, "--jobs", "1", "--output", f"type=local,dest={out}").ok()
    spans = sorted(_intervals(out).values())
    assert all(prev[1] <= nxt[0] for prev, nxt in pairwise(spans)), spans


FAILING = f"""\
FROM {BASE_TAG} AS slow
RUN --mount=type=cache,target=/m,id=plat-marker touch /m/started && sleep 20 && touch /m/done
FROM {BASE_TAG} AS bad
RUN --mount=type=cache,target=/m,id=plat-marker while [ ! -e /m/started ]; do sleep 0.1; done; exit 3
FROM {BASE_TAG} AS ok
RUN echo fine > /ok
FROM scratch
COPY --from=slow /etc/passwd /s
COPY --from=bad /etc/passwd /b
COPY --from=ok /ok /ok
"""


def test_a_failing_stage_stops_the_others_and_leaves_nothing(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", FAILING)
    before = fingerprint(root / "index.json")
    r = build(ctx, root, "--jobs", "3", tag="localhost/parallel:1")
    assert r.rc == 1, r
    assert "Traceback" not in r.err
    assert "Dockerfile:4: RUN" in r.err and "exit code 3" in r.err, r.err
    marker = mount_dir(root, "plat-marker")
    # the slow stage was running (its marker is there) and was stopped before it finished
    assert (marker / "started").exists()
    assert not (marker / "done").exists()
    # no tag, the store's index untouched, no mount, process or temp dir left
    assert tag_digest(root, "localhost/parallel:1") is None
    assert fingerprint(root / "index.json") == before
    assert_clean(root)


def test_parallel_stages_share_store_and_cache_consistently(tmp_path: Path) -> None:
    """Three stages at once write layers, cache records and snapshots side by side (and read
    the same context file); the rebuild hits the cache everywhere and gives the same image."""
    root = new_store(tmp_path)
    df = "".join(f"FROM {BASE_TAG} AS {n}\nRUN echo {n} > /{n} && sleep 1\nCOPY f /f-{n}\n" for n in "abc")
    df += "FROM scratch\n" + "".join(f"COPY --from={n} /{n} /{n}\n" for n in "abc")
    ctx = make_context(tmp_path / "ctx", df, {"f": "shared file"})
    first = build(ctx, root, "--jobs", "4", tag="localhost/cons:1").ok()
    assert "CACHED" not in first.err
    digest = tag_digest(root, "localhost/cons:1")
    again = build(ctx, root, "--jobs", "4", tag="localhost/cons:1").ok()
    assert again.err.count("CACHED") == 3 * 2 + 3, again.err
    assert tag_digest(root, "localhost/cons:1") == digest
    assert_clean(root)


def test_locked_cache_mount_is_used_by_one_stage_at_a_time(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    body = ("if [ -e /m/busy ]; then echo {n} >> /m/overlapped; fi; touch /m/busy; echo {n} >> /m/users; "
            "sleep 1; rm /m/busy")
    df = "".join(f"FROM {BASE_TAG} AS {n}\nRUN --mount=type=cache,target=/m,id=plat-locked,sharing=locked "
                 f"{body.format(n=n)}\n" for n in "abc")
    df += "FROM scratch\n" + "".join(f"COPY --from={n} /etc/passwd /{n}\n" for n in "abc")
    build(make_context(tmp_path / "ctx", df), root, "--jobs", "3", tag=None).ok()
    mount = mount_dir(root, "plat-locked")
    assert sorted((mount / "users").read_text().split()) == ["a", "b", "c"]
    assert not (mount / "overlapped").exists()
    assert_clean(root)


def test_a_build_platform_stage_shared_by_two_targets_runs_once(tmp_path: Path) -> None:
    """Both target platforms need the same native stage: built concurrently, its RUN runs once
    and the other platform's identical step takes the result from the cache."""
    root = new_store(tmp_path)
    df = (f"FROM --platform=$BUILDPLATFORM {BASE_TAG} AS gen\nRUN echo generating && sleep 1 && echo gen > /g\n"
          "FROM scratch\nCOPY --from=gen /g /g\n")
    r = build(make_context(tmp_path / "ctx", df), root, "--jobs", "2", "--platform", "linux/amd64,linux/s390x",
              tag=None).ok()
    assert r.err.count("| generating") == 1, r.err
    runs = [line for line in r.err.splitlines() if "] RUN echo generating" in line]
    assert len(runs) == 2 and sum(line.endswith("CACHED") for line in runs) == 1, runs
