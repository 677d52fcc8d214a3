"""`vagent compile CONFIG --topology NAME`: compile a run's programs ahead of time for a TPU slice on a
CPU machine (libtpu's compile-only topology), with abstract inputs, and check they fit in HBM.

An SFT config compiles the SFT step; an RL config compiles the DAPO update step, the decode engine's own
programs at their largest buckets (a decode chunk over all max_len cache positions, the largest prefill the
engine can make) with the shardings the engine runs them with, and, when updates_per_batch > 1, the
old-log-prob pass. The model comes from init_from's policy.json, else its HF config.json (for SFT with
the recipe's model section applied), else the `--model` preset, else (SFT without init_from) SFTConfig.model;
`model.KEY=VALUE` overrides then adjust it (e.g. model.remat=full). Every shape check runs before any
compile and names the key at fault. See aot_report for what is measured and how time/MFU are estimated.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from jax.sharding import Mesh

from vagent_jax.aot_inputs import (abstract_decode_state, abstract_key, abstract_params, abstract_prefill_inputs,
                                   abstract_rl_batch, abstract_sft_batch, abstract_step_consts,
                                   abstract_train_state, per_device_bytes)
from vagent_jax.aot_report import (CompileReport, ProgramReport, decode_model_flops, logprob_model_flops,
                                   train_model_flops)
from vagent_jax.config import ConfigError, config_scope, from_dict, load_config, merge_overrides, require, to_dict
from vagent_jax.jobs.rl import RLConfig
from vagent_jax.jobs.sft import SFTConfig
from vagent_jax.models.config import PRESETS, ModelConfig, from_hf_config
from vagent_jax.models.hf_dir import merge_model_config
from vagent_jax.sharding import MESH_AXES, MeshConfig, check_params_sharded
from vagent_jax.tpu_topology import GiB, Topology, parse_topology, topology_devices


class DoesNotFit(RuntimeError):
    """A compiled program needs more HBM per chip than the topology's chip has."""


def split_model_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(config overrides, model overrides): `model.KEY=VALUE` items adjust the resolved model config."""
    model = [o[len("model."):] for o in overrides if o.startswith("model.")]
    return [o for o in overrides if not o.startswith("model.")], model


def config_kind(path: str | Path) -> str:
    """'sft' or 'rl' from the YAML's top-level keys (fields only one of SFTConfig / RLConfig has)."""
    data = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' does not exist or holds no mapping")
    fields = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    rl_only, sft_only = fields(RLConfig) - fields(SFTConfig), fields(SFTConfig) - fields(RLConfig)
    is_rl, is_sft = bool(rl_only & set(data)), bool(sft_only & set(data))
    if is_rl == is_sft:
        raise ConfigError(f"config file '{path}': cannot tell an SFT from an RL config (RL keys "
                          f"{sorted(rl_only & set(data))}, SFT keys {sorted(sft_only & set(data))})")
    return "rl" if is_rl else "sft"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def resolve_model(cfg: SFTConfig | RLConfig, preset: str | None,
                  model_overrides: tuple[str, ...] | list[str] = ()) -> tuple[ModelConfig, str]:
    """The model to compile and where it came from (see the module docstring for the order)."""
    from vagent_jax.train.policy_dir import POLICY_FILE, read_policy_meta

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--model {preset!r} is not a preset (known: {', '.join(PRESETS)})")
    init = Path(cfg.init_from) if cfg.init_from else None
    if init is not None and (init / POLICY_FILE).is_file() and not (isinstance(cfg, SFTConfig) and preset):
        model, source = read_policy_meta(init)[0], str(init / POLICY_FILE)
    elif init is not None and (init / "config.json").is_file() and not (isinstance(cfg, SFTConfig) and preset):
        path = init / "config.json"
        model, source = from_hf_config(_read_json(path), source=str(path)), str(path)
        if isinstance(cfg, SFTConfig):  # the recipe's model section: run settings, or keys that must agree
            model = merge_model_config(model, cfg.model, SFTConfig().model, source)
    elif preset is not None:
        model, source = PRESETS[preset], f"preset {preset}"
    elif isinstance(cfg, SFTConfig) and not cfg.init_from:
        model, source = cfg.model, "config model"
    else:
        raise ConfigError(f"config key 'init_from': '{cfg.init_from}' holds no policy.json or config.json; "
                          f"name the model with --model (presets: {', '.join(PRESETS)})")
    if model_overrides:
        model = from_dict(ModelConfig, merge_overrides(to_dict(model), list(model_overrides)), prefix="model.")
        source += " + " + " ".join(f"model.{o}" for o in model_overrides)
    with config_scope("model"):
        model.validate()
    return model, source


def check_shapes(cfg: SFTConfig | RLConfig, model: ModelConfig, mesh_shape: tuple[int, int, int]) -> None:
    """Batch and length checks against the mesh and the model, before any compile; errors name the key."""
    shards = mesh_shape[0] * mesh_shape[1]  # data x fsdp: the axes the batch is split over
    if isinstance(cfg, SFTConfig):
        per_micro = cfg.batch_size // cfg.micro_batches
        require(per_micro % shards == 0, "batch_size",
                f"micro-batch of {per_micro} rows (batch_size {cfg.batch_size} / micro_batches "
                f"{cfg.micro_batches}) is not divisible by data x fsdp = {shards} devices")
        require(cfg.seq_len <= model.max_seq_len, "seq_len",
                f"{cfg.seq_len} exceeds model.max_seq_len {model.max_seq_len}")
        return
    rows = cfg.prompts_per_step * cfg.group_size
    per_micro = rows // (cfg.updates_per_batch * cfg.micro_batches)
    require(per_micro % shards == 0, "prompts_per_step",
            f"micro-batch of {per_micro} rows (prompts_per_step x group_size = {rows} / updates_per_batch "
            f"{cfg.updates_per_batch} / micro_batches {cfg.micro_batches}) is not divisible by data x fsdp "
            f"= {shards} devices")
    with config_scope("engine"):
        cfg.engine.validate(model.vocab_size)
    require(cfg.engine.batch_slots % shards == 0, "engine.batch_slots",
            f"{cfg.engine.batch_slots} slots are not divisible by data x fsdp = {shards} devices")
    require(cfg.engine.max_len <= model.max_seq_len, "engine.max_len",
            f"{cfg.engine.max_len} exceeds model.max_seq_len {model.max_seq_len}")


def build_mesh(mesh_cfg: MeshConfig, devices: list[Any]) -> Mesh:
    """The (data, fsdp, tensor) mesh over the topology's devices, laid out along the physical torus
    (mesh_utils) where it can be, in plain device order otherwise."""
    from jax.experimental import mesh_utils

    shape = mesh_cfg.shape(len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)


def _compile(name: str, lower: Callable[[], Any], resident: int, model_flops: float,
             topo: Topology) -> ProgramReport:
    """Lower and compile one program for the topology; XLA's own out-of-HBM error becomes DoesNotFit."""
    t0 = time.perf_counter()
    try:
        compiled = lower().compile()
    except Exception as e:  # noqa: BLE001 (XlaRuntimeError is not importable by a stable name)
        text = str(e)
        if "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Used" in ln or "memory" in ln), text[:300])
            raise DoesNotFit(f"{name} does not fit in {topo.chip.hbm_bytes / GiB:.0f} GiB HBM per "
                             f"{topo.chip.generation} chip on {topo.name}: XLA says {detail}") from None
        raise
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return ProgramReport(
        name=name, argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes), resident_bytes=int(resident),
        xla_flops=float(cost.get("flops", 0.0)), xla_bytes=float(cost.get("bytes accessed", 0.0)),
        model_flops=model_flops, compile_s=time.perf_counter() - t0)


def _sft_programs(cfg: SFTConfig, model: ModelConfig, mesh: Mesh, topo: Topology) -> list[ProgramReport]:
    from vagent_jax.train.sft_step import make_sft_step

    state = abstract_train_state(model, cfg.optimizer, mesh)
    batch = abstract_sft_batch(cfg.batch_size, cfg.seq_len, mesh)
    step = make_sft_step(model, cfg.optimizer, mesh, cfg.micro_batches)
    return [_compile("sft_step", lambda: step.lower(state, batch), 0,
                     train_model_flops(model, cfg.batch_size, cfg.seq_len), topo)]


@dataclasses.dataclass(frozen=True)
class Lowering:
    """One program of a run, ready to lower: its key (name and shape bucket), useful FLOPs and the bytes
    that stay resident in HBM beside it."""

    key: tuple
    lower: Callable[[], Any]
    model_flops: float
    resident: int


def rl_lowerings(cfg: RLConfig, model: ModelConfig, mesh: Mesh) -> dict[tuple, Lowering]:
    """Every program an RL run on `mesh` can execute, keyed as the run names them: ("rl_step", rows, T),
    ("old_logprobs", rows, T) when updates_per_batch > 1, and each engine bucket of
    engine.reachable_programs; all with the run's shardings (train state, the engine's own jitted programs)."""
    from vagent_jax.models.transformer import dtype_of
    from vagent_jax.engine import reachable_programs
    from vagent_jax.engine.programs import mesh_programs
    from vagent_jax.train.rl_step import make_compute_logprobs, make_rl_step

    eng, T = cfg.engine, cfg.engine.max_len
    rows = cfg.prompts_per_step * cfg.group_size
    state = abstract_train_state(model, cfg.optimizer, mesh)
    ref = abstract_params(model, mesh) if cfg.loss.kl != "none" else None
    # While the engine decodes (or the old-log-prob pass runs), the optimizer state and any reference
    # policy stay in HBM without being arguments of that program.
    resident = per_device_bytes(state.opt_state) + (per_device_bytes(ref) if ref is not None else 0)
    step = make_rl_step(model, cfg.optimizer, cfg.loss, mesh, cfg.micro_batches, max_len=T)
    per_update = rows // cfg.updates_per_batch
    batch = abstract_rl_batch(per_update, T, mesh, old_logp=cfg.updates_per_batch > 1)
    key = abstract_key(mesh)
    out = {("rl_step", per_update, T): Lowering(("rl_step", per_update, T),
                                                lambda: step.lower(state, batch, key, 0.0, ref),
                                                train_model_flops(model, per_update, T), 0)}
    if cfg.updates_per_batch > 1:
        lp = make_compute_logprobs(model, mesh, cfg.micro_batches)
        lp_batch = {k: v for k, v in abstract_rl_batch(rows, T, mesh, old_logp=False).items()
                    if k in ("tokens", "positions")}
        lp_batch["segment_ids"] = lp_batch["tokens"]
        out[("old_logprobs", rows, T)] = Lowering(("old_logprobs", rows, T), lambda: lp.lower(state.params, lp_batch),
                                                  logprob_model_flops(model, rows, T), resident)
    st = abstract_decode_state(model, eng.batch_slots, T, eng.cache_dtype, mesh)
    consts = abstract_step_consts(eng.batch_slots, 2, mesh)
    progs = mesh_programs(mesh, model, eng.batch_slots, T,
                          None if eng.cache_dtype == "auto" else dtype_of(eng.cache_dtype))
    static = dict(cfg=model, conf_k=eng.sampling.conf_k, impl=eng.impl)
    for k in sorted(reachable_programs(eng)):
        if k[0] == "prefill":
            pre = abstract_prefill_inputs(k[1], k[2], mesh)
            low = lambda pre=pre: progs.prefill.lower(state.params, st, *pre, key, consts, **static)  # noqa: E731
            flops = logprob_model_flops(model, k[1], k[2])
        else:
            low = lambda kv=k[3]: progs.decode_chunk.lower(  # noqa: E731
                state.params, st, key, consts, steps=eng.chunk_steps, kv_len=kv, **static)
            flops = decode_model_flops(model, eng.batch_slots, k[3], eng.chunk_steps)
        out[k] = Lowering(k, low, flops, resident)
    return out


def _program_name(key: tuple) -> str:
    if key[0] == "decode":
        return f"decode_chunk x{key[2]} kv {key[3]}"
    if key[0] == "prefill":
        return f"prefill {key[1]} x {key[2]}"
    return key[0]


def _rl_programs(cfg: RLConfig, model: ModelConfig, mesh: Mesh, topo: Topology) -> list[ProgramReport]:
    """Compile the update, the old-log-prob pass and the largest bucket of each engine program: the decode
    chunk over the most cache positions, the prefill of the most rows x tokens (then the longest); the
    smaller buckets run the same program on less."""
    progs = rl_lowerings(cfg, model, mesh)
    size = {"decode": lambda k: k[3], "prefill": lambda k: (k[1] * k[2], k[2])}
    largest = {kind: max((k for k in progs if k[0] == kind), key=f) for kind, f in size.items()}
    keep = [k for k in progs if k[0] not in largest] + [largest["decode"], largest["prefill"]]
    return [_compile(_program_name(k), progs[k].lower, progs[k].resident, progs[k].model_flops, topo) for k in keep]


def compile_config(cfg: SFTConfig | RLConfig, topology: str, *, config_name: str = "config",
                   preset: str | None = None, model_overrides: tuple[str, ...] | list[str] = ()) -> CompileReport:
    """Resolve the model, check shapes against the topology's mesh, compile every program of the run
    and return the report. Raises ConfigError (bad input, before compiling) or DoesNotFit."""
    topo = parse_topology(topology)
    model, source = resolve_model(cfg, preset, list(model_overrides))
    mesh_shape = cfg.mesh.shape(topo.num_chips)  # ConfigError naming 'mesh' when it does not divide
    check_shapes(cfg, model, mesh_shape)
    mesh = build_mesh(cfg.mesh, topology_devices(topo))
    check_params_sharded(abstract_params(model, mesh), mesh, cfg.mesh.max_replicated_fraction)
    if isinstance(cfg, SFTConfig):
        kind, programs = "sft", _sft_programs(cfg, model, mesh, topo)
    else:
        kind, programs = "rl", _rl_programs(cfg, model, mesh, topo)
    return CompileReport(config=config_name, kind=kind, topology=topo, mesh=dict(zip(MESH_AXES, mesh_shape)),
                         model_source=source, model=model, programs=tuple(programs))


def compile_file(path: str | Path, topology: str, preset: str | None = None,
                 overrides: tuple[str, ...] | list[str] = ()) -> CompileReport:
    """Load an SFT or RL YAML (kind told by its keys) with overrides and compile it (see compile_config)."""
    cfg_over, model_over = split_model_overrides(list(overrides))
    cls = RLConfig if config_kind(path) == "rl" else SFTConfig
    cfg = load_config(cls, path, cfg_over)
    return compile_config(cfg, topology, config_name=str(path), preset=preset, model_overrides=model_over)


def check_fits(report: CompileReport) -> None:
    """Raise DoesNotFit naming every program whose per-chip peak exceeds the chip's HBM."""
    over = report.over_hbm()
    if over:
        hbm = report.topology.chip.hbm_bytes
        parts = [f"{p.name} needs {p.peak_bytes / GiB:.2f} GiB per chip" for p in over]
        raise DoesNotFit(f"{report.config} does not fit on {report.topology.name}: {'; '.join(parts)} "
                         f"(HBM {hbm / GiB:.0f} GiB per chip); raise mesh.fsdp, set model.remat=full, or "
                         f"lower the per-micro-batch rows")
