"""Message translation through gettext catalogs (en and zh-CN).

Source strings are English. Each area of the code keeps its own catalog domain in
``ptu_verify/locale/zh_CN/LC_MESSAGES/<domain>.po``, compiled to ``.mo``. The domains of
the active language are chained, so ``_`` finds a string in any of them.
Compile after editing a .po file with ``python -m ptu_verify.i18n compile``.
"""

from __future__ import annotations

import gettext
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LANGUAGES", "LOCALE_DIR", "_", "ngettext", "get_language", "set_language", "language_from_argv"]

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "zh")
_GETTEXT_LOCALE = {"en": "en", "zh": "zh_CN"}

_translations: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def _load(language: str) -> gettext.NullTranslations:
    folder = LOCALE_DIR / _GETTEXT_LOCALE[language] / "LC_MESSAGES"
    chain: gettext.NullTranslations = gettext.NullTranslations()
    if not folder.is_dir():
        return chain
    for mo_path in sorted(folder.glob("*.mo")):
        with mo_path.open("rb") as handle:
            catalog = gettext.GNUTranslations(handle)
        catalog.add_fallback(chain)
        chain = catalog
    return chain


def normalize_language(value: str | None) -> str | None:
    """Map ``zh``, ``zh-CN``, ``zh_CN.UTF-8``, ``en_US`` and the like to ``zh`` or ``en``."""
    if not value:
        return None
    lowered = value.strip().lower().replace("-", "_")
    if lowered.startswith("zh"):
        return "zh"
    if lowered.startswith("en") or lowered in ("c", "posix"):
        return "en"
    return None


def language_from_environment() -> str:
    """Pick the language from PTU_VERIFY_LANG, then the POSIX locale variables; default en."""
    for variable in ("PTU_VERIFY_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        language = normalize_language(os.environ.get(variable))
        if language:
            return language
    return "en"


def language_from_argv(argv: Sequence[str]) -> str | None:
    """Return the value of ``--lang`` in a command line, if one is given and valid."""
    for index, argument in enumerate(argv):
        if argument == "--lang" and index + 1 < len(argv):
            return normalize_language(argv[index + 1])
        if argument.startswith("--lang="):
            return normalize_language(argument.split("=", 1)[1])
    return None


def set_language(language: str | None) -> str:
    """Activate ``language`` (en or zh; None reads the environment) and return it."""
    global _translations, _language
    resolved = normalize_language(language) or language_from_environment()
    _translations = _load(resolved) if resolved != "en" else gettext.NullTranslations()
    _language = resolved
    return resolved


def get_language() -> str:
    """Return the active language code, ``en`` or ``zh``."""
    return _language


def _(message: str) -> str:
    """Translate ``message`` into the active language."""
    return _translations.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """Translate a message with a singular and a plural form."""
    return _translations.ngettext(singular, plural, count)


def compile_catalogs() -> list[Path]:
    """Compile every .po file under LOCALE_DIR to .mo with Babel (a test dependency)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po_path in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/*.po")):
        with po_path.open("rb") as handle:
            catalog = read_po(handle)
        mo_path = po_path.with_suffix(".mo")
        with mo_path.open("wb") as handle:
            write_mo(handle, catalog, use_fuzzy=False)
        written.append(mo_path)
    return written


if __name__ == "__main__":
    if sys.argv[1:] != ["compile"]:
        sys.exit("usage: python -m ptu_verify.i18n compile")
    for path in compile_catalogs():
        print(path)
