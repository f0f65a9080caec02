"""The distillation engine: states, the jitted round, sharding, checkpoints and the loop."""
