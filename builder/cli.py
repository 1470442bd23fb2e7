"""The pybuild command line. The only module that prints.

Every PybuildError becomes a message on stderr and its exit code; a Python traceback is shown
only with ``--debug``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from . import __version__, codecache, lazymod

lazymod.defer("inspect")  # dataclasses imports it for classes without a docstring (ours have one)
codecache.install()  # before the first dataclass is made (builder.errors imports some)

from .errors import PybuildError, UsageError  # noqa: E402

EXAMPLES = """\
examples:
  pybuild -t app .                         build ./Dockerfile, tag the image "app"
  pybuild -f ci/Dockerfile -t app:1 ctx    a Dockerfile elsewhere, context "ctx"
  pybuild -t app --output type=oci,dest=app.tar .
  tar -czf - . | pybuild -t app -          a tar context (or a lone Dockerfile) on stdin
  pybuild -t app https://host/org/app.git#v1:docker   a git context (also ssh://, git@host:...)
  pybuild -t app --build-context base=docker-image://alpine:3 --ssh default .
  pybuild parse --format buildkit Dockerfile
  pybuild images | inspect app | history app | tag app app:2 | rmi app:2
  pybuild run app                          run the image's command in a sandbox
"""

_COMMANDS = ("build", "parse", "images", "inspect", "history", "tag", "rmi", "prune", "du", "run",
             "pull", "push", "login", "logout", "store")


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size().columns`` finds it ($COLUMNS, else
    the terminal of stdout, else 80); the terminal is asked once per process (argparse asks for
    every add_argument)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    return columns if columns > 0 else _terminal_columns()


@functools.lru_cache(maxsize=1)
def _terminal_columns() -> int:
    try:
        columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter with the width argparse would use, found without importing
    shutil (argparse makes a formatter for every add_argument; shutil brings zlib, bz2 and lzma:
    ~2 ms of every command's start)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # argparse's default exits 2 with usage: keep that
        raise UsageError(message)


def _parse_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Split off the sub-command; anything else (``pybuild -t x .``) means ``build``.
    Global options (``--debug``, ``--root DIR``) may stand before the command."""
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--debug" or a.startswith("--root="):
            i += 1
            continue
        if a == "--root":
            i += 2
            continue
        if a in _COMMANDS:
            return a, args[:i] + args[i + 1:]
        break
    return "build", args


def _cmd_parse(ns: argparse.Namespace) -> int:
    from .syntax.parser import parse_file
    from .syntax import dump

    df = parse_file(ns.file, cache=False)  # a diagnostic: always runs the grammar
    for warning in df.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = dump.buildkit(df) if ns.format == "buildkit" else dump.json_dump(df)
    # bytes that were not UTF-8 in the Dockerfile come back out as they were
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (tests, embedding)
        sys.stdout.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        return 0
    sys.stdout.flush()
    buffer.write(text.encode("utf-8", "surrogateescape"))
    buffer.flush()
    return 0


def _parser_for(command: str) -> tuple[argparse.ArgumentParser, Callable[[argparse.Namespace], int]]:
    if command == "parse":
        p = _Parser(prog="pybuild parse", description="Print a Dockerfile's parse tree.")
        p.add_argument("--format", choices=("buildkit", "json"), default="buildkit")
        p.add_argument("--debug", action="store_true")
        p.add_argument("file")
        return p, _cmd_parse
    from . import cli_commands

    return cli_commands.parser_for(command, _Parser)


def _tune_gc() -> None:
    """A build holds tens of thousands of long-lived small objects (a context walk, the hash
    memo) that the cycle collector's default first threshold (700) makes it rescan again and
    again: measured 5-10% of a cached rebuild of a 20,000-file context. Cycles are still
    collected, only less often."""
    import gc

    gc.set_threshold(50_000, 20, 100)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one pybuild command (``argv``, default the process's arguments); returns its exit
    code. Without ``argv`` (the console script of an older install calls ``sys.exit(main())``)
    the process is about to end: every object is then frozen out of the cycle collector
    (``gc.freeze``), which spares the interpreter's teardown most of its work (~8 ms of a
    fully cached rebuild; :func:`run` skips the teardown altogether)."""
    code = _command(argv)
    if argv is None:
        import gc

        gc.freeze()
    return code


def _command(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PYBUILD_DEBUG") == "1"
    if argv and argv[0] in ("--version", "-V", "-h", "--help", "help") or not argv:
        try:
            if argv and argv[0] in ("--version", "-V"):
                print(f"pybuild {__version__}")
            else:
                _print_help()
            sys.stdout.flush()
        except BrokenPipeError:  # `pybuild --help | head`
            _quiet_stdout()
        return 0
    _terminate_like_interrupt()
    _tune_gc()
    try:
        command, rest = _parse_command(argv)
        parser, handler = _parser_for(command)
        ns = parser.parse_args(rest)
        return handler(ns)
    except PybuildError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {exc.render()}" if not _is_located(exc) else exc.render(), file=sys.stderr)
        return _interrupted_code(exc.exit_code) if exc.exit_code == 130 else exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return _interrupted_code(130)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as exc:  # a bug: say so briefly; the traceback is behind --debug
        if debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)",
              file=sys.stderr)
        return 70


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's last flush does not
    print "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (tests, embedding)
        pass


_signalled = 0  # the SIGTERM/SIGHUP that interrupted the command: exit 128 + it, as a killed process


def _interrupted_code(default: int) -> int:
    return 128 + _signalled if _signalled else default


def _terminate_like_interrupt() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so every ``finally`` cleans up: mounts,
    sandbox processes and temp dirs are released before exit."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        global _signalled
        _signalled = signum
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread / not allowed
            pass


def _is_located(exc: PybuildError) -> bool:
    from .errors import DockerfileError, StepFailed

    return isinstance(exc, (DockerfileError, StepFailed))


def _print_help() -> None:
    print(f"""pybuild {__version__}: build OCI images from Dockerfiles, no daemon.

usage: pybuild [build] [options] CONTEXT
       pybuild COMMAND [options]

commands:
  build      build an image (the default command)
  parse      print a Dockerfile's parse tree (--format buildkit|json)
  images     list tagged images in the store
  inspect    print an image's manifest and config
  history    print an image's history
  tag        add a tag to an image
  rmi        remove a tag
  prune      remove unreferenced blobs, layers and cache
  du         show store usage
  store check [--repair]  verify every blob, tag, record and snapshot; remove what is broken
  run        run an image's command in a sandbox
  pull/push  copy images from/to a registry
  login/logout  registry credentials

Run "pybuild COMMAND --help" for a command's options. --debug shows tracebacks.

{EXAMPLES}""")


def run() -> NoReturn:
    """The ``pybuild`` command (the console script and ``python -m builder.cli``): :func:`main`,
    then the process ends as a normal exit would but without the interpreter's teardown.

    Freeing every module and object at exit (two full collections and thousands of
    deallocations) cost ~14 ms of a ~80 ms fully cached rebuild. What a normal exit does that
    matters still happens first: the atexit callbacks (temp directories' finalizers, the
    dataclass code cache, the build's spare sandbox init) and the flush of stdout/stderr. Files
    the program wrote are closed by their ``with`` blocks long before. When another non-daemon
    thread is still alive (a normal exit would wait for it; daemon threads, such as the sandbox's
    spare keeper, it would not) or a flush fails (a closed pipe), the normal exit runs instead."""
    code = main()
    import threading

    main_thread = threading.main_thread()
    if not any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        import atexit

        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
