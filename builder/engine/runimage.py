"""``pybuild run``: run a stored image's entrypoint/cmd in the RUN sandbox; no layer is kept."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..digest import Digest
from ..errors import UsageError

if TYPE_CHECKING:
    from ..store.layout import Store


def run_image(store: Store, image: str, command: tuple[str, ...], *, network: str = "host",
              env: tuple[tuple[str, str], ...] = (), user: str | None = None, workdir: str | None = None,
              on_output: Callable[[bytes], None] | None = None, platform: str | None = None) -> int:
    """Run ``image`` (its Entrypoint + ``command`` or Cmd); returns the exit code. The overlay
    upper dir is discarded; nothing is left mounted or running. ``platform`` picks the
    manifest of a multi-platform image (default: the host's); an image of another platform
    without a usable binfmt_misc handler is a HostError before anything runs."""
    from ..layer.compress import compression_for_media_type
    from ..plan.platform import host_platform
    from ..sandbox.runner import run
    from ..sandbox.spec import ProcessSpec
    from ..store.rootview import RootView
    from ..store.snapshots import Snapshots
    from .base import load_from_store
    from ..platform import Platform
    from ..sandbox.binfmt import emulation_error, emulation_problem
    from .userdb import resolve_user

    desc = store.resolve(image)
    want = Platform.parse(platform) if platform else host_platform()
    base = load_from_store(store, Digest.parse(str(desc.digest)), want, image, strict=platform is not None)
    cfg = base.config.get("config") or {}
    argv = list(cfg.get("Entrypoint") or []) + (list(command) if command else list(cfg.get("Cmd") or []))
    if not argv:
        raise UsageError(f"{image}: no command given and the image has no Entrypoint or Cmd")
    snaps = Snapshots(store.root / "snapshots")
    from functools import partial

    lowers = [snaps.ensure(layer.diff_id, partial(store.blobs.open, layer.blob()),
                           compression_for_media_type(layer.media_type)) for layer in base.layers]
    lowers = snaps.stack([layer.diff_id for layer in base.layers], lowers)  # top-most first, implied dirs fixed up
    view = RootView(lowers)
    host = host_platform()
    arch = str(base.config.get("architecture") or host.architecture)
    problem = emulation_problem(Platform.parse("linux/" + arch).architecture, host.architecture,
                                exists_in_root=lambda p: view.lstat(p) is not None)
    if problem is not None:
        from ..errors import HostError

        raise HostError(emulation_error(image, arch, host, problem, arch))
    uid, gid, groups = resolve_user(user or cfg.get("User") or "", view)
    envd = dict(e.split("=", 1) if "=" in e else (e, "") for e in cfg.get("Env") or [])
    envd.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")  # Docker's default
    envd.update(dict(env))
    if "HOME" not in envd:  # as runc does for docker run
        from .userdb import user_home

        envd["HOME"] = user_home(user or cfg.get("User") or "root", view)
    tmp_parent = store.root / "tmp"
    tmp_parent.mkdir(parents=True, exist_ok=True)
    from ..store.stale import owned_prefix

    tmp = Path(tempfile.mkdtemp(prefix=owned_prefix("run"), dir=tmp_parent))
    try:
        (tmp / "u").mkdir()
        (tmp / "w").mkdir()
        cwd = workdir or cfg.get("WorkingDir") or "/"  # the sandbox makes a missing one
        spec = ProcessSpec(argv=tuple(argv), upperdir=tmp / "u", workdir=tmp / "w", lowerdirs=tuple(lowers),
                           env=tuple(envd.items()), cwd=cwd, uid=uid, gid=gid, groups=tuple(groups),
                           network="none" if network == "none" else "host", on_output=on_output)
        return run(spec).exit_code
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
