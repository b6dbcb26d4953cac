from __future__ import annotations

from importlib import resources

import pytest

from ptu_verify.workloads import builtin


def test_builtin_folder_from_installed_package() -> None:
    folder = builtin.builtin_profiles_folder()
    assert folder.joinpath("chat.yaml").is_file()


def test_builtin_folder_falls_back_to_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing_package(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(resources, "files", missing_package)
    folder = builtin.builtin_profiles_folder()
    assert folder.joinpath("chat.yaml").is_file()
    assert folder.joinpath("data").is_dir()
