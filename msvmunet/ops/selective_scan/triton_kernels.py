"""Triton kernels of the selective scan: forward and backward, plain or cross-scan (SS2D) indexing.

One program owns one batch element and ``BLOCK_D`` channels of one direction (plain scan), or of
``DIRS`` of the four directions in turn (``CROSS``), and walks the sequence in blocks of
``BLOCK_L`` steps:

* the state is a (BLOCK_D * BLOCK_N, BLOCK_L) tile whose row d * BLOCK_N + n is state n of
  channel d; the recurrence h_t = a_t h_{t-1} + x_t is solved inside a block by
  ``tl.associative_scan`` on the pairs (a, x) along the steps, and the state at the block's end
  is carried (in registers, fp32) into the next block. With N = 1 (BLOCK_N = 1) every tile is a
  plain (BLOCK_D, BLOCK_L) tile in the layout of the loads: no reshapes, no 3-D tensors;
* the state at every block's start is written to ``carry`` (B, K, n_blocks, N, D_group), a small
  checkpoint: the backward recomputes h inside a block from it instead of storing all of h;
* ``CROSS``: the input is a channel-last map (B, L = H*W, D) read in pixel order; step t of
  direction k reads pixel ``_pixel(t, k)`` (row-major, column-major, both reversed), so loads
  are contiguous along D whatever the direction. A program adds its directions' outputs into
  its own output slot (B, L, D) in a fixed order: no atomics, bitwise deterministic.

Strides are passed for every tensor as (batch, group, channel-or-state, step); a channel-last
input has group stride 0 and step stride D.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(a1, x1, a2, x2):
    # (a2, x2) after (a1, x1): h -> a2 * (a1 * h + x1) + x2
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _log1p_unit(e):
    """log1p(e) for 0 <= e <= 1: e times a degree-9 polynomial (a minimax fit of log1p(e) / e, relative
    error 5e-9; 1.9e-7 at most once evaluated in fp32, about what an fp32 log1p gives), ten FMAs
    instead of a log and a division."""
    p = -0.0032439809292554855 * e + 0.019851263612508774
    p = p * e - 0.056959159672260284
    p = p * e + 0.10603617131710052
    p = p * e - 0.15305569767951965
    p = p * e + 0.19675931334495544
    p = p * e - 0.24954132735729218
    p = p * e + 0.3332996368408203
    p = p * e - 0.4999990165233612
    return (p * e + 1.0) * e


@triton.jit
def _softplus(z):
    # torch's softplus (threshold 20): z above it, else log1p(exp(z)) = max(z, 0) + log1p(exp(-|z|))
    e = tl.exp(-tl.abs(z))
    return tl.where(z > 20.0, z, tl.maximum(z, 0.0) + _log1p_unit(e))


@triton.jit
def _softplus_grad(z):
    return tl.where(z > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-z)))


@triton.jit
def _pixel(t, k, length, height, width, CROSS: tl.constexpr):
    """The sequence position that step t of direction k reads (row-major pixel index if CROSS)."""
    if CROSS:
        s = tl.where(k >= 2, length - 1 - t, t)
        # s // height through a float reciprocal: exact for 0 <= s < 2**22 (the launcher checks L)
        q = ((s.to(tl.float32) + 0.5) * (1.0 / height)).to(tl.int32)
        return tl.where(k % 2 == 1, (s - q * height) * width + q, s)
    else:
        return t


@triton.jit
def _program_ids(n_groups, CROSS: tl.constexpr, DIRS: tl.constexpr):
    """(batch, output slot, first direction, one past the last direction) of this program.

    CROSS: the programs of one batch element split the 4 directions into groups of DIRS; each
    group sums its directions into its own output slot (summed by the launcher if DIRS < 4).
    """
    pid = tl.program_id(1)
    if CROSS:
        slot = pid % (4 // DIRS)
        return pid // (4 // DIRS), slot, slot * DIRS, slot * DIRS + DIRS
    else:
        return pid // n_groups, 0, pid % n_groups, pid % n_groups + 1


@triton.jit
def _per_row(v, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_D, X) per channel -> (BLOCK_D * BLOCK_N, X) per (channel, state) row."""
    if BLOCK_N == 1:
        return v
    else:
        return tl.reshape(tl.broadcast_to(v[:, None, :], [BLOCK_D, BLOCK_N, v.shape[1]]),
                          [BLOCK_D * BLOCK_N, v.shape[1]])


@triton.jit
def _state_rows(v, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_N, X) per state -> (BLOCK_D * BLOCK_N, X) per row ((1, X) broadcasts if BLOCK_N == 1)."""
    if BLOCK_N == 1:
        return v
    else:
        return tl.reshape(tl.broadcast_to(v[None, :, :], [BLOCK_D, BLOCK_N, v.shape[1]]),
                          [BLOCK_D * BLOCK_N, v.shape[1]])


@triton.jit
def _sum_states(v, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_D * BLOCK_N, X) -> (BLOCK_D, X): the sum over each channel's states."""
    if BLOCK_N == 1:
        return v
    else:
        return tl.sum(tl.reshape(v, [BLOCK_D, BLOCK_N, v.shape[1]]), axis=1)


@triton.jit
def _sum_channels(v, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_D * BLOCK_N, X) -> (BLOCK_N, X): the sum over the channels of each state."""
    if BLOCK_N == 1:
        return tl.sum(v, axis=0, keep_dims=True)
    else:
        return tl.sum(tl.reshape(v, [BLOCK_D, BLOCK_N, v.shape[1]]), axis=0)


@triton.jit
def _tile(group_dim, length, N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_L: tl.constexpr):
    """Offsets and masks of this program: channels (BLOCK_D,), rows (channel, state) and steps."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * BLOCK_N)
    row_d = tl.program_id(0) * BLOCK_D + rows // BLOCK_N
    row_n = rows % BLOCK_N
    return (offs_d, offs_d < group_dim, row_d, row_n, (row_d < group_dim) & (row_n < N),
            tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_L), tl.cdiv(length, BLOCK_L))


@triton.jit
def _load_params(A_ptr, dskip_ptr, bias_ptr, k, group_dim, offs_d, mask_d, row_d, row_n, mask_r,
                 N: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """A per row, D and delta_bias per channel, of direction k, in fp32."""
    A = tl.load(A_ptr + (k * group_dim + row_d) * N + row_n, mask=mask_r, other=0.0).to(tl.float32)
    chan = k * group_dim + offs_d
    dskip = tl.zeros_like(offs_d).to(tl.float32)
    bias = tl.zeros_like(offs_d).to(tl.float32)
    if HAS_D:
        dskip = tl.load(dskip_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    return A, dskip, bias


@triton.jit
def _delta(z, mask, SOFTPLUS: tl.constexpr):
    """delta' from delta + bias; 0 where masked, so that a = 1 and x = 0 there."""
    if SOFTPLUS:
        delta = _softplus(z)
    else:
        delta = z
    return tl.where(mask, delta, 0.0)


@triton.jit
def _rows(ptr, batch, k, offs, s_batch, s_group, s_row):
    """Pointers to the rows ``offs`` (channels or states) of (batch, group k), as a column."""
    return ptr + batch * s_batch + k * s_group + offs[:, None] * s_row


@triton.jit
def _carry_ptrs(carry_ptr, batch, k, n_groups, group_dim, n_blocks, row_d, row_n, N: tl.constexpr):
    """Pointers of the rows into the checkpoints (B, K, n_blocks, N, D_group), block 0."""
    base = carry_ptr + (batch * n_groups + k) * n_blocks * N * group_dim
    return base + row_n * group_dim + row_d


@triton.jit
def _load_block(u_rows, dt_rows, b_rows, c_rows, p, su_l, sdt_l, sb_l, sc_l, mask_dl, mask_nl):
    """The raw tiles of one block at sequence positions p: u, delta (BLOCK_D, BLOCK_L), B, C (BLOCK_N, BLOCK_L)."""
    return (tl.load(u_rows + p * su_l, mask=mask_dl, other=0.0), tl.load(dt_rows + p * sdt_l, mask=mask_dl, other=0.0),
            tl.load(b_rows + p * sb_l, mask=mask_nl, other=0.0), tl.load(c_rows + p * sc_l, mask=mask_nl, other=0.0))


@triton.jit
def _solve_block(u, dt, bv, cv, mask_dl, A, bias, h0, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """Solve the recurrence in one block from the state h0, given its raw tiles.

    Returns u, delta', delta + bias (BLOCK_D, BLOCK_L); B, C per row; the drive x and the states
    h (BLOCK_D * BLOCK_N, BLOCK_L); all fp32.
    """
    u = u.to(tl.float32)
    z = dt.to(tl.float32) + bias[:, None]
    delta = _delta(z, mask_dl, SOFTPLUS)
    bv = _state_rows(bv.to(tl.float32), BLOCK_D, BLOCK_N)
    cv = _state_rows(cv.to(tl.float32), BLOCK_D, BLOCK_N)
    a = tl.exp(_per_row(delta, BLOCK_D, BLOCK_N) * A[:, None])
    x = _per_row(delta * u, BLOCK_D, BLOCK_N) * bv
    a_cum, hs = tl.associative_scan((a, x), axis=1, combine_fn=_combine)
    return u, delta, z, bv, cv, x, hs + a_cum * h0[:, None]


@triton.jit
def _fwd_kernel(
    u_ptr, dt_ptr, A_ptr, b_ptr, c_ptr, dskip_ptr, bias_ptr, y_ptr, carry_ptr,
    n_groups, group_dim, length, height, width,
    su_b, su_k, su_d, su_l,
    sdt_b, sdt_k, sdt_d, sdt_l,
    sb_b, sb_k, sb_n, sb_l,
    sc_b, sc_k, sc_n, sc_l,
    sy_slot, sy_b, sy_k, sy_d, sy_l,
    N: tl.constexpr, CROSS: tl.constexpr, DIRS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, PREFETCH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """y and the block checkpoints. PREFETCH: the loads of block i + 1 are issued before block i is
    solved, so that their latency overlaps the scan."""
    batch, slot, k_first, k_end = _program_ids(n_groups, CROSS, DIRS)
    batch = batch.to(tl.int64)
    offs_d, mask_d, row_d, row_n, mask_r, offs_n, offs_l, n_blocks = _tile(group_dim, length, N, BLOCK_D, BLOCK_N,
                                                                           BLOCK_L)
    mask_n = offs_n < N

    for k in range(k_first, k_end):
        A, dskip, bias = _load_params(A_ptr, dskip_ptr, bias_ptr, k, group_dim, offs_d, mask_d, row_d, row_n,
                                      mask_r, N, HAS_D, HAS_BIAS)
        u_rows = _rows(u_ptr, batch, k, offs_d, su_b, su_k, su_d)
        dt_rows = _rows(dt_ptr, batch, k, offs_d, sdt_b, sdt_k, sdt_d)
        b_rows = _rows(b_ptr, batch, k, offs_n, sb_b, sb_k, sb_n)
        c_rows = _rows(c_ptr, batch, k, offs_n, sc_b, sc_k, sc_n)
        y_rows = _rows(y_ptr + slot * sy_slot, batch, k, offs_d, sy_b, sy_k, sy_d)
        carry = _carry_ptrs(carry_ptr, batch, k, n_groups, group_dim, n_blocks, row_d, row_n, N)
        h = tl.zeros([BLOCK_D * BLOCK_N], dtype=tl.float32)
        if PREFETCH:
            mask_t = offs_l < length
            p = _pixel(offs_l, k, length, height, width, CROSS)[None, :]
            u_n, dt_n, b_n, c_n = _load_block(u_rows, dt_rows, b_rows, c_rows, p, su_l, sdt_l, sb_l, sc_l,
                                              mask_d[:, None] & mask_t[None, :], mask_n[:, None] & mask_t[None, :])
        for i in range(n_blocks):
            tl.store(carry + i * N * group_dim, h, mask=mask_r)
            t = i * BLOCK_L + offs_l
            mask_t = t < length
            p = _pixel(t, k, length, height, width, CROSS)[None, :]
            mask_dl = mask_d[:, None] & mask_t[None, :]
            y_ptrs = y_rows + p * sy_l
            if CROSS:  # the directions after the first of this slot add to what is there
                y_old = tl.load(y_ptrs, mask=tl.where(k > k_first, mask_dl, False), other=0.0, cache_modifier=".cg")
            if PREFETCH:
                u, dt, bv, cv = u_n, dt_n, b_n, c_n
                t_n = t + BLOCK_L
                p_n = _pixel(t_n, k, length, height, width, CROSS)[None, :]
                u_n, dt_n, b_n, c_n = _load_block(u_rows, dt_rows, b_rows, c_rows, p_n, su_l, sdt_l, sb_l, sc_l,
                                                  mask_d[:, None] & (t_n < length)[None, :],
                                                  mask_n[:, None] & (t_n < length)[None, :])
            else:
                u, dt, bv, cv = _load_block(u_rows, dt_rows, b_rows, c_rows, p, su_l, sdt_l, sb_l, sc_l,
                                            mask_dl, mask_n[:, None] & mask_t[None, :])
            u, _, _, _, cv, _, hs = _solve_block(u, dt, bv, cv, mask_dl, A, bias, h, SOFTPLUS, BLOCK_D, BLOCK_N)
            y = _sum_states(hs * cv, BLOCK_D, BLOCK_N) + dskip[:, None] * u
            if CROSS:
                y += y_old
            tl.store(y_ptrs, y, mask=mask_dl)
            h = tl.sum(tl.where(offs_l[None, :] == BLOCK_L - 1, hs, 0.0), axis=1)
        if CROSS:  # the next direction reads what other threads of this program wrote
            tl.debug_barrier()


@triton.jit
def _bwd_kernel(
    u_ptr, dt_ptr, A_ptr, b_ptr, c_ptr, dskip_ptr, bias_ptr, carry_ptr, dy_ptr,
    du_ptr, ddt_ptr, db_ptr, dc_ptr, dA_ptr, dskip_grad_ptr, dbias_ptr,
    n_groups, group_dim, length, height, width,
    su_b, su_k, su_d, su_l,
    sdt_b, sdt_k, sdt_d, sdt_l,
    sb_b, sb_k, sb_n, sb_l,
    sc_b, sc_k, sc_n, sc_l,
    sdy_b, sdy_k, sdy_d, sdy_l,
    sdu_slot, sdu_b, sdu_k, sdu_d, sdu_l,
    sddt_b, sddt_k, sddt_d, sddt_l,
    sp_blk, sp_b, sp_k, sp_n, sp_l,
    N: tl.constexpr, CROSS: tl.constexpr, DIRS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Gradients of one program's channels, walking the blocks from the last to the first.

    With g_t = dLoss/dh_t = C_t dy_t + a_{t+1} g_{t+1} (a reverse scan carried across blocks) and
    h_t recomputed from the block's checkpoint: dx_t = g_t, so du_t = delta_t sum_n g B + D dy_t,
    ddelta_t = sum_n g (B u + A a_t h_{t-1}), dA = sum_t g delta a_t h_{t-1}, with
    a_t h_{t-1} = h_t - x_t (no division by a decay). dB, dC are summed over this program's
    channels into partial buffers (one per channel block); dA, dD, d_bias per (batch, channel).
    """
    batch, slot, k_first, k_end = _program_ids(n_groups, CROSS, DIRS)
    batch = batch.to(tl.int64)
    offs_d, mask_d, row_d, row_n, mask_r, offs_n, offs_l, n_blocks = _tile(group_dim, length, N, BLOCK_D, BLOCK_N,
                                                                           BLOCK_L)
    mask_n = offs_n < N

    for k in range(k_first, k_end):
        A, dskip, bias = _load_params(A_ptr, dskip_ptr, bias_ptr, k, group_dim, offs_d, mask_d, row_d, row_n,
                                      mask_r, N, HAS_D, HAS_BIAS)
        u_rows = _rows(u_ptr, batch, k, offs_d, su_b, su_k, su_d)
        dt_rows = _rows(dt_ptr, batch, k, offs_d, sdt_b, sdt_k, sdt_d)
        b_rows = _rows(b_ptr, batch, k, offs_n, sb_b, sb_k, sb_n)
        c_rows = _rows(c_ptr, batch, k, offs_n, sc_b, sc_k, sc_n)
        dy_rows = _rows(dy_ptr, batch, k, offs_d, sdy_b, sdy_k, sdy_d)
        du_rows = _rows(du_ptr + slot * sdu_slot, batch, k, offs_d, sdu_b, sdu_k, sdu_d)
        ddt_rows = _rows(ddt_ptr, batch, k, offs_d, sddt_b, sddt_k, sddt_d)
        part_rows = _rows(tl.program_id(0).to(tl.int64) * sp_blk, batch, k, offs_n, sp_b, sp_k, sp_n)
        carry = _carry_ptrs(carry_ptr, batch, k, n_groups, group_dim, n_blocks, row_d, row_n, N)

        g = tl.zeros([BLOCK_D * BLOCK_N], dtype=tl.float32)  # g at the first step of the next block
        # per-step partial sums of dA, dD, d_bias, reduced over the steps once after the last block
        dA_acc = tl.zeros([BLOCK_D * BLOCK_N, BLOCK_L], dtype=tl.float32)
        dskip_acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        dbias_acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        for j in range(n_blocks):
            i = n_blocks - 1 - j
            t = i * BLOCK_L + offs_l
            mask_t = t < length
            p = _pixel(t, k, length, height, width, CROSS)[None, :]
            p_next = _pixel(t + 1, k, length, height, width, CROSS)[None, :]
            mask_dl = mask_d[:, None] & mask_t[None, :]
            mask_nl = mask_n[:, None] & mask_t[None, :]
            h0 = tl.load(carry + i * N * group_dim, mask=mask_r, other=0.0)
            u, dt, bv, cv = _load_block(u_rows, dt_rows, b_rows, c_rows, p, su_l, sdt_l, sb_l, sc_l, mask_dl, mask_nl)
            u, delta, z, bv, cv, x, hs = _solve_block(u, dt, bv, cv, mask_dl, A, bias, h0, SOFTPLUS, BLOCK_D, BLOCK_N)
            mask_next = mask_d[:, None] & (t + 1 < length)[None, :]
            dt_next = tl.load(dt_rows + p_next * sdt_l, mask=mask_next, other=0.0).to(tl.float32)
            delta_next = _delta(dt_next + bias[:, None], mask_next, SOFTPLUS)
            dy = tl.load(dy_rows + p * sdy_l, mask=mask_dl, other=0.0).to(tl.float32)

            # g_t = a_{t+1} g_{t+1} + C_t dy_t, backwards, from the next block's first g
            a_next = tl.exp(_per_row(delta_next, BLOCK_D, BLOCK_N) * A[:, None])
            g_cum, gs = tl.associative_scan((a_next, cv * _per_row(dy, BLOCK_D, BLOCK_N)), axis=1,
                                            combine_fn=_combine, reverse=True)
            gs = gs + g_cum * g[:, None]
            g = tl.sum(tl.where(offs_l[None, :] == 0, gs, 0.0), axis=1)

            g_decay = gs * (hs - x)  # g_t a_t h_{t-1}
            g_b = _sum_states(gs * bv, BLOCK_D, BLOCK_N)
            du = g_b * delta + dskip[:, None] * dy
            ddelta = g_b * u + _sum_states(g_decay * A[:, None], BLOCK_D, BLOCK_N)
            if SOFTPLUS:
                ddelta = ddelta * _softplus_grad(z)
            ddelta = tl.where(mask_dl, ddelta, 0.0)
            dA_acc += g_decay * _per_row(delta, BLOCK_D, BLOCK_N)
            dskip_acc += dy * u
            dbias_acc += ddelta

            du_ptrs = du_rows + p * sdu_l
            if CROSS:  # the directions after the first of this slot add to what is there
                du += tl.load(du_ptrs, mask=tl.where(k > k_first, mask_dl, False), other=0.0, cache_modifier=".cg")
            tl.store(du_ptrs, du, mask=mask_dl)
            tl.store(ddt_rows + p * sddt_l, ddelta, mask=mask_dl)
            db = _sum_channels(gs * _per_row(delta * u, BLOCK_D, BLOCK_N), BLOCK_D, BLOCK_N)
            tl.store(db_ptr + part_rows + p * sp_l, db, mask=mask_nl)
            dc = _sum_channels(hs * _per_row(dy, BLOCK_D, BLOCK_N), BLOCK_D, BLOCK_N)
            tl.store(dc_ptr + part_rows + p * sp_l, dc, mask=mask_nl)

        stat = batch * n_groups * group_dim + k * group_dim  # (batch, channel) of the (B, K*D) partial sums
        tl.store(dA_ptr + (stat + row_d) * N + row_n, tl.sum(dA_acc, axis=1), mask=mask_r)
        tl.store(dskip_grad_ptr + stat + offs_d, tl.sum(dskip_acc, axis=1), mask=mask_d)
        tl.store(dbias_ptr + stat + offs_d, tl.sum(dbias_acc, axis=1), mask=mask_d)
        if CROSS:  # the next direction reads what other threads of this program wrote
            tl.debug_barrier()
