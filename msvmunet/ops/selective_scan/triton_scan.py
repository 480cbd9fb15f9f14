"""Selective scan and the fused SS2D core on Triton kernels (``backend="triton"``).

Launchers, the autograd Function and the two public functions; the kernels are in
``triton_kernels.py``. State and accumulation are fp32 for fp32, bf16 and fp16 inputs; outputs are
fp32 (the SS2D core's in a 16-bit activation's dtype, as the official kernel's), gradients come back
in each input's dtype.

Backward: the forward writes the state at the start of every block of ``block_l`` steps
(B * K*D * N * L / block_l floats); the backward walks the blocks from the last, recomputes the
states inside a block from its checkpoint and runs the adjoint scan backwards. Storing all of h
instead would cost another (B, K*D, L) write and read per N, as much traffic as u itself.

Reductions: nothing is summed with atomics. dB, dC (over channels) and dA, dD, d_bias (over batch
and time) leave the kernel as per-program partial sums; the SS2D core sums its directions inside a
program (``cross_dirs`` of them, in a fixed order) into one of ``4 / cross_dirs`` output slots. The
custom ops return the partial sums and the slots as they are, and the autograd Function around them
adds them up in a fixed order, in traced Python: under ``torch.compile`` those sums fuse into the
neighbouring kernels (the slots' sum into the LayerNorm that reads y). Results are bitwise
reproducible.

Launch plan: the tile sizes, directions per program, chunks etc. (``_Launch``) are worked out in
Python from the shapes and ``tuning`` (no device query) and handed to the ops as a list of ints.
Output shapes depend on them (slots, partial sums), so a compiled graph records them with its
shapes and never meets kernels launched under another tuning.

On a machine without CUDA the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``,
set before this module is imported), on CPU tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .torch_chunked import ss2d_output, ss2d_projections
from .triton_kernels import _bwd_kernel, _fwd_kernel
from .triton_ss2d_kernels import (_cross_bwd_chunk_kernel, _cross_bwd_kernel, _cross_fwd_chunk_kernel,
                                  _cross_fwd_kernel)

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class Tuning:
    """Launch parameters; ``None`` picks the default for the shape and device.

    Set fields to tune, e.g. ``triton_scan.tuning = Tuning(block_l=256)``. ``block_l`` is shared by
    forward and backward (it is the checkpoint stride); a tile is block_d * next_pow2(N) rows by
    block_l steps. ``*_maxnreg``: register caps (0: none). ``cross_dirs``: directions
    per program of the SS2D core (4, 2 or 1; fewer means more programs and shorter chains, plus
    a torch sum of 4 / cross_dirs output slots). ``prefetch``: the tiled forward issues the loads
    of the next block before solving the current one (the per-thread forward always does).
    ``per_thread``: the SS2D core with N = 1 runs the one-channel-per-thread kernels
    (``triton_ss2d_kernels``; the default, ``False`` runs the tiled ones); ``chunks``: those kernels
    split each sequence into this many chunks run in parallel (a first pass per chunk, then each
    chunk from the folded state of the ones before it; one direction per program); ``bwd_chunks``:
    the backward's count, when it should differ from the forward's; ``stages``: those kernels' block
    loops are software-pipelined over this many stages (Triton's asynchronous copies of the next
    blocks' loads; 1: none).
    ``narrow_slots`` (default on; ``False``: fp32 slots): when the SS2D core sums several output
    slots (y, and du in the backward), they are kept in the input's dtype when that is 16-bit (as
    the official code keeps each direction's output), then summed in fp32: half the slot traffic,
    a rounding per direction.

    The fields are read when a scan is set up (in Python that torch.compile traces, guarding on
    them) and reach the kernels through the ops' ``plan`` argument: a compiled graph keeps the plan
    it was traced with, and changing ``tuning`` recompiles.
    """

    block_l: int | None = None
    fwd_block_d: int | None = None
    bwd_block_d: int | None = None
    fwd_warps: int | None = None
    bwd_warps: int | None = None
    fwd_maxnreg: int | None = None
    bwd_maxnreg: int | None = None
    cross_dirs: int | None = None
    prefetch: bool | None = None
    per_thread: bool | None = None
    chunks: int | None = None
    bwd_chunks: int | None = None
    stages: int | None = None
    narrow_slots: bool | None = None


tuning = Tuning()


@dataclass(frozen=True)
class _Launch:
    block_n: int
    block_l: int
    fwd_block_d: int
    fwd_warps: int
    bwd_block_d: int
    bwd_warps: int
    fwd_maxnreg: int | None
    bwd_maxnreg: int | None
    dirs: int
    prefetch: bool
    per_thread: bool  # the cross core with N = 1: one channel per thread (``_cross_*_kernel``)
    chunks: int = 1   # per_thread: parallel chunks of each sequence in the forward
    stages: int = 1   # per_thread: software-pipelining stages of the block loops
    narrow: bool = False  # the cross core's output slots in a 16-bit input's dtype (``Tuning.narrow_slots``)
    bwd_chunks: int = 1  # per_thread: the same in the backward

    def as_list(self) -> list[int]:
        """The plan as the ops take it (a register cap of None as 0)."""
        return [int(v or 0) for v in (self.block_n, self.block_l, self.fwd_block_d, self.fwd_warps, self.bwd_block_d,
                                      self.bwd_warps, self.fwd_maxnreg, self.bwd_maxnreg, self.dirs, self.prefetch,
                                      self.per_thread, self.chunks, self.stages, self.narrow, self.bwd_chunks)]

    @staticmethod
    def from_list(plan: list[int]) -> "_Launch":
        (block_n, block_l, fwd_d, fwd_warps, bwd_d, bwd_warps, fwd_cap, bwd_cap, dirs, prefetch, per_thread, chunks,
         stages, narrow, bwd_chunks) = plan
        return _Launch(block_n, block_l, fwd_d, fwd_warps, bwd_d, bwd_warps, fwd_cap or None, bwd_cap or None, dirs,
                       bool(prefetch), bool(per_thread), chunks, stages, bool(narrow), bwd_chunks)


# The launch plan is worked out in traced Python (see the module's docstring), without asking the
# device: programs are counted against a GPU of this many SMs (an H100 or H200).
_SMS = 132


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) (this module's own, like ``_pow2``: plain Python that torch.compile traces)."""
    return -(-a // b)


def _pow2(n: int) -> int:
    """The smallest power of two >= n."""
    p = 1
    while p < n:
        p *= 2
    return p


def _split_dirs(programs: int, target: int) -> int:
    """Directions per program: the four split over more programs only while they do not fill the GPU."""
    for dirs in (4, 2):
        if programs * 4 // dirs >= target:
            return dirs
    return 1


def _per_thread(state: int, cross: bool) -> bool:
    return cross and state == 1 and tuning.per_thread is not False


def block_steps(state: int, length: int, cross: bool) -> int:
    """The steps per block (the backward's checkpoint stride) for a scan of this shape."""
    if tuning.block_l:
        return tuning.block_l
    if _per_thread(state, cross):
        return min(4, _pow2(length))
    if _INTERPRET:  # the interpreter scans element by element in Python: keep tiles small
        return min(16, _pow2(length))
    return max(16, min(_pow2(length), 128))


def _launch_config(batch: int, state: int, length: int, group_dim: int, cross: bool) -> _Launch:
    """The launch plan of a scan of this shape under ``tuning`` (pure Python: torch.compile traces it)."""
    block_l = block_steps(state, length, cross)
    block_n = _pow2(state)
    dims = _pow2(group_dim)
    if _per_thread(state, cross):
        return _per_thread_config(batch, length, group_dim, block_l)
    if _INTERPRET:
        fwd_d = bwd_d = min(dims, 4)
        maxnreg, slots = None, 1
    else:
        # 128-step blocks, ~1024-value tiles (8 per thread with 4 warps). Channel-last (cross)
        # tiles keep >= 8 channels, so that each pixel's row is a full 32-byte sector. With N = 1
        # the backward wants ~170 registers; a cap of 168 lets 3 CTAs of 4 warps share an SM.
        fwd_d = bwd_d = min(dims, max(8 if cross else 1, 1024 // (block_l * block_n)))
        maxnreg = 168 if block_n == 1 else None
        slots = 3 * _SMS
    fwd_d = tuning.fwd_block_d or fwd_d
    bwd_d = tuning.bwd_block_d or bwd_d
    fwd_maxnreg = tuning.fwd_maxnreg or None
    if tuning.bwd_maxnreg is not None:
        maxnreg = tuning.bwd_maxnreg or None
    # the cross core: split the 4 directions over more programs only while they do not fill the GPU
    programs = batch * _cdiv(group_dim, max(fwd_d, bwd_d))
    dirs = tuning.cross_dirs or _split_dirs(programs, slots)

    def warps(block_d: int) -> int:
        return 1 if _INTERPRET else (4 if block_d * block_n * block_l <= 1024 else 8)

    return _Launch(block_n, block_l, fwd_d, tuning.fwd_warps or warps(fwd_d), bwd_d,
                   tuning.bwd_warps or warps(bwd_d), fwd_maxnreg, maxnreg, dirs if cross else 1,
                   True if tuning.prefetch is None else tuning.prefetch, False, narrow=tuning.narrow_slots is not False)


def _per_thread_config(batch: int, length: int, group_dim: int, block_l: int) -> _Launch:
    """The cross core with N = 1: 32 channels on the lanes of one warp, ``block_l`` (4) steps per
    thread and block, one direction per program and each sequence in chunks run in parallel: as many
    (a power of two, 1 to 16) as give ~48 one-warp programs per SM, e.g. 16, 8, 4 and 2 chunks at the
    model's four stage shapes at batch 32 (the fastest of the launch sweep there, on an H200;
    BENCHMARKS.md). With one chunk, the four directions are split over more programs until there are
    ~8 warps per SM."""
    block_d = min(_pow2(group_dim), 4 if _INTERPRET else 32)
    fwd_d, bwd_d = tuning.fwd_block_d or block_d, tuning.bwd_block_d or block_d
    n_blocks = _cdiv(length, block_l)
    programs = batch * _cdiv(group_dim, max(fwd_d, bwd_d))  # per direction and chunk
    rule = 1
    while rule < 16 and programs * 4 * rule * 2 <= 48 * _SMS:
        rule *= 2

    def chunk_count(chosen: int | None) -> int:
        chunks = min(n_blocks, chosen or tuning.chunks or rule)
        return _cdiv(n_blocks, _cdiv(n_blocks, chunks))  # no empty chunk

    chunks, bwd_chunks = chunk_count(None), chunk_count(tuning.bwd_chunks)
    if max(chunks, bwd_chunks) > 1:
        dirs = 1
    else:
        target = 1 if _INTERPRET else 8 * _SMS
        dirs = tuning.cross_dirs or _split_dirs(programs, target)
    return _Launch(1, block_l, fwd_d, tuning.fwd_warps or 1, bwd_d, tuning.bwd_warps or 1,
                   tuning.fwd_maxnreg or None, tuning.bwd_maxnreg or None, dirs, False, True, chunks,
                   tuning.stages or 1, tuning.narrow_slots is not False, bwd_chunks)


def _alloc(shape, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Every buffer a kernel writes comes from here (tests fill it with NaN to catch gaps)."""
    return torch.empty(shape, device=device, dtype=dtype)


def _check_device(t: Tensor) -> None:
    if not t.is_cuda and not _INTERPRET:
        raise RuntimeError(
            "the triton scan backend needs CUDA tensors; on CPU use backend='torch' (or set "
            "TRITON_INTERPRET=1 before importing msvmunet to run the kernels in Triton's interpreter)"
        )


def _grouped_seq(t: Tensor, group_dim: int) -> tuple[int, int, int, int]:
    """(B, K*D, L) -> strides of (batch, group, channel, step)."""
    return t.stride(0), group_dim * t.stride(1), t.stride(1), t.stride(2)


def _grouped_state(t: Tensor) -> tuple[int, int, int, int]:
    """(B, K, N, L) -> strides of (batch, group, state, step)."""
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _pixel_grouped(t: Tensor) -> tuple[int, int, int, int]:
    """(B, L, K, C) channel-last per direction -> strides of (batch, group, channel, step)."""
    return t.stride(0), t.stride(2), t.stride(3), t.stride(1)


def _pixel_shared(t: Tensor) -> tuple[int, int, int, int]:
    """(B, L, D), the same for every direction -> strides of (batch, group, channel, step)."""
    return t.stride(0), 0, t.stride(2), t.stride(1)


@dataclass(frozen=True)
class _Problem:
    """Shapes and flags of one scan, and the stride conventions of its tensors."""

    batch: int
    groups: int
    group_dim: int
    state: int
    length: int
    height: int
    width: int
    cross: bool
    softplus: bool
    launch: _Launch

    @property
    def slots(self) -> int:
        """Output slots of the cross core (summed afterwards): the direction groups."""
        return 4 // self.launch.dirs if self.cross else 1

    @property
    def stat_rows(self) -> int:
        """Partial sums of dA, dD, d_bias: one row per batch element (and chunk, per-thread kernels)."""
        return self.batch * (self.launch.bwd_chunks if self.launch.per_thread else 1)

    def grid(self, block_d: int) -> tuple[int, int]:
        return _cdiv(self.group_dim, block_d), self.batch * (self.slots if self.cross else self.groups)

    def output_spec(self, dtype: torch.dtype) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of y, or of du of the cross core, for inputs of ``dtype``: (slots, B, L, D)
        cross, fp32 or a 16-bit input's dtype (``Tuning.narrow_slots``); (B, K*D, L) fp32 plain."""
        if self.cross:
            narrow = self.launch.narrow and self.slots > 1 and dtype in (torch.bfloat16, torch.float16)
            return (self.slots, self.batch, self.length, self.group_dim), dtype if narrow else torch.float32
        return (self.batch, self.groups * self.group_dim, self.length), torch.float32

    def output(self, like: Tensor) -> tuple[Tensor, int]:
        """A buffer for y (or the cross core's du) and its slot stride."""
        shape, dtype = self.output_spec(like.dtype)
        buf = _alloc(shape, like.device, dtype)
        return buf, buf.stride(0) if self.cross else 0

    @property
    def blocks(self) -> int:
        """Blocks of ``block_l`` steps per sequence."""
        return _cdiv(self.length, self.launch.block_l)

    def carry_shape(self) -> tuple[int, ...]:
        """The states at the start of every block, (B, K, blocks, N, D)."""
        return self.batch, self.groups, self.blocks, self.state, self.group_dim

    def seq_strides(self, t: Tensor) -> tuple[int, int, int, int]:
        """u, delta, y, du, ddelta: (B, K*D, L) plain, (B, L, K, D) / (B, L, D) cross."""
        if not self.cross:
            return _grouped_seq(t, self.group_dim)
        return _pixel_grouped(t) if t.dim() == 4 else _pixel_shared(t)

    def state_strides(self, t: Tensor) -> tuple[int, int, int, int]:
        """B, C: (B, K, N, L) plain, (B, L, K, N) cross."""
        return _pixel_grouped(t) if self.cross else _grouped_state(t)

    def partial_shape(self) -> tuple[int, ...]:
        """dB or dC per channel block of the backward: (blocks, B, L, K, N) cross, (blocks, B, K, N, L) plain."""
        blocks = _cdiv(self.group_dim, self.launch.bwd_block_d)
        if self.cross:
            return blocks, self.batch, self.length, self.groups, self.state
        return blocks, self.batch, self.groups, self.state, self.length

    def partial(self, device: torch.device) -> tuple[Tensor, tuple[int, ...]]:
        """A buffer for dB or dC per channel block, and its (block, batch, group, state, step) strides."""
        buf = _alloc(self.partial_shape(), device)
        if self.cross:
            return buf, (buf.stride(0), buf.stride(1), buf.stride(3), buf.stride(4), buf.stride(2))
        return buf, tuple(buf.stride())


def _maxnreg(cap: int | None) -> dict:
    return {"maxnreg": cap} if cap and not _INTERPRET else {}


def _forward(pb: _Problem, u, delta, A, B, C, D, bias) -> tuple[Tensor, Tensor]:
    lc = pb.launch
    device = u.device
    y, slot_stride = pb.output(u)
    carry = _alloc(pb.carry_shape(), device)
    if lc.per_thread:
        per_chunk, decay, end = _chunking(pb, lc.chunks, device)
        strides = (u.stride(0), u.stride(1), u.stride(2), *_cross_dir_strides(delta), *_cross_dir_strides(B)[:3])
        grid = (*pb.grid(lc.fwd_block_d), lc.chunks)
        if lc.chunks > 1:
            _cross_fwd_chunk_kernel[grid](
                u, delta, A, B, bias if bias is not None else A, decay, end,
                pb.group_dim, pb.length, pb.height, pb.width, per_chunk, lc.chunks, *strides,
                SOFTPLUS=pb.softplus, HAS_BIAS=bias is not None, BLOCK_D=lc.fwd_block_d, BLOCK_L=lc.block_l,
                STAGES=lc.stages, num_warps=lc.fwd_warps,
            )
        _cross_fwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else A, bias if bias is not None else A, y, carry, decay, end,
            pb.group_dim, pb.length, pb.height, pb.width, per_chunk, lc.chunks,
            *strides, *_cross_dir_strides(C)[:3], slot_stride, *y.stride()[1:],
            DIRS=lc.dirs, SOFTPLUS=pb.softplus, HAS_D=D is not None, HAS_BIAS=bias is not None,
            BLOCK_D=lc.fwd_block_d, BLOCK_L=lc.block_l, STAGES=lc.stages, num_warps=lc.fwd_warps,
            **_maxnreg(lc.fwd_maxnreg),
        )
        return y, carry
    _fwd_kernel[pb.grid(lc.fwd_block_d)](
        u, delta, A, B, C, D if D is not None else A, bias if bias is not None else A, y, carry,
        pb.groups, pb.group_dim, pb.length, pb.height, pb.width,
        *pb.seq_strides(u), *pb.seq_strides(delta), *pb.state_strides(B), *pb.state_strides(C),
        slot_stride, *pb.seq_strides(y[0] if pb.cross else y),
        N=pb.state, CROSS=pb.cross, DIRS=lc.dirs, SOFTPLUS=pb.softplus, HAS_D=D is not None,
        HAS_BIAS=bias is not None, PREFETCH=lc.prefetch, BLOCK_D=lc.fwd_block_d, BLOCK_N=lc.block_n,
        BLOCK_L=lc.block_l, num_warps=lc.fwd_warps, **_maxnreg(lc.fwd_maxnreg),
    )
    return y, carry


def _backward(pb: _Problem, dy, u, delta, A, B, C, D, bias, carry):
    """du (the cross core's per slot), ddelta; partial sums in fp32 of dB, dC (per channel block),
    dA, dD, d_bias (per batch element and chunk)."""
    lc = pb.launch
    device = u.device
    # du: the cross core sums the directions into slots (as y's); ddelta goes out as is
    du, slot_stride = pb.output(u) if pb.cross else (_alloc(u.shape, device, u.dtype), 0)
    ddelta = _alloc(delta.shape, device, delta.dtype)
    dB, part_strides = pb.partial(device)
    dC, _ = pb.partial(device)
    stats = (pb.stat_rows, pb.groups * pb.group_dim)
    dA = _alloc(stats + (pb.state,), device)
    dD = _alloc(stats, device)
    dbias = _alloc(stats, device)
    if lc.per_thread:
        per_chunk, decay, end = _chunking(pb, lc.bwd_chunks, device)
        grid = (*pb.grid(lc.bwd_block_d), lc.bwd_chunks)
        dir_strides = (*_cross_dir_strides(delta), *_cross_dir_strides(B)[:3], *_cross_dir_strides(C)[:3])
        dy_strides = (dy.stride(0), dy.stride(1), dy.stride(2))
        if lc.bwd_chunks > 1:
            _cross_bwd_chunk_kernel[grid](
                delta, A, C, bias if bias is not None else A, dy, decay, end,
                pb.group_dim, pb.length, pb.height, pb.width, per_chunk, lc.bwd_chunks,
                *_cross_dir_strides(delta), *_cross_dir_strides(C)[:3], *dy_strides,
                SOFTPLUS=pb.softplus, HAS_BIAS=bias is not None, BLOCK_D=lc.bwd_block_d, BLOCK_L=lc.block_l,
                STAGES=lc.stages, num_warps=lc.bwd_warps,
            )
        _cross_bwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else A, bias if bias is not None else A, carry, dy,
            du, ddelta, dB, dC, dA, dD, dbias, decay, end,
            pb.group_dim, pb.length, pb.height, pb.width, per_chunk, lc.bwd_chunks,
            u.stride(0), u.stride(1), u.stride(2), *dir_strides, *dy_strides, slot_stride, *du.stride()[1:],
            *_cross_dir_strides(ddelta), dB.stride(0), dB.stride(1), dB.stride(2), dB.stride(3),
            DIRS=lc.dirs, SOFTPLUS=pb.softplus, HAS_D=D is not None, HAS_BIAS=bias is not None,
            BLOCK_D=lc.bwd_block_d, BLOCK_L=lc.block_l, STAGES=lc.stages, num_warps=lc.bwd_warps,
            **_maxnreg(lc.bwd_maxnreg),
        )
        return du, ddelta, dA, dB, dC, dD, dbias
    _bwd_kernel[pb.grid(lc.bwd_block_d)](
        u, delta, A, B, C, D if D is not None else A, bias if bias is not None else A, carry, dy,
        du, ddelta, dB, dC, dA, dD, dbias,
        pb.groups, pb.group_dim, pb.length, pb.height, pb.width,
        *pb.seq_strides(u), *pb.seq_strides(delta), *pb.state_strides(B), *pb.state_strides(C),
        *pb.seq_strides(dy), slot_stride, *pb.seq_strides(du[0] if pb.cross else du), *pb.seq_strides(ddelta),
        *part_strides,
        N=pb.state, CROSS=pb.cross, DIRS=lc.dirs, SOFTPLUS=pb.softplus, HAS_D=D is not None,
        HAS_BIAS=bias is not None, BLOCK_D=lc.bwd_block_d, BLOCK_N=lc.block_n, BLOCK_L=lc.block_l,
        num_warps=lc.bwd_warps,
        **_maxnreg(lc.bwd_maxnreg),
    )
    return du, ddelta, dA, dB, dC, dD, dbias


def _chunking(pb: _Problem, chunks: int, device: torch.device) -> tuple[int, Tensor, Tensor]:
    """The per-thread kernels' blocks per chunk (of ``chunks``: the forward's or the backward's), and
    buffers for every chunk's (decay, end), (B, 4, chunks, D) each (a placeholder when there is one chunk)."""
    shape = (pb.batch, pb.groups, chunks, pb.group_dim) if chunks > 1 else (1,)
    return _cdiv(pb.blocks, chunks), _alloc(shape, device), _alloc(shape, device)


def _cross_dir_strides(t: Tensor) -> tuple[int, int, int, int]:
    """(B, L, 4, D or N) per direction -> strides of (batch, step, direction, channel)."""
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _sum_parts(t: Tensor) -> Tensor:
    """The sum over the first dimension (partial sums, output slots) in fp32, in a fixed order."""
    return t[0].float() if t.shape[0] == 1 else t.sum(0, dtype=torch.float32)


def _problem(u: Tensor, A: Tensor, B: Tensor, cross: bool, height: int, width: int, softplus: bool,
             plan: list[int]) -> _Problem:
    """The shapes of a plain scan (u: (B, K*D, L)) or a cross core (u: (B, L, D), four directions)."""
    state = A.shape[1]
    if cross:
        batch, length, dim = u.shape
        groups = 4
        if length >= 1 << 22:  # the kernels' pixel index goes through fp32
            raise ValueError(f"the fused SS2D core takes maps of fewer than 2**22 pixels, got {height}x{width}")
    else:
        batch, channels, length = u.shape
        groups = B.shape[1]
        dim = channels // groups
    launch = _Launch.from_list(plan)
    return _Problem(batch, groups, dim, state, length, height, width, cross, softplus, launch)


# The kernels run inside a pair of torch.library custom ops (forward, backward), so that
# torch.compile treats each as one opaque operation and CUDA graphs can capture them; an autograd
# Function joins them and adds up what they return per slot and per program (traced by torch.compile).


@torch.library.custom_op("msvmunet::scan_fwd", mutates_args=())
def scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], bias: Optional[Tensor],
             cross: bool, height: int, width: int, softplus: bool, plan: list[int]) -> tuple[Tensor, Tensor]:
    """y (the cross core's per output slot) and the carried states at the start of every block of
    ``plan``'s steps (for the backward). ``plan``: ``_Launch.as_list()``."""
    return _forward(_problem(u, A, B, cross, height, width, softplus, plan), u, delta, A, B, C, D, bias)


@scan_fwd.register_fake
def _(u, delta, A, B, C, D, bias, cross, height, width, softplus, plan):
    pb = _problem(u, A, B, cross, height, width, softplus, plan)
    shape, dtype = pb.output_spec(u.dtype)
    return u.new_empty(shape, dtype=dtype), u.new_empty(pb.carry_shape(), dtype=torch.float32)


@torch.library.custom_op("msvmunet::scan_bwd", mutates_args=())
def scan_bwd(dy: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             bias: Optional[Tensor], carry: Tensor, cross: bool, height: int, width: int,
             softplus: bool, plan: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """du (the cross core's per output slot, in y's slot dtype; plain in u's dtype), ddelta (delta's
    dtype), and fp32 partial sums: dA (rows, K*D, N), dB, dC (per channel block), dD, d_bias (rows, K*D)."""
    pb = _problem(u, A, B, cross, height, width, softplus, plan)
    return _backward(pb, dy, u, delta, A, B, C, D, bias, carry)


@scan_bwd.register_fake
def _(dy, u, delta, A, B, C, D, bias, carry, cross, height, width, softplus, plan):
    f32 = torch.float32
    pb = _problem(u, A, B, cross, height, width, softplus, plan)
    stats = (pb.stat_rows, pb.groups * pb.group_dim)
    du_shape, du_dtype = pb.output_spec(u.dtype) if cross else (u.shape, u.dtype)
    return (u.new_empty(du_shape, dtype=du_dtype), delta.new_empty(delta.shape),
            A.new_empty(stats + (pb.state,), dtype=f32), B.new_empty(pb.partial_shape(), dtype=f32),
            C.new_empty(pb.partial_shape(), dtype=f32), A.new_empty(stats, dtype=f32), A.new_empty(stats, dtype=f32))


class _Scan(torch.autograd.Function):
    """y of the scan (the cross core's slots summed in fp32, then ``ss2d_output``) with its backward;
    under torch.compile the sums fuse into the kernels around (the LayerNorm reading y, the casts of
    the gradients)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, bias, cross: bool, height: int, width: int, softplus: bool,
                plan: list[int]):
        y, carry = scan_fwd(u, delta, A, B, C, D, bias, cross, height, width, softplus, plan)
        ctx.save_for_backward(u, delta, A, B, C, D, bias, carry)
        ctx.meta = (cross, height, width, softplus, plan)
        return ss2d_output(_sum_parts(y), u) if cross else y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D, bias, carry = ctx.saved_tensors
        cross = ctx.meta[0]
        du, ddelta, dA, dB, dC, dD, dbias = scan_bwd(dy, u, delta, A, B, C, D, bias, carry, *ctx.meta)
        return (_sum_parts(du).to(u.dtype) if cross else du, ddelta, _sum_parts(dA).to(A.dtype),
                _sum_parts(dB).to(B.dtype), _sum_parts(dC).to(C.dtype),
                None if D is None else _sum_parts(dD).to(D.dtype),
                None if bias is None else _sum_parts(dbias).to(bias.dtype),
                None, None, None, None, None)


def launch_plan(batch: int, state: int, length: int, group_dim: int, cross: bool) -> list[int]:
    """The ops' ``plan`` argument for a scan of this shape under the current ``tuning``."""
    return _launch_config(batch, state, length, group_dim, cross).as_list()


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """u, delta: (B, K*D, L); A: (K*D, N); B, C: (B, K, N, L); D, delta_bias: (K*D,) -> y (B, K*D, L) fp32.

    Any strides; contiguous steps (stride 1 along L) give coalesced loads.
    """
    _check_device(u)
    batch, channels, length = u.shape
    plan = launch_plan(batch, A.shape[1], length, channels // B.shape[1], False)
    return _Scan.apply(u, delta, A.contiguous(), B, C, _contiguous(D), _contiguous(delta_bias), False, 1, 1,
                       bool(delta_softplus), plan)


def ss2d_scan_triton(
    x: Tensor,
    x_proj_weight: Tensor,
    dt_projs_weight: Tensor,
    dt_projs_bias: Tensor,
    A_logs: Tensor,
    Ds: Tensor,
) -> Tensor:
    """The fused SS2D core. x: (B, H, W, D) channel-last -> y: (B, H, W, D) fp32 (x's dtype if that
    is 16-bit).

    x_proj_weight: (4, R + 2N, D); dt_projs_weight: (4, D, R); dt_projs_bias: (4, D);
    A_logs: (4*D, N); Ds: (4*D,). The projections are per pixel, so they run once in pixel order
    for the four directions (torch matmuls); the scan kernel reads every direction's order itself
    and writes the sum of the four, with no reordered copies in or out.
    """
    _check_device(x)
    batch, height, width, dim = x.shape
    if x_proj_weight.shape[0] != 4:
        raise ValueError(f"x_proj_weight must hold 4 directions, got shape {tuple(x_proj_weight.shape)}")
    flat, dts, Bs, Cs = ss2d_projections(x.contiguous(), x_proj_weight, dt_projs_weight)
    if dts.stride(-1) != 1:
        dts = dts.contiguous()
    A = -torch.exp(A_logs.float())
    plan = launch_plan(batch, A.shape[1], height * width, dim, True)
    y = _Scan.apply(flat, dts, A, Bs, Cs, Ds.contiguous(), dt_projs_bias.reshape(-1).contiguous(), True, height, width,
                    True, plan)
    return y.view(batch, height, width, dim)


__all__ = ["Tuning", "launch_plan", "selective_scan_triton", "ss2d_scan_triton", "tuning"]
