"""Helpers of the RUN build tests (tests/test_run_*.py, tests/test_debootstrap.py).

Contracts:
- Every pybuild invocation is a child process (``python -m builder.cli``): exit codes, stderr
  and the absence of tracebacks are those a user sees. ``pybuild(args, root)`` sets
  ``PYBUILD_ROOT=root`` and ``PYBUILD_SANDBOX_TMPDIR=<root>/../sbx`` (a per-test dir, so the
  hygiene checks can prove the sandbox's temp dirs are gone without seeing other processes').
  It never raises for a failed command: look at ``rc`` or call ``.ok()``.
- ``new_store(tmp_path)`` is a ``cp -a`` copy of a session-wide template store holding
  ``localhost/busybox:latest`` (built once from the host's /bin/busybox with
  testdata/demo/make-base.sh); the template is removed at interpreter exit.
- Images are read with tests/ocireader.py, which shares no code with ``builder``.
- ``leftovers(root, ...)`` lists mounts, processes and temp dirs a build left behind; the
  tests assert it is empty.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from buildutil import BASE_TAG, BUSYBOX, MAKE_BASE, REPO
from peers import environ_copy
from buildutil import CliResult as Result  # one pybuild invocation: rc, out, err, .ok()

RUN_DATA = REPO / "testdata" / "run"


def sandbox_tmp(root: Path) -> Path:
    """The sandbox temp base used for the store ``root`` (a sibling dir named ``sbx``)."""
    return root.parent / "sbx"


def pybuild_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a pybuild child using store ``root`` (creates its sandbox temp dir)."""
    env = environ_copy()
    env.pop("SOURCE_DATE_EPOCH", None)
    env["PYBUILD_ROOT"] = str(root)
    sbx = sandbox_tmp(root)
    sbx.mkdir(parents=True, exist_ok=True)
    env["PYBUILD_SANDBOX_TMPDIR"] = str(sbx)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def pybuild_argv(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "builder.cli", *args]


def pybuild(args: Sequence[str], root: Path, *, env: dict[str, str] | None = None,
            timeout: float = 300) -> Result:
    """Run ``pybuild ARGS`` with store ``root``; raises only on timeout (subprocess.TimeoutExpired)."""
    p = subprocess.run(pybuild_argv(args), cwd=REPO, env=pybuild_env(root, env), capture_output=True,
                       timeout=timeout)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def build(context: Path, root: Path, *extra: str, tag: str | None = "test:latest",
          env: dict[str, str] | None = None) -> Result:
    """``pybuild [-t TAG] --progress=plain EXTRA... CONTEXT``; not checked (call ``.ok()``)."""
    args = ["--progress=plain", *extra]
    if tag:
        args = ["-t", tag, *args]
    return pybuild([*args, str(context)], root, env=env)


# ---- stores ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def template_store() -> Path:
    """A store holding ``localhost/busybox:latest``, built once per test session."""
    if not BUSYBOX.exists():
        raise AssertionError("/bin/busybox is missing: apt-get install busybox-static")
    work = Path(tempfile.mkdtemp(prefix="pybuild-runtests-"))
    atexit.register(shutil.rmtree, work, True)
    subprocess.run(["sh", str(MAKE_BASE), str(work / "base")], check=True, capture_output=True)
    root = work / "store"
    build(work / "base", root, tag=BASE_TAG).ok()
    return root


def new_store(tmp_path: Path) -> Path:
    """A private copy (``cp -a``) of the template store at ``tmp_path/store``."""
    dest = tmp_path / "store"
    subprocess.run(["cp", "-a", str(template_store()), str(dest)], check=True)
    return dest


def tag_digest(root: Path, ref: str) -> str | None:
    """The manifest digest the store's index.json gives ``ref`` (full name, e.g.
    ``docker.io/library/app:latest``), or None when untagged."""
    index = json.loads((root / "index.json").read_text())
    for m in index.get("manifests", []):
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            return m["digest"]
    return None


def export_digest(root: Path, ref: str, dest: Path) -> str:
    """Export the stored image ``ref`` of store ``root`` as an OCI archive at ``dest`` (the
    library's export: no CLI command writes a stored image to a file); the manifest digest."""
    code = ("import sys\nfrom pathlib import Path\nfrom builder.store.layout import Store\n"
            "from builder.outputspec import parse_output\nfrom builder.transfer import export_image\n"
            "print(export_image(Store(Path(sys.argv[1])), sys.argv[2], parse_output('type=oci,dest=' + sys.argv[3])))\n")
    p = subprocess.run([sys.executable, "-c", code, str(root), ref, str(dest)], cwd=REPO, env=pybuild_env(root),
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


# ---- contexts ----------------------------------------------------------------------------------

def make_context(dest: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """A build context at ``dest`` with ``Dockerfile`` and ``files`` (relative path -> text)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        p = dest / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return dest


def copy_context(name: str, dest: Path) -> Path:
    """A copy of testdata/run/NAME at ``dest`` (so nothing a build does can touch the repo)."""
    shutil.copytree(RUN_DATA / name, dest, symlinks=True)
    return dest


def fingerprint(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """path -> (mode, content or link target) of everything under ``root`` (links not followed)."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                extra: bytes | str = os.readlink(p)
            elif p.is_file():
                extra = p.read_bytes()
            else:
                extra = ""
            out[str(p.relative_to(root))] = (st.st_mode, extra)
    return out


# ---- hygiene -----------------------------------------------------------------------------------

def _unescape_mountinfo(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def leftover_mounts(paths: Iterable[Path]) -> list[str]:
    """Mount points in this process's mountinfo at or under any of ``paths``."""
    prefixes = [str(p.resolve()) for p in paths]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mountinfo(line.split()[4])
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(line.strip())
    return found


def leftover_processes(paths: Iterable[Path], tokens: Iterable[str] = ()) -> list[str]:
    """Processes (other than this one) whose cwd or root lies under ``paths``, or whose
    environment holds ``PYBUILD_ROOT=<path>`` or one of ``tokens``. Each as ``PID cmdline``."""
    prefixes = [str(p.resolve()) for p in paths]
    needles = [f"PYBUILD_ROOT={p}".encode() for p in prefixes] + [t.encode() for t in tokens]
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        proc = Path("/proc") / entry
        try:
            hit = False
            for link in ("cwd", "root"):
                try:
                    target = os.readlink(proc / link)
                except OSError:
                    continue
                if any(target == p or target.startswith(p + "/") for p in prefixes):
                    hit = True
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                environ = []
            if any(any(n in e for n in needles) for e in environ):
                hit = True
            if hit:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                if cmd.strip():  # zombies already reaped by nobody have no cmdline: still report
                    found.append(f"{entry} {cmd.strip()}")
                else:
                    found.append(f"{entry} <no cmdline>")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def leftover_tmp(root: Path) -> list[str]:
    """Entries left in ``root/tmp`` and in the sandbox temp base of ``root``."""
    found = []
    for d in (root / "tmp", sandbox_tmp(root)):
        if d.is_dir():
            found += [str(d / n) for n in os.listdir(d)]
    return found


def leftovers(root: Path, tokens: Iterable[str] = ()) -> list[str]:
    """Every mount, process and temp dir a build with store ``root`` left behind."""
    paths = [root, sandbox_tmp(root)]
    return ([f"mount: {m}" for m in leftover_mounts(paths)]
            + [f"process: {p}" for p in leftover_processes(paths, tokens)]
            + [f"temp: {t}" for t in leftover_tmp(root)])


def assert_clean(root: Path, tokens: Iterable[str] = ()) -> None:
    found = leftovers(root, tokens)
    assert not found, "the build left things behind:\n  " + "\n  ".join(found)


# ---- reading what was written ------------------------------------------------------------------

def _maybe_decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError):
            return data
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import io

        import zstandard

        try:
            return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
        except zstandard.ZstdError:
            return data
    return data


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` (links not followed) whose bytes, or gzip/zstd-decompressed bytes,
    contain ``needle``."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            data = p.read_bytes()
            if needle in data or needle in _maybe_decompress(data):
                found.append(str(p))
    return found


def layer_names(layer: Sequence[object]) -> list[str]:
    """Member names of one ocireader layer, ``./`` and trailing ``/`` stripped."""
    out = []
    for m in layer:
        name = m.name.lstrip("/")
        while name.startswith("./"):
            name = name[2:]
        out.append(name.rstrip("/"))
    return out
