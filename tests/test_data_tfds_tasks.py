"""Tests for vagent_jax.data.tfds_tasks: a tiny generator written to array_record and read back."""
import pytest

from vagent_jax.data.tfds_tasks import build_generated_tasks, generated_tasks_dir, load_generated_tasks


def tiny_generator(n, seed):
    return [{"id": f"s{seed}-{i}", "env": "calculator", "question": f"{i}*{seed}", "answer": i * seed} for i in range(n)]


def test_build_and_read_back_every_task(tmp_path):
    out = build_generated_tasks(tiny_generator, name="tiny", data_dir=tmp_path, splits={"train": (7, 3), "test": (2, 5)})
    assert out == generated_tasks_dir(tmp_path, "tiny")
    assert any(p.name.startswith("generated_tasks-train.array_record") for p in out.iterdir())
    train = load_generated_tasks(tmp_path, "tiny", "train")
    assert len(train) == 7
    got = sorted((train[i] for i in range(len(train))), key=lambda t: t["answer"])
    assert got == tiny_generator(7, 3)
    test = load_generated_tasks(tmp_path, "tiny", "test")
    assert sorted(test[i]["id"] for i in range(2)) == ["s5-0", "s5-1"]
    # Same name and sizes: reused; different sizes: refused, naming the directory.
    assert build_generated_tasks(tiny_generator, name="tiny", data_dir=tmp_path, splits={"train": (7, 3), "test": (2, 5)}) == out
    with pytest.raises(ValueError, match="existing task set has split sizes"):
        build_generated_tasks(tiny_generator, name="tiny", data_dir=tmp_path, splits={"train": (8, 3)})
    with pytest.raises(ValueError, match="split 'valid' not found"):
        load_generated_tasks(tmp_path, "tiny", "valid")


def test_bad_generators_and_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"must return a list of 3 tasks, got 2"):
        build_generated_tasks(lambda n, s: tiny_generator(2, s), name="short", data_dir=tmp_path, splits={"train": (3, 0)})
    with pytest.raises(ValueError, match=r"task #1: duplicate id"):
        build_generated_tasks(lambda n, s: [{"id": 0}] * n, name="dup", data_dir=tmp_path, splits={"train": (2, 0)})
    with pytest.raises(ValueError, match=r"splits\['train'\]"):
        build_generated_tasks(tiny_generator, name="x", data_dir=tmp_path, splits={"train": (0, 0)})
    with pytest.raises(ValueError, match="no built TFDS task set"):
        load_generated_tasks(tmp_path, "never_built", "train")


def test_tasks_without_id_get_one_from_name_split_and_position(tmp_path):
    build_generated_tasks(lambda n, s: [{"q": i} for i in range(n)], name="noid", data_dir=tmp_path, splits={"train": (3, 0)})
    source = load_generated_tasks(tmp_path, "noid", "train")
    got = sorted((source[i] for i in range(3)), key=lambda t: t["q"])
    assert got == [{"q": i, "id": f"noid-train-{i}"} for i in range(3)]


def test_a_build_finished_by_another_process_meanwhile_is_used(tmp_path, monkeypatch):
    """Two runs building the same task set on one data_dir: the loser's rename fails; it reads the winner's."""
    from vagent_jax.data import tfds_tasks

    original = tfds_tasks.GeneratedTasks.download_and_prepare

    def other_process_wins(self, *args, **kwargs):
        original(self, *args, **kwargs)  # the "other process" completes the build ...
        raise FileExistsError("Cannot rename incomplete.X: destination already exists")  # ... and ours loses

    monkeypatch.setattr(tfds_tasks.GeneratedTasks, "download_and_prepare", other_process_wins)
    out = build_generated_tasks(tiny_generator, name="race", data_dir=tmp_path, splits={"train": (5, 1)})
    assert len(load_generated_tasks(tmp_path, "race", "train")) == 5 and out.is_dir()
    monkeypatch.setattr(tfds_tasks.GeneratedTasks, "download_and_prepare",
                        lambda self, *a, **k: (_ for _ in ()).throw(FileExistsError("unrelated")))
    with pytest.raises(FileExistsError, match="unrelated"):  # no finished build to fall back on: not hidden
        build_generated_tasks(tiny_generator, name="race2", data_dir=tmp_path, splits={"train": (5, 1)})


def test_build_says_what_it_builds_and_nothing_else(tmp_path, capfd):
    build_generated_tasks(tiny_generator, name="quiet", data_dir=tmp_path, splits={"train": (6, 1), "test": (2, 2)})
    out, err = capfd.readouterr()
    assert out.splitlines() == [f"building task set quiet (train 6, test 2 tasks from tiny_generator) in "
                                f"{tmp_path / 'generated_tasks' / 'quiet' / '1.0.0'}: generated here, nothing is "
                                "downloaded"]
    assert err == ""  # no absl warning, no TFDS progress bars
    build_generated_tasks(tiny_generator, name="quiet", data_dir=tmp_path, splits={"train": (6, 1), "test": (2, 2)})
    assert capfd.readouterr() == ("", "")  # a reused build prints nothing
