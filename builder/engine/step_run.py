"""RUN steps: a sandboxed process over the image's layers; its changes become the next layer.

Cache key: the parent key, argv, the effective environment (proxy variables and secrets
excluded), user, workdir, network, security and the mounts' meaning (for ``from=`` mounts the
source stage's key, for context binds the context's content digest).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from ..errors import DockerfileError, StepFailed
from .cachekey import step_key
from .events import StepOutput
from .layers import CacheMiss, cache_lookup, cache_store, commit_step, note_built, store_layer
from .state import ImageState

if TYPE_CHECKING:
    from .session import StageSession
    from ..plan.steps import RunStep

PROXY_VARS = frozenset(n for v in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
                       for n in (v, v.lower()))
OUTPUT_TAIL = 20
# BuildKit's RUN: this hostname, in /etc/hosts; no /etc/hostname (executor/oci/hosts.go)
SANDBOX_HOSTNAME = "buildkitsandbox"


def run_meaning(step: RunStep, session: StageSession) -> dict[str, Any]:
    mounts = [mount_meaning(session, m) for m in step.mounts]
    env = [(k, v) for k, v in step.env if k not in PROXY_VARS]
    heredocs = [[h.name, h.content] for h in step.heredocs]
    files = [[f.path, f.content, f.mode] for f in step.files]
    meaning = {"argv": list(step.argv), "env": env, "user": step.user, "workdir": step.workdir,
               "network": _network(step, session), "security": step.security,
               "mounts": mounts, "heredocs": heredocs, "files": files}
    opts = session.opts
    if opts.add_hosts or opts.shm_size or opts.ulimits:  # part of BuildKit's exec op too
        meaning.update(hosts=[list(h) for h in opts.add_hosts], shm=opts.shm_size,
                       ulimits=[list(u) for u in opts.ulimits])
    return meaning


def mount_meaning(session: StageSession, m: Any) -> dict[str, Any]:
    """What one ``--mount`` contributes to the RUN's cache key: every option as written (type,
    target, id, source, sharing, mode, uid, gid, readonly, required, env, size; BuildKit's exec
    op carries them all in its definition) and, for ``from=``, the source's identity (stage
    key, image digest or named context content) instead of its spelling. Never a secret's or
    an ssh agent's content, never a cache mount's content."""
    from dataclasses import fields

    item: dict[str, Any] = {f.name: getattr(m, f.name) for f in fields(m)
                            if f.name not in ("from_", "from_stage", "from_image")}
    if m.type in ("bind", "cache"):
        item["from"] = _bind_source_key(session, m)
    return item


def _bind_source_key(session: StageSession, m: Any) -> str | None:
    if m.from_stage is not None:
        return "stage:" + str(session.stages[m.from_stage].state.cache_key)
    if m.from_image:
        named = session.named_context(m.from_image)
        if named is not None and named.path is not None:
            src = (m.source or ".").lstrip("/") or "."
            ctx = session.named_build_context(named)
            return "context:" + str(ctx.content_digest(_bind_sources(ctx, src)))
        return "image:" + str(session.resolve_image(m.from_image).manifest_digest)
    return None


def apply_run(session: StageSession, state: ImageState, step: RunStep, *, stage_no: int, step_no: int,
              use_cache: bool) -> tuple[ImageState, bool]:
    """Run one RUN step; returns the new state and whether the cache was used.

    In a stage built without the cache the step's layer may be left *pending*
    (:class:`PendingRun`, held by ``session.pending_run``): framed and hashed on a thread while
    the next RUN runs on top of its upper dir. Then the state returned is the one the step ran
    on; :func:`finish_pending` (the next step, or the stage's end) gives the state with its
    layer. Raises StepFailed (exit status and output tail) when the command fails; nothing is
    left mounted or running, the step's temp dir is removed (a pending RUN below it is
    recorded first)."""
    if getattr(session, "cache_mounts", None) is not None:  # --cache-to ...,cache-mounts=...
        from .cachemounts import note_used

        note_used(session, step)
    pipelined = not use_cache and _can_pipeline(session)
    pending = getattr(session, "pending_run", None)
    if pending is not None:
        if pipelined:
            return _run_on_pending(session, pending, step, stage_no, step_no), False
        state = finish_pending(session, state)
    inputs = _context_bind_inputs(session, step)
    key = step_key(state.cache_key, "RUN", run_meaning(step, session), inputs)
    if not use_cache:
        return _run_step(session, state, step, key, stage_no, step_no, pipelined=pipelined), False
    # the same step in two stages at once (a FROM --platform=$BUILDPLATFORM stage of every
    # target platform): the second waits for the first and takes its result from the cache
    with session.key_lock("run\0" + key):
        hit = cache_lookup(session, key)
        if not isinstance(hit, CacheMiss):
            return commit_step(session, state, step, hit, key), True
        return _run_step(session, state, step, key, stage_no, step_no), False


def _can_pipeline(session: StageSession) -> bool:
    """Whether this stage's RUN layers may be left pending: its uppers become snapshots (lazy
    layers or background blobs), it is a build stage (a StageSession) and the build runs as
    root (a rootless RUN's upper holds host ids; its layer is written at once)."""
    return bool(getattr(session, "lazy_layers", False) or getattr(session, "background_blobs", False)) \
        and hasattr(session, "pending_run") and os.geteuid() == 0


def _run_step(session: StageSession, state: ImageState, step: RunStep, key: str, stage_no: int, step_no: int,
              *, pipelined: bool = False, lowers: list[Path] | None = None,
              before_start: Callable[[], object] | None = None) -> ImageState:
    """Run the step (a cache miss), record its outcome under ``key``; the new state. With
    ``pipelined`` its layer may be left pending instead (then ``state`` is returned, see
    :func:`apply_run`). ``lowers``: the root to run on, when not ``state``'s layers;
    ``before_start``: called right before the sandbox mounts it (see sandbox.runner.run)."""
    import shutil

    check_emulation(session, state, step)
    import tempfile

    # unique: stages (and platforms) run concurrently and share the numbering
    workspace = Path(tempfile.mkdtemp(prefix=f"run-{stage_no}-{step_no}-", dir=session.tmp))
    upper, work = workspace / "u", workspace / "w"
    upper.mkdir()
    work.mkdir()
    kept = False
    try:
        layer = _execute(session, state, step, upper, work, workspace, stage_no, step_no, lowers, pipelined,
                         before_start)
        if isinstance(layer, _Framing):
            session.pending_run = PendingRun(state, step, key, upper, workspace, layer)
            kept = True
            note_built(session, key)
            return state
    finally:
        if not kept:
            shutil.rmtree(workspace, ignore_errors=True)
    return commit_step(session, state, step, cache_store(session, key, layer, step.created_by), key)


def _run_on_pending(session: StageSession, pending: PendingRun, step: RunStep, stage_no: int, step_no: int) -> ImageState:
    """Run ``step`` on the pending RUN's upper dir (over the layers it ran on), then record the
    pending one; the step itself is left pending in turn. Returns the pending one's state."""
    lowers = [pending.upper] + session.lowerdirs(pending.state)
    session.pending_run = None
    try:
        # the key of this step needs the pending one's layer: the command runs first
        placeholder = "pending:" + pending.key
        state = _run_step(session, pending.state, step, placeholder, stage_no, step_no, pipelined=True,
                          lowers=lowers, before_start=pending.framing.settle)
    except BaseException:
        session.pending_run = pending
        discard_pending(session)  # its own outcome is kept (as if it had not been pending)
        raise
    mine = session.pending_run
    assert isinstance(mine, PendingRun) and state is pending.state  # a pipelined RUN is always left pending
    try:
        mine.framing.settle()  # its overlay (over the pending upper dir) is gone: that dir may move now
        parent = pending.finish(session)
    except BaseException:
        session.pending_run = None
        mine.discard()  # its key needs the one below, which failed: not recorded
        raise
    mine.rebase(session, parent)
    return parent


def finish_pending(session: StageSession, state: ImageState) -> ImageState:
    """``state`` with the stage's pending RUN layer (if any) recorded and committed."""
    pending = getattr(session, "pending_run", None)
    if pending is None:
        return state
    session.pending_run = None
    finished: ImageState = pending.finish(session)
    return finished


def discard_pending(session: StageSession) -> None:
    """End the stage's pending RUN when the stage fails: its step is recorded as if it had not
    been pending (when that works; else dropped: its thread joined, its overlay gone); its temp
    dir is removed either way."""
    pending = getattr(session, "pending_run", None)
    if pending is not None:
        session.pending_run = None
        try:
            pending.finish(session)
        except BaseException:  # noqa: BLE001 - the stage's own error is the one to report
            pending.discard()


class PendingRun:
    """A RUN whose command finished and whose layer is being framed on a thread (see
    :func:`apply_run`). Owns its workspace (the upper dir inside) until :meth:`finish` or
    :meth:`discard`. ``key`` is its cache key (computed once the RUN below it is recorded)."""

    def __init__(self, state: ImageState, step: RunStep, key: str, upper: Path, workspace: Path,
                 framing: _Framing) -> None:
        self.state = state
        self.step = step
        self.key = key
        self.upper = upper
        self.workspace = workspace
        self.framing = framing

    def rebase(self, session: StageSession, parent: ImageState) -> None:
        """Now that the RUN below is recorded: this step runs on ``parent``; its key follows."""
        placeholder = self.key
        self.state = parent
        self.key = step_key(parent.cache_key, "RUN", run_meaning(self.step, session),
                            _context_bind_inputs(session, self.step))
        misses = getattr(session, "misses", None)
        if misses is not None and placeholder in misses:
            misses[misses.index(placeholder)] = self.key
        used = getattr(session, "used_keys", None)
        if used is not None and placeholder in used:
            used[used.index(placeholder)] = self.key

    def finish(self, session: StageSession) -> ImageState:
        """Wait for the layer, adopt the upper dir as its snapshot, record the step; the state
        after it. Removes the workspace."""
        import shutil

        try:
            layer = self.framing.keep(session)
        finally:
            self.framing.settle()  # (done already unless keeping failed) never remove a mounted upper
            shutil.rmtree(self.workspace, ignore_errors=True)
        outcome = cache_store(session, self.key, layer, self.step.created_by, counted=True)
        return commit_step(session, self.state, self.step, outcome, self.key)

    def discard(self) -> None:
        import shutil

        self.framing.abandon()
        shutil.rmtree(self.workspace, ignore_errors=True)


def check_emulation(session: StageSession, state: ImageState, step: RunStep) -> None:
    """Raise HostError (naming the Dockerfile line, the platform and the fix) when the step's
    platform is foreign and no usable binfmt_misc handler would run its binaries; checked
    before anything is mounted or started."""
    from ..platform import host_platform
    from ..sandbox.binfmt import emulation_error, emulation_problem

    plat = state.platform
    host = host_platform()
    if plat is None:
        return
    problem = emulation_problem(plat.architecture, host.architecture,
                                exists_in_root=lambda p: session.view(state).lstat(p) is not None)
    if problem is None:
        return
    from ..errors import HostError

    text = " ".join((step.node.original or "RUN " + " ".join(step.argv)).split())
    raise HostError(emulation_error(f"{session.opts.dockerfile.name}:{step.node.span.line}: {text}", plat, host,
                                    problem, plat.architecture))


def _network(step: RunStep, session: StageSession) -> Literal["host", "none"]:
    """RUN --network wins; "default" (or none given) means the build's --network."""
    value = step.network
    if not value or value == "default":
        value = session.opts.network
    return "none" if value == "none" else "host"


def _context_bind_inputs(session: StageSession, step: RunStep) -> str:
    """Content digest of context files bind-mounted without ``from=`` (they are inputs)."""
    parts = []
    for m in step.mounts:
        if m.type == "bind" and m.from_stage is None and not m.from_image:
            src = (m.source or ".").lstrip("/") or "."
            parts.append(session.context.content_digest(_bind_sources(session.context, src)))
    return "|".join(parts)


def _bind_sources(ctx: Any, src: str) -> list[str]:
    """The context paths a bind mount's ``source`` names; a missing one is BuildKit's "not
    found" without the COPY wording the COPY path adds."""
    from .context import SourceNotFoundError

    try:
        return list(ctx.match_sources(src))
    except SourceNotFoundError:
        raise SourceNotFoundError(f'failed to compute cache key: "/{src}": not found (bind mount source)') from None


def _execute(session: StageSession, state: ImageState, step: RunStep, upper: Path, work: Path, workspace: Path,
             stage_no: int, step_no: int, lowers: list[Path] | None = None, pipelined: bool = False,
             before_start: Callable[[], object] | None = None) -> Any:
    from .userdb import resolve_user

    if lowers is None:
        lowers = session.lowerdirs(state)
    from ..store.rootview import RootView

    view = RootView(lowers)
    try:
        uid, gid, groups = resolve_user(step.user or "", view)
    except DockerfileError:
        raise
    except Exception as exc:
        raise DockerfileError(f"RUN: {exc}", step.node.span) from exc
    cwd = step.workdir or "/"  # a missing one is made by the sandbox, through the overlay
    env = list(step.env) + list(step.proxy_env)
    if not any(k == "HOME" for k, _ in env):
        from .userdb import user_home

        env.append(("HOME", user_home(step.user or "root", view)))
    proxies: list[Any] = []
    try:
        mounts, extra_files = _mounts(session, step, workspace, env, proxies)
        return _run_process(session, state, step, upper, work, workspace, stage_no, step_no, view, lowers,
                            uid, gid, groups, cwd, env, mounts, extra_files, pipelined, before_start)
    finally:
        for proxy in proxies:
            proxy.close()


def _run_process(session: StageSession, state: ImageState, step: RunStep, upper: Path, work: Path, workspace: Path,
                 stage_no: int, step_no: int, view: Any, lowers: Any, uid: int, gid: int, groups: Any,
                 cwd: str, env: list[tuple[str, str]], mounts: list[Any], extra_files: list[Any],
                 pipelined: bool = False, before_start: Callable[[], object] | None = None) -> Any:
    """Run the command; its layer (None: no change), or with ``pipelined`` a :class:`_Framing`
    of it (which then owns the wait for the sandbox's teardown)."""
    from ..sandbox.runner import run
    from ..sandbox.spec import ProcessSpec
    from .limits import run_rlimits

    for i, f in enumerate(step.files):
        host = workspace / f"file{i}"
        host.write_text(f.content)
        os.chmod(host, f.mode)
        extra_files.append((f.path, host))
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL)

    def on_output(line: bytes) -> None:
        tail.append(line.decode("utf-8", "replace").rstrip("\n"))
        session.emit(StepOutput(stage_no, step_no, line))

    spec = ProcessSpec(
        argv=tuple(step.argv), upperdir=upper, workdir=work, lowerdirs=tuple(lowers), env=tuple(env),
        cwd=cwd, uid=uid, gid=gid, groups=tuple(groups), network=_network(step, session),
        hostname=SANDBOX_HOSTNAME, etc_hostname=False,
        mounts=tuple(mounts), stdin=None, extra_files=tuple(extra_files),
        on_output=on_output, extra_hosts=session.opts.add_hosts, shm_size=session.opts.shm_size,
        rlimits=run_rlimits(session.opts.ulimits),
        limits=run_limits(session),
    )
    from ..sandbox.probe import probe_host

    premade = probe_host(upper.parent).overlay  # (probed once) then the mount points go into the upper
    if premade:  # dir now, not after the run, while the overlay may still be unmounting
        _keep_runtime_mount_points(view, upper)
    _warm_imports()
    # the stage's last RUN starts no spare init for a next one: it would only compete with this
    # one's start-up for the CPU (another stage's RUNs have their own, see StageBuilder.run in builder.engine.build)
    result = run(spec, cancel=session.cancel, spares=session.spares, early_exit=True, before_start=before_start,
                 spare_ahead=getattr(session, "runs_after", 1) > 0)
    settle = result.teardown or _nothing  # the overlay may still be unmounting: see run()
    handed = False
    try:
        _check_run(session, step, result, tail, upper)
        if not premade:
            _keep_runtime_mount_points(view, upper, settle)
        if pipelined:
            handed = True
            return _Framing(session, result, upper, settle)
        return _keep_framed(session, result, upper, _frame_upper(session, result, upper), settle)
    finally:
        if not handed:
            settle()  # nothing of the step is mounted once this step returns (unless a _Framing waits)


def _nothing() -> None:
    pass


# what turning a RUN's upper dir into a layer and the image imports, in the order it does
_AFTER_RUN = ("builder.layer.whiteout", "builder.layer.tar", "builder.layer.compress", "builder.layer.gz",
              "builder.engine.blobworker", "builder.engine.image", "builder.engine.explain")
_warmed = False


def _warm_imports() -> None:
    """Import what a RUN's result needs (:data:`_AFTER_RUN`, and the gzip backend) on a thread
    of its own, once per process, while the first RUN's command runs: this thread only waits
    for the sandbox then, and the ~8 ms of imports would otherwise sit between that command and
    the next step. Never raises (a module that fails to import fails again where it is used)."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    import _thread

    def load() -> None:
        import importlib

        try:
            for name in _AFTER_RUN:
                importlib.import_module(name)
            from ..layer.gz import backend

            backend()
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    _thread.start_new_thread(load, ())


def _check_run(session: StageSession, step: RunStep, result: Any, tail: collections.deque[str], upper: Path) -> None:
    """Report a finished RUN's warnings; raise Interrupted or StepFailed when it did not succeed."""
    for w in result.warnings:
        session.warn_once(w)
    for n in result.notes:
        session.warn_once(n)
    if result.cancelled:
        from ..errors import Interrupted

        raise Interrupted("build interrupted during RUN")
    if result.exit_code != 0:
        text = step.node.original or "RUN " + " ".join(step.argv)
        raise StepFailed(text if text.upper().startswith("RUN") else f"RUN {text}",
                         file=str(session.opts.dockerfile.name), line=step.node.span.line,
                         exit_status=result.exit_code, output_tail=tuple(tail),
                         reason=result.limit or _out_of_space(upper))


def _mapped(result: Any) -> bool:
    """Whether a RUN's upper dir holds host ids or user.* overlay xattrs (a rootless run)."""
    return bool(getattr(result, "userxattr", False) or getattr(result, "uidmap", ()) or getattr(result, "gidmap", ()))


def _frame_upper(session: StageSession, result: Any, upper: Path) -> tuple[str, Any]:
    """The first half of keeping a finished RUN's upper dir (reads it only; the sandbox may
    still be unmounting): ``("empty", None)``, ``("framed", layer)`` (lazy: the tar only
    hashed; in a stage of the target image its blob compressed and written, committed in the
    background) or ``("entries", None)`` (a rootless run's upper holds host ids, or the upper
    cannot be streamed: NameClash): :func:`_keep_framed` writes it from its entries."""
    if not (session.lazy_layers or session.background_blobs) or _mapped(result):
        return ("entries", None)
    import itertools

    from ..layer.whiteout import NameClash, upper_records
    from .layers import hash_records, store_records_soon

    try:
        records = upper_records(upper, mtime_clamp=session.opts.source_date_epoch)
        first = next(records, None)
        if first is None:
            return ("empty", None)
        records = itertools.chain((first,), records)
        if session.lazy_layers:
            return ("framed", hash_records(session, records))
        return ("framed", store_records_soon(session, records))
    except NameClash:
        return ("entries", None)  # (a file named like the whiteout beside it)


def _keep_framed(session: StageSession, result: Any, upper: Path, framed: tuple[str, Any],
                 settle: Callable[[], object]) -> Any:
    """The second half: once ``settle`` returned (no overlay uses the upper dir any more), the
    upper dir adopted as the layer's snapshot; the layer (None when empty). A lazy layer whose
    upper cannot be adopted, and an ``entries`` one, get their blob written now; a background
    blob's snapshot is made again from the blob."""
    from ..layer.whiteout import upper_entries

    kind, layer = framed
    if kind == "empty":
        return None
    if kind == "framed":
        settle()
        try:
            session.snapshots.adopt(layer.diff_id, upper)
            return layer
        except Exception:
            if not session.lazy_layers:
                from .layers import materialize

                return materialize(session, layer)  # the snapshot is made again from the blob
            if not upper.is_dir():  # moved, then failed: the snapshot store has it or nothing does
                raise
            # kept where it is: its blob is written now, from its entries
    entries = list(upper_entries(upper, userxattr=getattr(result, "userxattr", False),
                                 uidmap=getattr(result, "uidmap", ()), gidmap=getattr(result, "gidmap", ())))
    if not entries:
        return None
    layer = store_layer(session, entries)
    settle()
    try:
        session.snapshots.adopt(layer.diff_id, upper)
    except Exception:
        pass  # the snapshot is made again from the blob when needed
    return layer


class _Framing:
    """:func:`_frame_upper` of a finished RUN on a thread of its own, started at once (see
    :class:`PendingRun`). :meth:`keep` waits for it and does :func:`_keep_framed`;
    :meth:`abandon` waits for it and for the sandbox's teardown. Either is called once."""

    def __init__(self, session: StageSession, result: Any, upper: Path, settle: Callable[[], object]) -> None:
        from ..background import in_background

        self.result = result
        self.upper = upper
        self.settle = settle
        self._framed = in_background(lambda: _frame_upper(session, result, upper))

    def keep(self, session: StageSession) -> Any:
        try:
            framed = self._framed()
        except BaseException:
            self.settle()
            raise
        return _keep_framed(session, self.result, self.upper, framed, self.settle)

    def abandon(self) -> None:
        try:
            self._framed()
        except BaseException:  # noqa: BLE001 - the step is dropped either way
            pass
        self.settle()


def run_limits(session: StageSession) -> Any:
    """The cgroup limits of the build's RUN steps: the flags', else the safe defaults."""
    from .limits import step_limits

    return step_limits(session.opts.limits)


def prepare_spare(session: StageSession) -> None:
    """Have a sandbox init started ahead for a RUN step that will run soon (a step before it
    missed the cache); each RUN that runs prepares the next one itself."""
    session.spares.prepare(run_limits(session), probe=session.tmp)


def _out_of_space(upper: Path) -> str | None:
    """Why a failed RUN may have failed when the file system of its upper dir (the store's)
    is (nearly) full: the sentence for the error, else None."""
    try:
        st = os.statvfs(upper)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= (1 << 20) and st.f_favail != 0:
        return None
    return (f"no space left on device for RUN's changes in {upper.parent.parent} "
            f"({free // 1024} KiB free of {st.f_blocks * st.f_frsize // 1024} KiB)")


RUNTIME_MOUNT_POINTS = ("dev", "proc", "sys")


def _keep_runtime_mount_points(view: Any, upper: Path, settle: Callable[[], object] = _nothing) -> None:
    """Leave /dev, /proc and /sys in the step's layer when the image lacks them, as BuildKit
    does: runc creates these mount points (0755, root) in the root, and BuildKit's
    MountStubsCleaner (executor/stubs.go) removes only /etc/hosts, /etc/resolv.conf and the
    RUN --mount targets. The sandbox itself takes them from a skeleton layer, so they would
    otherwise never reach the upper dir. Over overlay they are made before the command runs
    (the mount points are then the upper's, merged with the skeleton's); after it (the copy
    fallback), ``settle`` is called first."""
    for name in RUNTIME_MOUNT_POINTS:
        if view.lstat("/" + name) is None and not os.path.lexists(upper / name):
            settle()  # the upper dir changes only once the step's overlay is gone
            (upper / name).mkdir()
            os.chmod(upper / name, 0o755)


def _mounts(session: StageSession, step: RunStep, workspace: Path, env: list[tuple[str, str]],
            proxies: list[Any]) -> tuple[list[Any], list[Any]]:
    """Lower RUN --mount specs to sandbox mounts and secret files. Secrets never reach the
    cache key, the layer, the config or the history. An ssh mount gets a forwarding socket and
    a ``locked``/``private`` cache mount its lock appended to ``proxies`` (the caller closes
    them after the step)."""
    import shutil

    from ..sandbox.spec import MountSpec

    mounts: list[Any] = []
    files: list[Any] = []
    secrets = {s.id: s for s in session.opts.secrets}
    for i, m in enumerate(step.mounts):
        kind = m.type
        target = m.target
        if kind == "cache":
            host = _cache_dir(session, m, workspace / f"cache{i}", proxies)
            mounts.append(MountSpec(target=target, kind="bind", source=host, readonly=False))
        elif kind == "tmpfs":
            mounts.append(MountSpec(target=target, kind="tmpfs", size=int(m.size or 0)))
        elif kind == "bind":
            src = _bind_source(session, m, workspace / f"bind{i}")
            mounts.append(MountSpec(target=target, kind="bind", source=src, readonly=m.readonly))
        elif kind == "secret":
            sid = m.id or os.path.basename(target or "")
            secret = secrets.get(sid)
            data: bytes | None = None
            if secret is not None:
                if secret.env is not None:
                    value = os.environ.get(secret.env)
                    data = value.encode() if value is not None else None
                elif secret.src is not None:
                    try:
                        data = Path(secret.src).read_bytes()
                    except OSError as exc:
                        raise DockerfileError(f"secret {sid}: cannot read {secret.src}: {exc.strerror}",
                                              step.node.span) from exc
            if data is None:
                if m.required:
                    raise DockerfileError(f"secret {sid} is required but was not provided (--secret id={sid},src=...)",
                                          step.node.span)
                continue
            env_name = m.env
            if env_name:
                env.append((env_name, data.decode("utf-8", "surrogateescape")))
            if target or not env_name:
                files.append((target or f"/run/secrets/{sid}", _secret_file(workspace / f"secret{i}", data, m)))
        elif kind == "ssh":
            sock = dict(session.opts.ssh).get(m.id)
            if sock is None:
                if m.required:
                    raise DockerfileError(f"ssh mount {m.id!r} is required but no --ssh {m.id} was given "
                                          f"(--ssh {m.id}=$SSH_AUTH_SOCK or --ssh {m.id}=KEYFILE)", step.node.span)
                continue
            import tempfile

            from ..inputs.ssh import SocketProxy

            short = Path(tempfile.mkdtemp(prefix="pybuild-sshfw-"))  # a socket path is at most 107 bytes
            try:
                proxy = SocketProxy(sock, short / "agent", mode=m.mode if m.mode is not None else 0o600,
                                    uid=m.uid or 0, gid=m.gid or 0)
            except BaseException:
                shutil.rmtree(short, ignore_errors=True)
                raise
            proxies.append(_DirOwner(proxy, short))
            mounts.append(MountSpec(target=target, kind="bind", source=proxy.path, readonly=False))
            if not any(k == "SSH_AUTH_SOCK" for k, _ in env):  # the first ssh mount, as BuildKit
                env.append(("SSH_AUTH_SOCK", target))
        else:
            raise DockerfileError(f"RUN --mount=type={kind} is not supported", step.node.span)
    return mounts, files


def _secret_file(host: Path, data: bytes, m: Any) -> Path:
    """``data`` in a new file ``host`` with the mount's mode (default 0400) and owner (default
    0:0), as BuildKit's secret mount shows it; the file goes with the step's workspace."""
    from ..sandbox.runner import write_new_file

    write_new_file(host, data, 0o600)
    if os.geteuid() == 0:
        os.chown(host, int(m.uid or 0), int(m.gid or 0))
    os.chmod(host, m.mode if m.mode is not None else 0o400)
    return host


class _DirOwner:
    """Closes a proxy, then removes the directory holding its socket."""

    def __init__(self, proxy: Any, directory: Path) -> None:
        self.proxy = proxy
        self.directory = directory

    def close(self) -> None:
        import shutil

        self.proxy.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _MountLock:
    """An exclusive flock on a cache mount's ``.<name>.lock`` file (released by :meth:`close`;
    also by the kernel if the process dies). Works across threads and processes."""

    def __init__(self, path: Path, *, wait: bool) -> None:
        import fcntl

        self._fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BaseException:
            os.close(self._fd)
            raise

    def close(self) -> None:
        os.close(self._fd)


def _cache_dir(session: StageSession, m: Any, scratch: Path, holds: list[Any]) -> Path:
    """The host directory of a cache mount: the store's, restored from a ``--cache-from``
    source that exported it when the store has none (cachemounts.restore_mount).

    With ``from=`` (BuildKit: "build stage, context, or image name to use as a base of the
    cache mount"), the cache is a different one for each base (BuildKit keys it by id and the
    base's chain) and starts as a copy of the base's ``source`` directory; afterwards it
    persists like any cache mount of that id and base.

    Sharing (stages run concurrently, and so may other builds): ``shared`` uses it as is;
    ``locked`` waits until no other step holds it; ``private`` gets ``scratch`` (a new empty
    directory, discarded) when another step holds it. The lock taken is appended to ``holds``
    (the caller closes it after the step)."""
    from .cachemounts import mount_dir, remember_id, restore_mount

    cid = m.id or m.target
    seeded = m.from_stage is not None or m.from_image
    if seeded:
        source = "/" + (m.source or "").strip("/")
        path = mount_dir(session.store.root, f"{cid}\n{_bind_source_key(session, m)}\n{source}")
    else:
        path = mount_dir(session.store.root, cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    sharing = (m.sharing or "shared").lower()
    if sharing in ("locked", "private"):
        try:
            holds.append(_MountLock(path, wait=sharing == "locked"))
        except BlockingIOError:  # private, and in use: a directory of its own
            _new_mount_dir(scratch, m)
            return scratch
    if seeded:
        if not path.exists():
            _seed_cache(session, m, path)
        remember_id(path, cid)
        return path
    if not path.exists() and getattr(session, "remote_caches", None):
        restore_mount(session, cid, path)
    if not path.exists():
        _new_mount_dir(path, m)
    remember_id(path, cid)
    return path


def _seed_cache(session: StageSession, m: Any, path: Path) -> None:
    """Make the cache directory ``path`` a copy (owners, modes, links, xattrs kept) of the
    ``from=`` base's ``source`` directory; it appears only complete (renamed into place)."""
    import shutil

    import subprocess
    import tempfile

    host, _rel, _ctx = _mount_source_host(session, m)
    if not host.is_dir() or host.is_symlink():
        raise DockerfileError(f"RUN --mount=type=cache: source {m.source or '/'!r} of {m.from_} is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..store.stale import owned_prefix

    tmp = Path(tempfile.mkdtemp(prefix=owned_prefix("seed"), dir=path.parent))
    try:
        proc = subprocess.run(["cp", "-a", "--", str(host) + "/.", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise DockerfileError(f"RUN --mount=type=cache: cannot copy {m.source or '/'} of {m.from_}: "
                                  f"{proc.stderr.strip()}")
        st = host.stat()
        os.chmod(tmp, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _new_mount_dir(path: Path, m: Any) -> None:
    """Make a cache mount's directory with its ``mode``/``uid``/``gid`` options."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, m.mode if m.mode is not None else 0o755)
    if (m.uid is not None or m.gid is not None) and os.geteuid() == 0:
        os.chown(path, int(m.uid or 0), int(m.gid or 0))


def _mount_source_host(session: StageSession, m: Any) -> tuple[Path, str, Any]:
    """The host path of a ``from=``/context mount's ``source`` (resolved inside its root),
    the resolved path relative to that root, and the build context it lies in (or None)."""
    source = (m.source or "/").lstrip("/")
    ctx = None
    if m.from_stage is not None:
        root = session.flatten(session.stages[m.from_stage].state)
    elif not m.from_image:
        root, ctx = Path(session.opts.context), session.context
    elif (named := session.named_context(m.from_image)) is not None and named.path is not None:
        ctx = session.named_build_context(named)
        root = Path(named.path)
    else:
        base = session.resolve_image(m.from_image)
        from .state import ImageState

        st = ImageState(layers=base.layers, history=(), config=None, platform=session.platform, cache_key="")
        root = session.flatten(st)
    from .pathresolve import DirView, resolve_in_root

    resolved = resolve_in_root(DirView(root), "/" + source) if source else "/"
    host = root / resolved.lstrip("/")
    if not os.path.lexists(host):
        raise DockerfileError(f"RUN --mount: source {source!r} not found")
    return host, resolved, ctx


def _bind_source(session: StageSession, m: Any, scratch: Path) -> Path:
    import shutil

    host, resolved, ctx = _mount_source_host(session, m)
    if ctx is not None and ctx.ignore:
        # a context is seen through its .dockerignore: bind a tree of the visible entries
        _visible_tree(ctx, resolved.lstrip("/") or ".", scratch, link=m.readonly)
        return scratch
    if not m.readonly:
        # writes are discarded: give the step its own copy
        if host.is_dir():
            shutil.copytree(host, scratch, symlinks=True)
        else:
            scratch.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host, scratch)
        return scratch
    return host


def _visible_tree(ctx: Any, rel: str, dest: Path, *, link: bool) -> None:
    """Recreate at ``dest`` what ``ctx`` shows under ``rel`` (ignored entries left out): files
    hard-linked when ``link`` (a read-only mount) and possible, else copied."""
    import shutil

    import stat as st_

    dest.parent.mkdir(parents=True, exist_ok=True)
    for path, pst in ctx.walk(rel):
        sub = path[len(rel):].lstrip("/") if rel != "." else ("" if path == "." else path)
        target = dest / sub if sub else dest
        src = ctx.root / path if path != "." else ctx.root
        if st_.S_ISDIR(pst.st_mode):
            target.mkdir(mode=0o755, exist_ok=True)
            shutil.copystat(src, target)
        elif st_.S_ISLNK(pst.st_mode):
            os.symlink(os.readlink(src), target)
        elif st_.S_ISREG(pst.st_mode):
            try:
                if not link:
                    raise OSError
                os.link(src, target)
            except OSError:
                shutil.copy2(src, target)
