"""vagent_jax.data."""
