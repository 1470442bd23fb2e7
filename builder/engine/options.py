"""BuildOptions: everything a build needs to know besides the store, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from ..inputs.prepare import NamedContext
    from ..outputspec import OutputSpec


@dataclass(frozen=True, slots=True)
class SecretSource:
    """``--secret id=X,src=FILE`` or ``--secret id=X,env=VAR``."""

    id: str
    src: str | None = None
    env: str | None = None

    @classmethod
    def parse(cls, text: str) -> SecretSource:
        """A ``--secret`` value (``id=X[,src=FILE|,env=VAR]``; with neither, an environment
        variable named X if set, else the file X). UsageError when ``id`` is missing or the file
        cannot be found (as buildx, which stats every secret file before building)."""
        import os

        fields = dict(f.partition("=")[::2] for f in text.split(","))
        if "id" not in fields:
            raise UsageError(f"--secret {text!r}: id= is required")
        src = fields.get("src") or fields.get("source")
        env = fields.get("env")
        if not src and not env:
            env = fields["id"] if fields["id"] in os.environ else None
            src = None if env else fields["id"]
        if src:
            try:
                os.stat(src)
            except OSError as exc:
                raise UsageError(f"--secret {text!r}: cannot read {src}: {exc.strerror}") from None
        return cls(id=fields["id"], src=src, env=env)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """Everything a build is asked to do (the CLI flags and API arguments), validated by their parsers."""

    context: Path
    dockerfile: Path
    tags: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    platform: str | None = None
    jobs: int | None = None               # stages built at once (None: the CPU count)
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    pull: bool = False
    network: str = "host"                 # default network for RUN: host | none
    secrets: tuple[SecretSource, ...] = ()
    source_date_epoch: int | None = None
    compression: str = "gzip"
    compression_level: int | None = None  # buildx compression-level of new layers (None: default)
    outputs: tuple[str | OutputSpec, ...] = ()   # raw --output values or parsed ones
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    insecure_registries: tuple[str, ...] = ()
    # issue 15: named contexts (builder.inputs.prepare.NamedContext), ssh agent sockets by id,
    # RUN's extra /etc/hosts lines, /dev/shm size, rlimits, --annotation values as given
    named_contexts: tuple[NamedContext, ...] = ()
    dockerfile_name: str | None = None    # how messages name a Dockerfile read from stdin / a remote context
    ssh: tuple[tuple[str, str], ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()
    shm_size: int | None = None
    ulimits: tuple[tuple[str, int, int], ...] = ()
    annotations: tuple[str, ...] = ()
    # issue 13: cgroup limits of every RUN (builder.engine.limits; None: the defaults)
    limits: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    # where ``--output ...,dest=-`` writes (the CLI passes its stdout); None refuses dest=-
    stdout: Any = field(default=None, compare=False)
