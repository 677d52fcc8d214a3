"""vagent_jax.sampling."""
