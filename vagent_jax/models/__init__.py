"""vagent_jax.models."""
