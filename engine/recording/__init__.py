"""Recording: the engine's side of call recording (policy, index, health, purge)."""
