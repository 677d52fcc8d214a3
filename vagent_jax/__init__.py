"""vagent_jax: a JAX-native SFT + DAPO trainer for language-model agents on verifiable tasks."""

__version__ = "0.1.0"
