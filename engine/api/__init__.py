"""HTTP API: the aiohttp app (health, metrics), the JSON API under /api/v1/ and its event stream."""
