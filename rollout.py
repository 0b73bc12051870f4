"""
rollout.py: sampling groups of completions for Fast-Slow Training, and the one record of sampled
completions that flows through fastslow (Rollouts).

    ro = sample_rollouts(model, enc, contexts, problems, num_samples=8, temperature=1.0, seed=0)
    ro.rewards, ro.texts, ro.feedback          # per row: scored by the world's verifier
    ro.tokens, ro.mask, ro.logp                # (R, L) what the sampler emitted, and its log-probs
    ro.prompts, ro.group                       # per row: its prompt, its problem's id
    new_logp = completion_logprobs(model, ro.prompts, ro.tokens, ro.mask)  # the trainer's re-score

    python -m pytest tests/test_rollout.py     # sampler statistics, kernels, generation
    python -m harness.bench rollout | sample   # speed: a naive loop, HF, a sort-based sampler

Read in order: the sampler (torch: Gumbel-max over temperature-scaled logits, and the token's
log-prob); log-probs of given tokens; generate (P prompts x G samples: left-pad and prefill once,
repeat the KV cache rows, decode every row together) and its naive reference; the Rollouts record
(sample_rollouts: generate, decode, score; greedy_evaluate: the policy as GEPA sees it). Last, an
optional section: the same sampler and log-probs as fused Triton kernels (CUDA, or Triton's CPU
interpreter in the tests), each tested against its torch path.

Design choices and why:
  * Sampling is Gumbel-max: token = argmax of z + g, z = logits * fp32(1/T), g ~ Gumbel(0, 1) per
    element: no normalized probabilities, no multinomial, a row is read once. g = -log(E),
    E = -log1p(-u) ~ Exp(1), with u strictly inside (0, 1) ((k + 1/2) 2^-24 in torch,
    (r + 1/2) 2^-32 in Triton), so g is always finite. The log-prob is z_tok - logsumexp(z);
    temperature 0 is greedy (first index on ties) with log-prob 0.0.
  * Backends: "auto" uses the Triton kernels for CUDA tensors when triton imports, torch otherwise;
    "triton" forces them (CPU tensors under TRITON_INTERPRET=1). Given the same noise both give the
    same tokens (_sample_with_noise); their random streams differ (torch.Generator vs Philox seeded
    from it), so each is reproducible on its own device.
  * generate keeps one cache pointer for all rows: prompts are left-padded, pad slots are masked by
    key_mask and RoPE positions start at 0 at each prompt's first token, so a padded row computes
    what it would alone. The only host sync per step is the "all rows done?" check. Finished rows
    keep decoding (outputs discarded) so the batch keeps its shape; generate runs under no_grad.
  * Row order is prompt-major everywhere: row i*G + j is sample j of prompt i (num_samples may be
    one int per prompt). completion_logprobs takes one prompt per row, so an FST step may put
    several prompts of one problem into one group: group[r] is the problem row r answers.
  * Every consumer reads the one Rollouts record (like GRPO-Zero's Episode): GEPA's evaluate, the
    RL step (rewards, tokens, mask, prompts, the sampler's log-probs) and the measurements. Only
    sample_rollouts calls the verifier.
"""

import os
from dataclasses import dataclass

import torch

from world import tasks

try:  # the optional fast path (the section at the end); without it the torch paths do everything
    import triton
    import triton.language as tl
    HAS_TRITON = True
except Exception:
    HAS_TRITON = False




# -----------------------------------------------------------------------------
# the sampler: one token per row, and its log-prob (torch)

def gumbel_noise(shape, generator=None, device="cpu"):
    """Gumbel(0, 1) noise in fp32, always finite (see the module docstring)."""
    u = torch.empty(shape, device=device).uniform_(2.0 ** -25, 1.0 - 2.0 ** -24,
                                                   generator=generator)  # ~(k + 1/2) 2^-24
    # -log(E), E = -log1p(-u) ~ Exp(1); in place: no extra buffers
    return u.neg_().log1p_().neg_().log_().neg_()


def _sample_torch(logits, inv_t, generator, noise):
    B, V = logits.shape
    z = logits if logits.dtype == torch.float32 and inv_t == 1.0 else logits.float() * inv_t
    # one scratch buffer for noise, scores and exp: fresh big buffers cost page faults
    if noise is None:
        s = torch.empty(B, V, device=z.device).uniform_(2.0 ** -25, 1.0 - 2.0 ** -24,
                                                        generator=generator)
        torch.sub(z, s.neg_().log1p_().neg_().log_(), out=s)  # z + g, g = -log(E) as above
    else:
        s = z + noise
    tok = s.argmax(-1)
    zmax = z.max(-1, keepdim=True).values
    lse = torch.sub(z, zmax, out=s).exp_().sum(-1).log_() + zmax[:, 0]
    return tok, z.gather(1, tok[:, None]).squeeze(1) - lse


def _sample(logits, temperature, generator, noise, backend):
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    if temperature == 0:  # greedy: the argmax has probability 1
        return logits.argmax(-1), torch.zeros(logits.shape[0], dtype=torch.float32,
                                              device=logits.device)
    if _use_triton(logits, backend) and logits.shape[1] <= SAMPLE_MAX_V:
        return sample_triton(logits, _inv_temp(temperature), generator, noise)
    return _sample_torch(logits, _inv_temp(temperature), generator, noise)


def sample_tokens(logits, temperature=1.0, generator=None, backend="auto"):
    """logits (B, V), any float dtype, rows may be a strided view -> (tokens (B,) long,
    logprobs (B,) float32 under softmax(logits / temperature)); temperature 0 is greedy with
    logprob 0.0. backend: auto | torch | triton."""
    return _sample(logits, temperature, generator, None, backend)


def _sample_with_noise(logits, noise, temperature=1.0, backend="auto"):
    """sample_tokens with explicit Gumbel noise (B, V) fp32: both backends must return the same
    tokens."""
    return _sample(logits, temperature, None, noise, backend)


def _inv_temp(temperature):
    # 1/T rounded to fp32 once, so torch and Triton multiply by the very same number
    return float(torch.tensor(1.0 / temperature, dtype=torch.float32))


# -----------------------------------------------------------------------------
# log-probs of given tokens

def token_logprobs(logits, targets, temperature=1.0, backend="auto"):
    """logits (B, T, V), targets (B, T) long -> (B, T) float32 log softmax(logits / T)[targets],
    differentiable.

    torch path: gather minus logsumexp. Triton path: a fused kernel streams each row once (online
    max / sum, fp32) and the backward writes g * (onehot - softmax) / T directly; no (B, T, V)
    log-softmax is stored. Targets must lie in [0, V) (the Triton path does not check, to stay
    sync-free).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, V) and targets (B, T), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    inv_t = _inv_temp(temperature)
    if _use_triton(logits, backend):
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        return TritonTokenLogprobs.apply(logits, targets.long(), inv_t)
    z = logits.float()
    if inv_t != 1.0:
        z = z * inv_t
    return z.gather(-1, targets.long()[..., None]).squeeze(-1) - torch.logsumexp(z, -1)




# -----------------------------------------------------------------------------
# generation

def _group_sizes(prompts, num_samples):
    if len(prompts) == 0:
        raise ValueError("prompts is empty")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    sizes = ([num_samples] * len(prompts) if isinstance(num_samples, int)
             else [int(n) for n in num_samples])
    if len(sizes) != len(prompts) or min(sizes) < 1:
        raise ValueError("num_samples must be an int >= 1 or one such int per prompt, "
                         f"got {num_samples}")
    return sizes


def _check_len(model, prompts, max_new_tokens):
    need = max(len(p) for p in prompts) + max_new_tokens
    if max_new_tokens < 1 or need > model.cfg.block_size:
        raise ValueError(f"longest prompt + max_new_tokens = {need} must be <= block_size "
                         f"{model.cfg.block_size} (and max_new_tokens >= 1)")


def expand_prompts(prompts, num_samples):
    """The per-row prompt list that matches generate's row order (prompt i repeated num_samples[i]
    times)."""
    return expand(prompts, _group_sizes(prompts, num_samples))


def _prefill(model, prompts, max_new_tokens):
    """Left-pad the P prompts to the longest (Lp tokens) and run them once into a KV cache sized
    for the whole rollout. -> (logits (P, V) at each prompt's last token, cache, key_mask
    (P, Lp + max_new_tokens), lens (P,), Lp)."""
    device = model.wte.weight.device
    P, Lp = len(prompts), max(len(p) for p in prompts)
    lens = torch.tensor([len(p) for p in prompts], device=device)        # (P,)
    # pad slots hold token 0: masked out, any valid id works
    idx = torch.zeros(P, Lp, dtype=torch.long)
    for i, p in enumerate(prompts):
        # left-pad: every prompt ends at Lp - 1
        idx[i, Lp - len(p):] = torch.tensor(p, dtype=torch.long)
    idx = idx.to(device)
    ar = torch.arange(Lp, device=device)
    pad = (Lp - lens)[:, None]                                           # (P, 1) pad slots per row
    # (P, Lp) RoPE position 0 at the first real token
    positions = (ar[None, :] - pad).clamp_min(0)
    key_mask = torch.ones(P, Lp + max_new_tokens, dtype=torch.bool, device=device)
    # pad slots are never attended
    key_mask[:, :Lp] = ar[None, :] >= pad
    # sized once, for the whole rollout
    cache = model.new_cache(P, Lp + max_new_tokens)
    logits = model(idx, positions=positions, cache=cache, key_mask=key_mask)[:, -1]  # (P, V)
    return logits, cache, key_mask, lens, Lp


@torch.no_grad()
def generate(model, prompts, num_samples=1, max_new_tokens=32, temperature=1.0, seed=0,
             eos_id=None, pad_id=0, backend="auto"):
    """Sample num_samples completions for each prompt (lists of token ids, any lengths).

    num_samples: an int, or one int per prompt. Returns (tokens long, mask bool, logprobs float32),
    each (rows, L) with rows = sum of the group sizes, row order prompt-major, L <= max_new_tokens
    the longest completion. A row stops at its first eos_id (kept, mask True); after it tokens are
    pad_id, mask False, logprobs 0. eos_id=None: every row runs max_new_tokens. logprobs are the
    sampler's (see sample_tokens).
    """
    sizes = _group_sizes(prompts, num_samples)
    _check_len(model, prompts, max_new_tokens)
    device = model.wte.weight.device
    logits, cache, key_mask, lens, Lp = _prefill(model, prompts, max_new_tokens)
    G = sizes[0] if len(set(sizes)) == 1 else torch.tensor(sizes, device=device)
    # prefill once per prompt, not per sample
    cache.repeat_rows(G)
    logits, key_mask, pos = (t.repeat_interleave(G, dim=0) for t in (logits, key_mask, lens))
    R = logits.shape[0]
    gen = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.full((R, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(R, max_new_tokens, dtype=torch.float32, device=device)
    mask = torch.zeros(R, max_new_tokens, dtype=torch.bool, device=device)
    done = torch.zeros(R, dtype=torch.bool, device=device)
    L = max_new_tokens
    for t in range(max_new_tokens):
        tok, lp = sample_tokens(logits, temperature, generator=gen, backend=backend)
        tokens[:, t] = tok.masked_fill(done, pad_id)
        logps[:, t] = lp.masked_fill(done, 0.0)
        mask[:, t] = ~done
        if eos_id is not None:
            done |= tok == eos_id
            if t + 1 < max_new_tokens and bool(done.all()):             # the one host sync per step
                L = t + 1
                break
        if t + 1 < max_new_tokens:
            # finished rows keep decoding their (ignored) sampled token: pad_id need not be a valid
            # token id
            logits = model(tok[:, None], positions=(pos + t)[:, None], cache=cache,
                           key_mask=key_mask)[:, -1]
    return tokens[:, :L], mask[:, :L], logps[:, :L]




def completion_logits(model, prompts, tokens, mask):
    """(rows, L, V) logits that predicted each generated token, from one right-padded causal
    forward.

    prompts: one token list per row (len == rows, rows may mix prompts freely), or one per group
    when rows is a multiple of len(prompts) (each then covers rows // len(prompts) consecutive rows,
    as generate lays them out). Each row is built as prompt + completion; pad slots come after every
    real token, so no mask is needed. Shared by the RL trainer (completion_logprobs) and the KL
    measurement in eval.py.
    """
    R, L = tokens.shape
    if len(prompts) != R:
        if len(prompts) == 0 or R % len(prompts):
            raise ValueError(f"need one prompt per row ({R}) or per group (a divisor of {R}), "
                             f"got {len(prompts)}")
        prompts = expand_prompts(prompts, R // len(prompts))
    _check_len(model, prompts, L)
    device = tokens.device
    lens = torch.tensor([len(p) for p in prompts], device=device)        # (R,)
    S = int(lens.max()) + L
    seq = torch.zeros(R, S, dtype=torch.long, device=device)
    for r, p in enumerate(prompts):
        seq[r, :len(p)] = torch.tensor(p, dtype=torch.long)
    # (R, L) where each completion token sits
    cols = lens[:, None] + torch.arange(L, device=device)[None, :]
    seq.scatter_(1, cols, tokens.masked_fill(~mask, 0))
    logits = model(seq)                                                  # (R, S, V)
    rows = torch.arange(R, device=device)[:, None]
    # (R, L, V) the logits that predicted them
    return logits[rows, cols - 1]


def completion_logprobs(model, prompts, tokens, mask, temperature=1.0, backend="auto"):
    """Differentiable (rows, L) log-probs of generated tokens under model (the RL trainer's
    re-score). prompts as in completion_logits. Entries where mask is False are 0."""
    pred = completion_logits(model, prompts, tokens, mask)               # (R, L, V)
    lp = token_logprobs(pred, tokens.masked_fill(~mask, 0), temperature, backend=backend)
    return lp.masked_fill(~mask, 0.0)


@torch.no_grad()
def generate_naive(model, prompts, num_samples=1, max_new_tokens=32, temperature=1.0, seed=0,
                   eos_id=None, pad_id=0, backend="auto"):
    """Reference generator: no KV cache, no padding; each step re-runs the whole prefix of one
    prompt's rows.

    Same arguments, sampler and output convention as generate. The generator is consumed per prompt,
    so sampled tokens differ from generate's; greedy ones must match.
    """
    sizes = _group_sizes(prompts, num_samples)
    _check_len(model, prompts, max_new_tokens)
    device = model.wte.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    out_t, out_m, out_l = [], [], []
    for p, n in zip(prompts, sizes):
        seq = torch.tensor(p, dtype=torch.long, device=device).repeat(n, 1)  # (n, len(p))
        done = torch.zeros(n, dtype=torch.bool, device=device)
        toks, masks, lps = [], [], []
        for t in range(max_new_tokens):
            tok, lp = sample_tokens(model(seq)[:, -1], temperature, generator=gen,
                                    backend=backend)
            toks.append(tok.masked_fill(done, pad_id))
            lps.append(lp.masked_fill(done, 0.0))
            masks.append(~done)
            if eos_id is not None:
                done = done | (tok == eos_id)
                if bool(done.all()):
                    break
            seq = torch.cat([seq, tok[:, None]], dim=1)
        out_t.append(torch.stack(toks, 1))
        out_m.append(torch.stack(masks, 1))
        out_l.append(torch.stack(lps, 1))
    L = max(t.shape[1] for t in out_t)
    pad = lambda xs, v: torch.cat([torch.nn.functional.pad(x, (0, L - x.shape[1]), value=v)
                                   for x in xs])
    return pad(out_t, pad_id), pad(out_m, False), pad(out_l, 0.0)


# -----------------------------------------------------------------------------
# the rollout record: sampled, decoded, scored

@dataclass
class Rollouts:
    """Sampled completions, prompt-major rows (prompt i owns num_samples[i] consecutive rows)."""
    tokens: torch.Tensor    # (R, L) sampled token ids, pad after each row's eos
    mask: torch.Tensor      # (R, L) True on real completion tokens (eos included)
    logp: torch.Tensor      # (R, L) the sampler's log-probs of those tokens (0 where mask is False)
    prompts: list           # R token lists: the prompt each row was sampled from
    group: list             # R ints: the problem each row answers (the advantage baseline's group)
    texts: list             # R decoded completions
    rewards: list           # R floats in [0, 1] from tasks.score
    feedback: list          # R strings: the verifier's textual feedback

    def __len__(self):
        return len(self.texts)

    def results(self):
        """GEPA's view: [(reward, output, feedback)] per row."""
        return list(zip(self.rewards, self.texts, self.feedback))


def expand(items, sizes):
    """One entry per prompt -> one per row (prompt i repeated sizes[i] times)."""
    return [x for x, n in zip(items, sizes) for _ in range(n)]


def sample_rollouts(model, enc, contexts, problems, num_samples=1, temperature=1.0, seed=0,
                    max_new_tokens=12, group=None):
    """contexts[i] + problems[i] is prompt i; num_samples an int or one int per prompt; group[i]
    the id of prompt i's problem (default i). Samples, decodes and scores -> Rollouts."""
    special = tasks.special_ids(enc)
    prompts = [tasks.encode_prompt(enc, c, p) for c, p in zip(contexts, problems)]
    sizes = _group_sizes(prompts, num_samples)
    was_training = model.training
    model.eval()
    tokens, mask, logp = generate(model, prompts, num_samples, max_new_tokens,
                                  temperature=temperature, seed=seed,
                                  eos_id=special["<|eos|>"], pad_id=special["<|pad|>"])
    model.train(was_training)
    host_tokens, host_mask = tokens.cpu(), mask.cpu()  # one copy to the host, not one per row
    texts = [tasks.decode_completion(enc, row[m].tolist())
             for row, m in zip(host_tokens, host_mask)]
    scored = [tasks.score(p, t) for p, t in zip(expand(problems, sizes), texts)]
    group = group or range(len(prompts))
    return Rollouts(tokens=tokens, mask=mask, logp=logp, prompts=expand(prompts, sizes),
                    group=expand(group, sizes), texts=texts,
                    rewards=[r for r, _ in scored], feedback=[f for _, f in scored])


def greedy_evaluate(model, enc, max_new_tokens=12, batched=False):
    """The policy as GEPA sees it: (context, problems) -> [(reward, output, feedback)], one greedy
    rollout per problem (deterministic, so a prompt's score does not depend on sampling luck).
    batched=True adds evaluate.many(contexts, problems): every (context, problem) pair in one
    generate call, the same greedy completions up to float round-off in the batched matmuls."""
    def evaluate(context, problems):
        return sample_rollouts(model, enc, [context] * len(problems), problems, 1, 0.0, 0,
                               max_new_tokens).results()

    def many(contexts, problems):
        n = len(problems)
        res = sample_rollouts(model, enc, [c for c in contexts for _ in range(n)],
                              list(problems) * len(contexts), 1, 0.0, 0, max_new_tokens).results()
        return [res[i * n:(i + 1) * n] for i in range(len(contexts))]  # context-major rows

    if batched:
        evaluate.many = many
    return evaluate


# -----------------------------------------------------------------------------
# optional: the fast path. The sampler and the log-probs as fused Triton kernels, used for CUDA
# tensors when triton imports (tests: Triton's CPU interpreter, against the torch paths above).
#   sample_triton        one program per row, the row in registers: Philox Gumbel noise, argmax
#   TritonTokenLogprobs  log-probs of given targets, streaming each row once; the backward writes
#                        g * (onehot - softmax) / T directly, no (B, T, V) log-softmax stored

SAMPLE_MAX_V = 131072  # the sampler kernel holds a whole row in registers; longer rows: torch
_LP_BLOCK = 4096       # chunk width of the log-prob kernels (they stream rows of any length)


def _use_triton(x, backend):
    if backend == "torch":
        return False
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError("backend='triton' but triton is not importable")
        if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set "
                               "before triton is imported")
        return True
    if backend == "auto":
        return HAS_TRITON and x.is_cuda
    raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")


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
    def _sample_kernel(x_ptr, x_stride, g_ptr, g_stride, seed_ptr, tok_ptr, lp_ptr, V, inv_t,
                       BLOCK: tl.constexpr, HAS_NOISE: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        valid = cols < V
        z = tl.load(x_ptr + row.to(tl.int64) * x_stride + cols, mask=valid, other=float("-inf"))
        # (BLOCK,) the only read of the row
        z = z.to(tl.float32) * inv_t
        zmax = tl.max(z, axis=0)
        e = tl.where(valid, tl.exp(z - zmax), 0.0)  # unnormalized probabilities
        if HAS_NOISE:
            g = tl.load(g_ptr + row.to(tl.int64) * g_stride + cols, mask=valid, other=0.0)
        else:
            g = _philox_gumbel(tl.load(seed_ptr), row, cols)
        tok = tl.argmax(tl.where(valid, z + g, float("-inf")), axis=0)
        ztok = tl.sum(tl.where(cols == tok, z, 0.0), axis=0)
        tl.store(tok_ptr + row, tok.to(tl.int64))
        tl.store(lp_ptr + row, ztok - zmax - tl.log(tl.sum(e, axis=0)))


def sample_triton(logits, inv_t, generator, noise):
    """sample_tokens' fast path: one program per row, the row held in registers, Philox Gumbel
    noise seeded from `generator` (or the given noise), argmax and log-prob in one pass."""
    B, V = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
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
    _sample_kernel[(B,)](logits, logits.stride(0), g, g_stride, seed, tok, lp, V, inv_t,
                         BLOCK=BLOCK, HAS_NOISE=noise is not None,
                         num_warps=4 if BLOCK <= 2048 else 8 if BLOCK <= 8192 else 16)
    return tok, lp


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
