"""Trace input: Bailian usage-trace JSONL and Azure LLM trace CSV become timed requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptu_verify.errors import InputError
from ptu_verify.tokens import prompt_tokens
from ptu_verify.workloads import TraceWorkload, load_trace, load_workload

BAILIAN_ROWS = [
    {"chat_id": 1, "parent_chat_id": -1, "timestamp": 100.5, "input_length": 300, "output_length": 40, "type": "text", "turn": 1, "hash_ids": list(range(1, 20))},
    {"chat_id": 2, "parent_chat_id": -1, "timestamp": 100.0, "input_length": 1200, "output_length": 250, "type": "text", "turn": 1, "hash_ids": list(range(1, 76))},
    {"chat_id": 3, "parent_chat_id": 2, "timestamp": 103.25, "input_length": 1700, "output_length": 90, "type": "search", "turn": 2, "hash_ids": list(range(1, 76)) + list(range(500, 530))},
    {"chat_id": 4, "parent_chat_id": -1, "timestamp": 104.0, "input_length": 5, "output_length": 0, "type": "text", "turn": 1, "hash_ids": []},
]

AZURE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:46.0000000,879,15
2023-11-16 18:16:01.2000000,2048,7
"""


def _bailian(tmp_path: Path) -> Path:
    path = tmp_path / "qwen_trace.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in BAILIAN_ROWS) + "\n", encoding="utf-8")
    return path


def _azure(tmp_path: Path) -> Path:
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(AZURE_CSV, encoding="utf-8")
    return path


def test_bailian_trace_timed_and_sized(tmp_path: Path) -> None:
    specs = load_trace(_bailian(tmp_path), seed=1)
    assert [spec.trace_offset_s for spec in specs] == [0.0, 0.5, 3.25, 4.0]
    assert [spec.max_tokens for spec in specs] == [250, 40, 90, 1]
    assert [spec.variant for spec in specs] == ["text", "text", "search", "text"]
    for spec, target in zip(specs[:3], [1200, 300, 1700]):
        assert spec.expected_input_tokens == target
        assert abs(prompt_tokens(spec.messages) - target) <= 1
    # Too short to build: the smallest prompt is sent and reported as such.
    assert specs[3].expected_input_tokens == prompt_tokens(specs[3].messages) == 10


def test_bailian_shared_hash_ids_share_text_prefix(tmp_path: Path) -> None:
    by_tokens = {spec.expected_input_tokens: spec.messages[0]["content"] for spec in load_trace(_bailian(tmp_path))}
    parent, child, other = by_tokens[1200], by_tokens[1700], by_tokens[300]
    common = 0
    while common < min(len(parent), len(child)) and parent[common] == child[common]:
        common += 1
    # 75 shared blocks of 16 tokens: at least 1,000 tokens of identical text.
    assert common > 1000
    assert other[:50] == parent[:50]


def test_azure_trace_timed_and_sized(tmp_path: Path) -> None:
    specs = load_trace(_azure(tmp_path), format="auto", seed=2)
    offsets = [spec.trace_offset_s for spec in specs]
    assert offsets == pytest.approx([0.0, 0.68059, 4.995169, 15.2])
    assert [spec.max_tokens for spec in specs] == [15, 44, 109, 7]
    for spec, target in zip(specs, [879, 374, 396, 2048]):
        assert abs(prompt_tokens(spec.messages) - target) <= 1
        assert spec.variant == "azure"
        assert spec.messages[0]["content"].isascii()


def test_trace_workload_by_name(tmp_path: Path) -> None:
    workload = load_workload(f"trace:{_azure(tmp_path)}")
    assert isinstance(workload, TraceWorkload)
    first = [workload.next_request().max_tokens for _ in range(5)]
    assert first == [15, 44, 109, 7, 15]
    assert workload.expected_tokens_per_request() == pytest.approx((879 + 374 + 396 + 2048 + 15 + 44 + 109 + 7) / 4, abs=1)
    assert isinstance(load_workload(str(_bailian(tmp_path))), TraceWorkload)


def test_trace_show_command(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("workload", "show", f"trace:{_bailian(tmp_path)}", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["sample"] == 4
    assert data["off_target_requests"] == 0
    assert data["input_tokens"]["minimum"] == 10  # the 5-token row is sent with the smallest prompt


@pytest.mark.parametrize(
    ("content", "name", "fragment"),
    [
        ("a,b\n1,2\n", "t.csv", "missing column 'TIMESTAMP'"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", "t.csv", "line 2: TIMESTAMP"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,many,2\n", "t.csv", "'ContextTokens'"),
        ('{"timestamp": 1, "input_length": -3, "output_length": 2}\n', "t.jsonl", "'input_length'"),
        ('{"timestamp": "x", "input_length": 3, "output_length": 2}\n', "t.jsonl", "'timestamp'"),
        ("hello\n", "t.txt", "neither known format"),
    ],
)
def test_invalid_trace_names_file(tmp_path: Path, content: str, name: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_trace(path, format="azure" if name.endswith(".csv") else "auto")
    assert str(path) in caught.value.message
    assert fragment in caught.value.message


def test_trace_limit_and_bad_format(tmp_path: Path) -> None:
    assert len(load_trace(_azure(tmp_path), limit=2)) == 2
    with pytest.raises(InputError, match="auto, bailian, azure"):
        load_trace(_azure(tmp_path), format="csv")
