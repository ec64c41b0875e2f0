"""The one place that sets numba flags for every routing kernel.

`cache=True` stores compiled machine code next to the module (or in NUMBA_CACHE_DIR) so a daemon start only
loads it; `nogil=True` lets a caller run a kernel in a worker thread without blocking the event loop.
No fastmath: strategy keys are compared for ties and must compare exactly as the Python reference does.

No NRT (`_nrt=False`, the switch numba's own mergesort and unicode helpers use): the kernels only read
and write caller-owned arrays and never allocate, and without the runtime numba does not reference-count
the array views. With it, every array handed to an inlined helper cost an NRT_incref/NRT_decref call
pair: ~1000 such calls in the dispatch kernel, about a third of a steady-state dispatch. A kernel that
allocated would fail to compile, not misbehave.

Calling a kernel from Python costs more than a small dispatch does inside it, so the hot call is cut to
the bone: `arena_1d`/`arena_2d` let a kernel take every array it needs as one byte buffer (numba unboxes
each array argument), and `entry_point` skips the dispatcher's per-call typing of the arguments.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np import arrayobj

# numba's code-generation helpers are untyped; bind them as Any once.
_make_array: Any = arrayobj.make_array
_populate_array: Any = arrayobj.populate_array
_pack_array: Any = cgutils.pack_array
_config: Any = numba.config
_typeof: Any = numba.typeof

JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}


# Every kernel compiled with `jit` (not the inlined helpers, which have no code of their own).
_KERNELS: list[Any] = []


def jit(fn: Any) -> Any:
    """Compile `fn` with the routing core's flags."""
    kernel = numba.njit(**JIT_OPTIONS)(fn)
    _KERNELS.append(kernel)
    return kernel


def cache_counts() -> tuple[int, int]:
    """How many kernel signatures this process compiled, and how many it loaded from the on-disk
    cache. A compile costs seconds per kernel (a cold cache after an install or an upgrade); a load,
    milliseconds. Both are 0 under NUMBA_DISABLE_JIT."""
    if _config.DISABLE_JIT:
        return 0, 0
    compiled = loaded = 0
    for kernel in _KERNELS:
        stats = kernel.stats
        compiled += sum(stats.cache_misses.values())
        loaded += sum(stats.cache_hits.values())
    return compiled, loaded


def jit_inline(fn: Any) -> Any:
    """Compile a small helper that numba inlines into its callers at the IR level: kernels pass
    twenty-odd arrays around, and a real call would copy every array struct on each invocation."""
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)


def entry_point(kernel: Any, *args: Any) -> Any:
    """`kernel`'s compiled function for the argument types of `args` (compiled or loaded from the cache
    now if need be), or `kernel` itself under NUMBA_DISABLE_JIT.

    Calling it skips the dispatcher, which types every argument on every call (~1.3 us a call with an
    array argument on a cache-cold slow core, as much as a whole steady-state dispatch does inside the
    kernel). It does not check the types: the caller must pass exactly the types of `args` each time.
    """
    if _config.DISABLE_JIT:
        return kernel
    return kernel.compile(tuple(_typeof(x) for x in args))


def _arena_view_py(buf: Any, offset: Any, shape: tuple[Any, ...], dtype: Any) -> Any:
    nbytes = np.dtype(dtype).itemsize
    for n in shape:
        nbytes *= int(n)
    return buf[int(offset) : int(offset) + nbytes].view(dtype).reshape(tuple(int(n) for n in shape))


def _arena_view_codegen(ndim: int, buf: Any, dtype: Any) -> tuple[Any, Any]:
    """Return type and code generator of an `ndim`-D C-contiguous `dtype` view into byte buffer `buf`."""
    ret = types.Array(dtype.dtype, ndim, "C")

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        src = _make_array(buf)(context, builder, args[0])
        out = _make_array(ret)(context, builder)
        intp = context.get_value_type(types.intp)
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        dims = [
            context.cast(builder, args[2 + k], signature.args[2 + k], types.intp)
            for k in range(ndim)
        ]
        itemsize = context.get_abi_sizeof(context.get_data_type(ret.dtype))
        strides: list[Any] = []
        stride = context.get_constant(types.intp, itemsize)
        for k in range(ndim - 1, -1, -1):
            strides.insert(0, stride)
            stride = builder.mul(stride, dims[k])
        byte_ptr = builder.gep(src.data, [offset])
        _populate_array(
            out,
            data=builder.bitcast(byte_ptr, out.data.type),
            shape=_pack_array(builder, dims, intp),
            strides=_pack_array(builder, strides, intp),
            itemsize=context.get_constant(types.intp, itemsize),
            meminfo=src.meminfo,
            parent=src.parent,
        )
        return out._getvalue()

    return ret, codegen


def _is_byte_buffer(buf: Any) -> bool:
    return (
        isinstance(buf, types.Array)
        and buf.ndim == 1
        and buf.layout == "C"
        and buf.dtype == types.uint8
    )


@intrinsic
def _arena_1d_jit(typingctx: Any, buf: Any, offset: Any, n0: Any, dtype: Any) -> Any:
    """1-D C-contiguous `dtype` view of n0 items at byte `offset` of the 1-D uint8 array `buf`.

    No bounds, size or alignment checks and no copy: the caller (the Router, through the arena layout)
    guarantees that the items lie inside `buf` and that `offset` is a multiple of the item size.
    """
    if not (
        _is_byte_buffer(buf)
        and isinstance(offset, types.Integer)
        and isinstance(n0, types.Integer)
        and isinstance(dtype, types.NumberClass)
    ):
        return None
    ret, codegen = _arena_view_codegen(1, buf, dtype)
    return ret(buf, offset, n0, dtype), codegen


@intrinsic
def _arena_2d_jit(typingctx: Any, buf: Any, offset: Any, n0: Any, n1: Any, dtype: Any) -> Any:
    """2-D C-contiguous (n0, n1) `dtype` view at byte `offset` of `buf`; see `_arena_1d_jit`."""
    if not (
        _is_byte_buffer(buf)
        and isinstance(offset, types.Integer)
        and isinstance(n0, types.Integer)
        and isinstance(n1, types.Integer)
        and isinstance(dtype, types.NumberClass)
    ):
        return None
    ret, codegen = _arena_view_codegen(2, buf, dtype)
    return ret(buf, offset, n0, n1, dtype), codegen


def _arena_1d_py(buf: Any, offset: Any, n0: Any, dtype: Any) -> Any:
    return _arena_view_py(buf, offset, (n0,), dtype)


def _arena_2d_py(buf: Any, offset: Any, n0: Any, n1: Any, dtype: Any) -> Any:
    return _arena_view_py(buf, offset, (n0, n1), dtype)


# Under NUMBA_DISABLE_JIT the kernels run as Python, where an intrinsic cannot be called: the numpy
# twins build the very same views with `view` and `reshape`.
arena_1d: Any = _arena_1d_py if _config.DISABLE_JIT else _arena_1d_jit
arena_2d: Any = _arena_2d_py if _config.DISABLE_JIT else _arena_2d_jit
