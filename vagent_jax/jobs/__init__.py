"""One module per command that is not a training loop: IO and checkpoint wiring."""
