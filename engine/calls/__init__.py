"""Calls: a trunk call from its INVITE through flow and queue to a bridged agent and its record."""
