"""Skill-based routing core: struct-of-arrays state, numba kernels, policies, simulator.

Pure computation. No asyncio, no sockets, no clock: time is always an argument.
"""
