from __future__ import annotations

from pathlib import Path

import pytest

from ptu_verify.catalog import load_catalog
from ptu_verify.errors import ExitCode, InputError

BUILT_IN = {
    "qwen-turbo-2025-04-28": (60000, 60, 4, "text", "qwen-turbo"),
    "qwen-plus-2025-04-28": (25000, 25, 8, "text", "qwen-plus"),
    "qwen-max-2025-01-25": (10000, 10, 16, "text", "qwen-max"),
    "qwen-vl-plus-2025-05-07": (16000, 8, 4, "vision", "qwen-vl-plus"),
    "qwen-vl-max-2025-04-08": (4000, 4, 8, "vision", "qwen-vl-max"),
}


def test_builtin_catalog_figures() -> None:
    catalog = load_catalog()
    assert set(catalog.models) == set(BUILT_IN)
    for version, (tpm, qpm, unit, modality, family) in BUILT_IN.items():
        spec = catalog.models[version]
        assert spec.tpm_per_ptu == tpm
        assert spec.qpm_per_ptu == qpm
        assert spec.min_purchase_ptu == unit
        assert spec.modality == modality
        assert spec.family == family


@pytest.mark.parametrize(
    ("name", "version", "matched_by"),
    [
        ("qwen-plus-2025-04-28", "qwen-plus-2025-04-28", "version"),
        ("qwen-plus", "qwen-plus-2025-04-28", "family"),
        ("qwen-plus-d824b8ad", "qwen-plus-2025-04-28", "deployment_code"),
        ("qwen-vl-plus-3f9a", "qwen-vl-plus-2025-05-07", "deployment_code"),
        ("qwen-vl-max", "qwen-vl-max-2025-04-08", "family"),
    ],
)
def test_resolve_model_names(name: str, version: str, matched_by: str) -> None:
    resolution = load_catalog().resolve(name)
    assert resolution.spec.version == version
    assert resolution.matched_by == matched_by


@pytest.mark.parametrize("name", ["gpt-4o", "qwen", "qwen-plus-2024-01-01", "qwen-plus-"])
def test_resolve_unknown_lists_known_models(name: str) -> None:
    with pytest.raises(InputError) as raised:
        load_catalog().resolve(name)
    assert raised.value.exit_code == ExitCode.USAGE
    assert "qwen-plus-2025-04-28" in raised.value.message
    assert "--catalog" in raised.value.message


def test_capacity_scales_with_ptu() -> None:
    capacity = load_catalog().resolve("qwen-plus").spec.capacity(16)
    assert capacity.tpm == 400000
    assert capacity.qpm == 400
    assert capacity.total_tpm == 400000


def test_user_catalog_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(
        '[models."qwen-plus-2025-04-28"]\ntpm_per_ptu = 30000\n\n'
        '[models."qwen3-split-2026-01-01"]\nfamily = "qwen3-split"\nmodality = "text"\n'
        "input_tpm_per_ptu = 40000\noutput_tpm_per_ptu = 8000\nqpm_per_ptu = 30\nmin_purchase_ptu = 2\n",
        encoding="utf-8",
    )
    catalog = load_catalog(path)
    plus = catalog.models["qwen-plus-2025-04-28"]
    assert plus.tpm_per_ptu == 30000
    assert plus.qpm_per_ptu == 25
    split = catalog.resolve("qwen3-split").spec
    assert split.splits_tpm
    capacity = split.capacity(2)
    assert capacity.input_tpm == 80000
    assert capacity.output_tpm == 16000
    assert capacity.tpm is None
    assert capacity.total_tpm == 96000


def test_ambiguous_family_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(
        '[models."qwen-plus-2025-09-11"]\nfamily = "qwen-plus"\nmodality = "text"\n'
        "tpm_per_ptu = 25000\nqpm_per_ptu = 25\nmin_purchase_ptu = 8\n",
        encoding="utf-8",
    )
    catalog = load_catalog(path)
    with pytest.raises(InputError, match="ambiguous"):
        catalog.resolve("qwen-plus")
    assert catalog.resolve("qwen-plus-2025-09-11").spec.version == "qwen-plus-2025-09-11"


BAD_CATALOGS = [
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\ntpm_per_ptu = 1\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\ncolour = "red"\n', "colour"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\ntpm_per_ptu = 0\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\n', "tpm_per_ptu"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\ntpm_per_ptu = -5\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\n', "tpm_per_ptu"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\ntpm_per_ptu = 10\nmin_purchase_ptu = 1\n', "qpm_per_ptu"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\n', "tpm_per_ptu"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "audio"\ntpm_per_ptu = 1\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\n', "modality"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\ninput_tpm_per_ptu = 5\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\n', "output_tpm_per_ptu"),
    ('[models."m-2025-01-01"]\nfamily = "m"\nmodality = "text"\ntpm_per_ptu = "many"\nqpm_per_ptu = 1\nmin_purchase_ptu = 1\n', "tpm_per_ptu"),
    ('[models."m-2025-01-01"]\ntpm_per_ptu = 1\n[models."M-2025-01-01"]\ntpm_per_ptu = 2\n', "defined twice"),
    ('[models."m-2025-01-01"]\ntpm_per_ptu = 1\n[models."m-2025-01-01"]\ntpm_per_ptu = 2\n', "defined twice"),
    ("[models\nbroken", "not valid TOML"),
    ("title = 'x'\n", "title"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CATALOGS)
def test_invalid_catalog_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as raised:
        load_catalog(path)
    assert str(path) in raised.value.message
    assert expected in raised.value.message


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--catalog"):
        load_catalog(tmp_path / "absent.toml")
