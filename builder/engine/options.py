"""BuildOptions: everything a build needs to know besides the store, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class SecretSource:
    """``--secret id=X,src=FILE`` or ``--secret id=X,env=VAR``."""

    id: str
    src: str | None = None
    env: str | None = None


@dataclass(frozen=True, slots=True)
class BuildOptions:
    context: Path
    dockerfile: Path
    tags: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    platform: str | None = None
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    pull: bool = False
    network: str = "host"                 # default network for RUN: host | none
    secrets: tuple[SecretSource, ...] = ()
    source_date_epoch: int | None = None
    compression: str = "gzip"
    compression_level: int | None = None  # buildx compression-level of new layers (None: default)
    outputs: tuple[str, ...] = ()         # raw --output values
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    insecure_registries: tuple[str, ...] = ()
    # issue 15: named contexts (builder.inputs.prepare.NamedContext), ssh agent sockets by id,
    # RUN's extra /etc/hosts lines, /dev/shm size, rlimits, --annotation values as given
    named_contexts: tuple[Any, ...] = ()
    ssh: tuple[tuple[str, str], ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()
    shm_size: int | None = None
    ulimits: tuple[tuple[str, int, int], ...] = ()
    annotations: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    # where ``--output ...,dest=-`` writes (the CLI passes its stdout); None refuses dest=-
    stdout: Any = field(default=None, compare=False)
