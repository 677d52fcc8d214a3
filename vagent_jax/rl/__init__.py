"""vagent_jax.rl."""
