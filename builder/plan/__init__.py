"""builder.plan: typed instructions to stages of expanded steps (BuildKit's dockerfile2llb rules).

- :mod:`.platform`: ``Platform`` (``os/arch[/variant]``) and ``host_platform()``.
- :mod:`.graph`: ``build_graph(...) -> BuildGraph``: meta ARGs, stages, ``--target``, pruning.
- :mod:`.state`: ``ImageConfigState``, the image config a Dockerfile changes (``to_config()``).
- :mod:`.lower`: ``StageLowering``: one stage's instructions to ``RunStep``/``CopyStep``/``ConfigStep``.
- :mod:`.steps`, :mod:`.mounts`: the step values and ``RUN --mount`` parsing.
- :mod:`.expander`, :mod:`.gofmt`: word expansion with spans; Go formatting for history strings.

Nothing is imported here so that importing a submodule stays cheap.
"""
