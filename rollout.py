"""
rollout.py: sampling and batched generation for the RL side of Fast-Slow Training, and the one
record of sampled completions that flows through fastslow (Rollouts).

    from rollout import generate, completion_logprobs, sample_rollouts
    tokens, mask, logps = generate(model, prompts, num_samples=8, max_new_tokens=24,
                                   temperature=1.0, eos_id=eos)
    new_logps = completion_logprobs(model, prompts, tokens, mask)   # (rows, L), differentiable
    ro = sample_rollouts(model, enc, contexts, problems, num_samples=8, temperature=1.0, seed=0)
    ro.rewards, ro.texts, ro.feedback          # per row: scored by the world's verifier
    ro.tokens, ro.mask, ro.logp                # (R, L) what the sampler emitted, and its log-probs
    ro.prompts, ro.group                       # per row: its prompt, its problem's id

    # kernels (Triton interpreter on CPU), sampler statistics, generation
    python -m pytest tests/test_rollout.py
    # speed against a naive loop, Hugging Face and a sort-based sampler
    python -m harness.bench rollout | sample

What is here:
  sample_tokens        one token per row from (B, V) logits, with temperature / top-k / top-p, plus
                       its log-prob
  token_logprobs       log-probs of given targets under (B, T, V) logits, differentiable, no
                       (B, T, V) log-softmax
  generate             P prompts x G samples: left-pad + prefill once, repeat the KV cache rows,
                       decode all rows together
  completion_logits    the (rows, L, V) logits behind generated tokens (one right-padded forward)
  completion_logprobs  the trainer's differentiable re-score of generated tokens
  generate_naive       reference generator that re-runs the whole prefix every step (tests and
                       bench)
  sample_rollouts      contexts + problems -> Rollouts: generate, decode, score (tasks.score)
  greedy_evaluate      the policy as GEPA sees it: (context, problems) -> [(reward, output,
                       feedback)], one greedy rollout per problem
The fast paths (the Triton sampler and log-prob kernels, and the top-k / top-p window search that
training never uses) live in kernels.py; this file keeps the plain torch paths they are tested
against.

Design choices and why:
  * Sampling is Gumbel-max: token = argmax over the kept set of z + g, z = logits * fp32(1/T),
    g ~ Gumbel(0, 1) drawn per element. It needs no normalized probabilities, no cumsum and no
    multinomial, so a row is read once. The noise g = -log(E), E = -log1p(-u) ~ Exp(1), with u
    strictly inside (0, 1) (u = (k + 1/2) 2^-24 in torch, (r + 1/2) 2^-32 in Triton): the winners
    are the small E, which log1p keeps exact, and u never hits 0 or 1, so g is always finite
    (no +inf winner, no NaN).
  * Truncation is a threshold, never a sort. Top-k keeps every z >= the k-th largest z; top-p
    (applied after top-k, on the renormalized kept distribution) keeps every z >= the smallest z of
    the shortest head of the distribution whose mass reaches top_p. Ties at a threshold are all kept
    (so more than k tokens may survive when the k-th value is tied, e.g. in bf16 logits); that rule
    is what makes a sort-free search exact. The Triton kernel finds each threshold by bisection over
    the order-preserving int32 view of fp32 (<= 32 reductions over a row held in registers, exact:
    the answer is always a row element). The torch path uses torch.topk (a selection, not a sort) on
    a window of the largest logits that holds the kept set: k + 1 wide for top-k; for top-p alone,
    sized by one 256-bin histogram of the mass (a radix-select step). The window grows only if a tie
    reaches past it. On CPU this beats 32 bisection passes over the row.
  * log-probs are those of the distribution actually sampled from: z_tok - logsumexp(z over the kept
    set). temperature = 0 is greedy (argmax of the raw logits, first index on ties) and reports
    log-prob 0.0.
  * Backends: "auto" uses the Triton kernels for CUDA tensors when triton imports, torch otherwise;
    "triton" forces them (CPU tensors work under TRITON_INTERPRET=1, which the tests use). Given the
    same noise both give the same tokens (see _sample_with_noise); their random streams differ
    (torch.Generator vs Philox seeded from it), so with a generator each is reproducible on its own
    device only. The torch path may read a flag back to the host (window checks); the Triton path
    never does.
  * generate keeps one shared cache pointer for all rows: prompts are left-padded, pad slots are
    excluded by key_mask and RoPE positions start at 0 at each prompt's first token, so a padded row
    computes exactly what it would alone. The cache is sized prompt_len + max_new_tokens once; the
    only host sync per step is the "all rows done?" check.
  * Row order everywhere is prompt-major: row i*G + j is sample j of prompt i (with num_samples a
    list, prompt i owns num_samples[i] consecutive rows). completion_logprobs takes one prompt per
    row (or one per group, expanded the same way), so a trainer may put different prompts in one
    group.
  * generate runs under torch.no_grad and does not touch model.training (the GPT has no dropout).
    Finished rows keep decoding (their outputs are discarded) so the batch keeps its shape; pad_id
    is only written to the output and need not be a valid token id.
  * Every consumer reads the same Rollouts record (like GRPO-Zero's Episode): GEPA's evaluate (one
    greedy rollout per problem -> (reward, output, feedback)), the RL step (rewards -> one advantage
    per problem, tokens + mask + prompts -> the trainer's re-score, logp -> the sampler's
    log-probs), and the accuracy measurements. The generation code above never sees a reward; only
    sample_rollouts calls the verifier. `group[r]` is the id of the problem row r answers (by
    default its prompt's index): an FST step puts several prompts of one problem into one group,
    so one problem may own rows of several prompts.
"""

import os
from dataclasses import dataclass

import torch

import kernels
from world import tasks
# (re-exported: the tests and gpu_check ask rollout for it)
from kernels import HAS_TRITON  # noqa: F401

_NEG_INF = float("-inf")


# -----------------------------------------------------------------------------
# shared helpers

def _check_options(temperature, top_k, top_p):
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")


def _inv_temp(temperature):
    # 1/T rounded to fp32 once, so torch and Triton multiply by the very same number
    return float(torch.tensor(1.0 / temperature, dtype=torch.float32))


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


# -----------------------------------------------------------------------------
# sampling: torch path

def gumbel_noise(shape, generator=None, device="cpu"):
    """Gumbel(0, 1) noise in fp32, always finite (see the module docstring)."""
    # ~(k + 1/2) 2^-24
    u = torch.empty(shape, device=device).uniform_(2.0 ** -25, 1.0 - 2.0 ** -24,
                                                   generator=generator)
    # -log(E), E = -log1p(-u) ~ Exp(1); in place: no extra buffers
    return u.neg_().log1p_().neg_().log_().neg_()


def _sample_torch(logits, temperature, top_k, top_p, generator, noise):
    B, V = logits.shape
    inv_t = _inv_temp(temperature)
    if not (0 < top_k < V) and top_p >= 1:  # plain temperature: full-row Gumbel-max
        # (B, V)
        z = logits if logits.dtype == torch.float32 and inv_t == 1.0 else logits.float() * inv_t
        # one scratch buffer for noise, scores and exp: fresh big buffers cost page faults
        if noise is None:
            s = torch.empty(B, V, device=z.device).uniform_(2.0 ** -25, 1.0 - 2.0 ** -24,
                                                            generator=generator)
            # z + g, g = -log(E) as in gumbel_noise
            torch.sub(z, s.neg_().log1p_().neg_().log_(), out=s)
        else:
            s = z + noise
        tok = s.argmax(-1)
        zmax = z.max(-1, keepdim=True).values
        lse = torch.sub(z, zmax, out=s).exp_().sum(-1).log_() + zmax[:, 0]
        return tok, z.gather(1, tok[:, None]).squeeze(1) - lse
    # (B, c): noise is only needed on the window
    vals, idx, keep = kernels.truncate_torch(logits, inv_t, top_k, top_p)
    g = (noise.gather(1, idx) if noise is not None
         else gumbel_noise(vals.shape, generator, logits.device))
    j = (vals + g).masked_fill(~keep, _NEG_INF).argmax(-1, keepdim=True)  # (B, 1)
    # the row max is always kept
    zmax = vals[:, 0]
    lse = zmax + ((vals - zmax[:, None]).exp() * keep).sum(-1).log()
    return idx.gather(1, j).squeeze(1), vals.gather(1, j).squeeze(1) - lse


# -----------------------------------------------------------------------------
# sampling: public API

def _sample(logits, temperature, top_k, top_p, generator, noise, backend):
    _check_options(temperature, top_k, top_p)
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    if temperature == 0:  # greedy: the kept set always holds the argmax, and it has probability 1
        return logits.argmax(-1), torch.zeros(logits.shape[0], dtype=torch.float32,
                                              device=logits.device)
    if _use_triton(logits, backend) and logits.shape[1] <= kernels.SAMPLE_MAX_V:
        return kernels.sample_triton(logits, _inv_temp(temperature), top_k, top_p, generator, noise)
    return _sample_torch(logits, temperature, top_k, top_p, generator, noise)


def sample_tokens(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None, backend="auto"):
    """logits (B, V), any float dtype, rows may be a strided view -> (tokens (B,) long,
    logprobs (B,) float32).

    logprobs are under the distribution sampled from (after temperature, top-k, top-p,
    renormalization); temperature=0 is greedy with logprob 0.0. top_k=0 and top_p=1 mean off.
    backend: auto | torch | triton.
    """
    return _sample(logits, temperature, top_k, top_p, generator, None, backend)


def _sample_with_noise(logits, noise, temperature=1.0, top_k=0, top_p=1.0, backend="auto"):
    """sample_tokens with explicit Gumbel noise (B, V) fp32: both backends must return the same
    tokens."""
    return _sample(logits, temperature, top_k, top_p, None, noise, backend)


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
        return kernels.TritonTokenLogprobs.apply(logits, targets.long(), inv_t)
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
def generate(model, prompts, num_samples=1, max_new_tokens=32, temperature=1.0, top_k=0, top_p=1.0,
             seed=0, eos_id=None, pad_id=0, backend="auto", graphs=False):
    """Sample num_samples completions for each prompt (lists of token ids, any lengths).

    num_samples: an int, or one int per prompt. Returns (tokens long, mask bool, logprobs float32),
    each (rows, L) with rows = sum of the group sizes, row order prompt-major, L <= max_new_tokens
    the longest completion. A row stops at its first eos_id (kept, mask True); after it tokens are
    pad_id, mask False, logprobs 0. eos_id=None: every row runs max_new_tokens. logprobs are the
    sampler's (see sample_tokens). graphs=True decodes with fixed shapes (model.decode_step: the
    whole cache under a mask, the slot a device tensor), which on CUDA is captured once as a CUDA
    graph and replayed every step (no per-kernel launch cost); same tokens as the default path.
    """
    _check_options(temperature, top_k, top_p)
    sizes = _group_sizes(prompts, num_samples)
    _check_len(model, prompts, max_new_tokens)
    device = model.wte.weight.device
    logits, cache, key_mask, lens, Lp = _prefill(model, prompts, max_new_tokens)
    G = sizes[0] if len(set(sizes)) == 1 else torch.tensor(sizes, device=device)
    # prefill once per prompt, not per sample
    cache.repeat_rows(G)
    logits, key_mask, pos = (t.repeat_interleave(G, dim=0) for t in (logits, key_mask, lens))
    R = logits.shape[0]
    if graphs and max_new_tokens > 1:  # fixed shapes: generated slots are unmasked one by one
        key_mask[:, Lp:] = False
        slot = torch.full((), Lp, dtype=torch.long, device=device)
        tok_in = torch.zeros(R, 1, dtype=torch.long, device=device)
        pos_in = torch.zeros(R, 1, dtype=torch.long, device=device)
        decode = _static_decoder(model, cache, tok_in, pos_in, slot, key_mask)
    gen = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.full((R, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(R, max_new_tokens, dtype=torch.float32, device=device)
    mask = torch.zeros(R, max_new_tokens, dtype=torch.bool, device=device)
    done = torch.zeros(R, dtype=torch.bool, device=device)
    L = max_new_tokens
    for t in range(max_new_tokens):
        tok, lp = sample_tokens(logits, temperature, top_k, top_p, generator=gen, backend=backend)
        tokens[:, t] = tok.masked_fill(done, pad_id)
        logps[:, t] = lp.masked_fill(done, 0.0)
        mask[:, t] = ~done
        if eos_id is not None:
            done |= tok == eos_id
            if t + 1 < max_new_tokens and bool(done.all()):             # the one host sync per step
                L = t + 1
                break
        if t + 1 < max_new_tokens and graphs:  # the same step through fixed-shape buffers
            slot.fill_(Lp + t)
            key_mask[:, Lp + t] = True
            tok_in.copy_(tok[:, None])
            pos_in.copy_((pos + t)[:, None])
            logits = decode()[:, -1]
        elif t + 1 < max_new_tokens:
            # finished rows keep decoding their (ignored) sampled token: pad_id need not be a valid
            # token id
            logits = model(tok[:, None], positions=(pos + t)[:, None], cache=cache,
                           key_mask=key_mask)[:, -1]
    return tokens[:, :L], mask[:, :L], logps[:, :L]


def _static_decoder(model, cache, tok_in, pos_in, slot, key_mask):
    """-> a function running model.decode_step on these buffers. On CUDA the step is captured once
    as a CUDA graph (after a warm-up on a side stream, as graph capture requires) and each call
    replays it; the warm-up writes slot `slot`, which the first real step overwrites."""
    step = lambda: model.decode_step(tok_in, pos_in, cache, slot, key_mask)  # noqa: E731
    if tok_in.device.type != "cuda":
        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()

    def replay():
        graph.replay()
        return out
    return replay


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
def generate_naive(model, prompts, num_samples=1, max_new_tokens=32, temperature=1.0, top_k=0,
                   top_p=1.0, seed=0, eos_id=None, pad_id=0, backend="auto"):
    """Reference generator: no KV cache, no padding; each step re-runs the whole prefix of one
    prompt's rows.

    Same arguments, sampler and output convention as generate. The generator is consumed per prompt,
    so sampled tokens differ from generate's; greedy ones must match.
    """
    _check_options(temperature, top_k, top_p)
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
            tok, lp = sample_tokens(model(seq)[:, -1], temperature, top_k, top_p, generator=gen,
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
