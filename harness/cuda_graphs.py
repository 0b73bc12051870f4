"""
harness/cuda_graphs.py: generation whose decode step has fixed shapes (the whole KV cache under a
mask, the slot a device tensor), so that on CUDA it is captured once as a CUDA graph and replayed
every step, without per-kernel launch costs. Training does not use it (rollout.generate is the
path every result was measured with); gpu_check.py measures it against rollout.generate, and
tests/test_rollout.py checks that it gives generate's tokens.

    tokens, mask, logps = generate(model, prompts, num_samples=8, max_new_tokens=24, eos_id=eos)
"""

import torch
import torch.nn.functional as F

from model import apply_rope, rms_norm
from rollout import _check_len, _group_sizes, _prefill, sample_tokens


def decode_step(model, tok, positions, cache, slot, key_mask):
    """model.forward for one token per row with the cache's pointer at `slot`, in fixed shapes:
    tok (B, 1), positions (B, 1), slot a 0-dim long tensor (where k, v are written), key_mask
    (B, max_len) the slots that may be attended (the caller marks `slot` first). Nothing depends
    on a python int that changes per step, so a CUDA graph can replay it; the cache's python
    pointer is neither read nor moved. -> logits (B, 1, V)."""
    # (B, 1, 1, D/2)
    cos, sin = model.rope_cos[positions].unsqueeze(1), model.rope_sin[positions].unsqueeze(1)
    attn_mask = key_mask[:, None, None, :]  # (B, 1, 1, max_len)
    x = model.wte(tok)  # (B, 1, C)
    for i, block in enumerate(model.blocks):
        a, h = block.attn, rms_norm(x)
        B, T, C = h.shape
        q, k, v = a.qkv(h).split(C, dim=2)
        # (B, H, 1, D)
        q, k, v = (t.view(B, T, a.n_head, C // a.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.k[i].index_copy_(2, slot.view(1), k)
        cache.v[i].index_copy_(2, slot.view(1), v)
        y = F.scaled_dot_product_attention(q, cache.k[i], cache.v[i], attn_mask=attn_mask)
        x = x + a.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(rms_norm(x))
    return F.linear(rms_norm(x), model.wte.weight)  # (B, 1, V)


def static_decoder(model, cache, tok_in, pos_in, slot, key_mask):
    """-> a function running decode_step on these buffers. On CUDA the step is captured once as a
    CUDA graph (after a warm-up on a side stream, as graph capture requires) and each call replays
    it; the warm-up writes slot `slot`, which the first real step overwrites."""
    step = lambda: decode_step(model, tok_in, pos_in, cache, slot, key_mask)  # noqa: E731
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


@torch.no_grad()
def generate(model, prompts, num_samples=1, max_new_tokens=32, temperature=1.0, seed=0,
             eos_id=None, pad_id=0, backend="auto"):
    """rollout.generate with the fixed-shape decode step (a CUDA graph on CUDA): the same
    arguments, the same tokens, mask and log-probs."""
    sizes = _group_sizes(prompts, num_samples)
    _check_len(model, prompts, max_new_tokens)
    device = model.wte.weight.device
    logits, cache, key_mask, lens, Lp = _prefill(model, prompts, max_new_tokens)
    G = sizes[0] if len(set(sizes)) == 1 else torch.tensor(sizes, device=device)
    cache.repeat_rows(G)  # prefill once per prompt, not per sample
    logits, key_mask, pos = (t.repeat_interleave(G, dim=0) for t in (logits, key_mask, lens))
    R = logits.shape[0]
    key_mask[:, Lp:] = False  # fixed shapes: generated slots are unmasked one by one
    slot = torch.full((), Lp, dtype=torch.long, device=device)
    tok_in = torch.zeros(R, 1, dtype=torch.long, device=device)
    pos_in = torch.zeros(R, 1, dtype=torch.long, device=device)
    decode = static_decoder(model, cache, tok_in, pos_in, slot, key_mask) \
        if max_new_tokens > 1 else None
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
            if t + 1 < max_new_tokens and bool(done.all()):  # the one host sync per step
                L = t + 1
                break
        if t + 1 < max_new_tokens:  # the next step, through the fixed-shape buffers
            slot.fill_(Lp + t)
            key_mask[:, Lp + t] = True
            tok_in.copy_(tok[:, None])
            pos_in.copy_((pos + t)[:, None])
            logits = decode()[:, -1]
    return tokens[:, :L], mask[:, :L], logps[:, :L]
