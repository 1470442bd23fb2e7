"""The live terminal view (issue 17), seen as a user sees it: the installed ``pybuild`` runs in
a pseudo-terminal (tmux from Debian, ``capture-pane`` reads the screen). While a long RUN runs,
its last output line is on screen; while a push goes through a slow link (tests/faultproxy.py
throttling uploads in front of the real registry), a byte bar is; the final screen shows every
finished step collapsed to one line with CACHED or its time, and the summary. A dumb terminal or
piped output falls back to the plain lines; plain runs never import rich."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from buildutil import BASE_TAG, busybox_store, run_cli
from faultproxy import FaultProxy
from registry_fixture import RunningRegistry, registry  # noqa: F401

PYBUILD = Path(sys.executable).parent / "pybuild"   # the installed console script
TMUX = shutil.which("tmux") or "/usr/bin/tmux"
DOCKERFILE = f"""FROM {BASE_TAG}
COPY big.bin /big.bin
ARG N=0
RUN for i in 1 2 3 4 5 6; do echo "line $i of $N"; done; echo last-line-before-sleep; sleep 3; echo after-sleep
CMD ["true"]
"""


class Screen:
    """One tmux server (its own socket) running one command in a window of a given size."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-S", str(self.socket), *args], check=True, capture_output=True,
                              text=True).stdout

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, what: str, ok: Callable[[str], bool], attempts: int = 1200) -> str:
        """Poll the screen (every 50 ms, up to ``attempts`` times) until ``ok(screen)``; a
        bounded wait for the program, not a measurement. Fails showing the last screen."""
        screen = ""
        for _ in range(attempts):
            screen = self.capture()
            if ok(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}; last screen:\n{screen}")


@contextmanager
def terminal(tmp_path: Path, command: str, env: dict[str, str], width: int = 100,
             height: int = 40) -> Iterator[Screen]:
    """Run ``command`` (a shell line) in a fresh tmux window; it prints ``EXIT=<code>`` when
    done and stays on screen until the server is killed at the end."""
    screen = Screen(tmp_path / "tmux.sock")
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    line = f"env -i {exports} {command}; echo EXIT=$?; sleep 600"
    screen.tmux("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t", line)
    try:
        yield screen
    finally:
        subprocess.run([TMUX, "-S", str(screen.socket), "kill-server"], capture_output=True, check=False)


def _env(store: Path, term: str = "xterm-256color") -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    return {**keep, "PYBUILD_ROOT": str(store), "TERM": term}


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big.bin").write_bytes(os.urandom(3 << 20))
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _lines(screen: str) -> list[str]:
    return [line.rstrip() for line in screen.splitlines() if line.strip()]


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.registry
def test_live_view_run_tail_push_bar_and_final_screen(registry: RunningRegistry, tmp_path: Path) -> None:  # noqa: F811
    store = busybox_store(tmp_path)
    ctx = _context(tmp_path)
    run_cli(["--progress=plain", "-t", "warm", str(ctx)], store).ok()  # COPY is cached below
    with FaultProxy(registry.host, throttle=1 << 20) as proxy:
        ref = f"{proxy.host}/live/app:1"
        cmd = f"{PYBUILD} -t {ref} --build-arg N=7 --push {ctx}"
        with terminal(tmp_path, cmd, _env(store)) as screen:
            running = screen.wait_for("the RUN's last line while it runs",
                                      lambda s: "last-line-before-sleep" in s and "EXIT=" not in s)
            run_line = next(line for line in _lines(running) if "RUN for i" in line)
            assert run_line.startswith("=> [stage 1/1] RUN")
            assert re.search(r"  \d+\.\ds$", run_line), run_line   # its timer
            assert "line 6 of 7" in running and "after-sleep" not in running
            assert "line 1 of 7" not in running  # only the last few lines
            big_bar = re.compile(r"^push [0-9a-f]{12} .*━.* \d+(\.\d)?[kM]?B/[1-9]\.\dMB  \d+(\.\d)?[kMG]?B/s$", re.M)
            screen.wait_for("a push bar of a MB-sized layer", lambda s: big_bar.search(s) is not None)
            final = screen.wait_for("the end", lambda s: "EXIT=" in s)
    lines = _lines(final)
    assert "EXIT=0" in lines, final
    assert "[stage 1/1] COPY big.bin /big.bin  CACHED" in lines
    assert re.search(r"^\[stage 1/1\] RUN for i in .*  \d+\.\ds$", final, re.M), final
    assert any(re.fullmatch(r"\[stage 1/1\] CMD \[\"true\"\]  \d+\.\ds", line) for line in lines), final
    assert not any(line.startswith("=>") or "━" in line for line in lines), final  # all collapsed
    assert "after-sleep" not in final and "last-line-before-sleep" not in final
    pushed = [line for line in lines if re.fullmatch(r"push [0-9a-f]{12}  (\S+  \d+\.\ds|exists)", line)]
    assert len(pushed) >= 3 and any("  3.1MB  " in line for line in pushed), final  # config, base, COPY (+ RUN)
    summary = next(line for line in lines if line.startswith("built in "))
    assert re.fullmatch(r"built in \d+\.\ds: 5 steps, [1-9] cached; push \d+\.\dMB", summary), summary
    assert any(re.fullmatch(r"writing image sha256:[0-9a-f]{64}", line) for line in lines), final
    assert f"naming to {ref}" in lines


@pytest.mark.root
@pytest.mark.overlay
def test_width_and_resize_are_respected(tmp_path: Path) -> None:
    store = busybox_store(tmp_path)
    ctx = _context(tmp_path)
    with terminal(tmp_path, f"{PYBUILD} -t narrow {ctx}", _env(store), width=100) as screen:
        screen.wait_for("the RUN running", lambda s: "last-line-before-sleep" in s)
        screen.tmux("resize-window", "-t", "t", "-x", "50")
        final = screen.wait_for("the end", lambda s: "EXIT=" in s)
    lines = _lines(final)
    assert "EXIT=0" in lines, final
    run_line = next(line for line in lines if line.startswith("[stage 1/1] RUN"))
    assert len(run_line) <= 50 and "…" in run_line and re.search(r"  \d+\.\ds$", run_line), final


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.parametrize("how", ["dumb", "piped"])
def test_dumb_or_piped_falls_back_to_plain(tmp_path: Path, how: str) -> None:
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nRUN echo out-one && echo out-two\n")
    cmd = f"{PYBUILD} -t plainly {ctx}" + (" 2>&1 | cat" if how == "piped" else "")
    with terminal(tmp_path, cmd, _env(store, "dumb" if how == "dumb" else "xterm-256color")) as screen:
        final = screen.wait_for("the end", lambda s: "EXIT=" in s)
    lines = _lines(final)
    assert "  | out-one" in lines and "  | out-two" in lines, final   # plain keeps every line
    assert any(re.fullmatch(r"\[stage 1/1\] RUN echo out-one && echo out-two  \d+\.\ds", line) for line in lines)
    assert not any(line.startswith("built in ") for line in lines)


def test_plain_and_piped_runs_never_import_rich(tmp_path: Path) -> None:
    """The renderer is imported only when a terminal is used."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    code = ("import sys; from builder.cli import main; rc = main(sys.argv[1:]); "
            "print('rich' in sys.modules, 'builder.render_live' in sys.modules, rc)")
    for progress in ("auto", "plain", "tty", "rawjson"):
        proc = subprocess.run([sys.executable, "-c", code, f"--progress={progress}", "-t", "p", str(ctx)],
                              capture_output=True, text=True, env={**os.environ, "PYBUILD_ROOT": str(tmp_path / "s")},
                              check=True)
        assert proc.stdout.split() == ["False", "False", "0"], (progress, proc.stdout, proc.stderr)


@pytest.mark.root
@pytest.mark.overlay
def test_live_view_tells_platforms_apart(tmp_path: Path) -> None:
    """Two platforms build the same stage at once (stage and step numbers repeat per platform):
    each running step has its own line, labelled with its platform."""
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM --platform=$BUILDPLATFORM {BASE_TAG} AS tool\nARG TARGETARCH\n"
        "RUN echo for-$TARGETARCH; sleep 3; echo done > /out\n"
        "FROM scratch\nCOPY --from=tool /out /out\n")
    cmd = f"{PYBUILD} --jobs 2 --platform linux/amd64,linux/s390x {ctx}"
    with terminal(tmp_path, cmd, _env(store)) as screen:
        running = screen.wait_for("both platforms' RUN at once",
                                  lambda s: "for-amd64" in s and "for-s390x" in s and "EXIT=" not in s)
        assert "[linux/amd64 tool 1/2] RUN" in running and "[linux/s390x tool 1/2] RUN" in running, running
        final = screen.wait_for("the end", lambda s: "EXIT=" in s)
    assert "EXIT=0" in final, final
    assert re.search(r"^\[linux/s390x stage 2/2\] COPY --from=tool /out /out  \d+\.\ds$", final, re.M), final


@pytest.mark.root
def test_large_copy_reports_its_layer_bytes(tmp_path: Path) -> None:
    """A layer past 8 MiB shows a byte bar while it is written; it collapses to one line."""
    store = busybox_store(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big.bin").write_bytes(os.urandom(20 << 20))  # random: compresses to about its size
    (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nCOPY big.bin /big.bin\n")
    with terminal(tmp_path, f"{PYBUILD} -t big {ctx}", _env(store)) as screen:
        final = screen.wait_for("the end", lambda s: "EXIT=" in s)
    lines = _lines(final)
    assert "EXIT=0" in lines, final
    assert any(re.fullmatch(r"layer  2\d\.\dMB  \d+\.\ds", line) for line in lines), final
    assert re.search(r"^built in \d+\.\ds: 2 steps, 0 cached; layer 2\d\.\dMB$", final, re.M), final
