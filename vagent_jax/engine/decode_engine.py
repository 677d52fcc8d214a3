"""DecodeEngine: B slots on device with a KV cache, continuous batching, multi-turn resume.

The host submits prompts (token ids) and observation continuations; `step()` admits waiting requests into
free slots with one batched prefill per shape bucket, runs one jitted chunk of decode steps, and returns the
turns that ended (stop token, stop sequence, per-turn budget, cache end, DeepConf low confidence, NaN
logits). A finished slot takes a new request without recompiling: prefill shapes are bucketed to powers of
two (rows and tokens), so a run compiles at most log2(B) * log2(S) prefill programs plus one decode chunk;
`compiled_programs` counts them. The jitted programs live at module level (engine.programs), so a new engine
with the same static settings reuses what an earlier one compiled. Sampling noise is drawn per (engine
seed, request seed, position) (`submit(..., seed=)`), so a request's tokens do not depend on its slot,
on the other requests or on how decoding is cut into calls (up to float rounding of the logits).

Built with a `mesh`, the slot state (KV cache included) is sharded on it by the run's logical-axis rules
(engine.state.state_shardings) and the programs keep it so; the parameters are whatever arrays the
engine is handed, used in place. An RL run builds one engine and, each step, hands it the new params
(`set_params`, no copy) and a new seed (`reset`): no recompilation, no rebuilt state. On a mesh spanning
several processes every host owns the slots on its devices and all hosts step together (`sync_step`, see
engine.hosts): the parameters stay globally sharded, no host gathers them.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vagent_jax.engine.config import EngineConfig
from vagent_jax.engine.hosts import HostIO
from vagent_jax.engine.programs import decode_chunk_jit, mesh_programs, prefill_jit, slot_row_jit
from vagent_jax.engine.state import ROW_FIELDS, StepConsts, StopReason, init_state
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import dtype_of


@dataclasses.dataclass
class TurnEnd:
    """An assistant turn that ended: its generated tokens and why it stopped."""

    request_id: Any
    reason: str
    tokens: list[int]


@dataclasses.dataclass
class Trajectory:
    """Everything a slot produced: all tokens (prompt, turns, observations) and per-token stats.

    gen_mask marks tokens the policy generated (the only ones any loss may use); logprob is under the
    temperature-1 policy, sample_logprob under the sampling distribution; entropy/confidence as sampled.
    """

    request_id: Any
    tokens: np.ndarray
    gen_mask: np.ndarray
    logprob: np.ndarray
    sample_logprob: np.ndarray
    entropy: np.ndarray
    confidence: np.ndarray
    reason: str

    @property
    def num_generated(self) -> int:
        """Number of policy-generated tokens."""
        return int(self.gen_mask.sum())


def _check_ids(ids: Sequence[int], vocab: int, what: str) -> list[int]:
    """Token ids as a list of ints in [0, vocab), or a ValueError naming `what`."""
    out = [int(t) for t in ids]
    bad = [t for t in out if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"{what}: token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
    return out


def _bucket(n: int, lo: int, hi: int) -> int:
    return min(max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1))))), hi)


def reachable_programs(cfg: EngineConfig) -> set[tuple]:
    """Every (program, shape bucket) key `compiled_programs` can count under these settings: prefills
    ("prefill", rows, tokens) and decode chunks ("decode", slots, steps, kv_len)."""
    B, S = cfg.batch_slots, cfg.max_len
    toks = {_bucket(n, cfg.min_prefill_bucket, S) for n in range(1, S + 1)}
    prefill = {("prefill", _bucket(n, cfg.min_prefill_rows, cap), t)
               for t in toks for cap in (cfg.prefill_rows_cap(t),) for n in range(1, cap + 1)}
    kv = {_bucket(p + cfg.chunk_steps + 1, cfg.min_kv_bucket, S) for p in range(S)}
    return prefill | {("decode", B, cfg.chunk_steps, k) for k in kv}


class DecodeEngine:
    """Slot-based batched decoding over one params pytree (shared with training, never copied)."""

    def __init__(self, params: Any, model_cfg: ModelConfig, cfg: EngineConfig, stop_token_ids: Sequence[int],
                 stop_sequences: Sequence[Sequence[int]] = (), seed: int = 0, mesh: Mesh | None = None):
        cfg.validate(model_cfg.vocab_size)
        V = model_cfg.vocab_size
        stop_token_ids = _check_ids(stop_token_ids, V, "stop_token_ids")
        stop_sequences = [_check_ids(s, V, f"stop_sequences[{i}]") for i, s in enumerate(stop_sequences)]
        if any(len(s) == 0 for s in stop_sequences):
            raise ValueError("stop_sequences: an empty stop sequence would stop every turn at once")
        self.params, self.model_cfg, self.cfg = params, model_cfg, cfg
        B, S = cfg.batch_slots, cfg.max_len
        cache_dtype = None if cfg.cache_dtype == "auto" else dtype_of(cfg.cache_dtype)
        if mesh is None:  # one device: the module-level programs, shared by every engine
            self._prefill, self._decode, self._row = prefill_jit, decode_chunk_jit, slot_row_jit
            self.state = init_state(model_cfg, B, S, cache_dtype)
            self._io = HostIO(None, None, B)
        else:
            progs = mesh_programs(mesh, model_cfg, B, S, cache_dtype)
            self._prefill, self._decode, self._row = progs.prefill, progs.decode_chunk, progs.slot_row
            self.state = progs.init()
            self._io = HostIO(mesh, progs.state_shardings.pos, B)
        self.mesh, self.collective = mesh, self._io.collective
        m = max([len(s) for s in stop_sequences] + [1])
        seqs = np.full((len(stop_sequences), m), -1, np.int32)
        for i, s in enumerate(stop_sequences):
            seqs[i, m - len(s):] = s
        T, k, p, mp = cfg.sampling.row_arrays(B)
        self.consts = self._io.put(StepConsts(*(np.asarray(x) for x in (T, k, p, mp)),
                                              np.asarray(stop_token_ids or [-1], np.int32), seqs,
                                              np.asarray(cfg.max_new_tokens, np.int32),
                                              np.asarray(cfg.deepconf_window, np.int32)))
        self._static = dict(cfg=model_cfg, conf_k=cfg.sampling.conf_k, impl=cfg.impl)
        self._shapes: set[tuple] = set()
        self._slot_of: dict[Any, int] = {}
        self._req_of: dict[int, Any] = {}
        self._turn_start = np.zeros(B, np.int64)
        self._thr = np.full(B, -np.inf, np.float32)  # host mirror of each slot's DeepConf threshold
        self._pos = np.zeros(B, np.int64)  # host mirrors of each slot's position and pending token
        self._last = np.zeros(B, np.int64)  # after the last step
        self._running: set[int] = set()
        self._pending: deque = deque()  # (request_id, ids, fresh, threshold, request seed)
        self.reset(seed)

    def set_params(self, params: Any) -> None:
        """Decode with `params` from now on (the caller's arrays, not a copy; same tree, shapes and layout as
        before, so nothing recompiles). Only between requests' turns, as a training step would."""
        if jax.tree.structure(params) != jax.tree.structure(self.params):
            raise ValueError("DecodeEngine.set_params: the new params tree differs from the engine's")
        self.params = params

    def reset(self, seed: int) -> None:
        """Start over with engine seed `seed` (as a new engine would) keeping the state buffers and compiled
        programs; the engine must hold no request."""
        if self._slot_of or self._pending:
            raise RuntimeError(f"DecodeEngine.reset: {len(self._slot_of) + len(self._pending)} request(s) are "
                               "still in the engine; finish them first")
        self._key = self._io.put_key(seed)  # the same key every call: noise from (request seed, position)
        self._submitted = 0

    # ----- requests -------------------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """Slots (of this host) not holding a request (running or awaiting an observation), minus queued
        fresh requests."""
        queued = sum(1 for r in self._pending if r[2])
        return len(self._io.own_slots) - len(self._slot_of) - queued

    @property
    def has_work(self) -> bool:
        """True while a slot is decoding or a request waits to be prefilled (False: every turn awaits the host)."""
        return bool(self._running or self._pending)

    @property
    def compiled_programs(self) -> int:
        """Distinct (program, shape bucket) pairs used so far: bounded by the bucketing."""
        return len(self._shapes)

    @property
    def programs_used(self) -> frozenset[tuple]:
        """The (program, shape bucket) keys used so far, a subset of reachable_programs(cfg)."""
        return frozenset(self._shapes)

    def submit(self, request_id: Any, prompt_ids: Sequence[int], threshold: float | None = None,
               seed: int | None = None) -> None:
        """Queue a new trajectory; it is admitted into a free slot at the next `step`.

        seed: the request's sampling seed (taken mod 2^32); its tokens depend on (engine seed, request seed,
        logits) only, not on the slot or on the other requests. None: the engine's submission count."""
        if len(prompt_ids) == 0:
            raise ValueError(f"request {request_id!r}: empty prompt")
        prompt_ids = _check_ids(prompt_ids, self.model_cfg.vocab_size, f"request {request_id!r} prompt")
        if len(prompt_ids) > self.cfg.max_len - 1:
            raise ValueError(f"request {request_id!r}: prompt of {len(prompt_ids)} tokens does not fit the cache "
                             f"(engine.max_len={self.cfg.max_len})")
        if request_id in self._slot_of or any(r[0] == request_id for r in self._pending):
            raise ValueError(f"request {request_id!r} is already in the engine")
        req_seed = self._submitted if seed is None else int(seed)
        self._submitted += 1
        self._pending.append((request_id, prompt_ids, True, -np.inf if threshold is None else float(threshold),
                              req_seed % 2**32))

    def _stopped_slot(self, request_id: Any, action: str) -> int:
        """The slot of a request whose turn has ended (not queued, decoding, or already resumed)."""
        if any(r[0] == request_id for r in self._pending):
            raise ValueError(f"cannot {action} request {request_id!r}: it is still waiting to be prefilled")
        if request_id not in self._slot_of:
            raise ValueError(f"cannot {action} unknown request {request_id!r} (never submitted or already finished)")
        slot = self._slot_of[request_id]
        if slot in self._running:
            raise ValueError(f"cannot {action} request {request_id!r}: it is still decoding")
        return slot

    def resume(self, request_id: Any, suffix_ids: Sequence[int]) -> None:
        """Continue a stopped turn: the last sampled token plus `suffix_ids` (an observation) are prefilled."""
        slot = self._stopped_slot(request_id, "resume")
        suffix = _check_ids(suffix_ids, self.model_cfg.vocab_size, f"request {request_id!r} observation")
        self._pending.append((request_id, [int(self._last[slot])] + suffix, False, None, 0))

    def finish(self, request_id: Any) -> Trajectory:
        """Collect the slot's whole trajectory and free the slot (only between turns, never mid-decode)."""
        self._stopped_slot(request_id, "finish")
        slot = self._slot_of.pop(request_id)
        del self._req_of[slot]
        self._running.discard(slot)
        n = int(self._pos[slot]) + 1
        if self.collective:  # from this host's own shards: no collective, hosts finish independently
            row = {k: self._io.row(getattr(self.state, k), slot) for k in ROW_FIELDS}
        else:
            row = jax.device_get(self._row(self.state, jnp.asarray(slot, jnp.int32)))
        get = lambda k: np.asarray(row[k][:n])  # noqa: E731
        return Trajectory(request_id, get("tokens"), get("gen_mask"), get("logprob"), get("sample_logprob"),
                          get("entropy"), get("confidence"), StopReason(int(row["reason"])).label)

    # ----- the loop -------------------------------------------------------------------------------------
    def _admit(self, alive: bool = True) -> bool:
        """Prefill waiting requests (fresh ones only into free slots), grouped by token bucket; multi-host,
        every host's admissions in one global list. Returns whether any host is alive or has work."""
        B, S = self.cfg.batch_slots, self.cfg.max_len
        free = [s for s in self._io.own_slots if s not in self._req_of]
        batch = []
        keep: deque = deque()
        while self._pending:
            rid, ids, fresh, thr, req_seed = self._pending.popleft()
            if fresh:
                if not free:
                    keep.append((rid, ids, fresh, thr, req_seed))
                    continue
                slot = free.pop(0)
                self._slot_of[rid], self._req_of[slot] = slot, rid
                start = 0
            else:
                slot = self._slot_of[rid]
                start = int(self._pos[slot])
                thr = None
            batch.append((slot, ids, start, fresh, thr, req_seed))
        self._pending = keep
        parts = self._io.exchange((batch, alive or bool(self._running)))
        batch = [item for part, _ in parts for item in part]  # process order: the same list on every host
        groups: dict[int, list] = {}
        for item in batch:
            P = _bucket(len(item[1]), self.cfg.min_prefill_bucket, S)
            groups.setdefault(P, []).append(item)
        calls = [(P, items[i:i + cap]) for P, items in groups.items()
                 for cap in (self.cfg.prefill_rows_cap(P),) for i in range(0, len(items), cap)]
        for P, items in calls:
            n = _bucket(len(items), self.cfg.min_prefill_rows, self.cfg.prefill_rows_cap(P))
            slots = np.full(n, B, np.int32)
            toks = np.zeros((n, P), np.int32)
            lens = np.ones(n, np.int32)
            starts = np.zeros(n, np.int32)
            fresh = np.zeros(n, bool)
            thr = np.full(n, -np.inf, np.float32)
            seeds = np.zeros(n, np.uint32)
            for i, (slot, ids, start, fr, t, rs) in enumerate(items):
                if start + len(ids) > S - 1:  # no room for the observation: clip, the slot ends at max_length
                    ids = ids[: max(1, S - 1 - start)]
                slots[i], lens[i], starts[i], fresh[i], seeds[i] = slot, len(ids), start, fr, rs
                toks[i, : len(ids)] = ids
                thr[i] = self._thr[slot] = t if t is not None else self._thr[slot]
                self._turn_start[slot] = start + len(ids)
            self._shapes.add(("prefill", n, P))
            host = self._io.put((slots, toks, lens, starts, fresh, thr, seeds))
            self.state = self._prefill(self.params, self.state, *host, self._key, self.consts, **self._static)
            for slot, *_ in items:
                if slot in self._req_of:  # this host's slot (multi-host: the others belong to other hosts)
                    self._running.add(slot)
        return any(a for _, a in parts) or bool(batch)

    def _kv_bucket(self, max_pos: int) -> int:
        """Cache slots a decode chunk attends over: the power of two (>= min_kv_bucket) covering every
        position the chunk can reach, capped at max_len; at most log2(max_len) distinct values."""
        reach = max_pos + self.cfg.chunk_steps + 1
        return _bucket(reach, self.cfg.min_kv_bucket, self.cfg.max_len)

    def step(self) -> list[TurnEnd]:
        """Admit waiting requests, run one decode chunk if any slot is active, return the turns that ended.
        Multi-host engines step through `sync_step` (every host at once)."""
        if self.collective:
            raise RuntimeError("DecodeEngine.step: a multi-host engine steps with sync_step(alive) on every host")
        return self._step(True)[0]

    def sync_step(self, alive: bool) -> tuple[list[TurnEnd], bool]:
        """One step taken by every host together (collective): alive says this host still has trajectories
        (decoding or awaiting their environment). Returns this host's ended turns and whether any host is
        still alive; the hosts stop calling together once it is False."""
        return self._step(alive)

    def _step(self, alive: bool) -> tuple[list[TurnEnd], bool]:
        anyone = self._admit(alive)
        if not self.collective and not self._running:
            return [], anyone
        active, pos = self._io.get((self.state.active, self.state.pos))
        if active.any():
            kv_len = self._kv_bucket(int(pos[active].max()))
            self._shapes.add(("decode", self.cfg.batch_slots, self.cfg.chunk_steps, kv_len))
            self.state = self._decode(self.params, self.state, self._key, self.consts,
                                      steps=self.cfg.chunk_steps, kv_len=kv_len, **self._static)
        active, reason, pos, last = self._io.get(
            (self.state.active, self.state.reason, self.state.pos, self.state.last))
        self._pos[:], self._last[:] = pos, last
        ended = [s for s in self._running if not active[s]]
        if not ended:
            return [], anyone
        tokens = self._io.get_rows(self.state.tokens)
        out = []
        for s in sorted(ended):
            self._running.discard(s)
            a, b = int(self._turn_start[s]), int(pos[s]) + 1
            out.append(TurnEnd(self._req_of[s], StopReason(int(reason[s])).label, tokens[s, a:b].tolist()))
        return out, anyone

    def generate(self, prompts: Sequence[Sequence[int]], thresholds: Sequence[float] | None = None) -> list[Trajectory]:
        """Single-turn convenience: run every prompt to its first stop, more prompts than slots included."""
        for i, p in enumerate(prompts):
            self.submit(i, p, None if thresholds is None else thresholds[i])
        done: dict[int, Trajectory] = {}
        while len(done) < len(prompts):
            ended = self.step()
            if not ended and not self._running:  # nothing decodes and nothing could be admitted
                raise RuntimeError(
                    f"DecodeEngine.generate: {len(prompts) - len(done)} prompt(s) cannot make progress: all "
                    f"{self.cfg.batch_slots} slots are held by requests awaiting resume() or finish()")
            for t in ended:
                done[t.request_id] = self.finish(t.request_id)
        return [done[i] for i in range(len(prompts))]
