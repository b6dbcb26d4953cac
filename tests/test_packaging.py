from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def declared_packages() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return set(tomllib.load(handle)["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    found = {"ptu_verify.profiles"}
    for top in ("ptu_verify", "loadtest"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    missing = sorted(found - declared_packages())
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"


@pytest.mark.slow
def test_wheel_contains_data_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next(tmp_path.glob("ptu_verify-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ptu_verify/data/catalog.toml" in names
    assert "loadtest/locustfile.py" in names
    assert any(name.startswith("ptu_verify/locale/zh_CN/LC_MESSAGES/") and name.endswith(".mo") for name in names)
    assert any(name.startswith("ptu_verify/profiles/") and name.endswith(".yaml") for name in names)
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
