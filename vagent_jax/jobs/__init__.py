"""One module per `vagent` command (sft, rl, eval, distill, compile, export, demo): its run loop, IO and
checkpoint wiring, with the run config resolved into plain arguments at the entry; the jitted programs
they run live in train/, engine/ and rl/."""
