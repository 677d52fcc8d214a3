"""What an ahead-of-time compile reports: per-chip memory of each program against the chip's HBM, and
a step-time estimate from XLA's cost analysis.

Per chip (one SPMD program runs on every chip), from compiled.memory_analysis():
    peak = arguments + outputs - aliased (donated) + temporaries + generated code + resident,
where `resident` counts buffers that stay live while the program runs without being its arguments
(the optimizer state and a reference policy during decode).
From compiled.cost_analysis() (per chip): xla_flops and xla_bytes. XLA's cost analysis counts the body
of a while loop once, and these programs loop (layer scan, micro-batches, logit chunks, decode steps),
so both undercount a step; the FLOP term is therefore floored by the model's own count:
    estimated time = max(max(xla_flops, model_flops / chips) / peak_flops, xla_bytes / hbm_bandwidth)
a roofline estimate (a lower bound on time), not a measurement. No MFU is reported: derived from that
time it read 100% by construction whenever the floored compute term dominates (e.g. the Qwen2.5-7B DAPO
step on v5p-64), and an estimate that can come out below 100% needs the loops' trip counts multiplied
into XLA's per-body counts, which cost_analysis does not give.
model_flops are the useful FLOPs of the whole step (`train_model_flops`, `decode_model_flops`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vagent_jax.models.config import ModelConfig
from vagent_jax.tpu_topology import GiB, Topology


@dataclasses.dataclass(frozen=True)
class ProgramReport:
    """One compiled program's per-chip memory (bytes), XLA cost estimate and useful model FLOPs."""

    name: str
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    resident_bytes: int
    xla_flops: float  # per chip, XLA's count (loop bodies once)
    xla_bytes: float  # per chip, XLA's count of bytes accessed (loop bodies once)
    model_flops: float  # whole step, all chips
    compile_s: float

    @property
    def peak_bytes(self) -> int:
        """arguments + outputs - aliased + temporaries + code + resident (bytes per chip)."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes
                + self.resident_bytes)


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """All programs of one config compiled for one topology."""

    config: str
    kind: str  # "sft" or "rl"
    topology: Topology
    mesh: dict[str, int]
    model_source: str
    model: ModelConfig
    programs: tuple[ProgramReport, ...]

    def estimated_time(self, p: ProgramReport) -> float:
        """max(max(xla_flops, model_flops / chips) / peak FLOP/s, xla_bytes / HBM bandwidth), seconds."""
        chip = self.topology.chip
        flops = max(p.xla_flops, p.model_flops / self.topology.num_chips)
        return max(flops / chip.peak_flops, p.xla_bytes / chip.hbm_bandwidth)

    def over_hbm(self) -> list[ProgramReport]:
        """Programs whose per-chip peak exceeds the chip's HBM."""
        return [p for p in self.programs if p.peak_bytes > self.topology.chip.hbm_bytes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, derived numbers included."""
        t = self.topology
        return {
            "config": self.config, "kind": self.kind, "topology": t.name, "topology_name": t.topology_name,
            "chips": t.num_chips, "mesh": self.mesh, "model_source": self.model_source,
            "model_params": self.model.num_params, "remat": self.model.remat,
            "hbm_bytes_per_chip": t.chip.hbm_bytes, "peak_flops_per_chip": t.chip.peak_flops,
            "hbm_bandwidth_per_chip": t.chip.hbm_bandwidth, "fits": not self.over_hbm(),
            "programs": [{**dataclasses.asdict(p), "peak_bytes": p.peak_bytes,
                          "hbm_fraction": p.peak_bytes / t.chip.hbm_bytes,
                          "estimated_step_s": self.estimated_time(p)}
                         for p in self.programs],
        }


def train_model_flops(cfg: ModelConfig, rows: int, seq_len: int) -> float:
    """Useful FLOPs of one forward+backward over rows x seq_len tokens:
    6 * N * tokens + 6 * L * T * H * hd * tokens, with N the non-embedding parameters (lm head
    included) and the second term causal attention (QK^T and AV, half the T x T pairs)."""
    tokens = rows * seq_len
    attn = 6 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim
    return float(tokens * (6 * cfg.num_non_embedding_params + attn))


def logprob_model_flops(cfg: ModelConfig, rows: int, seq_len: int) -> float:
    """Useful FLOPs of one forward pass (a third of `train_model_flops`)."""
    return train_model_flops(cfg, rows, seq_len) / 3


def decode_model_flops(cfg: ModelConfig, batch_slots: int, max_len: int, steps: int) -> float:
    """Useful FLOPs of `steps` single-token decode steps over all slots: per token 2 * N for the
    matmuls plus 4 * L * S * H * hd for attention over the S-position cache."""
    per_token = 2 * cfg.num_non_embedding_params + 4 * cfg.n_layers * max_len * cfg.n_heads * cfg.head_dim
    return float(batch_slots * steps * per_token)


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def format_table(report: CompileReport) -> str:
    """A plain-text table: one row per program, memory in GiB per chip, cost estimates, fit verdict."""
    t = report.topology
    head = (f"{report.config}: {report.kind} on {t.name} ({t.topology_name}, {t.num_chips} chips, "
            f"{_gib(t.chip.hbm_bytes)} GiB HBM/chip), mesh {report.mesh}, model {report.model_source} "
            f"({report.model.num_params / 1e9:.2f}B params, remat {report.model.remat})")
    cols = ("program", "args", "out", "alias", "temp", "code", "resident", "peak", "HBM %", "model TFLOP/chip",
            "XLA TFLOP/chip", "XLA GB/chip", "est. s", "fits", "compile s")
    rows = []
    for p in report.programs:
        rows.append((p.name, _gib(p.argument_bytes), _gib(p.output_bytes), _gib(p.alias_bytes), _gib(p.temp_bytes),
                     _gib(p.code_bytes), _gib(p.resident_bytes), _gib(p.peak_bytes),
                     f"{100 * p.peak_bytes / t.chip.hbm_bytes:.1f}", f"{p.model_flops / t.num_chips / 1e12:.2f}",
                     f"{p.xla_flops / 1e12:.2f}", f"{p.xla_bytes / 1e9:.2f}", f"{report.estimated_time(p):.4f}",
                     "yes" if p.peak_bytes <= t.chip.hbm_bytes else "NO",
                     f"{p.compile_s:.1f}"))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    foot = ("memory: GiB per chip (peak = args + out - alias + temp + code + resident). est. s = "
            "max(max(XLA, model) FLOPs / peak, XLA bytes / HBM bandwidth): a roofline estimate from XLA's cost "
            "analysis,\nwhich counts each loop body once (so XLA's FLOPs/bytes undercount; the model FLOPs "
            "floor the compute term): a lower bound on time")
    return "\n".join([head, line(cols), line(tuple("-" * w for w in widths)), *map(line, rows), foot])


def format_markdown(report: dict[str, Any]) -> str:
    """The table as GitHub markdown, from CompileReport.to_dict() (so `vagent compile --json` output can
    be rendered later, e.g. into docs/pod_recipes.md)."""
    r = report
    out = [f"**{r['config']}**: {r['kind']} on `{r['topology']}` (`{r['topology_name']}`, {r['chips']} chips, "
           f"{_gib(r['hbm_bytes_per_chip'])} GiB HBM/chip), mesh {r['mesh']}, model {r['model_source']} "
           f"({r['model_params'] / 1e9:.2f}B params, remat `{r['remat']}`)", "",
           "| program | args GiB | out GiB | alias GiB | temp GiB | resident GiB | peak GiB | HBM % | "
           "model TFLOP/chip | XLA TFLOP/chip | XLA GB/chip | est. step s | fits |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["programs"]:
        out.append(f"| {p['name']} | {_gib(p['argument_bytes'])} | {_gib(p['output_bytes'])} | "
                   f"{_gib(p['alias_bytes'])} | {_gib(p['temp_bytes'])} | {_gib(p['resident_bytes'])} | "
                   f"{_gib(p['peak_bytes'])} | {100 * p['hbm_fraction']:.1f} | "
                   f"{p['model_flops'] / r['chips'] / 1e12:.2f} | {p['xla_flops'] / 1e12:.2f} | "
                   f"{p['xla_bytes'] / 1e9:.2f} | {p['estimated_step_s']:.4f} | "
                   f"{'yes' if p['peak_bytes'] <= r['hbm_bytes_per_chip'] else 'NO'} |")
    return "\n".join(out)
