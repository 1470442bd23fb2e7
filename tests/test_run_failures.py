"""A failing or interrupted RUN (issue 4): the error names the Dockerfile line, the command and
its exit code with the last lines of output, no traceback, no tag is created or changed, and
nothing is left mounted, running or on disk (store tmp, sandbox temp base)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from runutil import (REPO, assert_clean, build, leftover_processes, make_context, new_store, pybuild_argv,
                     pybuild_env, sandbox_tmp, tag_digest)

pytestmark = [pytest.mark.root, pytest.mark.overlay]

BASE = "FROM localhost/busybox:latest\n"


def _token() -> str:
    return f"PB_TEST_TOKEN={uuid.uuid4().hex}"


def test_run_exit_code_is_reported_and_nothing_is_tagged(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    token = _token()
    ctx = make_context(tmp_path / "ctx", BASE + f"ENV {token}\nRUN echo ok > /ok\nRUN exit 3\n")
    res = build(ctx, root, tag="failing:latest")
    assert res.rc == 1, res
    assert "Dockerfile:4: RUN exit 3: exit code 3" in res.err, res.err
    assert "Traceback" not in res.err + res.out
    assert tag_digest(root, "docker.io/library/failing:latest") is None
    assert_clean(root, [token])


def test_failure_prints_output_tail_and_keeps_existing_tag(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    token = _token()
    good = make_context(tmp_path / "good", BASE + "RUN echo good > /good\n")
    build(good, root, tag="app:latest").ok()
    before = tag_digest(root, "docker.io/library/app:latest")
    assert before is not None

    cmd = "i=1; while [ $i -le 30 ]; do echo out-line-$i; i=$((i+1)); done; exit 4"
    bad = make_context(tmp_path / "bad", BASE + f"ENV {token}\nRUN echo fine\nRUN {cmd}\n")
    res = build(bad, root, tag="app:latest")
    assert res.rc == 1, res
    head = f"Dockerfile:4: RUN {cmd}: exit code 4"
    assert head in res.err, res.err
    tail = res.err[res.err.index(head) + len(head):]
    assert "out-line-30" in tail and "out-line-29" in tail, f"no output tail after the error:\n{res.err}"
    assert "Traceback" not in res.err + res.out
    assert tag_digest(root, "docker.io/library/app:latest") == before, "a failed build changed the tag"
    assert_clean(root, [token])


def test_failed_step_in_a_later_stage_keeps_nothing(tmp_path: Path) -> None:
    """A failure after a successful multi-stage prefix: still no tag, no leftovers."""
    root = new_store(tmp_path)
    token = _token()
    ctx = make_context(tmp_path / "ctx", BASE.rstrip("\n") + " AS one\n"
                       f"ENV {token}\nRUN echo one > /one\n"
                       "FROM one\nRUN cat /one && false\n")
    res = build(ctx, root, tag="multi:latest")
    assert res.rc == 1, res
    assert "Dockerfile:5: RUN cat /one && false: exit code 1" in res.err, res.err
    assert tag_digest(root, "docker.io/library/multi:latest") is None
    assert_clean(root, [token])


class _StderrWatch:
    """Reads a child's stderr in a thread; ``wait_for(text)`` blocks until it appears."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.data = b""
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        while True:
            chunk = self.proc.stderr.read1(4096)  # type: ignore[attr-defined]
            with self.cond:
                if not chunk:
                    self.cond.notify_all()
                    return
                self.data += chunk
                self.cond.notify_all()

    def wait_for(self, text: bytes, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: text in self.data or not self.thread.is_alive(), timeout) \
                and text in self.data

    def text(self) -> str:
        self.thread.join(10)
        return self.data.decode("utf-8", "replace")


@pytest.mark.parametrize("stages", [1, 2], ids=["one-stage", "two-parallel-stages"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_run_cleans_up(tmp_path: Path, sig: signal.Signals, stages: int) -> None:
    root = new_store(tmp_path)
    token = _token()
    names = "ab"[:stages]
    df = "".join(BASE.rstrip("\n") + f" AS {n}\nENV {token}\nRUN echo step-started-{n} && sleep {100 + i}\n"
                 for i, n in enumerate(names))
    df += "FROM scratch\n" + "".join(f"COPY --from={n} /etc/passwd /{n}\n" for n in names)
    ctx = make_context(tmp_path / "ctx", df)
    proc = subprocess.Popen(pybuild_argv(["-t", "interrupted:latest", "--progress=plain", "--jobs", "2", str(ctx)]),
                            cwd=REPO, env=pybuild_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = _StderrWatch(proc)
    try:
        for n in names:  # every stage's RUN is running (at once, with two)
            assert watch.wait_for(f"step-started-{n}".encode(), 120), f"stage {n} never started:\n{watch.text()}"
        # positive control: the scan used by assert_clean does see the running steps
        # (the echo's output can arrive before the shell has started its sleep: a counted poll)
        for _ in range(200):
            running = leftover_processes([root, sandbox_tmp(root)], [token])
            if all(any(f"sleep {100 + i}" in p for p in running) for i in range(stages)):
                break
            time.sleep(0.05)
        assert all(any(f"sleep {100 + i}" in p for p in running) for i in range(stages)), running
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=60)  # a hang guard, not a speed assertion
        except subprocess.TimeoutExpired:
            pytest.fail(f"pybuild did not exit after {sig.name}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = watch.text()
    assert rc == 128 + sig, err  # 130 after Ctrl-C, 143 after SIGTERM: as a process the signal ended
    assert "Traceback" not in err, err
    assert tag_digest(root, "docker.io/library/interrupted:latest") is None
    assert_clean(root, [token])


def test_only_the_stages_the_target_needs_run(tmp_path: Path) -> None:
    """A failing stage the target does not need is never run; ``--target`` it and it fails."""
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", BASE.rstrip("\n") + " AS broken\nRUN exit 9\n"
                       + BASE.rstrip("\n") + " AS used\nRUN echo used > /used\n"
                       + BASE + "COPY --from=used /used /used\nRUN cat /used\n")
    build(ctx, root, tag="pruned:latest").ok()
    res = build(ctx, root, "--target", "broken", tag="broken:latest")
    assert res.rc == 1 and "Dockerfile:2: RUN exit 9: exit code 9" in res.err, res
    assert tag_digest(root, "docker.io/library/broken:latest") is None
    assert_clean(root)
