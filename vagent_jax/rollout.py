"""The host queue between the decode engine and the environment workers: multi-turn agent rollouts.

Every trajectory is a request in the engine. When its assistant turn ends on a stop token, the turn's text
goes to the EnvWorkerPool and the engine goes on decoding the other slots; when the observation comes back
it is rendered with the chat template and prefilled into the same slot, which resumes. Turns cut by the
token budget, the cache end, DeepConf or non-finite logits end the trajectory with reward 0 (truncated).
Environment faults arrive as a done EnvStep with reward 0 and an error tag: one trajectory lost, never the run.

Overlap: the runner never blocks on the pool while the engine has a slot to decode; it blocks (and counts
the time as env_wait_s) only when every trajectory in a slot awaits its environment. New trajectories are
handed to the engine only as slots free, so a queue of waiting prompts never makes the engine look busy.

A multi-host engine (`engine.collective`: one engine over every host's devices) is stepped by every host
at once: each loop turn calls `engine.sync_step(alive)` exactly once, also on a host whose trajectories all
finished, until no host is alive.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from typing import Any, Mapping, Protocol, Sequence

from vagent_jax.chat_template import render_chat, render_turn_suffix
from vagent_jax.engine import Trajectory, TurnEnd
from vagent_jax.envs import EnvStep, EnvWorkerPool, Message, Reward, get_env
from vagent_jax.tokenizer import Tokenizer

TRUNCATING = ("max_new_tokens", "max_length", "deepconf", "nonfinite")
IDLE_POLL_S = 0.5  # longest single block on the pool while the engine is idle (the loop re-checks after it)


class TurnEngine(Protocol):
    """What the runner needs from a decode engine (DecodeEngine is one)."""

    @property
    def free_slots(self) -> int: ...

    @property
    def has_work(self) -> bool: ...

    def submit(self, request_id: Any, prompt_ids: Sequence[int]) -> None: ...

    def step(self) -> list[TurnEnd]: ...

    def resume(self, request_id: Any, suffix_ids: Sequence[int]) -> None: ...

    def finish(self, request_id: Any) -> Trajectory: ...


@dataclasses.dataclass
class RolloutResult:
    """One finished trajectory with its verified reward and conversation.

    truncated: the last turn was cut (trajectory.reason says why: max_new_tokens, max_length, deepconf,
    nonfinite) and the reward is 0 without asking the environment. error: the environment's fault tag
    (tool_error, timeout, worker_died, env_error, max_turns, ...) or None.
    """

    task: dict
    sample_index: int
    trajectory: Trajectory
    reward: Reward
    messages: list[Message]
    turns: int
    tool_calls: int
    truncated: bool
    error: str | None


@dataclasses.dataclass
class _Live:
    task: dict
    sample_index: int
    messages: list[Message]
    turns: int = 0
    tool_calls: int = 0
    env_since: float = 0.0  # when its last turn went to the pool


class RolloutRunner:
    """Runs groups of multi-turn rollouts for one environment through a decode engine and an EnvWorkerPool.

    `stats` (a Counter, summed over calls of `run`): trajectories, turns, tool_calls, generated_tokens,
    truncated, truncated/<reason>, errors/<tag>, env_steps, env_latency_s (submit-to-result seconds summed
    over env steps), env_wait_s (seconds the engine sat idle waiting for the pool), decode_s (seconds inside
    engine.step), wall_s.
    """

    def __init__(self, engine: TurnEngine, tokenizer: Tokenizer, template: str, pool: EnvWorkerPool,
                 env_name: str, env_kwargs: Mapping[str, Any] | None = None, lockstep: bool = False):
        self.engine, self.tokenizer, self.template, self.pool = engine, tokenizer, template, pool
        self.lockstep = lockstep  # wait for every env reply after each engine step: timing-independent results
        self.env_name, self.env_kwargs = env_name, dict(env_kwargs or {})
        self.env = get_env(env_name, **self.env_kwargs)
        self.stats: Counter = Counter()

    def run(self, tasks: Sequence[dict], samples_per_task: int = 1, seed_offset: int | None = None) -> list[RolloutResult]:
        """Roll out every task `samples_per_task` times; results come back in (task, sample) order.

        seed_offset: when given, trajectory (i, j) is submitted with sampling seed seed_offset + i *
        samples_per_task + j (`engine.submit(..., seed=)`), so its tokens do not depend on which engine
        or slot runs it (multi-host RL numbers requests by their global index in the step)."""
        if not isinstance(samples_per_task, int) or samples_per_task < 1:
            raise ValueError(f"RolloutRunner.run: samples_per_task must be a positive int, got {samples_per_task!r}")
        t0 = time.perf_counter()
        waiting: deque = deque()  # (request id, prompt ids, seed) not yet handed to the engine
        live: dict[tuple[int, int], _Live] = {}
        for i, task in enumerate(tasks):
            msgs = list(self.env.initial_messages(task))
            ids, _ = render_chat([m.to_dict() for m in msgs], self.tokenizer, self.template, True)
            for j in range(samples_per_task):
                live[(i, j)] = _Live(dict(task), j, list(msgs))
                seed = None if seed_offset is None else seed_offset + i * samples_per_task + j
                waiting.append(((i, j), ids, seed))
        done: dict[tuple[int, int], RolloutResult] = {}
        collective = bool(getattr(self.engine, "collective", False))  # engines without the attribute: local
        while live or collective:
            while waiting and self.engine.free_slots > 0:
                rid, ids, seed = waiting.popleft()
                if seed is None:
                    self.engine.submit(rid, ids)
                else:
                    self.engine.submit(rid, ids, seed=seed)  # type: ignore[call-arg]
            if collective or self.engine.has_work:
                s0 = time.perf_counter()
                if collective:
                    ended, anyone = self.engine.sync_step(bool(live))  # type: ignore[attr-defined]
                    if not anyone:
                        break
                else:
                    ended = self.engine.step()
                self.stats["decode_s"] += time.perf_counter() - s0
                for turn in ended:
                    self._turn_ended(turn, live, done)
            idle = not self.engine.has_work and not (waiting and self.engine.free_slots > 0)
            w0 = time.perf_counter()
            results = self.pool.poll(timeout=IDLE_POLL_S if idle and self.pool.in_flight() else 0.0)
            if self.lockstep:  # the same engine calls in the same order whatever the workers' timing
                while self.pool.in_flight():
                    results += self.pool.poll(timeout=IDLE_POLL_S)
                results.sort(key=lambda r: r[0])
            if idle:
                self.stats["env_wait_s"] += time.perf_counter() - w0
            now = time.perf_counter()
            for rid, step in results:
                self._env_returned(rid, step, now, live, done)
            if idle and not results and not self.pool.in_flight() and live:
                raise RuntimeError(f"rollout stalled: {len(live)} trajectories neither decoding nor in the env "
                                   "pool (was the pool shared with another runner?)")
        self.stats["wall_s"] += time.perf_counter() - t0
        return [done[k] for k in sorted(done)]

    def _turn_ended(self, turn: TurnEnd, live: dict, done: dict) -> None:
        """A turn left the engine: cut turns finish here (reward 0); others go to the environment pool."""
        rid = turn.request_id
        lv = live[rid]
        lv.turns += 1
        vocab = self.tokenizer.vocab_size  # a model's padded embedding rows have no text: they decode to nothing
        text = self.tokenizer.decode([t for t in turn.tokens if t < vocab], skip_special=True)
        lv.messages.append(Message("assistant", text))
        if turn.reason in TRUNCATING:
            self.stats["truncated"] += 1
            self.stats[f"truncated/{turn.reason}"] += 1
            done[rid] = self._finish(rid, live.pop(rid), Reward(0.0, False, False, ("truncated",)), True, None)
            return
        lv.env_since = time.perf_counter()
        self.pool.submit(rid, self.env_name, self.env_kwargs, lv.task, [m.to_dict() for m in lv.messages])

    def _env_returned(self, rid: Any, step: EnvStep, now: float, live: dict, done: dict) -> None:
        """An env step came back: finish the trajectory, or prefill the observation into its slot."""
        lv = live[rid]
        lv.tool_calls += step.tool_calls
        self.stats["env_steps"] += 1
        self.stats["env_latency_s"] += now - lv.env_since
        if step.done and step.reward is not None:
            done[rid] = self._finish(rid, live.pop(rid), step.reward, False, step.error)
            return
        if step.observation is None or step.done:  # a malformed step: the trajectory ends as an env fault
            error = step.error or "env_error"
            done[rid] = self._finish(rid, live.pop(rid), Reward(0.0, False, False, (error,)), False, error)
            return
        lv.messages.append(step.observation)
        self.engine.resume(rid, render_turn_suffix(self.template, step.observation.to_dict(), self.tokenizer))

    def _finish(self, rid: Any, lv: _Live, reward: Reward, truncated: bool, error: str | None) -> RolloutResult:
        traj = self.engine.finish(rid)
        self.stats["trajectories"] += 1
        self.stats["turns"] += lv.turns
        self.stats["tool_calls"] += lv.tool_calls
        self.stats["generated_tokens"] += traj.num_generated
        if error:
            self.stats[f"errors/{error}"] += 1
        return RolloutResult(lv.task, lv.sample_index, traj, reward, lv.messages, lv.turns, lv.tool_calls,
                             truncated, error)
