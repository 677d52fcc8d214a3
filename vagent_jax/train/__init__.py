"""vagent_jax.train."""
