"""What a registry source and destination share: one repository, and a client they may own."""

from __future__ import annotations

from typing import Any, Self

from ._reference import ImageRef, parse_image_ref
from .client import RegistryClient


class RepositoryEndpoint:
    """One repository of a registry. The client is created here (and closed by :meth:`close`)
    unless one is passed in; ``insecure`` forces plain http. Usable as a context manager."""

    def __init__(self, ref: str | ImageRef, *, client: RegistryClient | None = None,
                 insecure: bool | None = None, **client_options: Any) -> None:
        self.ref = parse_image_ref(ref) if isinstance(ref, str) else ref
        self._own_client = client is None
        self.client = client or RegistryClient(self.ref.api_host, insecure=insecure, **client_options)

    @property
    def repository(self) -> str:
        return self.ref.repository

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
