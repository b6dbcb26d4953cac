from __future__ import annotations

import gettext
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from ptu_verify.i18n import LOCALE_DIR, _, language_from_argv, normalize_language, set_language

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "ptu_verify"
PO_FILES = sorted(LOCALE_DIR.glob("zh_CN/LC_MESSAGES/*.po"))


def source_messages() -> dict[str, str]:
    """Return every literal passed to _() or ngettext() under ptu_verify/, with where it is."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for lineno, message, _comments, _context in extract_from_file("python", str(path), keywords={"_": None, "ngettext": (1, 2)}):
            for text in message if isinstance(message, tuple) else (message,):
                if text:
                    found.setdefault(text, f"{path.relative_to(PACKAGE_DIR.parent)}:{lineno}")
    return found


def test_every_message_has_a_chinese_translation() -> None:
    translated: set[str] = set()
    for po_path in PO_FILES:
        with po_path.open("rb") as handle:
            translated.update(message.id for message in read_po(handle) if message.id and message.string)
    missing = [f"{where}: {text!r}" for text, where in source_messages().items() if text not in translated]
    assert not missing, "messages without a zh_CN translation (add them to a .po file and compile):\n" + "\n".join(missing)


@pytest.mark.parametrize("po_path", PO_FILES, ids=lambda path: path.name)
def test_compiled_catalog_matches_po(po_path: Path) -> None:
    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    mo_path = po_path.with_suffix(".mo")
    assert mo_path.exists(), f"{mo_path} is missing: run python -m ptu_verify.i18n compile"
    with mo_path.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    stale = [message.id for message in catalog if message.id and message.string and compiled.gettext(message.id) != message.string]
    assert not stale, f"{mo_path.name} is older than {po_path.name}: run python -m ptu_verify.i18n compile"


def test_translated_placeholders_match_source() -> None:
    import string

    formatter = string.Formatter()
    for po_path in PO_FILES:
        with po_path.open("rb") as handle:
            catalog = read_po(handle)
        for message in catalog:
            if not message.id or not message.string or isinstance(message.id, tuple):
                continue
            source_fields = sorted(field for _text, field, _spec, _conv in formatter.parse(message.id) if field)
            target_fields = sorted(field for _text, field, _spec, _conv in formatter.parse(message.string) if field)
            assert source_fields == target_fields, f"{po_path.name}: placeholders differ for {message.id!r}"


def test_set_language_switches_messages() -> None:
    set_language("zh")
    assert _("Interrupted.") == "已中断。"
    set_language("en")
    assert _("Interrupted.") == "Interrupted."


@pytest.mark.parametrize(
    ("value", "expected"),
    [("zh", "zh"), ("zh-CN", "zh"), ("zh_CN.UTF-8", "zh"), ("en_US.UTF-8", "en"), ("C", "en"), ("fr_FR", None), ("", None)],
)
def test_normalize_language(value: str, expected: str | None) -> None:
    assert normalize_language(value) == expected


def test_language_from_argv() -> None:
    assert language_from_argv(["plan", "--lang", "zh"]) == "zh"
    assert language_from_argv(["plan", "--lang=en"]) == "en"
    assert language_from_argv(["plan"]) is None
