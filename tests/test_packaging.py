"""What a wheel holds: every package of the source tree (an editable install hides a missing one)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "latentwalk").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject's packages: {sorted(found - listed)}"
