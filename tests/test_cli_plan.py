from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_plan_explains_each_step(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("plan", "--model", "qwen-plus-2025-04-28", "--tpm", "300000")
    assert result.exit_code == 0
    assert "Recommended:         16 PTU" in result.stdout
    assert "300,000 × 1.00 / 25,000 = 12.00" in result.stdout
    assert "12 rounded up to a multiple of 8 → 16 PTU" in result.stdout
    assert "400,000 TPM, 400 QPM" in result.stdout
    assert "prices were not given" in result.stdout


def test_plan_in_chinese(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("plan", "--model", "qwen-plus-2025-04-28", "--tpm", "300000", "--lang", "zh")
    assert result.exit_code == 0
    assert "推荐：              16 PTU" in result.stdout
    assert "未给出价格" in result.stdout


def test_plan_language_from_environment(run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    result = run_cli("plan", "--model", "qwen-plus", "--tpm", "300000")
    assert "推荐" in result.stdout


@pytest.mark.parametrize(
    ("args", "ptu", "raw", "binding"),
    [
        (["--model", "qwen-plus-2025-04-28", "--tpm", "300000"], 16, 12, "tpm"),
        (["--model", "qwen-plus-2025-04-28", "--tpm", "300000", "--rounding", "minimum"], 12, 12, "tpm"),
        (["--model", "qwen-turbo-2025-04-28", "--tpm", "100000", "--qpm", "30"], 4, 2, "tpm"),
        (["--model", "qwen-vl-max-2025-04-08", "--tpm", "8000", "--qpm", "20"], 8, 5, "qpm"),
    ],
)
def test_plan_json_facts(run_cli, args: list[str], ptu: int, raw: int, binding: str) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("plan", *args, "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["ptu"] == ptu
    assert payload["raw_ptu"] == raw
    assert payload["binding_limit"] == binding
    for key in ("model", "capacity_tpm", "capacity_qpm", "utilization"):
        assert key in payload


def test_plan_cost_section(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "plan", "--model", "qwen-plus", "--input-tpm", "240000", "--output-tpm", "60000",
        "--ptu-price", "2", "--input-price", "0.8", "--output-price", "2", "--json",
    )
    assert result.exit_code == 0
    cost = json.loads(result.stdout)["cost"]
    assert cost["ptu_cost"] == pytest.approx(43200 * 16 * 2 / 60)
    assert cost["token_cost"] == pytest.approx(43200 * (240000 * 0.8 + 60000 * 2) / 1e6)
    assert cost["cheaper"] == "pay_per_token"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "--model", "gpt-4", "--tpm", "1"], "Unknown model 'gpt-4'"),
        (["plan", "--model", "qwen-plus"], "--tpm"),
        (["plan", "--model", "qwen-plus", "--tpm", "-5"], "--tpm must be zero or more"),
        (["plan", "--model", "qwen-plus", "--tpm", "100", "--headroom", "11"], "--headroom must be between 0 and 10"),
        (["plan", "--model", "qwen-plus", "--tpm", "100", "--ptu-price", "1", "--ptu-price-per-minute", "1"], "not both"),
        (["plan", "--model", "qwen-plus", "--tpm", "abc"], "abc"),
        (["plan", "--tpm", "100"], "--model"),
        (["plan", "--model", "qwen-plus", "--tpm", "100", "--catalog", "/nonexistent/c.toml"], "/nonexistent/c.toml"),
        (["plan", "--model", "qwen-plus", "--tpm", "100", "--rounding", "up"], "up"),
    ],
)
def test_plan_bad_input_exits_2(run_cli, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_catalog_lists_models(run_cli) -> None:  # type: ignore[no-untyped-def]
    table = run_cli("catalog")
    assert table.exit_code == 0
    assert "qwen-vl-max-2025-04-08" in table.stdout
    listing = run_cli("catalog", "--json")
    versions = [model["version"] for model in json.loads(listing.stdout)["models"]]
    assert len(versions) == 5


def test_installed_script_runs_from_another_directory(tmp_path: Path) -> None:
    script = shutil.which("ptu-verify", path=os.path.dirname(sys.executable)) or shutil.which("ptu-verify")
    assert script, "the ptu-verify console script is not installed in this environment"
    completed = subprocess.run(
        [script, "plan", "--model", "qwen-plus-2025-04-28", "--tpm", "300000"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "16 PTU" in completed.stdout


@pytest.mark.parametrize("option", ["--target-tpm", "--target-qpm", "--headroom"])
def test_analyze_rejects_non_finite_option(run_cli, tmp_path: Path, option: str) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("analyze", str(tmp_path), option, "inf")
    assert result.exit_code == 2
    assert option in result.stderr
    assert "finite" in result.stderr
