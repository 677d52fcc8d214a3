"""The decode engine: B slots of KV cache on device, continuous batching, multi-turn resume (decode_engine),
its settings (config), its typed device state (state) and its jitted programs (programs)."""
from vagent_jax.engine.config import EngineConfig, SamplingConfig
from vagent_jax.engine.decode_engine import DecodeEngine, Trajectory, TurnEnd, reachable_programs
from vagent_jax.engine.state import DecodeState, StopReason

__all__ = ["DecodeEngine", "DecodeState", "EngineConfig", "SamplingConfig", "StopReason", "Trajectory", "TurnEnd",
           "reachable_programs"]
