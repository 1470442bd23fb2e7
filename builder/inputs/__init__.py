"""Build inputs as ``docker buildx build`` takes them: a context directory, ``-`` (stdin), a
git URL or an http(s) tarball URL for the main context; ``--build-context NAME=VALUE``
named contexts; ``-f -``. Everything here turns such a value into a local directory (or an
image reference) before the engine starts; temp dirs are the caller's (see
:mod:`builder.inputs.prepare`)."""
