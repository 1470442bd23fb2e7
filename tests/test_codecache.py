"""builder.codecache: dataclasses made through the kept compiled code behave exactly as without
it, the code is kept across runs (a second run compiles nothing, so leaves the file alone), and a
bad or unwritable cache is harmless; concurrent writers leave one whole file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# assorted dataclass shapes; prints everything their generated methods decide. They are made in
# the namespace of a module named argv[2] (the cache keeps only classes of builder modules).
PROBE = r'''
import sys
if sys.argv[1] == "cached":
    from builder import codecache
    codecache.install()
CLASSES = """
import dataclasses, inspect
from dataclasses import dataclass, field, InitVar
from typing import ClassVar

@dataclass(frozen=True)
class Frozen:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()

@dataclass(frozen=True, slots=True, order=True)
class Ordered:
    a: int
    b: list[int] = field(default_factory=list, compare=False)

@dataclass
class Mutable:
    a: int
    k: ClassVar[int] = 3
    skip: int = field(default=0, init=False, repr=False)
    seed: InitVar[int] = 1
    def __post_init__(self, seed: int) -> None:
        self.skip = seed * 2

@dataclass(kw_only=True, eq=False)
class Kw(Mutable):
    z: str

@dataclass(unsafe_hash=True)
class Hashed:
    a: int

out = []
f = Frozen(1, c=(2,))
out += [repr(f), f == Frozen(1, "x", (2,)), hash(f) == hash(Frozen(1, "x", (2,))), str(inspect.signature(Frozen))]
try:
    f.a = 2
except dataclasses.FrozenInstanceError as e:
    out.append(str(e))
try:
    del f.b
except dataclasses.FrozenInstanceError as e:
    out.append(str(e))
out += [Ordered(1, [9]) < Ordered(2), Ordered(1, [1]) == Ordered(1, [2]), repr(Ordered(3))]
m = Mutable(5, seed=4)
out += [repr(m), m.skip, m == Mutable(5, seed=4), Mutable.__init__.__annotations__]
k = Kw(1, z="q")
out += [repr(k), k == Kw(1, z="q"), str(inspect.signature(Kw))]
out += [hash(Hashed(3)) == hash(Hashed(3)), Frozen.__init__.__annotations__, Frozen.__doc__]
print(out)
"""
import types
module = sys.modules[sys.argv[2]] = types.ModuleType(sys.argv[2])
exec(CLASSES, module.__dict__)
'''


def _probe(mode: str, prefix: Path, *extra: str, module: str = "builder.codecache_probe") -> str:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, *extra, "-c", PROBE, mode, module], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout.startswith("["), done.stderr
    return done.stdout


def _cache_files(prefix: Path) -> list[Path]:
    return sorted(prefix.rglob("dataclass-code-*.bin"))


def test_same_behaviour_and_kept_across_runs(tmp_path: Path) -> None:
    prefix = tmp_path / "pycache"
    plain = _probe("plain", prefix)
    assert _cache_files(prefix) == []
    first = _probe("cached", prefix)
    assert first == plain
    [cache] = _cache_files(prefix)
    written = cache.read_bytes()
    stamp = cache.stat().st_mtime_ns
    os.utime(cache, ns=(stamp - 10**9, stamp - 10**9))
    second = _probe("cached", prefix)
    assert second == plain
    assert cache.read_bytes() == written
    assert cache.stat().st_mtime_ns == stamp - 10**9, "a run with every class cached rewrote the cache"


def test_corrupt_cache_is_ignored_and_replaced(tmp_path: Path) -> None:
    prefix = tmp_path / "pycache"
    plain = _probe("plain", prefix)
    _probe("cached", prefix)
    [cache] = _cache_files(prefix)
    good = cache.read_bytes()
    for junk in (b"", b"\x00garbage", good[: len(good) // 2]):
        cache.write_bytes(junk)
        assert _probe("cached", prefix) == plain
        assert cache.read_bytes() == good


def test_no_cache_written_without_bytecode(tmp_path: Path) -> None:
    prefix = tmp_path / "pycache"
    plain = _probe("plain", prefix)
    assert _probe("cached", prefix, "-B") == plain
    assert _cache_files(prefix) == []


def test_other_packages_classes_are_not_kept(tmp_path: Path) -> None:
    prefix = tmp_path / "pycache"
    plain = _probe("plain", prefix, module="elsewhere")
    assert _probe("cached", prefix, module="elsewhere") == plain
    assert _cache_files(prefix) == []


def test_unwritable_place_is_harmless(tmp_path: Path) -> None:
    """No directory can be made for the cache (a file in the way, as a read-only install
    refuses root nothing): the classes behave, nothing is written, no error is printed."""
    blocker = tmp_path / "pycache"
    blocker.write_text("not a directory")
    plain = _probe("plain", tmp_path / "other")
    assert _probe("cached", blocker) == plain
    assert blocker.read_text() == "not a directory"


def test_concurrent_writers_leave_one_whole_file(tmp_path: Path) -> None:
    """Several processes compiling at once each rename a whole file of their own into place:
    the file is then read by the next run, which compiles nothing (so does not rewrite it)."""
    prefix = tmp_path / "pycache"
    plain = _probe("plain", prefix)
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    procs = [subprocess.Popen([sys.executable, "-c", PROBE, "cached", "builder.codecache_probe"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate()
        assert proc.returncode == 0 and out == plain, err
    [cache] = _cache_files(prefix)
    assert not [p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp")], "a temp file was left behind"
    stamp = cache.stat().st_mtime_ns
    os.utime(cache, ns=(stamp - 10**9, stamp - 10**9))
    assert _probe("cached", prefix) == plain
    assert cache.stat().st_mtime_ns == stamp - 10**9, "the file written concurrently was not whole"
