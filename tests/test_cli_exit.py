"""builder.cli.run (the ``pybuild`` console script, ``python -m builder.cli``) ends the process
without the interpreter's teardown, yet as a normal exit would: atexit callbacks run, output is
flushed, the exit code is main()'s, and a thread still running is waited for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from buildutil import REPO


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)


def test_atexit_callbacks_run_and_output_is_flushed() -> None:
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stdout.write('callback ran\\n'))\n"
            "sys.stdout.write('buffered before exit ')\n"
            "from builder.cli import run\n"
            "sys.argv = ['pybuild', '--version']\n"
            "run()\n")
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["buffered before exit pybuild 0.1.0", "callback ran", ""]


def test_exit_code_is_mains(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nNOSUCHINSTRUCTION x\n")
    store = str(tmp_path / "store")
    via_run = "import sys; from builder.cli import run; sys.argv = ['pybuild', *sys.argv[1:]]; run()"
    via_main = "import sys; from builder.cli import main; print('rc', main(sys.argv[1:]))"
    codes = set()
    for args in (["--root", store, "-t", "x", str(tmp_path / "missing")], ["--root", store, "-t", "x", str(ctx)],
                 ["--no-such-flag"], ["--version"]):
        expected = _run(via_main, *args)
        done = _run(via_run, *args)
        assert f"rc {done.returncode}" in expected.stdout, (args, done.returncode, expected.stdout)
        assert done.stderr == expected.stderr and "Traceback" not in done.stderr
        codes.add(done.returncode)
    assert codes == {0, 1, 2}


def test_a_running_thread_is_waited_for() -> None:
    code = ("import sys, threading, time\n"
            "def late():\n"
            "    time.sleep(0.3)\n"
            "    print('thread finished', flush=True)\n"
            "threading.Thread(target=late).start()\n"
            "from builder.cli import run\n"
            "sys.argv = ['pybuild', '--version']\n"
            "run()\n")
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pybuild 0.1.0", "thread finished"]


def test_closed_stdout_exits_as_before() -> None:
    """``pybuild --help | head -c0``: no traceback, no "Exception ignored" noise."""
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_main_freezes_objects_only_as_the_process_command() -> None:
    """main() without argv (an older console script's ``sys.exit(main())``) freezes every object
    out of the cycle collector before the teardown; main(argv) (tests, embedding) does not."""
    code = ("import gc, sys\n"
            "from builder.cli import main\n"
            "print(main(['--version']), gc.get_freeze_count())\n"
            "sys.argv = ['pybuild', '--version']\n"
            "print(main(), gc.get_freeze_count() > 0)\n")
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pybuild 0.1.0", "0 0", "pybuild 0.1.0", "0 True"]
