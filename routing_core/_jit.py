"""The one place that sets numba flags for every routing kernel.

`cache=True` stores compiled machine code next to the module (or in NUMBA_CACHE_DIR) so a daemon start only
loads it; `nogil=True` lets a caller run a kernel in a worker thread without blocking the event loop.
No fastmath: strategy keys are compared for ties and must compare exactly as the Python reference does.
"""

from __future__ import annotations

from typing import Any

import numba

JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True}


def jit(fn: Any) -> Any:
    """Compile `fn` with the routing core's flags."""
    return numba.njit(**JIT_OPTIONS)(fn)


def jit_inline(fn: Any) -> Any:
    """Compile a small helper that numba inlines into its callers at the IR level: kernels pass
    twenty-odd arrays around, and a real call would copy every array struct on each invocation."""
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)
