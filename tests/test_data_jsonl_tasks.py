"""Tests for vagent_jax.data.jsonl_tasks: round trip and errors that name file and line."""
import json

import pytest

from vagent_jax.data.jsonl_tasks import read_jsonl_tasks, write_jsonl_tasks


def test_round_trip_keeps_order_and_skips_blank_lines(tmp_path):
    tasks = [{"id": f"t{i}", "env": "calculator", "question": f"{i}+1", "answer": str(i + 1)} for i in range(3)]
    path = tmp_path / "tasks.jsonl"
    assert write_jsonl_tasks(path, tasks) == 3
    path.write_text(path.read_text() + "\n   \n")
    assert read_jsonl_tasks(path, required_keys=("id", "question", "answer")) == tasks


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"id": "b", "question": ', "bad JSON"),
        ('[1, 2]', "expected a JSON object"),
        ('{"id": "b"}', "missing required key(s) ['question']"),
        ('{"id": "a", "question": "q"}', "duplicate task id 'a' (first seen on line 1)"),
    ],
)
def test_malformed_record_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "q"}) + "\n\n" + bad_line + "\n")
    with pytest.raises(ValueError) as e:
        read_jsonl_tasks(path, required_keys=("id", "question"))
    assert f"{path}:3" in str(e.value)
    assert message in str(e.value)


def test_missing_file_and_unserialisable_task(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_jsonl_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="task #1 .* not JSON-serialisable"):
        write_jsonl_tasks(tmp_path / "x.jsonl", [{"id": 1}, {"id": 2, "bad": object()}])
