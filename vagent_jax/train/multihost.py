"""Multi-host runs: jax.distributed start-up, the config-agreement check, and the host <-> global data moves.

Start-up (`initialize_from`, called by the CLI before anything touches a jax device): the coordinator
comes from `--coordinator HOST:PORT --num-processes N --process-id I`, else from VAGENT_COORDINATOR /
VAGENT_NUM_PROCESSES / VAGENT_PROCESS_ID; with none of them on a Cloud TPU VM jax.distributed.initialize()
detects the slice itself; otherwise the run stays single-process. On CPU the collectives are gloo (set
before initialize, as XLA needs).

Every process then hashes its resolved config (`config_hash`, sha256 of the config's sorted JSON) and
`check_same_config` compares the hashes across processes before any model program is compiled: hosts
launched with different overrides stop with an error naming the disagreeing process ids.

Data: every process holds the same host-side (numpy) global batch; `to_global` turns it into jax.Arrays
with the step's batch sharding, each process filling only the rows of its own devices. `to_host` is the
way back for arrays that span processes, `allgather_objects` moves small picklable results (rollouts,
iterator states) to every host. The decode engine needs none of these for parameters: it decodes with the
globally sharded train-state params on every host (engine/hosts.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Sharding

from vagent_jax.config import ConfigError, require

ENV_COORDINATOR = "VAGENT_COORDINATOR"
ENV_NUM_PROCESSES = "VAGENT_NUM_PROCESSES"
ENV_PROCESS_ID = "VAGENT_PROCESS_ID"
# Set by the Cloud TPU VM runtime on every host of a slice (any one suffices to call it a TPU VM).
TPU_VM_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "TPU_ACCELERATOR_TYPE", "CLOUD_TPU_TASK_ID")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a job: all three fields (explicit), or none (auto-detect / single process)."""

    coordinator: str | None = None  # HOST:PORT of process 0's coordinator service
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def explicit(self) -> bool:
        """True when a coordinator was given (flags or environment)."""
        return self.coordinator is not None or self.num_processes is not None or self.process_id is not None

    def validate(self) -> None:
        """All-or-none of the three; HOST:PORT with a numeric port; 0 <= process_id < num_processes."""
        if not self.explicit:
            return
        given = {"coordinator": self.coordinator, "num_processes": self.num_processes, "process_id": self.process_id}
        missing = [k for k, v in given.items() if v is None]
        require(not missing, "distributed", f"a multi-process run needs --coordinator, --num-processes and "
                f"--process-id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing {missing}")
        host, _, port = str(self.coordinator).rpartition(":")
        require(bool(host) and port.isdigit(), "coordinator", f"must be HOST:PORT, got {self.coordinator!r}")
        n, pid = int(self.num_processes), int(self.process_id)  # type: ignore[arg-type]
        require(n >= 1, "num_processes", f"must be >= 1, got {n}")
        require(0 <= pid < n, "process_id", f"must be in [0, {n}), got {pid}")


def _int_or_none(value: Any, key: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: must be an integer, got {value!r}") from None


def distributed_config(coordinator: str | None = None, num_processes: int | str | None = None,
                       process_id: int | str | None = None,
                       environ: Mapping[str, str] | None = None) -> DistributedConfig:
    """The job settings: each flag given wins over its environment variable; the result is validated."""
    env = os.environ if environ is None else environ
    cfg = DistributedConfig(
        coordinator=coordinator or env.get(ENV_COORDINATOR) or None,
        num_processes=_int_or_none(num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES),
                                   "num_processes"),
        process_id=_int_or_none(process_id if process_id is not None else env.get(ENV_PROCESS_ID), "process_id"))
    cfg.validate()
    return cfg


def on_tpu_vm(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this looks like a Cloud TPU VM host: TPU runtime variables set, or TPU chips on the PCI bus
    (the scan jax itself runs at TPU start-up; it touches no backend)."""
    env = os.environ if environ is None else environ
    if any(env.get(k) for k in TPU_VM_ENV):
        return True
    try:
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except (ImportError, AttributeError, OSError):
        return Path("/dev/accel0").exists()


def _gpu_plugins() -> list[str]:
    """Installed jax GPU plugins (CUDA or ROCm), found by name without importing or starting them."""
    import importlib.metadata
    import pkgutil

    names = {ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")}
    try:
        import jax_plugins

        names |= {m.name for m in pkgutil.iter_modules(jax_plugins.__path__)}
    except ImportError:
        pass
    return sorted(n for n in names if "cuda" in n or "rocm" in n)


def cpu_instead_of_absent_tpu(environ: Mapping[str, str], gpu_plugins: list[str]) -> bool:
    """Whether to pin jax to the CPU: libtpu may be installed (the test extra has it) but this machine is
    neither a TPU VM nor set up for a GPU, and JAX_PLATFORMS leaves the choice to jax."""
    return not environ.get("JAX_PLATFORMS") and not on_tpu_vm(environ) and not gpu_plugins


def skip_absent_tpu() -> bool:
    """Pin jax to the CPU where `cpu_instead_of_absent_tpu` says so, so jax's TPU probe does not print its
    host-bounds errors on every run; must run before any jax backend use (the CLI calls it first)."""
    if not cpu_instead_of_absent_tpu(os.environ, _gpu_plugins()):
        return False
    os.environ["JAX_PLATFORMS"] = "cpu"  # inherited by env workers and other child processes
    jax.config.update("jax_platforms", "cpu")
    return True


def initialize(cfg: DistributedConfig, environ: Mapping[str, str] | None = None) -> bool:
    """Join the job described by cfg; returns True when this is a multi-process run.

    Explicit settings: gloo CPU collectives, then jax.distributed.initialize(coordinator, N, id) (N = 1
    stays single-process). No settings on a TPU VM: jax.distributed.initialize() auto-detects the slice.
    Otherwise nothing happens. Must run before any jax backend use.
    """
    cfg.validate()
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if cfg.explicit:
        if cfg.num_processes == 1:
            return False
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=cfg.coordinator, num_processes=cfg.num_processes,
                                   process_id=cfg.process_id)
        return True
    platforms = (os.environ if environ is None else environ).get("JAX_PLATFORMS", "")
    if on_tpu_vm(environ) and (not platforms or "tpu" in platforms):
        jax.distributed.initialize()
        return jax.process_count() > 1
    return False


def add_distributed_flags(parser: Any) -> None:
    """Add --coordinator / --num-processes / --process-id to an argparse parser."""
    parser.add_argument("--coordinator", default=None,
                        help=f"HOST:PORT of process 0 (multi-host; env {ENV_COORDINATOR})")
    parser.add_argument("--num-processes", type=int, default=None,
                        help=f"processes in the job (env {ENV_NUM_PROCESSES})")
    parser.add_argument("--process-id", type=int, default=None, help=f"this process, 0-based (env {ENV_PROCESS_ID})")


def initialize_from(args: Any, environ: Mapping[str, str] | None = None) -> bool:
    """initialize() from parsed CLI flags (attributes coordinator, num_processes, process_id) and the env."""
    cfg = distributed_config(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                             getattr(args, "process_id", None), environ)
    return initialize(cfg, environ)


# ----- agreement across processes ----------------------------------------------------------------------
def config_hash(cfg: Any) -> str:
    """sha256 hex digest of the resolved config as JSON with sorted keys (dataclass fields, defaults included)."""
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def disagreeing(hashes: list[str]) -> dict[str, list[int]]:
    """Process ids grouped by the hash they reported (one group: every process agrees)."""
    groups: dict[str, list[int]] = {}
    for pid, h in enumerate(hashes):
        groups.setdefault(h, []).append(pid)
    return groups


def check_same_config(cfg: Any, what: str = "config") -> str:
    """Compare config_hash(cfg) across processes (an all-gather); ConfigError naming the process ids that
    disagree with process 0. Call it before building the model so nothing large compiles first."""
    digest = config_hash(cfg)
    if jax.process_count() == 1:
        return digest
    hashes = [bytes(h).hex() for h in allgather_objects(bytes.fromhex(digest))]
    groups = disagreeing(hashes)
    if len(groups) > 1:
        ref = hashes[0]
        odd = sorted(pid for h, pids in groups.items() if h != ref for pid in pids)
        detail = "; ".join(f"processes {pids}: {h[:12]}" for h, pids in groups.items())
        raise ConfigError(f"{what}: processes {odd} run a different config than process 0 ({detail}); launch "
                          "every host with the same config file and key=value overrides")
    return digest


# ----- data between host and devices --------------------------------------------------------------------
def is_primary() -> bool:
    """True on process 0, the one that writes metrics, reports and run metadata."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op single-process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _padded_len(n: int) -> int:
    """Power-of-two byte buffer length (>= 64), so few all-gather programs get compiled."""
    return max(64, 1 << (max(n, 1) - 1).bit_length())


def allgather_objects(obj: Any) -> list[Any]:
    """[obj of process 0, obj of process 1, ...] on every process (pickled bytes through all-gathers)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(blob)], np.int64))).reshape(-1)
    buf = np.zeros(_padded_len(int(sizes.max())), np.uint8)
    buf[:len(blob)] = np.frombuffer(blob, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf))
    return [pickle.loads(rows[i, :int(n)].tobytes()) for i, n in enumerate(sizes)]


def to_global(batch: Mapping[str, Any], shardings: Mapping[str, Sharding]) -> dict[str, Any]:
    """Host arrays of the whole global batch -> jax.Arrays with `shardings`, each process filling only
    its own devices' rows. Single-process, or for values already jax.Arrays, the batch passes unchanged."""
    if jax.process_count() == 1:
        return dict(batch)
    out = {}
    for k, v in batch.items():
        if isinstance(v, jax.Array) or k not in shardings:
            out[k] = v
            continue
        host = np.asarray(v)
        out[k] = jax.make_array_from_callback(host.shape, shardings[k], lambda idx, h=host: h[idx])
    return out


def to_host(x: Any) -> np.ndarray:
    """A numpy copy of a jax.Array that may span processes (all-gathered then), or of a host array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_shards[0].data)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def primary_first(fn: Any, name: str) -> Any:
    """fn() on process 0, then (after a barrier) on the others: for steps that write shared files
    (task builds, tokenizer training) which the other processes then only read."""
    if jax.process_count() == 1:
        return fn()
    if is_primary():
        out = fn()
        barrier(name)
        return out
    barrier(name)
    return fn()
