"""Built-in generated tasks as a TFDS dataset written to array_record (no TensorFlow needed).

Any task generator `(n, seed) -> list[dict]` (e.g. an environment's `generate_tasks`) becomes a TFDS
builder config: each task is stored as its JSON text plus its id, one split per (n, seed) pair, under
`<data_dir>/generated_tasks/<name>/1.0.0/`. Nothing is downloaded. Reading goes back through TFDS's
random-access data source, which grain indexes directly (see task_pipeline.task_dataset).

The config `name` identifies the data: building again with the same name reuses what is on disk, and a
mismatch in split sizes stops with an error rather than silently training on stale tasks.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

Task = dict[str, Any]
TaskGenerator = Callable[[int, int], list[Task]]

BUILDER_NAME = "generated_tasks"
BUILDER_VERSION = "1.0.0"


def _generator_name(generator: Callable[..., Any]) -> str:
    return getattr(generator, "__qualname__", None) or repr(generator)


def _checked_tasks(generator: TaskGenerator, n: int, seed: int, split: str, id_prefix: str) -> list[Task]:
    """Call the generator and check its output: n JSON-serialisable dicts with unique ids.

    A task without an "id" gets f"{id_prefix}-{split}-{i}" (i = its position in the generator's list).
    """
    name = _generator_name(generator)
    tasks = generator(n, seed)
    if not isinstance(tasks, (list, tuple)) or len(tasks) != n:
        got = len(tasks) if isinstance(tasks, (list, tuple)) else type(tasks).__name__
        raise ValueError(f"task generator {name}({n}, {seed}) for split {split!r} must return a list of {n} tasks, got {got}")
    seen: set[str] = set()
    out: list[Task] = []
    for i, task in enumerate(tasks):
        where = f"task generator {name}({n}, {seed}) split {split!r} task #{i}"
        if not isinstance(task, dict):
            raise ValueError(f"{where}: expected a dict, got {type(task).__name__}")
        task = task if "id" in task else {**task, "id": f"{id_prefix}-{split}-{i}"}
        if str(task["id"]) in seen:
            raise ValueError(f"{where}: duplicate id {task['id']!r}")
        seen.add(str(task["id"]))
        try:
            json.dumps(task)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: not JSON-serialisable: {e}") from None
        out.append(task)
    return out


class GeneratedTasks(tfds.core.GeneratorBasedBuilder):
    """TFDS builder whose examples come from a task generator; one BuilderConfig per named task set.

    Features: "id" (text) and "task_json" (the whole task dict as JSON text), so any task schema fits.
    Tasks without an "id" are given "<config name>-<split>-<i>".
    """

    VERSION = tfds.core.Version(BUILDER_VERSION)

    def __init__(
        self,
        *,
        generator: TaskGenerator | None = None,
        splits: Mapping[str, tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        self._generator = generator
        self._split_specs = dict(splits or {})
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Tasks produced by a vagent_jax task generator, stored as JSON text.",
            features=tfds.features.FeaturesDict(
                {"id": tfds.features.Text(), "task_json": tfds.features.Text()}
            ),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager  # nothing is downloaded
        if self._generator is None or not self._split_specs:
            raise ValueError(f"GeneratedTasks config {self.builder_config.name!r}: a generator and splits are needed to build it")
        return {
            split: self._generate_examples(
                _checked_tasks(self._generator, n, seed, split, self.builder_config.name)
            )
            for split, (n, seed) in self._split_specs.items()
        }

    def _generate_examples(self, tasks: list[Task]):  # type: ignore[override]
        for i, task in enumerate(tasks):
            yield i, {"id": str(task["id"]), "task_json": json.dumps(task, ensure_ascii=False, sort_keys=True)}


def generated_tasks_dir(data_dir: str | Path, name: str) -> Path:
    """Directory holding the array_record files of the task set `name` under `data_dir`."""
    return Path(data_dir) / BUILDER_NAME / name / BUILDER_VERSION


def _check_splits(splits: Mapping[str, tuple[int, int]]) -> None:
    if not splits:
        raise ValueError("splits: give at least one split, e.g. {'train': (1000, 0)}")
    for split, spec in splits.items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and all(isinstance(v, int) for v in spec)):
            raise ValueError(f"splits[{split!r}]: expected (num_tasks, seed) integers, got {spec!r}")
        if spec[0] <= 0:
            raise ValueError(f"splits[{split!r}]: num_tasks must be positive, got {spec[0]}")


def build_generated_tasks(
    generator: TaskGenerator,
    *,
    name: str,
    data_dir: str | Path,
    splits: Mapping[str, tuple[int, int]],
) -> Path:
    """Write `generator`'s tasks as TFDS array_record splits {split: (num_tasks, seed)}; return the dir.

    Reuses an existing build of the same `name`; if its split sizes differ from `splits`, raises
    ValueError naming the directory (pick a new name or delete it).
    """
    _check_splits(splits)
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name: {name!r} must be non-empty letters, digits, '_' or '-'")
    out_dir = generated_tasks_dir(data_dir, name)
    if _finished_build(out_dir, splits):
        return out_dir
    sizes = ", ".join(f"{split} {n}" for split, (n, _) in splits.items())
    print(f"building task set {name} ({sizes} tasks from {_generator_name(generator)}) in {out_dir}: generated "
          "here, nothing is downloaded", flush=True)
    with _quiet_tfds():
        _prepare(generator, name, data_dir, splits)
    return out_dir


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """Silence what TFDS says while preparing a generated set: its "Downloading and preparing dataset
    Unknown size" lines (stdout), absl's warnings and its progress bars; errors still raise."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        absl_logger.setLevel(level)
        tfds.enable_progress_bar()


def _prepare(generator: TaskGenerator, name: str, data_dir: str | Path, splits: Mapping[str, tuple[int, int]]) -> None:
    """Run the TFDS builder for `name`; a concurrent finished build of the same set is accepted."""
    out_dir = generated_tasks_dir(data_dir, name)
    builder = GeneratedTasks(
        generator=generator,
        splits=splits,
        config=tfds.core.BuilderConfig(name=name, description=f"tasks from {_generator_name(generator)}"),
        data_dir=str(data_dir),
        file_format="array_record",
    )
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
            )
        )
    except FileExistsError:
        # another process (a second run on the same data_dir) finished the same build first: use it
        if not _finished_build(out_dir, splits):
            raise


def _finished_build(out_dir: Path, splits: Mapping[str, tuple[int, int]]) -> bool:
    """True when out_dir holds a finished build with the requested split sizes (other sizes: ValueError)."""
    if not (out_dir / "dataset_info.json").is_file():
        return False
    info = tfds.builder_from_directory(str(out_dir)).info
    have = {s: info.splits[s].num_examples for s in info.splits}
    want = {s: n for s, (n, _) in splits.items()}
    if have != want:
        raise ValueError(f"{out_dir}: existing task set has split sizes {have}, requested {want}")
    return True


class TfdsTaskSource:
    """Random-access source of task dicts over one split of a built task set (len + integer index).

    Wraps TFDS's array_record data source and decodes "task_json"; grain's MapDataset reads it.
    Record order is TFDS's fixed order (hashed example keys), not the generator's order.
    """

    def __init__(self, dataset_dir: str | Path, split: str) -> None:
        self.dataset_dir = Path(dataset_dir)
        if not (self.dataset_dir / "dataset_info.json").is_file():
            raise ValueError(f"{self.dataset_dir}: no built TFDS task set here (dataset_info.json missing)")
        builder = tfds.builder_from_directory(str(self.dataset_dir))
        if split not in builder.info.splits:
            raise ValueError(f"{self.dataset_dir}: split {split!r} not found; have {sorted(builder.info.splits)}")
        self.split = split
        self._records = builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Task:
        record = self._records[index]
        text = record["task_json"]
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        try:
            task = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.dataset_dir} split {self.split!r} record {index}: bad task JSON ({e.msg})") from None
        if not isinstance(task, dict):
            raise ValueError(f"{self.dataset_dir} split {self.split!r} record {index}: task JSON is not an object")
        return task

    def __repr__(self) -> str:
        return f"TfdsTaskSource({str(self.dataset_dir)!r}, split={self.split!r}, n={len(self)})"


def load_generated_tasks(data_dir: str | Path, name: str, split: str) -> TfdsTaskSource:
    """Open split `split` of the task set `name` built under `data_dir` (no generator needed)."""
    return TfdsTaskSource(generated_tasks_dir(data_dir, name), split)
