"""The one place that sets numba flags for every routing kernel.

`cache=True` stores compiled machine code next to the module (or in NUMBA_CACHE_DIR) so a daemon start only
loads it; `nogil=True` lets a caller run a kernel in a worker thread without blocking the event loop.
No fastmath: strategy keys are compared for ties and must compare exactly as the Python reference does.

No NRT (`_nrt=False`, the switch numba's own mergesort and unicode helpers use): the kernels only read
and write caller-owned arrays and never allocate, and without the runtime numba does not reference-count
the array views. With it, every array handed to an inlined helper cost an NRT_incref/NRT_decref call
pair: ~1000 such calls in the dispatch kernel, about a third of a steady-state dispatch. A kernel that
allocated would fail to compile, not misbehave.
"""

from __future__ import annotations

from typing import Any

import numba
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np import arrayobj

# numba's code-generation helpers are untyped; bind them as Any once.
_make_array: Any = arrayobj.make_array
_populate_array: Any = arrayobj.populate_array
_pack_array: Any = cgutils.pack_array
_config: Any = numba.config

JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}


def jit(fn: Any) -> Any:
    """Compile `fn` with the routing core's flags."""
    return numba.njit(**JIT_OPTIONS)(fn)


def jit_inline(fn: Any) -> Any:
    """Compile a small helper that numba inlines into its callers at the IR level: kernels pass
    twenty-odd arrays around, and a real call would copy every array struct on each invocation."""
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)


def _view_2d_py(a: Any, n0: int, n1: int) -> Any:
    return a.reshape((n0, n1))


@intrinsic
def _view_2d_jit(typingctx: Any, a: Any, n0: Any, n1: Any) -> Any:
    """2-D C-contiguous view (n0, n1) of the 1-D C-contiguous array `a`, which must hold n0 * n1 items.

    `a.reshape((n0, n1))` calls into numba's C helper that re-derives the strides on every call (~40 ns
    each on a fast core, ~0.9 us for the dispatch kernel's two dozen 2-D views); this only fills in the
    array struct. The caller guarantees the size, as the Router does through the arena layout.
    """
    if not (
        isinstance(a, types.Array)
        and a.ndim == 1
        and a.layout == "C"
        and isinstance(n0, types.Integer)
        and isinstance(n1, types.Integer)
    ):
        return None
    ret = a.copy(ndim=2, layout="C")
    sig = ret(a, n0, n1)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        src = _make_array(a)(context, builder, args[0])
        out = _make_array(ret)(context, builder)
        intp = context.get_value_type(types.intp)
        d0 = context.cast(builder, args[1], signature.args[1], types.intp)
        d1 = context.cast(builder, args[2], signature.args[2], types.intp)
        itemsize = src.itemsize
        _populate_array(
            out,
            data=src.data,
            shape=_pack_array(builder, [d0, d1], intp),
            strides=_pack_array(builder, [builder.mul(d1, itemsize), itemsize], intp),
            itemsize=itemsize,
            meminfo=src.meminfo,
            parent=src.parent,
        )
        return out._getvalue()

    return sig, codegen


# Under NUMBA_DISABLE_JIT the kernels run as Python, where an intrinsic cannot be called.
view_2d: Any = _view_2d_py if _config.DISABLE_JIT else _view_2d_jit
