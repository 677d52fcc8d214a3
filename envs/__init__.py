"""Host-side environments, tools and verifiers (installed as vagent_jax.envs).

Environments are stateless text-level objects looked up by name (`get_env`); `EnvWorkerPool` runs their
steps in separate processes. Built-in environments: arithmetic, calculator, python, math_answer, countdown.
"""
from vagent_jax.envs.base import EnvStep, Environment, Message, Reward
from vagent_jax.envs.registry import env_names, get_env, register_env
from vagent_jax.envs.tools import Tool
from vagent_jax.envs.worker_pool import EnvWorkerPool

__all__ = ["EnvStep", "EnvWorkerPool", "Environment", "Message", "Reward", "Tool", "env_names", "get_env",
           "register_env"]
