"""Device kernels with pure-jnp references (installed as vagent_jax.kernels)."""
