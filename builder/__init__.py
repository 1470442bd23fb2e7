"""pybuild: a daemonless Dockerfile build engine producing OCI images.

The library never prints; :mod:`builder.cli` is the only module that writes to a terminal.
"""

__version__ = "0.1.0"
