"""The layering of DESIGN.md's module map, enforced: reads every module of ``builder/`` (every
``import`` statement, also those inside functions and under ``TYPE_CHECKING``) and fails when a
module imports from a layer above its own. Modules of one layer may import each other.

The table is DESIGN.md's, with what the code grew since (each marked "added"):
- ``events.py`` (typed events, emitted by transfers and the engine), ``units.py`` (sizes),
  ``owners.py`` (PID-owned names, used by the store's temp entries and the sandbox's cgroups;
  moved out of ``store/stale.py``, which the sandbox must not import), ``platform.py`` (the
  platform value type) sit in base, as do ``codecache.py`` (dataclasses' compiled methods kept
  across runs) and ``lazymod.py`` (deferred standard modules), which the CLI and API use at
  import time and which import nothing of builder but ``atomicfile.py`` (the temp-file-and-
  rename writer of the store, the parse cache and the code cache; added), also in base.
- ``outputspec.py`` (parsing ``--output`` values, names checked as references) sits in oci.
- ``inputs/urls.py`` (classifying context/ADD URLs, used by the planner) sits in plan; the rest
  of ``inputs/`` (stdin, git, ssh, flags prepared for the engine) sits in engine.
- ``oci/layoutdir.py`` and ``oci/dockerarchive.py`` are image *locations* (ImageSource /
  ImageDestination over an OCI layout directory or tar, a docker archive) that reuse the store's
  blob writer: they sit with the store, above ``oci/models.py``.
- ``validate.py`` (the image checker, which reads through ``transfer``) sits with transfer.
- ``render.py`` / ``render_live.py`` / ``cli_commands.py`` are the CLI: face.
- ``builder/__init__.py`` is a lazy index of the public names (at run time it imports nothing;
  tests/test_api.py checks that): any layer may read ``builder.__version__`` from it, and its own
  re-exports are not checked.
A module that matches no row fails the test: give it a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "builder"

# (layer, module patterns): a pattern ending in "." is a package prefix; the longest match wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("builder", "builder.source", "builder.errors", "builder.digest", "builder.events",
              "builder.platform", "builder.units", "builder.owners", "builder.grammar.",
              "builder.codecache", "builder.lazymod", "builder.atomicfile", "builder.background")),
    ("syntax", ("builder.syntax.",)),
    ("oci", ("builder.oci.", "builder.outputspec")),
    ("plan", ("builder.plan.", "builder.inputs.urls")),
    ("layer", ("builder.layer.",)),
    ("sandbox", ("builder.sandbox.",)),
    ("store", ("builder.store.", "builder.oci.layoutdir", "builder.oci.dockerarchive")),
    ("registry", ("builder.registry.", "builder.transfer", "builder.validate")),
    ("engine", ("builder.engine.", "builder.inputs.")),
    ("face", ("builder.api", "builder.cli", "builder.cli_commands", "builder.render", "builder.render_live")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name (longest pattern wins), or None when no row matches."""
    best: tuple[int, str] | None = None
    for name, patterns in LAYERS:
        for p in patterns:
            hit = module.startswith(p) or module + "." == p if p.endswith(".") else module == p
            if hit and (best is None or len(p) > best[0]):
                best = (len(p), name)
    return best[1] if best else None


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, imported module) for every import of ``path`` into builder; ``from X import y``
    counts as X.y when X.y is a module of the package (under ``root``), else as X."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "builder"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "builder":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = (root / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (root / Path(*sub.split(".")) / "__init__.py").exists()
                out.append((node.lineno, sub if is_module else target))
    return sorted(out)


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    missing = [module_name(p) for p in MODULES if layer_of(module_name(p)) is None]
    assert not missing, f"modules without a layer (add them to LAYERS in {__file__}): {missing}"


def violations(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``FILE:LINE: ...`` for each import of ``path`` from a higher layer (or of a module with
    no layer)."""
    me = module_name(path, root)
    if me == "builder":
        return []  # the lazy index of public names (see the module docstring)
    mine = layer_of(me)
    assert mine is not None, f"{me} has no layer"
    bad = []
    for line, target in imports_of(path, root):
        theirs = layer_of(target)
        where = f"{path.relative_to(root)}:{line}"
        if theirs is None:
            bad.append(f"{where}: {target} has no layer")
        elif RANK[theirs] > RANK[mine]:
            bad.append(f"{where}: {me} ({mine}) imports {target} ({theirs})")
    return bad


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_from_a_higher_layer(path: Path) -> None:
    bad = violations(path)
    assert not bad, "\n".join(bad)


def test_the_checker_finds_lazy_relative_and_type_only_imports(tmp_path: Path) -> None:
    """The checker itself, on a small package: upward imports inside a function, under
    TYPE_CHECKING and as ``from .. import module`` are found; downward ones pass."""
    pkg = tmp_path / "builder"
    for d in ("layer", "engine", "store"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "engine" / "build.py").write_text("from ..layer import tar\nfrom ..errors import X\n")
    (pkg / "store" / "layout.py").write_text("")
    (pkg / "layer" / "tar.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import walk\nif TYPE_CHECKING:\n    from ..store.layout import S\n"
        "def f():\n    from ..engine import build\n    import builder.engine.build\n")
    (pkg / "layer" / "walk.py").write_text("from .. import errors\n")
    assert violations(pkg / "engine" / "build.py", tmp_path) == []
    assert violations(pkg / "layer" / "walk.py", tmp_path) == []
    assert violations(pkg / "layer" / "tar.py", tmp_path) == [
        "builder/layer/tar.py:4: builder.layer.tar (layer) imports builder.store.layout (store)",
        "builder/layer/tar.py:6: builder.layer.tar (layer) imports builder.engine.build (engine)",
        "builder/layer/tar.py:7: builder.layer.tar (layer) imports builder.engine.build (engine)",
    ]
    assert layer_of("builder.engine.build") == "engine" and layer_of("builder.oci.layoutdir") == "store"
    assert layer_of("builder.inputs.urls") == "plan" and layer_of("builder.inputs.git") == "engine"
    assert layer_of("builder.nothing") is None
    assert RANK["engine"] > RANK["store"] > RANK["sandbox"] > RANK["layer"] > RANK["plan"]
