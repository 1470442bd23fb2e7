"""builder.registry: the OCI distribution client.

Public entry points: :class:`RegistrySource`, :class:`RegistryDestination`,
:func:`resolve_platform`, :class:`RegistryClient`, :func:`login`, :func:`logout`.
Importing this package does not import ``requests``.
"""
