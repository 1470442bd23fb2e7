"""Argument parsers and handlers for every command but ``parse`` (kept apart so that
``pybuild parse`` imports nothing it does not need)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import HostError, UsageError

if TYPE_CHECKING:
    from .store.layout import Store

Handler = Callable[[argparse.Namespace], int]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="store directory (default $PYBUILD_ROOT, /var/lib/pybuild as root)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")


def _store(ns: argparse.Namespace) -> Store:
    from .api import open_store

    return open_store(ns.root or None)


def _kv(values: list[str], what: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` flag values, as buildx/docker read them: a bare ``NAME`` is ``NAME=`` for
    ``--label`` and takes ``$NAME`` (left out when unset) for ``--build-arg`` and ``--env``."""
    out = []
    for v in values:
        if v.startswith("=") and what == "--env":
            raise UsageError(f"{what} {v!r}: invalid environment variable (empty name)")
        if "=" not in v:
            if what == "--label":
                out.append((v, ""))
                continue
            value = os.environ.get(v)
            if value is not None:
                out.append((v, value))
            continue
        k, _, val = v.partition("=")
        out.append((k, val))
    return tuple(out)


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _build_parser(cls: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = cls(prog="pybuild [build]", description="Build an image from a Dockerfile and a context.")
    _common(p)
    p.add_argument("context", help="build context: a directory, - (stdin: tar or Dockerfile), a git URL "
                                   "or an http(s) tarball URL")
    p.add_argument("-f", "--file", help="Dockerfile (default CONTEXT/Dockerfile; - reads stdin)")
    p.add_argument("--build-context", action="append", default=[], metavar="NAME=VALUE",
                   help="named context: DIR, docker-image://REF, oci-layout://PATH[:TAG], git or http(s) URL")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID=SOCKET|ID=KEY[,KEY]",
                   help="ssh agent socket or keys for RUN --mount=type=ssh and git over ssh")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="extra /etc/hosts line in RUN (IP may be host-gateway)")
    p.add_argument("--shm-size", help="size of /dev/shm in RUN (e.g. 128m)")
    p.add_argument("--ulimit", action="append", default=[], metavar="TYPE=SOFT[:HARD]")
    p.add_argument("-m", "--memory", help="memory limit of each RUN (e.g. 256m)")
    p.add_argument("--memory-swap", help="memory + swap limit of each RUN (-1: unlimited swap)")
    p.add_argument("--pids-limit", help="processes of each RUN (default 4096; -1: unlimited)")
    p.add_argument("-c", "--cpu-shares", help="relative CPU weight of each RUN (2..262144)")
    p.add_argument("--cpuset-cpus", help="CPUs each RUN may use (e.g. 0-1)")
    p.add_argument("--annotation", action="append", default=[],
                   metavar="[manifest:|index:|manifest-descriptor:|index-descriptor:]KEY=VALUE")
    p.add_argument("-t", "--tag", action="append", default=[], help="name[:tag]; repeatable")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--target", help="build this stage")
    p.add_argument("--platform", help="os/arch[/variant][,...]: one image per platform, several make an "
                                      "image index (default: the host's)")
    p.add_argument("--jobs", "-j", type=_positive, metavar="N",
                   help="build up to N independent stages (and platforms) at once (default: the CPU count)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE")
    p.add_argument("--pull", action="store_true", help="always look for newer base images")
    p.add_argument("--network", choices=("default", "host", "none"), default="default")
    p.add_argument("--secret", action="append", default=[], metavar="id=X,src=FILE|env=VAR")
    p.add_argument("-o", "--output", action="append", default=[], metavar="type=...,dest=...")
    p.add_argument("--push", action="store_true", help="shorthand for --output type=registry")
    p.add_argument("--load", action="store_true", help="accepted for buildx compatibility (always stored)")
    p.add_argument("--iidfile", help="write the image ID (config digest) to this file")
    p.add_argument("--metadata-file", help="write build metadata JSON to this file")
    p.add_argument("--progress", choices=("auto", "plain", "tty", "quiet", "rawjson"), default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID (config digest)")
    p.add_argument("--cache-from", action="append", default=[])
    p.add_argument("--cache-to", action="append", default=[],
                   metavar="type=registry,ref=REF|type=local,dest=DIR|type=inline[,mode=max][,cache-mounts=true|ID;ID]"
                           "[,cache-mounts-max=SIZE]")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]")
    return p


def _cmd_build(ns: argparse.Namespace) -> int:
    build_args = _kv(ns.build_arg, "--build-arg")
    run_flags: dict[str, object] = {}
    if ns.add_host or ns.ulimit or ns.shm_size or ns.annotation:
        from .inputs.flags import parse_add_host, parse_annotation, parse_shm_size, parse_ulimit

        run_flags.update(add_hosts=tuple(parse_add_host(v) for v in ns.add_host),
                         ulimits=tuple(parse_ulimit(v) for v in ns.ulimit),
                         shm_size=parse_shm_size(ns.shm_size) if ns.shm_size else None)
        for value in ns.annotation:
            parse_annotation(value)  # bad syntax is a usage error before anything is fetched
    if any(v is not None for v in (ns.memory, ns.memory_swap, ns.pids_limit, ns.cpu_shares, ns.cpuset_cpus)):
        from .engine.limits import parse_limits  # (without flags RUN gets the defaults)

        run_flags["limits"] = parse_limits(memory=ns.memory, memory_swap=ns.memory_swap, pids=ns.pids_limit,
                                           cpu_shares=ns.cpu_shares, cpuset_cpus=ns.cpuset_cpus)
    if ns.iidfile or ns.metadata_file:
        from .outputspec import check_path

        for flag, value in (("--iidfile", ns.iidfile), ("--metadata-file", ns.metadata_file)):
            if value:  # checked before building, not found unwritable after it
                check_path(value, f"{flag} {value}", wants_dir=False, parents=False)
    store = _store(ns)
    local = (ns.context != "-" and ns.file != "-" and not ns.build_context and not ns.ssh
             and "://" not in ns.context and "@" not in ns.context and not ns.context.startswith("github.com/"))
    if local:  # a context directory and a Dockerfile file: nothing to fetch or forward
        context = Path(ns.context)
        if not context.is_dir():
            raise UsageError(f"build context {ns.context!r} is not a directory")
        return _run_build(ns, store, context, Path(ns.file) if ns.file else context / "Dockerfile", build_args,
                          **run_flags)
    from .inputs.prepare import Inputs
    from .inputs.ssh import SshAgents, parse_ssh

    ssh_specs = tuple(parse_ssh(v) for v in ns.ssh)
    keep_git = dict(build_args).get("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "") in ("1", "true", "True")
    with SshAgents(ssh_specs) as agents, \
            Inputs(store.root / "tmp", stdin=sys.stdin.buffer, keep_git_dir=keep_git, ssh_sock=agents.socket("default"),
                   git_mtime="commit" if os.environ.get("SOURCE_DATE_EPOCH") else "checkout") as inputs:
        main = inputs.main(ns.context, ns.file)
        named = tuple(inputs.named(v) for v in ns.build_context)
        return _run_build(ns, store, main.context, main.dockerfile, build_args, named_contexts=named,
                          ssh=agents.sockets(), dockerfile_name=main.shown, **run_flags)


def _run_build(ns: argparse.Namespace, store: Store, context: Path, dockerfile: Path,
               build_args: tuple[tuple[str, str], ...], **inputs: object) -> int:
    from .api import build_with
    from .engine.options import BuildOptions, SecretSource
    from .render import make_renderer

    secrets = [SecretSource.parse(s) for s in ns.secret]
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    outputs = list(ns.output)
    if ns.push:
        outputs.append("type=registry")
    opts = BuildOptions(
        context=context, dockerfile=dockerfile, tags=tuple(ns.tag),
        build_args=build_args, target=ns.target, platform=ns.platform, jobs=ns.jobs,
        no_cache=ns.no_cache, no_cache_filter=tuple(ns.no_cache_filter), pull=ns.pull,
        network="host" if ns.network == "default" else ns.network, secrets=tuple(secrets),
        source_date_epoch=int(sde) if sde and sde.strip().isdigit() else None,
        outputs=tuple(outputs), cache_from=tuple(ns.cache_from), cache_to=tuple(ns.cache_to),
        labels=_kv(ns.label, "--label"), insecure_registries=tuple(ns.insecure_registry),
        stdout=sys.stdout.buffer, annotations=tuple(ns.annotation), **inputs,  # type: ignore[arg-type]
    )
    with make_renderer("quiet" if ns.quiet else ns.progress) as renderer:
        result = build_with(opts, store=store, on_event=renderer)
    for flag, value, text in (("--iidfile", ns.iidfile, result.image_id),
                              ("--metadata-file", ns.metadata_file, json.dumps(result.metadata(), indent=2) + "\n")):
        if value:
            try:
                Path(value).write_text(text)
            except OSError as exc:
                raise HostError(f"{flag} {value}: cannot write it: {exc.strerror}") from None
    if ns.quiet:
        print(result.image_id)
    return 0


def _cmd_images(ns: argparse.Namespace) -> int:
    from .api import images

    rows = images(store=_store(ns), platform=ns.platform)
    if ns.format == "json":
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{'REPOSITORY':<40} {'TAG':<16} {'IMAGE ID':<14} {'SIZE':>10}")
    for r in rows:
        print(f"{r.repository:<40} {r.tag:<16} {r.id[:12]:<14} {_human(r.size):>10}")
    return 0


def _human(n: int) -> str:
    from .units import human_size

    return human_size(n)


def _cmd_inspect(ns: argparse.Namespace) -> int:
    from .api import inspect

    print(json.dumps(inspect(ns.name, store=_store(ns), platform=ns.platform).as_json(), indent=2))
    return 0


def _cmd_history(ns: argparse.Namespace) -> int:
    from .api import history

    rows = history(ns.name, store=_store(ns), platform=ns.platform)
    print(f"{'CREATED':<30} {'SIZE':>10}  CREATED BY")
    for created, size, created_by in rows:
        size_s = "0B" if size is None else _human(size)
        print(f"{created or '':<30} {size_s:>10}  {created_by}")
    return 0


def _cmd_tag(ns: argparse.Namespace) -> int:
    from .api import tag

    tag(ns.source, ns.target, store=_store(ns))
    return 0


def _cmd_rmi(ns: argparse.Namespace) -> int:
    from .api import untag

    for name in ns.names:
        for removed in untag(name, store=_store(ns)):
            print(f"Untagged: {_short_name(name, removed)}")
    return 0


def _short_name(given: str, removed: str) -> str:
    """The tag removed by ``rmi given``, as the user wrote it when they named it."""
    from .errors import PybuildError
    from .oci.reference import parse_reference

    try:
        if str(parse_reference(given)) == removed:
            return given
    except PybuildError:
        pass
    return removed.removeprefix("docker.io/library/")


def _cmd_prune(ns: argparse.Namespace) -> int:
    from .api import parse_size, prune

    from .units import parse_duration

    until = None
    for f in ns.filter:
        key, sep, value = f.partition("=")
        if key.strip() != "until" or not sep:
            raise UsageError(f"--filter {f!r}: only until=DURATION is supported (e.g. until=24h)")
        until = parse_duration(value)
    freed = prune(all_cache=ns.all, keep_storage=parse_size(ns.keep_storage) if ns.keep_storage else None,
                  until=until, store=_store(ns))
    print(f"Total reclaimed space: {_human(freed)}")
    return 0


def _cmd_du(ns: argparse.Namespace) -> int:
    from .api import disk_usage

    store = _store(ns)
    if ns.verbose:
        import time

        from .api import cache_items

        now = time.time()
        print(f"{'KIND':<7} {'ID':<24} {'SIZE':>10} {'LAST USED':>14}  DESCRIPTION")
        for item in cache_items(store=store):
            ident = item.id.split(":", 1)[-1][:12] if item.kind == "record" else item.id
            shown = _human(item.size) + ("*" if item.shared else "")
            print(f"{item.kind:<7} {ident:<24} {shown:>10} {_ago(now - item.last_used):>14}  {_clip(item.description)}")
        print("(* the layer is also part of a tagged image)")
        print()
    for what, size in disk_usage(store=store).items():
        print(f"{what:<12} {_human(size):>10}")
    return 0


def _clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _ago(seconds: float) -> str:
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= n:
            return f"{int(seconds // n)} {unit} ago"
    return "just now"


def _cmd_store(ns: argparse.Namespace) -> int:
    from .api import check_store

    report = check_store(repair=ns.repair, store=_store(ns))
    if ns.format == "json":
        from dataclasses import asdict

        print(json.dumps({"clean": report.clean, "blobs": report.blobs, "tags": report.tags,
                          "records": report.records, "snapshots": report.snapshots,
                          "problems": [asdict(p) for p in report.problems]}, indent=2))
    else:
        for p in report.problems:
            print(p.render())
        state = "clean" if report.clean else f"{sum(not p.repaired for p in report.problems)} problem(s)"
        print(f"checked {report.blobs} blobs, {report.tags} tags, {report.records} cache records, "
              f"{report.snapshots} snapshots: {state}"
              + (f", {sum(p.repaired for p in report.problems)} repaired" if ns.repair else ""))
    return 0 if report.clean else 1


def _cmd_run(ns: argparse.Namespace) -> int:
    from .api import run

    def write(line: bytes) -> None:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()

    return run(ns.image, tuple(ns.command), network=ns.network, env=dict(_kv(ns.env, "--env")), user=ns.user,
               workdir=ns.workdir, store=_store(ns), on_output=write, platform=ns.platform)


def _cmd_pull(ns: argparse.Namespace) -> int:
    from .api import pull
    from .render import make_renderer

    with make_renderer(ns.progress) as renderer:
        digest = pull(ns.ref, platform=ns.platform, insecure=ns.insecure_registry, store=_store(ns), on_event=renderer)
    print(digest)
    return 0


def _cmd_push(ns: argparse.Namespace) -> int:
    from .api import push
    from .render import make_renderer

    with make_renderer(ns.progress) as renderer:
        digest = push(ns.name, ns.dest, compression=ns.compression, insecure=ns.insecure_registry, store=_store(ns),
                      on_event=renderer)
    print(digest)
    return 0


def _cmd_login(ns: argparse.Namespace) -> int:
    from .api import login

    password = ns.password
    if ns.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
    if not password:  # as docker login ("Password Required"); nothing is stored
        raise UsageError(f"login {ns.server}: password required" + (" (stdin was empty)" if ns.password_stdin else ""))
    login(ns.server, ns.username, password, insecure=tuple(ns.insecure_registry))
    print("Login Succeeded")
    return 0


def _cmd_logout(ns: argparse.Namespace) -> int:
    from .api import logout

    logout(ns.server)
    print(f"Removed login credentials for {ns.server}")
    return 0


def parser_for(command: str, cls: type[argparse.ArgumentParser]) -> tuple[argparse.ArgumentParser, Handler]:
    """The argument parser and handler of ``command``; raises UsageError for unknown ones."""
    if command == "build":
        return _build_parser(cls), _cmd_build
    p = cls(prog=f"pybuild {command}")
    _common(p)
    if command in ("images", "inspect", "history", "run"):
        p.add_argument("--platform", help="of a multi-platform image, the one for os/arch[/variant]")
    if command == "images":
        p.add_argument("--format", choices=("table", "json"), default="table")
        return p, _cmd_images
    if command in ("inspect", "history"):
        p.add_argument("name")
        return p, _cmd_inspect if command == "inspect" else _cmd_history
    if command == "tag":
        p.add_argument("source")
        p.add_argument("target")
        return p, _cmd_tag
    if command == "rmi":
        p.add_argument("names", nargs="+")
        return p, _cmd_rmi
    if command == "prune":
        p.add_argument("-a", "--all", action="store_true", help="also remove all build cache")
        p.add_argument("--keep-storage", help="keep this much cache, records and cache mounts (e.g. 5GB)")
        p.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                       help="remove cache records and cache mounts last used before DURATION ago (e.g. 24h)")
        return p, _cmd_prune
    if command == "du":
        p.add_argument("-v", "--verbose", action="store_true", help="list cache records and cache mounts")
        return p, _cmd_du
    if command == "store":
        p.add_argument("action", choices=("check",))
        p.add_argument("--repair", action="store_true", help="remove what is broken; keep the rest usable")
        p.add_argument("--format", choices=("text", "json"), default="text")
        return p, _cmd_store
    if command == "run":
        p.add_argument("--network", choices=("host", "none"), default="host")
        p.add_argument("-e", "--env", action="append", default=[])
        p.add_argument("-u", "--user")
        p.add_argument("-w", "--workdir")
        p.add_argument("image")
        p.add_argument("command", nargs=argparse.REMAINDER)
        return p, _cmd_run
    if command in ("pull", "push", "login", "logout"):
        p.add_argument("--insecure-registry", action="append", default=[])
    if command in ("pull", "push"):
        p.add_argument("--progress", choices=("auto", "plain", "tty", "quiet", "rawjson"), default="auto")
    if command == "pull":
        p.add_argument("--platform")
        p.add_argument("ref")
        return p, _cmd_pull
    if command == "push":
        p.add_argument("--compression", choices=("gzip", "zstd", "uncompressed"))
        p.add_argument("name")
        p.add_argument("dest", nargs="?")
        return p, _cmd_push
    if command == "login":
        p.add_argument("-u", "--username", required=True)
        p.add_argument("-p", "--password")
        p.add_argument("--password-stdin", action="store_true")
        p.add_argument("server")
        return p, _cmd_login
    if command == "logout":
        p.add_argument("server")
        return p, _cmd_logout
    raise UsageError(f"unknown command {command!r}")
