"""The three kinds of step a Dockerfile lowers to; every value already expanded.

Steps are frozen values: the engine hashes them for cache keys and applies them. Each keeps its
``node`` (span, original text) and the history ``created_by`` BuildKit would write.
``used_args`` lists the (name, value) of the ARGs the step depends on, for the cache key.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..syntax.ast import Heredoc, Node
from .mounts import MountSpec
from .state import ImageConfigState

HISTORY_COMMENT = "buildkit.dockerfile.v0"


@dataclass(frozen=True, slots=True)
class InlineFile:
    """A file the engine must provide to a RUN (a heredoc script with a shebang).

    It is mounted read-only at ``path`` (BuildKit uses ``/dev/pipes/<NAME>``) with ``mode``.
    """

    path: str
    content: str
    mode: int = 0o755


@dataclass(frozen=True, slots=True)
class RunStep:
    """RUN: execute ``argv`` in the stage's rootfs; the upper dir becomes a layer.

    ``env`` is the process environment (image ENV plus the ARGs in scope, in order).
    ``proxy_env`` holds the proxy build args (both case forms): the engine adds them to the
    process environment but they never enter the image, the history or the cache key.
    ``files`` are inline scripts to mount (heredoc with a shebang). ``heredocs`` are the raw
    heredocs of the instruction (the shell expands them).
    """

    node: Node
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    user: str
    workdir: str
    network: str
    security: str
    mounts: tuple[MountSpec, ...]
    heredocs: tuple[Heredoc, ...]
    created_by: str
    used_args: tuple[tuple[str, str], ...] = ()
    proxy_env: tuple[tuple[str, str], ...] = ()
    files: tuple[InlineFile, ...] = ()
    shell_form: bool = True

    makes_layer = True
    records_history = True


@dataclass(frozen=True, slots=True)
class CopyStep:
    """COPY/ADD: put ``sources`` at ``dest`` (absolute, trailing slash kept) as a new layer.

    ``sources`` are expanded paths/URLs, or :class:`Heredoc` objects (inline files, content
    already expanded unless the delimiter was quoted). Exactly one of ``from_stage`` (a stage
    index) and ``from_image`` (an image reference) is set for ``--from``; neither means the
    build context. ``chmod`` is the validated mode string, ``chown`` the expanded owner.
    """

    node: Node
    kind: str
    sources: tuple[str | Heredoc, ...]
    dest: str
    created_by: str
    from_stage: int | None = None
    from_image: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    user: str = ""
    used_args: tuple[tuple[str, str], ...] = ()

    makes_layer = True
    records_history = True

    @property
    def chmod_mode(self) -> int | None:
        """``chmod`` as a number when it is octal (``"0755"``); None when absent or symbolic
        (``"u+x,g-w"``, which BuildKit also accepts and applies per file)."""
        if self.chmod and self.chmod.isascii() and self.chmod.isdigit():
            return int(self.chmod, 8)
        return None


@dataclass(frozen=True, slots=True)
class ConfigStep:
    """A config-only instruction: ``state`` is the image config AFTER it.

    ``workdir_to_create`` is set by a WORKDIR other than ``/``: the engine creates the directory
    (owned by the config's user) in a layer of its own (empty when it exists). ``records_history`` is
    False where BuildKit writes no history entry (ONBUILD).
    """

    node: Node
    kind: str
    state: ImageConfigState
    created_by: str
    workdir_to_create: str | None = None
    used_args: tuple[tuple[str, str], ...] = ()
    records_history: bool = True

    @property
    def makes_layer(self) -> bool:
        """False, except a WORKDIR other than ``/``: it makes a layer (empty when the directory
        exists), as in BuildKit."""
        return self.workdir_to_create is not None


Step = RunStep | CopyStep | ConfigStep
