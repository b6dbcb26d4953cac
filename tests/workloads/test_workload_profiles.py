"""Built-in profiles: loading, exact token counts, mix shares, determinism and `workload show`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ptu_verify.workloads import ProfileWorkload, builtin_profile_names, load_workload
from ptu_verify.workloads.stats import measured_input_tokens

EXPECTED_BUILTINS = {"smoke", "chat", "rag", "summarize", "code", "agent", "thinking", "vl-image", "mix"}


def test_builtins_all_present_and_loadable() -> None:
    names = set(builtin_profile_names())
    assert EXPECTED_BUILTINS <= names
    for name in names:
        workload = load_workload(name, seed=3)
        spec = workload.next_request()
        assert spec.workload == name
        assert spec.max_tokens >= 1
        assert spec.messages[-1]["role"] == "user"
        assert workload.expected_tokens_per_request() > 0


def test_smoke_keeps_max_tokens_64() -> None:
    spec = load_workload("smoke").next_request()
    assert spec.max_tokens == 64
    assert spec.variant == "smoke"


@pytest.mark.parametrize(
    ("name", "count"),
    [("mix", 500), ("chat", 150), ("vl-image", 60), ("code", 100), ("thinking", 60), ("smoke", 30), ("agent", 50), ("summarize", 50)],
)
def test_token_counts_match_targets(name: str, count: int) -> None:
    # 1,000 prompts across the profiles, each counted with the Qwen tokenizer.
    workload = load_workload(name, seed=11)
    for _ in range(count):
        spec = workload.next_request()
        measured, _images = measured_input_tokens(spec)
        assert spec.expected_input_tokens is not None
        assert abs(measured - spec.expected_input_tokens) <= 1, (name, measured, spec.expected_input_tokens)


def test_targets_follow_drawn_distribution() -> None:
    # Without a raised minimum, the expected input is the drawn target: rag draws uniform 2000-8000.
    workload = load_workload("rag", seed=5)
    inputs = [workload.next_request().expected_input_tokens or 0 for _ in range(200)]
    assert min(inputs) >= 2000
    assert max(inputs) <= 8000
    assert 4200 < sum(inputs) / len(inputs) < 5800


def test_mix_shares_within_sampling_error() -> None:
    workload = load_workload("mix", seed=2)
    assert isinstance(workload, ProfileWorkload)
    shares = {builder.leaf.name: share for builder, share in zip(workload.builders, workload.shares)}
    assert shares == pytest.approx({"chat": 0.45, "rag": 0.20, "summarize": 0.10, "code": 0.10, "agent": 0.10, "thinking": 0.05})
    draws = 3000
    counts: dict[str, int] = {}
    for _ in range(draws):
        spec = workload.next_request()
        assert spec.workload == "mix"
        counts[spec.variant] = counts.get(spec.variant, 0) + 1
    for variant, share in shares.items():
        sigma = math.sqrt(share * (1 - share) / draws)
        assert abs(counts.get(variant, 0) / draws - share) < 4 * sigma, (variant, counts)


def test_same_seed_same_requests() -> None:
    first = load_workload("mix", seed=9)
    second = load_workload("mix", seed=9)
    other = load_workload("mix", seed=10)
    a = [first.next_request() for _ in range(20)]
    b = [second.next_request() for _ in range(20)]
    c = [other.next_request() for _ in range(20)]
    assert a == b
    assert a != c


def test_agent_system_prompt_shared_and_nonce_unique(tmp_path: Path) -> None:
    agent = load_workload("agent", seed=1)
    systems = {agent.next_request().messages[0]["content"] for _ in range(5)}
    assert len(systems) == 1
    assert '"name": "search_orders"' in next(iter(systems))

    profile = tmp_path / "nonce.yaml"
    profile.write_text(
        "name: nonce\nlanguage: mixed\nsystem_prompt: {tokens: 300, nonce: true}\n"
        "input_tokens: {kind: uniform, min: 400, max: 900}\noutput_tokens: 100\nturns: {kind: uniform, min: 1, max: 3}\n",
        encoding="utf-8",
    )
    workload = load_workload(str(profile), seed=4)
    specs = [workload.next_request() for _ in range(30)]
    assert len({spec.messages[0]["content"] for spec in specs}) == 30
    for spec in specs:
        measured, _images = measured_input_tokens(spec)
        assert abs(measured - (spec.expected_input_tokens or 0)) <= 1


def test_thinking_and_images_in_requests() -> None:
    assert load_workload("thinking").next_request().thinking is True
    spec = load_workload("vl-image", seed=3).next_request()
    parts = spec.messages[-1]["content"]
    assert isinstance(parts, list)
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[-1]["type"] == "text"


def test_workload_show_every_builtin(run_cli) -> None:  # type: ignore[no-untyped-def]
    for name in builtin_profile_names():
        result = run_cli("workload", "show", name, "--sample", "15")
        assert result.exit_code == 0, (name, result.stderr)
        assert f"Workload {name}" in result.stdout
        assert "tokens/request" in result.stdout


def test_workload_show_json_tpm_and_qpm(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("workload", "show", "mix", "--sample", "200", "--tpm", "300000", "--qpm", "60", "--json", "--seed", "4")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    per_request = data["tokens_per_request"]
    assert per_request == pytest.approx(data["input_tokens"]["mean"] + data["output_tokens"]["mean"])
    assert data["qpm_for_target_tpm"] == pytest.approx(300000 / per_request)
    assert data["tpm_for_target_qpm"] == pytest.approx(60 * per_request)
    assert data["off_target_requests"] == 0
    assert {variant["variant"] for variant in data["variants"]} == {"chat", "rag", "summarize", "code", "agent", "thinking"}
    assert sum(variant["requests"] for variant in data["variants"]) == 200


def test_workload_show_table_lists_variants(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("workload", "show", "mix", "--sample", "100", "--tpm", "100000")
    assert result.exit_code == 0, result.stderr
    for variant in ("chat", "rag", "agent"):
        assert variant in result.stdout
    assert "For 100,000 TPM:" in result.stdout


def test_workload_list_names_builtins(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("workload", "list")
    assert result.exit_code == 0
    for name in EXPECTED_BUILTINS:
        assert name in result.stdout


def test_workload_show_in_chinese(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("--lang", "zh", "workload", "show", "smoke", "--sample", "5", "--qpm", "60")
    assert result.exit_code == 0, result.stderr
    assert "负载 smoke" in result.stdout
    assert "60.0 QPM 产生：5,280 TPM。" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninput_tokens: 100\noutput_tokens: 50\nlanguage: fr\n", encoding="utf-8")
    error = run_cli("--lang", "zh", "workload", "show", str(bad))
    assert error.exit_code == 2
    assert "键“language”" in error.stderr


@pytest.mark.parametrize("system_tokens", [20, 120, 900])
def test_tools_system_prompt_any_size(tmp_path: Path, system_tokens: int) -> None:
    from ptu_verify.tokens import count_tokens

    profile = tmp_path / "tools.yaml"
    profile.write_text(
        f"name: tools\nlanguage: en\nsystem_prompt: {{tokens: {system_tokens}, style: tools}}\ninput_tokens: 1200\noutput_tokens: 50\n",
        encoding="utf-8",
    )
    spec = load_workload(str(profile)).next_request()
    system = spec.messages[0]["content"]
    assert count_tokens(system) == system_tokens
    assert ('"type": "function"' in system) == (system_tokens >= 900)
