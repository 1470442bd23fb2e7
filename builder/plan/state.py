"""The runtime part of an image config (Docker's ``config`` object) as a frozen value.

``ImageConfigState.from_config`` reads a base image's ``config`` (None for scratch) and
``to_config`` writes the object the way BuildKit marshals it (Go struct field order, map keys
sorted, empty fields omitted). ``from_config`` raises :class:`builder.errors.StoreError` when the
base config has values of the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import StoreError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL: tuple[str, ...] = ("/bin/sh", "-c")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Docker's HealthcheckConfig; durations in nanoseconds (0 = inherit / default)."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.test:
            out["Test"] = list(self.test)
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period), ("StartInterval", self.start_interval),
                           ("Retries", self.retries)):
            if value:
                out[key] = value
        return out


def _env_key(item: str) -> str:
    return item.split("=", 1)[0]


@dataclass(frozen=True, slots=True)
class ImageConfigState:
    """Image config fields a Dockerfile can change.

    ``env``/``labels`` keep insertion order as pairs; ``exposed_ports`` and ``volumes`` are sorted
    tuples; ``entrypoint``/``cmd``/``shell`` are None when unset (``effective_shell`` gives the
    shell RUN uses). ``author`` is the image's top-level ``author`` (MAINTAINER), not part of
    ``to_config()``.
    """

    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    shell: tuple[str, ...] | None = None
    healthcheck: HealthConfig | None = None
    stop_signal: str = ""
    onbuild: tuple[str, ...] = ()
    args_escaped: bool = False
    author: str = field(default="", compare=True)

    # ---- derived values -------------------------------------------------------------------
    @property
    def effective_shell(self) -> tuple[str, ...]:
        """The SHELL in force (``/bin/sh -c`` when none was set)."""
        return self.shell if self.shell else DEFAULT_SHELL

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    # ---- updates (each returns a new state) ----------------------------------------------
    def with_env(self, key: str, value: str) -> "ImageConfigState":
        """Set ``key`` (replacing in place when present, else appended), as BuildKit's addEnv."""
        items = list(self.env)
        for i, (k, _) in enumerate(items):
            if k == key:
                items[i] = (key, value)
                break
        else:
            items.append((key, value))
        return replace(self, env=tuple(items))

    def with_label(self, key: str, value: str) -> "ImageConfigState":
        items = [(k, v) for k, v in self.labels if k != key]
        if len(items) == len(self.labels):
            return replace(self, labels=self.labels + ((key, value),))
        return replace(self, labels=tuple((k, value if k == key else v) for k, v in self.labels))

    def with_ports(self, ports: tuple[str, ...]) -> "ImageConfigState":
        return replace(self, exposed_ports=tuple(sorted(set(self.exposed_ports) | set(ports))))

    def with_volumes(self, vols: tuple[str, ...]) -> "ImageConfigState":
        return replace(self, volumes=tuple(sorted(set(self.volumes) | set(vols))))

    # ---- JSON boundary ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, *, author: str = "") -> "ImageConfigState":
        """Read a Docker/OCI ``config`` object. None (scratch) gives BuildKit's empty image:
        ``PATH`` set to the default and ``WorkingDir`` ``/``.

        PATH is appended when the config has none, as BuildKit does for every stage.
        """
        if cfg is None:
            cfg = {"WorkingDir": "/"}
        if not isinstance(cfg, Mapping):
            raise StoreError("base image config: 'config' is not an object")
        env_list = _str_list(cfg, "Env") or []
        env: list[tuple[str, str]] = []
        for item in env_list:
            k, _, v = item.partition("=")
            env.append((k, v))
        if not any(k == "PATH" for k, _ in env):
            env.append(("PATH", DEFAULT_PATH))
        labels = cfg.get("Labels") or {}
        ports = cfg.get("ExposedPorts") or {}
        vols = cfg.get("Volumes") or {}
        for name, obj in (("Labels", labels), ("ExposedPorts", ports), ("Volumes", vols)):
            if not isinstance(obj, Mapping):
                raise StoreError(f"base image config: {name} is not an object")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise StoreError("base image config: Labels must map strings to strings")
        hc = cfg.get("Healthcheck")
        health = None
        if hc:
            if not isinstance(hc, Mapping):
                raise StoreError("base image config: Healthcheck is not an object")
            try:
                health = HealthConfig(
                    test=tuple(str(t) for t in (hc.get("Test") or ())),
                    interval=int(hc.get("Interval") or 0), timeout=int(hc.get("Timeout") or 0),
                    start_period=int(hc.get("StartPeriod") or 0),
                    start_interval=int(hc.get("StartInterval") or 0), retries=int(hc.get("Retries") or 0))
            except (TypeError, ValueError):
                raise StoreError("base image config: Healthcheck has non-numeric durations") from None
        entry = _str_list(cfg, "Entrypoint")
        cmd = _str_list(cfg, "Cmd")
        shell = _str_list(cfg, "Shell")
        return cls(
            env=tuple(env),
            working_dir=_str(cfg, "WorkingDir"),
            user=_str(cfg, "User"),
            labels=tuple(sorted(labels.items())),
            exposed_ports=tuple(sorted(str(p) for p in ports)),
            volumes=tuple(sorted(str(v) for v in vols)),
            entrypoint=tuple(entry) if entry else None,
            cmd=tuple(cmd) if cmd else None,
            shell=tuple(shell) if shell else None,
            healthcheck=health,
            stop_signal=_str(cfg, "StopSignal"),
            onbuild=tuple(_str_list(cfg, "OnBuild") or ()),
            args_escaped=bool(cfg.get("ArgsEscaped", False)),
            author=author,
        )

    def to_config(self) -> dict[str, Any]:
        """The ``config`` object as BuildKit writes it (empty fields omitted, maps sorted)."""
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in sorted(self.exposed_ports)}
        if self.env:
            out["Env"] = [f"{k}={v}" for k, v in self.env]
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in sorted(self.volumes)}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(sorted(self.labels))
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_json()
        if self.onbuild:
            out["OnBuild"] = list(self.onbuild)
        if self.shell:
            out["Shell"] = list(self.shell)
        return out


def _str(cfg: Mapping[str, Any], key: str) -> str:
    value = cfg.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StoreError(f"base image config: {key} is not a string")
    return value


def _str_list(cfg: Mapping[str, Any], key: str) -> list[str] | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StoreError(f"base image config: {key} is not a list of strings")
    return list(value)
