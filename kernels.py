"""
kernels.py: the fast paths behind rollout.py's sampler, kept out of the reader's way. Each one has
its plain reference in rollout.py (full-row Gumbel-max, gather minus logsumexp) and an equivalence
test in tests/test_rollout.py; rollout.py's docstring explains the sampling rules they implement.

  truncate_torch       top-k / top-p on CPU or without Triton: a window of the largest logits found
                       by torch.topk (a selection, not a sort), sized by a 256-bin mass histogram
                       for top-p
  sample_triton        one program per row, the row held in registers: temperature, top-k and top-p
                       by bisection over the int32 view of fp32 (exact, no sort), Philox Gumbel
                       noise, argmax
  TritonTokenLogprobs  log-probs of given targets, streaming each row once; the backward writes
                       g * (onehot - softmax) / T directly, no (B, T, V) log-softmax stored

Triton runs compiled on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1 (the tests).
"""

import torch

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except Exception:  # triton missing or broken: the torch paths cover everything
    HAS_TRITON = False

_NEG_INF = float("-inf")
# the sampler kernel holds a whole row in registers; longer rows use the torch path
SAMPLE_MAX_V = 131072
_LP_BLOCK = 4096         # chunk width of the log-prob kernels (they stream rows of any length)


# -----------------------------------------------------------------------------
# top-k / top-p, torch path

def _topp_window(logits, inv_t, top_p, bins=256, span=32.0):
    """Top-p alone: -> (total mass (B,), window size c). One histogram of the mass over zmax - z
    (bins of span/bins in z, a radix-select step) finds the bin where the head reaches top_p; the
    window is every token up to that bin (largest count over rows), so torch.topk runs once with
    about the size it needs."""
    B = logits.shape[0]
    z = logits.float() * inv_t                                   # (B, V), ours to overwrite
    zmax = z.max(-1, keepdim=True).values
    e = (z - zmax).exp_()                                        # (B, V) unnormalized probabilities
    total = e.sum(-1)
    # bin 0 holds the max; the last, the tail
    b = z.sub_(zmax).mul_(-bins / span).clamp_max_(bins - 1).long()
    mass = torch.zeros(B, bins, device=z.device).scatter_add_(1, b, e).cumsum(-1)  # (B, bins)
    count = torch.zeros(B, bins, device=z.device).scatter_add_(1, b, e.fill_(1.0)).cumsum(-1)
    # first bin reaching top_p
    hit = (mass < top_p * total[:, None]).sum(-1, keepdim=True).clamp_max(bins - 1)
    return total, int(count.gather(1, hit).max())


def truncate_torch(logits, inv_t, top_k, top_p):
    """-> vals (B, c) = z sorted descending, idx (B, c), keep (B, c): a window of the largest
    z = logits * inv_t of each row that holds the whole kept set, and which of its entries are
    kept."""
    B, V = logits.shape
    k = top_k if 0 < top_k < V else 0
    total, c = None, k
    # top-p over the whole row: the window size and the total mass come from one histogram pass
    if not k:
        total, c = _topp_window(logits, inv_t, top_p)
    while True:
        # on the raw logits: scaling by 1/T keeps the order
        vals, idx = torch.topk(logits, min(V, c + 1), dim=-1)
        # (B, c + 1): the same z values as a full-row scale
        vals = vals.float() * inv_t
        # first value outside the window
        nxt = vals[:, c] if c < V else torch.full_like(vals[:, 0], _NEG_INF)
        vals, idx = vals[:, :c], idx[:, :c]
        keep = torch.ones_like(vals, dtype=torch.bool)
        ok = True
        if k:
            tk = vals[:, k - 1:k]                          # (B, 1) k-th largest value
            keep = vals >= tk                              # ties with it are kept too
            ok = bool((nxt < tk[:, 0]).all())              # all of them are inside the window
        if ok and top_p < 1:
            e = (vals - vals[:, :1]).exp() * keep          # (B, c) unnormalized kept probabilities
            cum = e.cumsum(-1)
            tot = total if total is not None else cum[:, -1]
            # first index reaching top_p
            m = (cum < top_p * tot[:, None]).sum(-1, keepdim=True).clamp_max(c - 1)
            tp = vals.gather(1, m)                         # (B, 1) top-p threshold
            keep = keep & (vals >= tp)
            # the head reached top_p inside the window, ties included
            if total is not None:
                ok = bool(((cum[:, -1] >= top_p * tot) & (nxt < tp[:, 0])).all())
        if ok or c >= V:
            return vals, idx, keep
        c = min(V, c * 8)


# -----------------------------------------------------------------------------
# sampling: Triton path (one program per row, the row stays in registers)

if HAS_TRITON:
    @triton.jit
    def _philox_gumbel(seed, row, cols):
        """Gumbel(0, 1) noise for (row, cols) of one call: Philox keyed by seed, counters
        (col, row)."""
        # blocks, not scalars, for every counter (as tl.randint4x)
        zero = tl.zeros(cols.shape, tl.uint32)
        r, _, _, _ = tl.philox(seed, cols.to(tl.uint32), zero + row.to(tl.uint32), zero, zero)
        # (r + 1/2) 2^-32 in (0, 1)
        u = tl.minimum((r.to(tl.float32) + 0.5) * 2.3283064365386963e-10, 0.99999994)
        w = 1.0 - u
        # exact; log(w) * u / d is an accurate log1p(-u)
        d = 1.0 - w
        # E = -log1p(-u) ~ Exp(1)
        e = tl.where(d == 0.0, u, -tl.log(w) * (u / tl.where(d == 0.0, 1.0, d)))
        return -tl.log(e)

    @triton.jit
    def _largest_key(key, w, target):
        """Largest int key t with sum(w[key >= t]) >= target (w >= 0; the answer is a key with
        w > 0)."""
        # the condition holds at lo
        lo = tl.min(tl.where(w > 0, key, 2147483647), axis=0).to(tl.int64)
        hi = tl.max(key, axis=0).to(tl.int64)
        while lo < hi:
            mid = lo + (hi - lo + 1) // 2                 # int64: hi - lo can exceed int32
            ok = tl.sum(tl.where(key >= mid.to(tl.int32), w, 0.0), axis=0) >= target
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid - 1)
        return lo.to(tl.int32)

    @triton.jit
    def _sample_kernel(x_ptr, x_stride, g_ptr, g_stride, seed_ptr, tok_ptr, lp_ptr, V, inv_t, top_k,
                       top_p, BLOCK: tl.constexpr, TOPK: tl.constexpr, TOPP: tl.constexpr,
                       HAS_NOISE: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        valid = cols < V
        z = tl.load(x_ptr + row.to(tl.int64) * x_stride + cols, mask=valid, other=float("-inf"))
        # (BLOCK,) the only read of the row
        z = z.to(tl.float32) * inv_t
        zmax = tl.max(z, axis=0)
        keep = valid
        # unnormalized probabilities
        e = tl.where(valid, tl.exp(z - zmax), 0.0)
        if TOPK or TOPP:
            bits = z.to(tl.int32, bitcast=True)
            key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)            # int order == float order
        if TOPK:
            keep = keep & (key >= _largest_key(key, keep.to(tl.float32), top_k))
            e = tl.where(keep, e, 0.0)
        if TOPP:
            keep = keep & (key >= _largest_key(key, e, top_p * tl.sum(e, axis=0)))
            e = tl.where(keep, e, 0.0)
        if HAS_NOISE:
            g = tl.load(g_ptr + row.to(tl.int64) * g_stride + cols, mask=valid, other=0.0)
        else:
            g = _philox_gumbel(tl.load(seed_ptr), row, cols)
        tok = tl.argmax(tl.where(keep, z + g, float("-inf")), axis=0)
        ztok = tl.sum(tl.where(cols == tok, z, 0.0), axis=0)
        tl.store(tok_ptr + row, tok.to(tl.int64))
        tl.store(lp_ptr + row, ztok - zmax - tl.log(tl.sum(e, axis=0)))


def sample_triton(logits, inv_t, top_k, top_p, generator, noise):
    B, V = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    k = top_k if 0 < top_k < V else 0
    BLOCK = triton.next_power_of_2(V)
    tok = torch.empty(B, dtype=torch.long, device=logits.device)
    lp = torch.empty(B, dtype=torch.float32, device=logits.device)
    if noise is None:  # the seed stays on the device: drawing it does not sync
        seed = torch.randint(0, 2 ** 31 - 1, (1,), generator=generator, device=logits.device)
        g, g_stride = logits, 0
    else:
        seed = torch.zeros(1, dtype=torch.long, device=logits.device)
        g = noise.float() if noise.stride(-1) == 1 else noise.float().contiguous()
        g_stride = g.stride(0)
    _sample_kernel[(B,)](logits, logits.stride(0), g, g_stride, seed, tok, lp, V, inv_t, k,
                         float(top_p), BLOCK=BLOCK, TOPK=k > 0, TOPP=top_p < 1,
                         HAS_NOISE=noise is not None,
                         num_warps=4 if BLOCK <= 2048 else 8 if BLOCK <= 8192 else 16)
    return tok, lp


# -----------------------------------------------------------------------------
# log-probs of given tokens: Triton path

if HAS_TRITON:
    @triton.jit
    def _logprob_fwd_kernel(x_ptr, s0, s1, t_ptr, out_ptr, lse_ptr, T, V, inv_t,
                            BLOCK: tl.constexpr):
        row = tl.program_id(0)                                   # row = b * T + t
        base = x_ptr + (row // T).to(tl.int64) * s0 + (row % T).to(tl.int64) * s1
        cols = tl.arange(0, BLOCK)
        # finite start: exp(-inf - m) = 0, never NaN
        m = tl.full([BLOCK], -1e30, tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        # one streaming pass, online max / sum per lane
        for start in range(0, V, BLOCK):
            c = start + cols
            z = tl.load(base + c, mask=c < V, other=float("-inf")).to(tl.float32) * inv_t
            m_new = tl.maximum(m, z)
            s = s * tl.exp(m - m_new) + tl.exp(z - m_new)
            m = m_new
        mx = tl.max(m, axis=0)
        lse = mx + tl.log(tl.sum(s * tl.exp(m - mx), axis=0))
        zt = tl.load(base + tl.load(t_ptr + row)).to(tl.float32) * inv_t
        tl.store(out_ptr + row, zt - lse)
        tl.store(lse_ptr + row, lse)

    @triton.jit
    def _logprob_bwd_kernel(x_ptr, s0, s1, t_ptr, lse_ptr, g_ptr, dx_ptr, T, V, inv_t,
                            BLOCK: tl.constexpr):
        row = tl.program_id(0)
        base = x_ptr + (row // T).to(tl.int64) * s0 + (row % T).to(tl.int64) * s1
        cols = tl.arange(0, BLOCK)
        tgt = tl.load(t_ptr + row)
        lse = tl.load(lse_ptr + row)
        g = tl.load(g_ptr + row) * inv_t                         # d(z)/d(logits) = 1/T
        for start in range(0, V, BLOCK):
            c = start + cols
            z = tl.load(base + c, mask=c < V, other=0.0).to(tl.float32) * inv_t
            p = tl.exp(z - lse)
            d = g * (tl.where(c == tgt, 1.0, 0.0) - p)            # g * (onehot - softmax)
            tl.store(dx_ptr + row.to(tl.int64) * V + c, d.to(dx_ptr.dtype.element_ty), mask=c < V)

    class TritonTokenLogprobs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, targets, inv_t):
            B, T, V = logits.shape
            targets = targets.contiguous()
            out = torch.empty(B, T, dtype=torch.float32, device=logits.device)
            lse = torch.empty(B, T, dtype=torch.float32, device=logits.device)
            block = min(_LP_BLOCK, triton.next_power_of_2(V))
            _logprob_fwd_kernel[(B * T,)](logits, logits.stride(0), logits.stride(1), targets, out,
                                          lse, T, V, inv_t, BLOCK=block)
            ctx.save_for_backward(logits, targets, lse)
            ctx.inv_t, ctx.block = inv_t, block
            return out

        @staticmethod
        def backward(ctx, grad):
            logits, targets, lse = ctx.saved_tensors
            B, T, V = logits.shape
            dx = torch.empty(B, T, V, dtype=logits.dtype, device=logits.device)
            _logprob_bwd_kernel[(B * T,)](logits, logits.stride(0), logits.stride(1), targets, lse,
                                          grad.float().contiguous(), dx, T, V, ctx.inv_t,
                                          BLOCK=ctx.block)
            return dx, None, None
