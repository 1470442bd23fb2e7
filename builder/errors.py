"""The exception tree. Every error pybuild raises on purpose derives from PybuildError.

Exit codes (used by the CLI): 1 Dockerfile or step at fault, 2 usage, 3 the host cannot do it,
4 registry or store.
"""

from __future__ import annotations

from .source import SourceFile, Span


class PybuildError(Exception):
    """Base of every deliberate pybuild error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def render(self) -> str:
        """A human message, possibly several lines, without a trailing newline."""
        return str(self)


class UsageError(PybuildError):
    """Bad command-line usage or option values."""

    exit_code = 2


class HostError(PybuildError):
    """The host cannot do what is needed (no namespaces, no overlay, missing tool)."""

    exit_code = 3


class StoreError(PybuildError):
    """The local store is missing something or is inconsistent."""

    exit_code = 4


class NoSpaceError(StoreError):
    """A write ran out of space (ENOSPC / EDQUOT). The message says what was being written and
    where (the directory and the space left on its file system); nothing partial was kept."""


def no_space(exc: OSError, what: str, where: object) -> NoSpaceError | None:
    """A NoSpaceError for ``exc`` when it is ENOSPC/EDQUOT (``what`` was being written into the
    directory ``where``), else None."""
    import errno
    import os

    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    try:
        st = os.statvfs(str(where))
        free = f"{st.f_bavail * st.f_frsize // 1024} KiB free of {st.f_blocks * st.f_frsize // 1024} KiB"
    except OSError:
        free = "its file system is full"
    return NoSpaceError(f"no space left on device while {what} in {where} ({free})")


class ReferenceError_(PybuildError):
    """An image reference is malformed or names nothing. Prints the offending reference."""

    exit_code = 4


class RegistryError(PybuildError):
    """A registry request failed.

    Carries the HTTP method, the URL with credentials redacted, the status and the
    distribution error codes (``errors[].code`` of the response body).
    """

    exit_code = 4

    def __init__(self, message: str, *, method: str = "", url: str = "", status: int | None = None,
                 codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.codes = codes

    def render(self) -> str:
        parts = [str(self.args[0])]
        if self.method or self.url:
            parts.append(f"{self.method} {self.url}".strip())
        if self.status is not None:
            parts.append(f"status {self.status}")
        if self.codes:
            parts.append("codes " + ",".join(self.codes))
        return ": ".join(parts)


class DockerfileError(PybuildError):
    """An error located in a Dockerfile. Renders as ``FILE:LINE:COL: message`` + line + caret."""

    exit_code = 1

    def __init__(self, message: str, span: Span | None = None, source: SourceFile | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source

    def with_source(self, source: SourceFile) -> DockerfileError:
        """Attach the source file if none is attached yet; returns self."""
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        name = self.source.name if self.source else "Dockerfile"
        if self.span is None:
            return f"{name}: {self.message}"
        head = f"{name}:{self.span.line}:{self.span.col}: {self.message}"
        if self.source is None:
            return head
        text = self.source.line_text(self.span.line)
        if not text:
            return head
        caret = " " * (max(self.span.col, 1) - 1) + "^"
        return f"{head}\n    {text}\n    {caret}"


class ExpansionError(DockerfileError):
    """Variable expansion failed (bad substitution, unterminated quote, ``${X?msg}``...)."""


class StepFailed(PybuildError):
    """A build step (RUN) failed. Renders as ``FILE:LINE: RUN ...: exit code N`` + output tail."""

    exit_code = 1

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int = 0, exit_status: int | None = None,
                 output_tail: tuple[str, ...] = (), reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # a limit the step reached ("memory limit 256MiB reached")
        self.file = file
        self.line = line
        self.exit_status = exit_status
        self.output_tail = output_tail

    def render(self) -> str:
        head = f"{self.file}:{self.line}: {self.args[0]}"
        if self.exit_status is not None and self.reason:
            head += f": exit {self.exit_status}: {self.reason}"
        elif self.exit_status is not None:
            head += f": exit code {self.exit_status}"
        if self.output_tail:
            head += "\n" + "\n".join("    " + line for line in self.output_tail)
        return head


class Interrupted(PybuildError):
    """The build was interrupted by SIGINT/SIGTERM; everything was cleaned up."""

    exit_code = 130
