"""The wheel ships every package of builder/: pyproject.toml lists packages by hand, so a new
subpackage missing from that list would import from a checkout but not once installed."""

from __future__ import annotations

import tomllib

from conftest import REPO


def test_every_builder_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "builder").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - listed == set(), f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert "builder.grammar" in listed and (REPO / "grammar" / "__init__.py").is_file()
