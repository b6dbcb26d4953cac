"""Location of the built-in profiles and their data files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

__all__ = ["builtin_profiles_folder"]


def builtin_profiles_folder() -> Traversable:
    """Return the folder of the built-in profiles.

    An installed ptu-verify has them as the package ``ptu_verify.profiles``. A process that imports
    ptu_verify from a source checkout (``python -m locust`` puts the working directory first on
    sys.path) finds no such package, so it falls back to ``profiles/`` beside ``ptu_verify/``.
    """
    try:
        return resources.files("ptu_verify.profiles")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent.parent / "profiles"
