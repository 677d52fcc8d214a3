"""vagent_jax.eval."""
