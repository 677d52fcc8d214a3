"""Host-side environments, tools and verifiers (installed as vagent_jax.envs)."""
