"""Routing: the engine's side of routing_core (queues, offers, agent states) and the agent directory."""
