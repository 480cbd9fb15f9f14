"""Triton kernels of the SS2D core with one state (N = 1, the paper's setting), one channel per thread.

The default for N = 1 (``Tuning(per_thread=False)`` runs the tiled kernels of ``triton_kernels``
instead). Same conventions as there: a channel-last map (B, L = H*W, D) read in the four scan
orders, the states at every block's start kept in ``carry`` for the backward. ``STAGES`` > 1 lets
Triton pipeline the loads of the block loops (asynchronous copies of the next blocks' tiles).

Tiles are (BLOCK_L steps, BLOCK_D channels) with BLOCK_D = 32 channels on the 32 lanes of one warp
and all BLOCK_L steps of a channel in its thread's registers: the channel strides are not
specialised (``do_not_specialize``), so the compiler does not vectorise along the channels and
keeps the steps in-thread. The scans along the steps are then sequential in registers (no
shuffles, no shared memory, no barriers); only dB and dC (sums over channels) cross lanes. With 32
channels a thread reads and writes only its own channel; narrower tiles spread steps over lanes, so
the directions of a slot are separated by a barrier and read back past L1.

The forward kernels issue the next block's loads before solving the current block (registers
double-buffered; the loop is bound by one memory round trip per block). The backward kernels load
each block when they reach it: the same double buffering made them slower.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_kernels import _combine, _delta, _load_params, _pixel, _softplus_grad


@triton.jit
def _cross_tile(t, k, length, height, width, offs_d, dim):
    """Pixels (BLOCK_L,) of steps t of direction k, and the (BLOCK_L, BLOCK_D) mask."""
    p = _pixel(t, k, length, height, width, True)
    return p, (t < length)[:, None] & (offs_d < dim)[None, :]


@triton.jit
def _cross_raw(u_ptr, dt_ptr, b_ptr, c_ptr, batch, k, p, offs_d, mask,
               su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sc_b, sc_l, sc_k):
    """u, delta (before the bias), B and C of one block as stored, (BLOCK_L, BLOCK_D)."""
    pix = p[:, None]
    zero_d = (offs_d * 0)[None, :]  # B and C: one value per step, read by every lane (broadcast)
    u = tl.load(u_ptr + batch * su_b + pix * su_l + offs_d[None, :] * su_d, mask=mask, other=0.0)
    dt = tl.load(dt_ptr + batch * sdt_b + pix * sdt_l + k * sdt_k + offs_d[None, :] * sdt_d, mask=mask, other=0.0)
    bv = tl.load(b_ptr + batch * sb_b + pix * sb_l + k * sb_k + zero_d, mask=mask, other=0.0)
    cv = tl.load(c_ptr + batch * sc_b + pix * sc_l + k * sc_k + zero_d, mask=mask, other=0.0)
    return u, dt, bv, cv


@triton.jit
def _cross_math(u, dt, bv, cv, mask, bias, A, SOFTPLUS: tl.constexpr):
    """From a block's loads: u, delta + bias, delta', B, C, the decays a and the drive x, (BLOCK_L, BLOCK_D) fp32."""
    u = u.to(tl.float32)
    z = dt.to(tl.float32) + bias[None, :]
    bv = bv.to(tl.float32)
    cv = cv.to(tl.float32)
    delta = _delta(z, mask, SOFTPLUS)
    a = tl.exp(delta * A[None, :])
    return u, z, delta, bv, cv, a, delta * u * bv


@triton.jit
def _cross_load(u_ptr, dt_ptr, b_ptr, c_ptr, batch, k, p, offs_d, mask, bias, A,
                su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sc_b, sc_l, sc_k,
                SOFTPLUS: tl.constexpr):
    """``_cross_math`` of ``_cross_raw``: one block loaded and prepared."""
    u, dt, bv, cv = _cross_raw(u_ptr, dt_ptr, b_ptr, c_ptr, batch, k, p, offs_d, mask,
                               su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sc_b, sc_l, sc_k)
    return _cross_math(u, dt, bv, cv, mask, bias, A, SOFTPLUS)


@triton.jit
def _last_row(v, offs_l, BLOCK_L: tl.constexpr):
    return tl.sum(tl.where(offs_l[:, None] == BLOCK_L - 1, v, 0.0), axis=0)


@triton.jit
def _first_row(v, offs_l):
    return tl.sum(tl.where(offs_l[:, None] == 0, v, 0.0), axis=0)


@triton.jit
def _program(dim, DIRS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's batch element, slot of DIRS directions (the direction when DIRS = 1), chunk,
    channel offsets and mask, step offsets."""
    pid = tl.program_id(1)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    return ((pid // (4 // DIRS)).to(tl.int64), pid % (4 // DIRS), tl.program_id(2), offs_d, offs_d < dim,
            tl.arange(0, BLOCK_L))


@triton.jit
def _fold_chunks(decay_ptr, end_ptr, at, dim, mask_d, lo, hi, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr):
    """The state entering a chunk: the first passes' (decay, end) of chunks lo .. hi - 1 folded from a
    zero state, s = decay_c * s + end_c, in step order (REVERSE: from chunk hi - 1 down, for the backward)."""
    s = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j in range(0, hi - lo):
        c = hi - 1 - j if REVERSE else lo + j
        s = tl.load(decay_ptr + at + c * dim, mask=mask_d, other=1.0) * s + tl.load(end_ptr + at + c * dim,
                                                                                   mask=mask_d, other=0.0)
    return s


@triton.jit(do_not_specialize=["su_d", "sdt_d"])
def _cross_fwd_chunk_kernel(
    u_ptr, dt_ptr, A_ptr, b_ptr, bias_ptr, decay_ptr, end_ptr,
    dim, length, height, width, blocks_per_chunk, n_chunks,
    su_b, su_l, su_d,
    sdt_b, sdt_l, sdt_k, sdt_d,
    sb_b, sb_l, sb_k,
    SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    STAGES: tl.constexpr,
):
    """First pass of a chunked forward: per chunk of steps (program axis 2), the product of its decays
    and its end state from a zero start, (B, 4, n_chunks, D) each. Direction k = program 1 % 4."""
    batch, k, chunk, offs_d, mask_d, offs_l = _program(dim, 1, BLOCK_D, BLOCK_L)
    A, no_skip, bias = _load_params(A_ptr, A_ptr, bias_ptr, k, dim, offs_d, mask_d, offs_d, 0, mask_d, 1, False,
                                    HAS_BIAS)
    h = tl.zeros([BLOCK_D], dtype=tl.float32)
    decay = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
    first = chunk * blocks_per_chunk
    n_blocks = tl.cdiv(length, BLOCK_L)
    last = tl.minimum(first + blocks_per_chunk, n_blocks)
    # the next block's loads are issued before this block is solved (registers double-buffered)
    p, mask = _cross_tile(first * BLOCK_L + offs_l, k, length, height, width, offs_d, dim)
    nxt = _cross_raw(u_ptr, dt_ptr, b_ptr, b_ptr, batch, k, p, offs_d, mask,
                     su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sb_b, sb_l, sb_k)
    for i in tl.range(first, last, num_stages=STAGES):
        p, mask = _cross_tile(i * BLOCK_L + offs_l, k, length, height, width, offs_d, dim)
        u, dt, bv, _ = nxt
        p_n, mask_n = _cross_tile(tl.minimum(i + 1, n_blocks - 1) * BLOCK_L + offs_l, k, length, height, width,
                                  offs_d, dim)
        nxt = _cross_raw(u_ptr, dt_ptr, b_ptr, b_ptr, batch, k, p_n, offs_d, mask_n,
                         su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sb_b, sb_l, sb_k)
        tiles = _cross_math(u, dt, bv, bv, mask, bias, A, SOFTPLUS)
        a, x = tiles[5], tiles[6]
        a_cum, hs = tl.associative_scan((a, x), axis=0, combine_fn=_combine)
        h = _last_row(hs + a_cum * h[None, :], offs_l, BLOCK_L)
        decay = decay * _last_row(a_cum, offs_l, BLOCK_L)
    at = ((batch * 4 + k) * n_chunks + chunk) * dim + offs_d
    tl.store(decay_ptr + at, decay, mask=mask_d)
    tl.store(end_ptr + at, h, mask=mask_d)


@triton.jit(do_not_specialize=["su_d", "sdt_d", "sy_d"])
def _cross_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, b_ptr, c_ptr, dskip_ptr, bias_ptr, y_ptr, carry_ptr, decay_ptr, end_ptr,
    dim, length, height, width, blocks_per_chunk, n_chunks,
    su_b, su_l, su_d,
    sdt_b, sdt_l, sdt_k, sdt_d,
    sb_b, sb_l, sb_k,
    sc_b, sc_l, sc_k,
    sy_slot, sy_b, sy_l, sy_d,
    DIRS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, STAGES: tl.constexpr,
):
    """y (summed over this program's DIRS directions into its slot) and the block checkpoints
    carry (B, 4, n_blocks, 1, D). Chunked (n_chunks > 1, DIRS = 1): program axis 2 is the chunk; its
    start state folds the first pass's (decay, end state) of the chunks before it."""
    batch, slot, chunk, offs_d, mask_d, offs_l = _program(dim, DIRS, BLOCK_D, BLOCK_L)
    n_blocks = tl.cdiv(length, BLOCK_L)
    for k in range(slot * DIRS, slot * DIRS + DIRS):
        A, dskip, bias = _load_params(A_ptr, dskip_ptr, bias_ptr, k, dim, offs_d, mask_d, offs_d, 0, mask_d,
                                      1, HAS_D, HAS_BIAS)
        carry = carry_ptr + ((batch * 4 + k) * n_blocks) * dim + offs_d
        h = _fold_chunks(decay_ptr, end_ptr, ((batch * 4 + k) * n_chunks) * dim + offs_d, dim, mask_d, 0, chunk,
                         False, BLOCK_D)
        first = chunk * blocks_per_chunk
        p, mask = _cross_tile(first * BLOCK_L + offs_l, k, length, height, width, offs_d, dim)
        nxt = _cross_raw(u_ptr, dt_ptr, b_ptr, c_ptr, batch, k, p, offs_d, mask,
                         su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sc_b, sc_l, sc_k)
        for i in tl.range(first, tl.minimum(first + blocks_per_chunk, n_blocks), num_stages=STAGES):
            tl.store(carry + i * dim, h, mask=mask_d)
            p, mask = _cross_tile(i * BLOCK_L + offs_l, k, length, height, width, offs_d, dim)
            u, dt, bv, cv = nxt
            p_n, mask_n = _cross_tile(tl.minimum(i + 1, n_blocks - 1) * BLOCK_L + offs_l, k, length, height, width,
                                      offs_d, dim)
            nxt = _cross_raw(u_ptr, dt_ptr, b_ptr, c_ptr, batch, k, p_n, offs_d, mask_n,
                             su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k, sc_b, sc_l, sc_k)
            u, _, _, _, cv, a, x = _cross_math(u, dt, bv, cv, mask, bias, A, SOFTPLUS)
            a_cum, hs = tl.associative_scan((a, x), axis=0, combine_fn=_combine)
            hs = hs + a_cum * h[None, :]
            y = hs * cv + dskip[None, :] * u
            y_ptrs = y_ptr + slot * sy_slot + batch * sy_b + p[:, None] * sy_l + offs_d[None, :] * sy_d
            if k > slot * DIRS:  # the slot's previous directions wrote these values
                y += tl.load(y_ptrs, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(y_ptrs, y, mask=mask)
            h = _last_row(hs, offs_l, BLOCK_L)
        if DIRS > 1:  # with fewer than 32 channels a pixel's lanes differ between directions
            tl.debug_barrier()


@triton.jit
def _cross_next_decay(dt_ptr, batch, k, t, length, height, width, offs_d, dim, bias, A,
                      sdt_b, sdt_l, sdt_k, sdt_d, SOFTPLUS: tl.constexpr):
    """a_{t+1} (BLOCK_L, BLOCK_D), 1 past the end."""
    p_next, mask_next = _cross_tile(t + 1, k, length, height, width, offs_d, dim)
    z_next = tl.load(dt_ptr + batch * sdt_b + p_next[:, None] * sdt_l + k * sdt_k + offs_d[None, :] * sdt_d,
                     mask=mask_next, other=0.0).to(tl.float32) + bias[None, :]
    return tl.exp(_delta(z_next, mask_next, SOFTPLUS) * A[None, :])


@triton.jit
def _cross_dy(dy_ptr, batch, p, offs_d, mask, sdy_b, sdy_l, sdy_d):
    """dy of one block at pixels p, (BLOCK_L, BLOCK_D) fp32."""
    return tl.load(dy_ptr + batch * sdy_b + p[:, None] * sdy_l + offs_d[None, :] * sdy_d, mask=mask,
                   other=0.0).to(tl.float32)


@triton.jit(do_not_specialize=["sdt_d", "sdy_d"])
def _cross_bwd_chunk_kernel(
    dt_ptr, A_ptr, c_ptr, bias_ptr, dy_ptr, decay_ptr, end_ptr,
    dim, length, height, width, blocks_per_chunk, n_chunks,
    sdt_b, sdt_l, sdt_k, sdt_d,
    sc_b, sc_l, sc_k,
    sdy_b, sdy_l, sdy_d,
    SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    STAGES: tl.constexpr,
):
    """First pass of a chunked backward: per chunk, the product of the a_{t+1} over its steps and g at
    its first step from a zero g after it, (B, 4, n_chunks, D) each."""
    batch, k, chunk, offs_d, mask_d, offs_l = _program(dim, 1, BLOCK_D, BLOCK_L)
    A, no_skip, bias = _load_params(A_ptr, A_ptr, bias_ptr, k, dim, offs_d, mask_d, offs_d, 0, mask_d, 1, False,
                                    HAS_BIAS)
    g = tl.zeros([BLOCK_D], dtype=tl.float32)
    decay = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
    last = tl.minimum((chunk + 1) * blocks_per_chunk, tl.cdiv(length, BLOCK_L)) - 1
    for j in tl.range(0, last + 1 - chunk * blocks_per_chunk, num_stages=STAGES):
        t = (last - j) * BLOCK_L + offs_l
        p, mask = _cross_tile(t, k, length, height, width, offs_d, dim)
        a_next = _cross_next_decay(dt_ptr, batch, k, t, length, height, width, offs_d, dim, bias, A,
                                   sdt_b, sdt_l, sdt_k, sdt_d, SOFTPLUS)
        cv = tl.load(c_ptr + batch * sc_b + p[:, None] * sc_l + k * sc_k + (offs_d * 0)[None, :], mask=mask,
                     other=0.0).to(tl.float32)
        dy = _cross_dy(dy_ptr, batch, p, offs_d, mask, sdy_b, sdy_l, sdy_d)
        g_cum, gs = tl.associative_scan((a_next, cv * dy), axis=0, combine_fn=_combine, reverse=True)
        g = _first_row(gs + g_cum * g[None, :], offs_l)
        decay = decay * _first_row(g_cum, offs_l)
    at = ((batch * 4 + k) * n_chunks + chunk) * dim + offs_d
    tl.store(decay_ptr + at, decay, mask=mask_d)
    tl.store(end_ptr + at, g, mask=mask_d)


@triton.jit(do_not_specialize=["su_d", "sdt_d", "sdy_d", "sdu_d", "sddt_d"])
def _cross_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, b_ptr, c_ptr, dskip_ptr, bias_ptr, carry_ptr, dy_ptr,
    du_ptr, ddt_ptr, db_ptr, dc_ptr, dA_ptr, dskip_grad_ptr, dbias_ptr, decay_ptr, end_ptr,
    dim, length, height, width, blocks_per_chunk, n_chunks,
    su_b, su_l, su_d,
    sdt_b, sdt_l, sdt_k, sdt_d,
    sb_b, sb_l, sb_k,
    sc_b, sc_l, sc_k,
    sdy_b, sdy_l, sdy_d,
    sdu_slot, sdu_b, sdu_l, sdu_d,
    sddt_b, sddt_l, sddt_k, sddt_d,
    sp_blk, sp_b, sp_l, sp_k,
    DIRS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, STAGES: tl.constexpr,
):
    """Gradients, blocks from the last to the first; the same formulas as ``_bwd_kernel`` (N = 1).

    du (summed over the slot's directions, fp32), ddelta; dB, dC per channel block (partial sums
    (n_dblocks, B, L, 4)); dA, dD, d_bias per (chunk, batch, channel). Chunked (n_chunks > 1,
    DIRS = 1): program axis 2 is the chunk; g after it folds the first pass of the chunks after it."""
    batch, slot, chunk, offs_d, mask_d, offs_l = _program(dim, DIRS, BLOCK_D, BLOCK_L)
    n_blocks = tl.cdiv(length, BLOCK_L)
    part = tl.program_id(0).to(tl.int64) * sp_blk + batch * sp_b
    last = tl.minimum((chunk + 1) * blocks_per_chunk, n_blocks) - 1
    for k in range(slot * DIRS, slot * DIRS + DIRS):
        A, dskip, bias = _load_params(A_ptr, dskip_ptr, bias_ptr, k, dim, offs_d, mask_d, offs_d, 0, mask_d,
                                      1, HAS_D, HAS_BIAS)
        carry = carry_ptr + ((batch * 4 + k) * n_blocks) * dim + offs_d
        # g at the first step of the next block
        g = _fold_chunks(decay_ptr, end_ptr, ((batch * 4 + k) * n_chunks) * dim + offs_d, dim, mask_d, chunk + 1,
                         n_chunks, True, BLOCK_D)
        dA_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        dskip_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j in tl.range(0, last + 1 - chunk * blocks_per_chunk, num_stages=STAGES):
            i = last - j
            t = i * BLOCK_L + offs_l
            p, mask = _cross_tile(t, k, length, height, width, offs_d, dim)
            h0 = tl.load(carry + i * dim, mask=mask_d, other=0.0)
            u, z, delta, bv, cv, a, x = _cross_load(u_ptr, dt_ptr, b_ptr, c_ptr, batch, k, p, offs_d, mask, bias, A,
                                                    su_b, su_l, su_d, sdt_b, sdt_l, sdt_k, sdt_d, sb_b, sb_l, sb_k,
                                                    sc_b, sc_l, sc_k, SOFTPLUS)
            a_cum, hs = tl.associative_scan((a, x), axis=0, combine_fn=_combine)
            hs = hs + a_cum * h0[None, :]
            a_next = _cross_next_decay(dt_ptr, batch, k, t, length, height, width, offs_d, dim, bias, A,
                                       sdt_b, sdt_l, sdt_k, sdt_d, SOFTPLUS)
            dy = _cross_dy(dy_ptr, batch, p, offs_d, mask, sdy_b, sdy_l, sdy_d)
            # g_t = a_{t+1} g_{t+1} + C_t dy_t, backwards, from the next block's first g
            g_cum, gs = tl.associative_scan((a_next, cv * dy), axis=0, combine_fn=_combine, reverse=True)
            gs = gs + g_cum * g[None, :]
            g = _first_row(gs, offs_l)

            g_decay = gs * (hs - x)  # g_t a_t h_{t-1}
            du = gs * bv * delta + dskip[None, :] * dy
            ddelta = gs * bv * u + g_decay * A[None, :]
            if SOFTPLUS:
                ddelta = ddelta * _softplus_grad(z)
            ddelta = tl.where(mask, ddelta, 0.0)
            dA_acc += tl.sum(g_decay * delta, axis=0)
            dskip_acc += tl.sum(dy * u, axis=0)
            dbias_acc += tl.sum(ddelta, axis=0)

            du_ptrs = du_ptr + slot * sdu_slot + batch * sdu_b + p[:, None] * sdu_l + offs_d[None, :] * sdu_d
            if k > slot * DIRS:  # the slot's previous directions wrote these values
                du += tl.load(du_ptrs, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(du_ptrs, du, mask=mask)
            tl.store(ddt_ptr + batch * sddt_b + p[:, None] * sddt_l + k * sddt_k + offs_d[None, :] * sddt_d, ddelta,
                     mask=mask)
            mask_t = t < length
            tl.store(db_ptr + part + p * sp_l + k * sp_k, tl.sum(gs * delta * u, axis=1), mask=mask_t)
            tl.store(dc_ptr + part + p * sp_l + k * sp_k, tl.sum(hs * dy, axis=1), mask=mask_t)

        n_batch = tl.num_programs(1) // (4 // DIRS)
        stat = (chunk * n_batch + batch) * 4 * dim + k * dim + offs_d  # (chunk, batch, channel) of the partial sums
        tl.store(dA_ptr + stat, dA_acc, mask=mask_d)
        tl.store(dskip_grad_ptr + stat, dskip_acc, mask=mask_d)
        tl.store(dbias_ptr + stat, dbias_acc, mask=mask_d)
        if DIRS > 1:  # with fewer than 32 channels a pixel's lanes differ between directions
            tl.debug_barrier()
