"""builder.lazymod: a deferred module is imported by ``import`` without running, runs once on
first use (from any thread) as the one module object everybody holds, and a failing module
raises at first use and stays deferred. Each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(tmp_path: Path, module_code: str, test_code: str) -> str:
    (tmp_path / "slowmod.py").write_text(textwrap.dedent(module_code))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(test_code)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parent.parent}",
                                             "PATH": "/usr/bin:/bin"}, check=True)
    return done.stdout


MODULE = """
    import time
    with open("runs.txt", "a") as f:
        f.write("ran\\n")
    time.sleep(0.2)   # long enough for the other threads to ask while it runs
    VALUE = 42
    def double(x):
        return 2 * x
"""


def test_deferred_until_first_use_then_one_module(tmp_path: Path) -> None:
    out = _run(tmp_path, MODULE, """
        import os, sys
        from builder import lazymod
        lazymod.defer("slowmod")
        import slowmod
        first = slowmod
        print(lazymod.is_loaded("slowmod"), os.path.exists("runs.txt"))
        print(slowmod.VALUE)
        from slowmod import double
        import slowmod as again
        print(lazymod.is_loaded("slowmod"), double(4), again is first is sys.modules["slowmod"],
              type(first).__name__, first.__name__, first.__file__.endswith("slowmod.py"))
        try:
            first.missing
        except AttributeError as exc:
            print("AttributeError", "missing" in str(exc))
        print(open("runs.txt").read().count("ran"))
    """)
    assert out.split("\n") == ["False False", "42", "True 8 True module slowmod True", "AttributeError True", "1", ""]


def test_first_use_from_many_threads_runs_the_code_once(tmp_path: Path) -> None:
    out = _run(tmp_path, MODULE, """
        import threading
        from builder import lazymod
        lazymod.defer("slowmod")
        import slowmod
        got = []
        start = threading.Barrier(8)
        def use():
            start.wait()
            got.append(slowmod.double(slowmod.VALUE))
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(got == [84] * 8, open("runs.txt").read().count("ran"))
    """)
    assert out == "True 1\n"


def test_a_failing_module_raises_at_first_use_and_stays_deferred(tmp_path: Path) -> None:
    out = _run(tmp_path, """
        with open("runs.txt", "a") as f:
            f.write("ran\\n")
        raise RuntimeError("broken module")
    """, """
        from builder import lazymod
        lazymod.defer("slowmod")
        import slowmod
        for _ in range(2):
            try:
                slowmod.anything
            except RuntimeError as exc:
                print(exc, lazymod.is_loaded("slowmod"))
        print(open("runs.txt").read().count("ran"))
    """)
    assert out == "broken module False\nbroken module False\n2\n"


def test_defer_leaves_imported_or_unknown_modules_alone(tmp_path: Path) -> None:
    out = _run(tmp_path, MODULE, """
        import sys, json
        from builder import lazymod
        before = sys.modules["json"]
        lazymod.defer("json")
        lazymod.defer("no_such_module_here")
        lazymod.defer("xml.dom")
        print(sys.modules["json"] is before, "no_such_module_here" in sys.modules, "xml.dom" in sys.modules,
              lazymod.is_loaded("json"), lazymod.is_loaded("no_such_module_here"))
    """)
    assert out == "True False False True False\n"
