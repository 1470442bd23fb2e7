"""The library's front door: one function per user-facing operation. Never prints.

Every function takes the store explicitly; errors are PybuildError subclasses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


# -- build --------------------------------------------------------------------------------------
def build(opts: Any, store: Any, on_event: Any) -> Any:
    """Build per ``opts`` (an :class:`builder.engine.options.BuildOptions`) into ``store``."""
    from .engine.build import run_build

    with store.lease():
        return run_build(opts, store, on_event)


# -- images in the store ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImageRow:
    repository: str
    tag: str
    id: str          # config digest hex, as docker shows "IMAGE ID"
    digest: str      # manifest digest
    size: int        # compressed size of config + layers


def _manifest_and_config(store: Any, name: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    img = store.image(name)
    return json.loads(img.manifest_raw), json.loads(img.config_raw), img


def list_images(store: Any) -> list[ImageRow]:
    rows = []
    for name, desc in store.tags():
        try:
            manifest, _config, _img = _manifest_and_config(store, name)
        except Exception:  # a broken entry is listed, not fatal
            continue
        repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
        size = manifest["config"]["size"] + sum(l["size"] for l in manifest.get("layers", []))
        cfg_hex = manifest["config"]["digest"].split(":", 1)[1]
        rows.append(ImageRow(_familiar(repo), tag or "<none>", cfg_hex, str(desc.digest), size))
    return rows


def _familiar(repo: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            return repo[len(prefix):]
    return repo


def inspect_image(store: Any, name: str) -> dict[str, Any]:
    manifest, config, img = _manifest_and_config(store, name)
    return {"Name": name, "Digest": str(img.manifest_desc.digest), "Manifest": manifest, "Config": config}


def image_history(store: Any, name: str) -> list[tuple[str | None, int | None, str]]:
    """Newest first, like ``docker history``: (created, layer size or None, created_by)."""
    manifest, config, _img = _manifest_and_config(store, name)
    layers = iter(manifest.get("layers", []))
    rows = []
    for h in config.get("history", []):
        size = None if h.get("empty_layer") else next(layers, {}).get("size")
        rows.append((h.get("created"), size, h.get("created_by", "")))
    rows.reverse()
    return rows


def tag_image(store: Any, source: str, target: str) -> None:
    from .oci.reference import parse_reference

    desc = store.resolve(source)
    store.tag(str(parse_reference(target)), desc)


def remove_tag(store: Any, name: str) -> str:
    from .oci.reference import parse_reference

    full = str(parse_reference(name)) if not name.startswith("sha256:") else name
    store.untag(full)
    return name


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"invalid size {text!r} (examples: 500MB, 2GB)")
    base = 1024 if m.group(3) else 1000
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * base ** power)


def prune(store: Any, *, all_cache: bool = False, keep_storage: int | None = None) -> int:
    from .engine.prune import prune_store

    return prune_store(store, all_cache=all_cache, keep_storage=keep_storage)


def check_store(store: Any, *, repair: bool = False) -> Any:
    """Verify the store (:func:`builder.store.check.check_store`); returns its CheckReport."""
    from .store.check import check_store as _check

    return _check(store, repair=repair)


def disk_usage(store: Any) -> dict[str, int]:
    from .engine.prune import usage

    return usage(store)


# -- running -------------------------------------------------------------------------------------
def run_image(store: Any, image: str, command: tuple[str, ...], *, network: str = "host",
              env: tuple[tuple[str, str], ...] = (), user: str | None = None, workdir: str | None = None,
              on_output: Any = None) -> int:
    """Run ``image``'s entrypoint/cmd (or ``command``) in the sandbox; output lines go to
    ``on_output``. Returns the exit code."""
    from .engine.runimage import run_image as _run

    with store.lease():
        return _run(store, image, command, network=network, env=env, user=user, workdir=workdir, on_output=on_output)


# -- registries ---------------------------------------------------------------------------------
def pull_image(store: Any, ref: str, *, platform: str | None = None, insecure: tuple[str, ...] = ()) -> str:
    from .engine.remote import pull

    with store.lease():
        return pull(store, ref, platform=platform, insecure=insecure)


def push_image(store: Any, name: str, dest: str | None = None, *, compression: str | None = None,
               insecure: tuple[str, ...] = ()) -> str:
    from .engine.remote import push

    with store.lease():
        return push(store, name, dest, compression=compression, insecure=insecure)


def login(server: str, username: str, password: str, *, insecure: tuple[str, ...] = ()) -> None:
    from .engine.remote import login as _login

    _login(server, username, password, insecure=insecure)


def logout(server: str) -> None:
    from .engine.remote import logout as _logout

    _logout(server)
