"""Profile validation through the CLI: exit 2 with the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest


def _profile(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "name: ok\ninput_tokens: 100\noutput_tokens: 50\n"


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ("name: x\ninput_token: 100\noutput_tokens: 50\n", "input_token", "did you mean 'input_tokens'"),
        ("name: x\nlanguage: fr\ninput_tokens: 100\noutput_tokens: 50\n", "language", "zh, en, mixed"),
        ("name: x\ntask: poem\ninput_tokens: 100\noutput_tokens: 50\n", "task", "chat, rag, summarize, code"),
        ("name: x\ninput_tokens: 100\n", "output_tokens", "add output_tokens"),
        ("name: x\ninput_tokens: {kind: lognormal, median: 5}\noutput_tokens: 50\n", "input_tokens.sigma", "sigma"),
        ("name: x\nthinking: maybe\ninput_tokens: 100\noutput_tokens: 50\n", "thinking", "thinking: true"),
        ("name: x\nweight: -1\ninput_tokens: 100\noutput_tokens: 50\n", "weight", "number > 0"),
        ("name: x\nextra_params: {max_tokens: 5}\ninput_tokens: 100\noutput_tokens: 50\n", "extra_params.max_tokens", "output_tokens"),
        ("name: x\nsystem_prompt: {tokens: 5}\ninput_tokens: 100\noutput_tokens: 50\n", "system_prompt.tokens", "tokens:"),
        ("name: x\nsystem_prompt: {text: hi, tokens: 50}\ninput_tokens: 100\noutput_tokens: 50\n", "system_prompt", "text:"),
        ("name: x\nimages: {count: 1, sizes: [\"big\"]}\ninput_tokens: 100\noutput_tokens: 50\n", "images.sizes[0]", "1280x720"),
        ("name: two words\ninput_tokens: 100\noutput_tokens: 50\n", "name", "name:"),
        ("name: m\nmix: [{profile: nosuch, weight: 1}]\n", "mix[0].profile", "built-in"),
        ("name: m\nmix: [{profile: chat, weight: 1}, {profile: chat, weight: 2}]\n", "mix", "name:"),
        ("name: m\nmix: [{profile: chat, wieght: 1}]\n", "mix[0].wieght", "did you mean 'weight'"),
        ("name: m\nmix: [{name: a, input_tokens: 10, output_tokens: bad}]\n", "mix[0].output_tokens", "kind"),
        ("name: d\ndataset: {path: none.jsonl}\n", "dataset.path", "relative to the profile"),
    ],
)
def test_invalid_profile_exit_2_names_file_and_key(run_cli, tmp_path: Path, text: str, key: str, hint: str) -> None:  # type: ignore[no-untyped-def]
    path = _profile(tmp_path, text)
    result = run_cli("workload", "show", str(path), "--sample", "5")
    assert result.exit_code == 2, result.stderr
    assert str(path) in result.stderr
    assert f"key '{key}'" in result.stderr
    assert hint in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_profile_file_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "absent.yaml"
    result = run_cli("workload", "show", str(missing))
    assert result.exit_code == 2
    assert str(missing) in result.stderr


def test_invalid_yaml_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _profile(tmp_path, "name: [unclosed\n")
    result = run_cli("workload", "show", str(path))
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr


def test_mix_cycle_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _profile(tmp_path, "name: a\nmix: [{profile: b.yaml}]\n", "a.yaml")
    _profile(tmp_path, "name: b\nmix: [{profile: a.yaml}]\n", "b.yaml")
    result = run_cli("workload", "show", str(tmp_path / "a.yaml"))
    assert result.exit_code == 2
    assert "includes itself" in result.stderr


def test_inline_and_nested_mix_flattens(tmp_path: Path) -> None:
    from ptu_verify.workloads import ProfileWorkload, load_workload

    _profile(tmp_path, GOOD, "ok.yaml")
    _profile(tmp_path, "name: inner\nmix: [{profile: ok.yaml, weight: 1}, {profile: smoke, weight: 3}]\n", "inner.yaml")
    outer = _profile(
        tmp_path,
        "name: outer\nmix:\n  - {profile: inner.yaml, weight: 1}\n  - {name: inline, input_tokens: 30, output_tokens: 10, weight: 1}\n",
        "outer.yaml",
    )
    workload = load_workload(str(outer))
    assert isinstance(workload, ProfileWorkload)
    shares = {builder.leaf.name: share for builder, share in zip(workload.builders, workload.shares)}
    assert shares == pytest.approx({"ok": 0.125, "smoke": 0.375, "inline": 0.5})
