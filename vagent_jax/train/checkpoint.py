"""Orbax checkpoints of a training run: sharded train state and a JSON item, saved per step.

One step directory holds two items:
  state  the train-state pytree (params, optimizer state, step; jax arrays, possibly sharded), written
         with orbax's standard (tensorstore) format, so it restores into any sharding of the same shapes;
  extra  a JSON mapping (data-iterator state, counters, the config as a dict).

Saves are asynchronous (the device-to-host copy blocks, the file writes do not). orbax writes each step
into `<step>.orbax-checkpoint-tmp*` and renames it to `<step>` only once every item is written (on
object stores, where rename is not atomic, it instead writes `commit_success.txt` last); a directory
without that final form is not a checkpoint, so a run killed mid-write resumes from the previous step.
Retention keeps the last `keep_last` steps plus the `keep_best` best by a named metric.

Crash consistency beyond the commit: restore_latest skips a committed step that cannot be read (a file
cut short or flipped, a missing item), warns naming it, moves it aside to `<step>.unreadable` (so the
resumed run can save that step again) and restores the one before. A save that fails to write (a full
disk) raises CheckpointWriteError naming the step, the directory and the cause, at the next save or wait;
the uncommitted step never replaces the previous one, which stays restorable.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as ocp_preservation

from vagent_jax.config import config_scope, require
from vagent_jax.train.run_common import RunStopped

_STATE, _EXTRA = "state", "extra"


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """Retention and write options of a Checkpointer (a config section: `checkpoint.*`)."""

    keep_last: int = 3  # the newest `keep_last` steps are always kept
    best_metric: str | None = None  # when set, also keep the `keep_best` best steps by this metric
    best_mode: Literal["min", "max"] = "max"
    keep_best: int = 1
    save_interval_steps: int = 1  # save() skips non-multiples (not force=True, nor a dir's first save)
    async_save: bool = True

    def validate(self) -> None:
        """Reject retention settings that would keep nothing or never save."""
        require(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")
        require(self.keep_best >= 1, "keep_best", f"must be >= 1, got {self.keep_best}")
        require(self.best_mode in ("min", "max"), "best_mode",
                f"must be 'min' or 'max', got {self.best_mode!r}")
        require(self.best_metric is None or bool(self.best_metric), "best_metric",
                "must be a metric name or null")
        require(self.save_interval_steps >= 1, "save_interval_steps",
                f"must be >= 1, got {self.save_interval_steps}")


class CheckpointWriteError(RunStopped):
    """A checkpoint could not be written (e.g. no space left): the run stops, the previous step is kept."""


class UnreadableCheckpointWarning(UserWarning):
    """restore_latest skipped a committed step it could not read and resumed from an older one."""


def _is_disk_full(e: BaseException) -> bool:
    """ENOSPC anywhere in the exception chain (tensorstore reports it as text in a ValueError)."""
    while e is not None:
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class Restored(NamedTuple):
    """What restore_latest/restore return: the step, the train state and the JSON item. (No PRNG key: every
    key of a run is derived from its seed and step, vagent_jax/seeds.py.)"""

    step: int
    state: Any
    extra: dict[str, Any]


def abstract_of(tree: Any) -> Any:
    """The restore target of a live pytree: each array becomes a ShapeDtypeStruct with its sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _checked_abstract(abstract_state: Any) -> Any:
    """Require a sharding on every leaf of the restore target (arrays are turned into their abstract form)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
    if not leaves:
        raise ValueError("abstract_state has no array leaves to restore into")
    out = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path) or "<root>"
        if isinstance(leaf, jax.Array):
            leaf = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            raise TypeError(f"abstract_state leaf {name} is a {type(leaf).__name__}; expected "
                            "jax.ShapeDtypeStruct (with .sharding) or jax.Array")
        if leaf.sharding is None:
            raise ValueError(f"abstract_state leaf {name} has no sharding: give every ShapeDtypeStruct "
                             "the sharding it should be restored into")
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def _json_checked(extra: dict[str, Any]) -> dict[str, Any]:
    """Fail at save time, naming the key, when the extra item is not plain JSON."""
    if not isinstance(extra, dict):
        raise TypeError(f"checkpoint extra must be a dict, got {type(extra).__name__}")
    for k, v in extra.items():
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint extra['{k}'] is not JSON-serialisable: {e}") from None
    return extra


class Checkpointer:
    """Per-step train-state checkpoints in `directory` over orbax's CheckpointManager."""

    def __init__(self, directory: str | Path, options: CheckpointOptions | None = None) -> None:
        self.options = options or CheckpointOptions()
        with config_scope("checkpoint"):
            self.options.validate()
        self.directory = Path(directory).absolute()
        opts = self.options
        policies: list[Any] = [ocp_preservation.LatestN(n=opts.keep_last)]
        best_fn = None
        if opts.best_metric is not None:
            metric = opts.best_metric
            best_fn = lambda m: float(m[metric])  # noqa: E731
            # BestN sorts ascending and keeps the tail: reverse for 'min' puts the smallest last.
            policies.append(ocp_preservation.BestN(get_metric_fn=best_fn, reverse=opts.best_mode == "min",
                                                   n=opts.keep_best, keep_checkpoints_without_metrics=False))
        manager_options = ocp.CheckpointManagerOptions(
            save_interval_steps=opts.save_interval_steps,
            best_fn=best_fn,
            best_mode=opts.best_mode,
            preservation_policy=ocp_preservation.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True,
            enable_async_checkpointing=opts.async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=manager_options,
                                              item_names=(_STATE, _EXTRA))
        self._writing: int | None = None  # the step an async save is writing, until it is waited for
        self._last_saved: int | None = None  # the step of the newest save started
        self._failed = False  # a CheckpointWriteError was raised: later errors of that save are not news

    def save(self, step: int, state: Any, extra: dict[str, Any] | None = None,
             metrics: dict[str, float] | None = None, force: bool = False) -> bool:
        """Start saving `step` (async); returns False when the save interval skips it.

        `metrics` ranks the step for keep-best retention and must hold `options.best_metric` when set.
        """
        if step < 0:
            raise ValueError(f"checkpoint step must be >= 0, got {step}")
        metric_blob = None
        if metrics is not None:
            metric_blob = {k: float(v) for k, v in metrics.items()}
        name = self.options.best_metric
        if name is not None:
            if metric_blob is None or name not in metric_blob:
                raise KeyError(f"checkpoint.best_metric '{name}' missing from the metrics passed to save "
                               f"(got {sorted(metric_blob or {})})")
            if not math.isfinite(metric_blob[name]):
                raise ValueError(f"checkpoint.best_metric '{name}' is {metric_blob[name]} at step {step}")
        args = ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state),
            _EXTRA: ocp.args.JsonSave(_json_checked(dict(extra or {}))),
        })
        self.wait_until_finished()  # orbax waits for the previous save anyway: its failure is reported as its own
        try:
            saved = bool(self._manager.save(step, args=args, metrics=metric_blob, force=force))
        except Exception as e:  # noqa: BLE001 (a synchronous save, or the host copy / directory creation)
            raise self._write_failed(step, e) from e
        self._writing = step if saved and self.options.async_save else None
        self._last_saved = step if saved else self._last_saved
        return saved

    def _write_failed(self, step: int | None, e: BaseException) -> CheckpointWriteError:
        """The error that stops a run whose save of `step` failed, naming the step, directory and cause."""
        self._writing, self._failed = None, True
        step = self._last_saved if step is None else step
        cause = "no space left on device" if _is_disk_full(e) else f"{type(e).__name__}: {e}"
        try:
            earlier = [s for s in self.all_steps() if s != step]
        except Exception:  # noqa: BLE001 (the listing itself may fail on a broken disk)
            earlier = []
        kept = (f"the previous checkpoint (step {earlier[-1]}) is intact" if earlier
                else "there is no earlier checkpoint")
        return CheckpointWriteError(f"checkpoint step {step} could not be written to {self.directory}: {cause}; "
                                    f"{kept}; fix the cause and rerun with --resume")

    def _reload(self) -> None:
        """Re-read the directory. Retention deletes old steps in the async save's finalisation, so a listing
        can find a step gone between its directory scan and its stat: then wait for that save (and its
        deletions) to finish and list again, which cannot race."""
        try:
            self._manager.reload()
        except FileNotFoundError:
            self._manager.wait_until_finished()
            self._manager.reload()

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint on disk (in-flight saves count once committed)."""
        self._reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete step, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The best complete step by `options.best_metric` (the latest when no metric is set)."""
        self._reload()
        return self._manager.best_step()

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restore `step` into the shapes, dtypes and shardings of `abstract_state` (resharding as needed)."""
        target = _checked_abstract(abstract_state)
        args = ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(target),
            _EXTRA: ocp.args.JsonRestore(),
        })
        try:
            out = self._manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 (tensorstore reports a file cut short as a bare Exception)
            raise ValueError(f"cannot restore checkpoint {self.directory}/{step} into abstract_state: {e}") from e
        return Restored(step=int(step), state=out[_STATE], extra=dict(out[_EXTRA]))

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the `params` subtree of `step`'s train state, into `abstract_params`' shardings.

        orbax's partial restore reads just these arrays: the optimizer moments (2x the parameter bytes
        for Adam) are never read or allocated, and the optimizer config need not be known."""
        target = {"params": _checked_abstract(abstract_params)}
        args = ocp.args.Composite(**{_STATE: ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)})
        try:
            out = self._manager.restore(step, args=args)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise ValueError(f"cannot restore the params of checkpoint {self.directory}/{step}: {e}") from e
        return out[_STATE]["params"]

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """Restore the newest readable checkpoint into `abstract_state`'s shardings; None when there is none.

        Newer steps that fail to restore are skipped with an UnreadableCheckpointWarning naming them and
        moved aside; when no step restores, the newest one's error is raised (e.g. a wrong abstract_state)."""
        self.wait_until_finished()
        failed: list[tuple[int, ValueError]] = []
        for step in reversed(self.all_steps()):
            try:
                out = self.restore(step, abstract_state)
            except ValueError as e:
                failed.append((step, e))
                continue
            for bad, e in failed:
                self._set_aside(bad, e, step)
            return out
        if failed:
            raise failed[0][1]
        return None

    def _set_aside(self, step: int, e: BaseException, resumed: int) -> None:
        """Warn about unreadable `step` and rename it `<step>.unreadable` so the run can save that step again."""
        src = self.directory / str(step)
        dst = self.directory / f"{step}.unreadable"
        n = 1
        while dst.exists():
            n += 1
            dst = self.directory / f"{step}.unreadable{n}"
        if jax.process_index() == 0:
            src.rename(dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"vagent-checkpoint-set-aside-{step}")
        self._manager.reload()
        warnings.warn(f"checkpoint {src} is unreadable and was skipped (moved to {dst.name}); resuming from step "
                      f"{resumed}. Cause: {e}", UnreadableCheckpointWarning, stacklevel=3)

    def wait_until_finished(self) -> None:
        """Block until the in-flight async save (if any) is committed; CheckpointWriteError when it failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 (orbax re-raises the async writer's error here)
            raise self._write_failed(self._writing, e) from e
        self._writing = None

    def close(self) -> None:
        """Finish pending saves and release orbax's threads (CheckpointWriteError when the last save failed).

        A failed save can fail in several of orbax's writer threads (array files, JSON items): once one
        CheckpointWriteError was raised, the others' errors at close are the same fault and are dropped."""
        try:
            self.wait_until_finished()
        finally:
            try:
                self._manager.close()
            except Exception as e:  # noqa: BLE001
                if not self._failed:
                    raise self._write_failed(None, e) from e

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
