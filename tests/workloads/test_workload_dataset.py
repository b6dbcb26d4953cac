"""Dataset replay: file order, shuffled order, defaults, validation and quiet logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ptu_verify.errors import InputError
from ptu_verify.tokens import prompt_tokens
from ptu_verify.workloads import DatasetWorkload, load_workload

SECRET = "confidential-customer-text"


def _write_dataset(tmp_path: Path, count: int = 6) -> Path:
    path = tmp_path / "logs.jsonl"
    lines = []
    for index in range(count):
        record: dict[str, object] = {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"{SECRET} question number {index}"},
            ]
        }
        if index % 2 == 0:
            record["max_tokens"] = 100 + index
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


def _index(spec_content: str) -> int:
    return int(spec_content.rsplit(" ", 1)[1])


def test_in_order_replay_wraps_around(tmp_path: Path) -> None:
    workload = load_workload(f"dataset:{_write_dataset(tmp_path)}")
    specs = [workload.next_request() for _ in range(8)]
    assert [_index(spec.messages[-1]["content"]) for spec in specs] == [0, 1, 2, 3, 4, 5, 0, 1]
    assert [spec.max_tokens for spec in specs[:3]] == [100, 512, 102]
    assert specs[0].variant == "dataset"
    assert specs[0].expected_input_tokens == prompt_tokens(specs[0].messages)


def test_plain_jsonl_path_is_a_dataset(tmp_path: Path) -> None:
    workload = load_workload(str(_write_dataset(tmp_path)))
    assert isinstance(workload, DatasetWorkload)
    assert workload.order == "in-order"


def test_shuffled_replay_is_a_seeded_permutation(tmp_path: Path) -> None:
    path = _write_dataset(tmp_path, count=20)
    first = load_workload(f"dataset-shuffled:{path}", seed=3)
    again = load_workload(f"dataset-shuffled:{path}", seed=3)
    order = [_index(first.next_request().messages[-1]["content"]) for _ in range(20)]
    assert sorted(order) == list(range(20))
    assert order != list(range(20))
    assert order == [_index(again.next_request().messages[-1]["content"]) for _ in range(20)]
    second_pass = [_index(first.next_request().messages[-1]["content"]) for _ in range(20)]
    assert sorted(second_pass) == list(range(20))


def test_dataset_profile_sets_order_and_default(tmp_path: Path) -> None:
    _write_dataset(tmp_path)
    profile = tmp_path / "replay.yaml"
    profile.write_text("name: replay\ndataset: {path: logs.jsonl, order: shuffled, max_tokens: 77}\n", encoding="utf-8")
    workload = load_workload(str(profile), seed=1)
    assert isinstance(workload, DatasetWorkload)
    assert workload.order == "shuffled"
    maxima = {workload.next_request().max_tokens for _ in range(6)}
    assert 77 in maxima
    assert workload.name == "replay"


def test_returned_messages_are_copies(tmp_path: Path) -> None:
    workload = load_workload(f"dataset:{_write_dataset(tmp_path, count=1)}")
    workload.next_request().messages[0]["content"] = "changed"
    assert workload.next_request().messages[0]["content"] == "You are terse."


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("not json", "not valid JSON"),
        ('{"prompt": "x"}', "unknown key 'prompt'"),
        ('{"messages": []}', "'messages' must be a non-empty list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "messages[0] needs a role"),
        ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "'max_tokens' = 0"),
    ],
)
def test_invalid_line_names_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_workload(f"dataset:{path}")
    assert f"{path} line 2" in caught.value.message
    assert fragment in caught.value.message


def test_empty_dataset_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no requests"):
        load_workload(f"dataset:{path}")


def test_prompt_text_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture, run_cli) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    path = _write_dataset(tmp_path)
    workload = load_workload(f"dataset-shuffled:{path}", seed=2)
    for _ in range(14):
        workload.next_request()
    result = run_cli("-vv", "workload", "show", f"dataset:{path}", "--sample", "10")
    assert result.exit_code == 0, result.stderr
    assert "logs.jsonl" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in result.stderr
    assert SECRET not in result.stdout


def test_image_lines_count_image_tokens(tmp_path: Path) -> None:
    from ptu_verify.tokens import VISION_MARKER_TOKENS, image_tokens
    from ptu_verify.workloads.images import png_data_url

    path = tmp_path / "vision.jsonl"
    content = [{"type": "image_url", "image_url": {"url": png_data_url(1280, 720)}}, {"type": "text", "text": "What is shown?"}]
    path.write_text(json.dumps({"messages": [{"role": "user", "content": content}]}) + "\n", encoding="utf-8")
    spec = load_workload(f"dataset:{path}").next_request()
    text_only = prompt_tokens(spec.messages)
    assert spec.expected_input_tokens == text_only + image_tokens(1280, 720) + VISION_MARKER_TOKENS
