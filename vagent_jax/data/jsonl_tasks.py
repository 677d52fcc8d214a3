"""Tasks stored as JSON Lines: one JSON object per line, each a task dict such as
{"id": "calc-3", "env": "calculator", "question": "...", "answer": "..."}.

Reading stops at the first malformed record with a ValueError naming the file and the line, so a bad
task file fails before any rollout instead of costing trajectories later.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Task = dict[str, Any]


def parse_task_line(line: str, *, source: str, line_no: int, required_keys: Sequence[str]) -> Task:
    """Parse one JSONL line into a task dict; the error names `source:line_no` and what is wrong."""
    where = f"{source}:{line_no}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object (task dict), got {type(record).__name__}")
    missing = [k for k in required_keys if k not in record]
    if missing:
        raise ValueError(f"{where}: task is missing required key(s) {missing}; it has {sorted(record)}")
    return record


def read_jsonl_tasks(path: str | Path, required_keys: Sequence[str] = ("id",)) -> list[Task]:
    """Read every task of a JSONL file, in file order; blank lines are skipped.

    Each line must be a JSON object holding `required_keys`; when "id" is required, ids must also be
    unique (a repeated id names both lines). Any fault raises ValueError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist or is not a file")
    tasks: list[Task] = []
    first_line_of_id: dict[str, int] = {}
    with path.open("r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            task = parse_task_line(line, source=str(path), line_no=line_no, required_keys=required_keys)
            if "id" in required_keys:
                key = str(task["id"])
                if key in first_line_of_id:
                    raise ValueError(
                        f"{path}:{line_no}: duplicate task id {key!r} (first seen on line {first_line_of_id[key]})"
                    )
                first_line_of_id[key] = line_no
            tasks.append(task)
    return tasks


def write_jsonl_tasks(path: str | Path, tasks: Iterable[Task]) -> int:
    """Write tasks as JSON Lines (one compact object per line) and return how many were written.

    A task that is not a dict or not JSON-serialisable raises ValueError naming its position.
    """
    path = Path(path)
    lines = []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise ValueError(f"task #{i} for {path} is a {type(task).__name__}, expected a dict")
        try:
            lines.append(json.dumps(task, ensure_ascii=False, sort_keys=True))
        except (TypeError, ValueError) as e:
            raise ValueError(f"task #{i} for {path} is not JSON-serialisable: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
