"""Tests for rollout.py: the Triton fast path (interpreter on CPU) against the torch path, sampler
statistics against the exact softmax, cached batched generation against a full-recompute
reference, and harness/cuda_graphs.py's fixed-shape decode against rollout.generate."""
import math
import os

import pytest
import torch

import rollout
from harness import cuda_graphs
from model import GPT, GPTConfig
from rollout import (_sample_with_noise, completion_logprobs, expand_prompts, generate,
                     generate_naive, gumbel_noise, sample_tokens, token_logprobs)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# generation runs on each one present
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_triton = pytest.mark.skipif(
    not rollout.HAS_TRITON or (DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton (and TRITON_INTERPRET=1 set before import when there is no GPU)")


def ref_probs(logits, T):
    """Exact sampled distribution per row (float64), straight from the definition."""
    z = (logits.float() * rollout._inv_temp(T)).double()  # (B, V) the same fp32 z the samplers use
    return torch.softmax(z, -1)


def rigged_model(vocab=512, gain=2.0, seed=0, emb=1.0):
    """Random tiny GPT with large weights: peaked, context-dependent greedy choices (big top-1
    gaps), so a padding or cache bug changes tokens instead of hiding in near-uniform logits."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, gain / p.shape[-1] ** 0.5)
        m.wte.weight.normal_(0, emb)
    return m.eval()


def rand_prompts(lens, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lens]


# -----------------------------------------------------------------------------
# sampler: Triton vs torch, given the same noise

CONFIGS = [1.0, 0.7, 1.3]


def sampler_inputs(dtype, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    big = (torch.randn(8, 3, 300, generator=g) * scale).to(dtype)
    # strided rows
    return (big[:, 1].to(DEV),
            gumbel_noise((8, 300), torch.Generator().manual_seed(seed + 1)).to(DEV))


@needs_triton
@pytest.mark.parametrize("T", CONFIGS)
@pytest.mark.parametrize("dtype,scale", [(torch.float32, 3.0), (torch.bfloat16, 3.0),
                                         (torch.float32, 0.3)])
def test_sampler_backends_agree_given_noise(T, dtype, scale):
    # bf16 rows have many ties; scale 0.3 is flat
    logits, noise = sampler_inputs(dtype, scale)
    tok_a, lp_a = _sample_with_noise(logits, noise, T, backend="torch")
    tok_b, lp_b = _sample_with_noise(logits, noise, T, backend="triton")
    assert torch.equal(tok_a.cpu(), tok_b.cpu())
    torch.testing.assert_close(lp_a, lp_b, atol=1e-5, rtol=0)
    probs = ref_probs(logits.cpu(), T)
    picked = probs.gather(1, tok_a.cpu()[:, None]).squeeze(1)
    assert (picked > 0).all()
    torch.testing.assert_close(lp_a.cpu().double(), picked.log(), atol=1e-5, rtol=0)


def test_sampler_greedy():
    # expanded: stride-0 rows; greedy takes the first of tied maxima
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0, -1.0, 0.5]]).expand(3000, 7)
    tok, lp = sample_tokens(logits, temperature=0)
    assert (tok == 1).all() and (lp == 0).all()


@needs_triton
def test_triton_noise_is_gumbel_and_matches_explicit_path():
    import triton
    import triton.language as tl

    @triton.jit
    def noise_kernel(seed_ptr, out_ptr, V, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        tl.store(out_ptr + row * V + cols, rollout._philox_gumbel(tl.load(seed_ptr), row, cols),
                 mask=cols < V)

    B, V = 8, 500
    seed = torch.randint(0, 2 ** 31 - 1, (1,), generator=torch.Generator(DEV).manual_seed(5),
                         device=DEV)
    g = torch.empty(B, V, device=DEV)
    noise_kernel[(B,)](seed, g, V, BLOCK=512)
    x = g.flatten().double().sort().values.cpu()
    assert torch.isfinite(x).all()
    ks = ((torch.arange(1, x.numel() + 1) / x.numel()) - torch.exp(-torch.exp(-x))).abs().max()
    assert ks < 1.95 / math.sqrt(x.numel()), f"KS distance {ks:.4f} from Gumbel(0, 1)"  # p ~ 0.001
    logits = torch.randn(B, V, generator=torch.Generator().manual_seed(0)).to(DEV)
    # generator path == explicit noise path
    for opts in [dict(temperature=0.8), dict(temperature=1.0)]:
        tok, lp = sample_tokens(logits, generator=torch.Generator(DEV).manual_seed(5),
                                backend="triton", **opts)
        tok2, lp2 = _sample_with_noise(logits, g, backend="triton", **opts)
        assert torch.equal(tok, tok2) and torch.equal(lp, lp2)


# -----------------------------------------------------------------------------
# sampler statistics (torch path; the Triton path is tied to it above)

@pytest.mark.parametrize("T", [1.0, 0.5, 2.0, 0.7])
def test_sampler_chi_square(T):
    V, N = 12, 6000
    # no near-boundary cases
    logits = torch.tensor([[1.9, -0.3, 0.8, 2.6, -1.2, 0.1, 1.2, -2.0, 0.5, 2.2, -0.7, 1.5]])
    probs = ref_probs(logits, T)[0]
    tok, lp = sample_tokens(logits.expand(N, V), T, generator=torch.Generator().manual_seed(1234))
    counts = torch.bincount(tok, minlength=V).double()
    kept = probs > 0
    exp = N * probs[kept]
    stat = ((counts[kept] - exp) ** 2 / exp).sum()
    df = int(kept.sum()) - 1
    pval = (torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2)
            if df else 1.0)
    assert pval > 1e-3, f"chi2={stat:.1f} df={df} p={pval:.2e}"
    torch.testing.assert_close(lp.double(), probs[tok].log(), atol=1e-5, rtol=0)


def test_sampler_argument_errors():
    x = torch.randn(2, 10)
    for kw in [dict(temperature=-1), dict(backend="cuda")]:
        with pytest.raises(ValueError):
            sample_tokens(x, **kw)


# -----------------------------------------------------------------------------
# token_logprobs: fused Triton forward/backward vs torch, both vs float64

@needs_triton
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_token_logprobs_triton_matches_torch(T):
    # V > the kernel's chunk: the online max/sum crosses chunks and a ragged tail
    B, Tn, V = 2, 3, 5000
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(B, 5, V, generator=g) * 4).to(DEV)
    targets = torch.randint(0, V, (B, Tn), generator=g).to(DEV)
    w = torch.randn(B, Tn, generator=g).to(DEV)
    out, grads = [], []
    for backend in ["torch", "triton"]:
        leaf = base.clone().requires_grad_(True)
        lp = token_logprobs(leaf[:, 1:4], targets, T, backend=backend)  # a strided (B, T, V) view
        (lp * w).sum().backward()
        out.append(lp.detach())
        grads.append(leaf.grad)
    ref = (torch.log_softmax(base[:, 1:4].double() * rollout._inv_temp(T), -1)
           .gather(-1, targets[..., None]).squeeze(-1))
    torch.testing.assert_close(out[0].double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], out[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=0)
    assert grads[1][:, [0, 4]].abs().max() == 0  # rows outside the view get no gradient
    # low-precision input, fp32 math
    bf = token_logprobs(base[:, 1:4].bfloat16(), targets, T, backend="triton")
    torch.testing.assert_close(bf, token_logprobs(base[:, 1:4].bfloat16(), targets, T,
                                                  backend="torch"), atol=1e-5, rtol=0)


# -----------------------------------------------------------------------------
# generation

@pytest.mark.parametrize("dev", DEVICES)
def test_greedy_generate_matches_naive_and_alone(dev):
    m = rigged_model().to(dev)
    prompts = rand_prompts([5, 9, 3, 12], 512)
    tok, mask, lp = generate(m, prompts, num_samples=2, max_new_tokens=10, temperature=0)
    ref = generate_naive(m, prompts, num_samples=2, max_new_tokens=10, temperature=0)
    assert torch.equal(tok, ref[0]) and torch.equal(mask, ref[1]) and mask.all() and (lp == 0).all()
    # a test that can fail
    assert len({tuple(r) for r in tok.tolist()}) >= 4 and len(set(tok[0].tolist())) > 2
    for i, p in enumerate(prompts):  # a row of a padded batch == that prompt alone
        alone = generate(m, [p], num_samples=1, max_new_tokens=10, temperature=0)[0]
        assert torch.equal(alone[0], tok[2 * i])
    # groups per prompt
    tok3 = generate(m, prompts, num_samples=[1, 3, 1, 2], max_new_tokens=10, temperature=0)[0]
    assert torch.equal(tok3, tok[[0, 2, 2, 2, 4, 6, 6]])


@pytest.mark.parametrize("dev", DEVICES)
def test_fixed_shape_decode_matches_the_default_path(dev):
    # cuda_graphs: decode_step over the whole cache under a mask (a CUDA graph on CUDA) must give
    # rollout.generate's tokens, masks and log-probs, greedy and sampled, padded prompts and eos
    m = rigged_model(vocab=16, gain=1.0, seed=3, emb=0.1).to(dev)
    prompts = rand_prompts([3, 8, 5, 12], 16, seed=2)
    for T, eos in ((0.0, None), (1.0, 0), (0.7, None)):
        a = generate(m, prompts, [2, 3, 1, 2], 10, temperature=T, seed=5, eos_id=eos, pad_id=-1)
        b = cuda_graphs.generate(m, prompts, [2, 3, 1, 2], 10, temperature=T, seed=5, eos_id=eos,
                                 pad_id=-1)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert (a[2] - b[2]).abs().max() < 1e-5
    assert len({tuple(r) for r in a[0].tolist()}) > 4  # sampled rows differ: a test that can fail
    # decode_step alone equals a cached forward at the same slot
    cache, ref_cache = m.new_cache(2, 20), m.new_cache(2, 20)
    idx = torch.tensor(prompts[1][:6] * 2, device=dev).view(2, 6)
    m(idx, cache=cache)
    m(idx, cache=ref_cache)
    tok = torch.tensor([[3], [7]], device=dev)
    ref = m(tok, cache=ref_cache)
    key_mask = torch.zeros(2, 20, dtype=torch.bool, device=dev)
    key_mask[:, :7] = True
    got = cuda_graphs.decode_step(m, tok, torch.full((2, 1), 6, device=dev), cache,
                                  torch.tensor(6, device=dev), key_mask)
    assert (got - ref).abs().max() < 1e-5


@pytest.mark.parametrize("dev", DEVICES)
def test_eos_stops_rows_and_trims(dev):
    m = rigged_model().to(dev)
    prompts = rand_prompts([4, 11, 7], 512, seed=1)
    full = generate(m, prompts, num_samples=1, max_new_tokens=12, temperature=0)[0]
    eos = int(full[1, 3])  # a token row 1 emits at step 3 (maybe earlier too)
    tok, mask, lp = generate(m, prompts, num_samples=1, max_new_tokens=12, temperature=0,
                             eos_id=eos, pad_id=-5)
    stops = [(r.tolist() + [eos]).index(eos) for r in full]  # first eos per row (len 12 = never)
    assert tok.shape[1] == min(12, max(stops) + 1)
    for r, s in enumerate(stops):
        n = min(s + 1, 12)
        assert torch.equal(tok[r, :n], full[r, :n]) and mask[r, :n].all()
        assert (tok[r, n:] == -5).all() and not mask[r, n:].any()
    prompts = [prompts[1]] * 2  # every row stops at step <= 3: generation ends early
    assert generate(m, prompts, 1, 12, temperature=0, eos_id=eos)[0].shape[1] == stops[1] + 1


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_sampled_rollout_logprobs_match_trainer_and_masks(T, dev):
    # 16 tokens, soft logits: eos (token 0) ends some rows, not all
    m = rigged_model(vocab=16, gain=1.0, seed=3, emb=0.1).to(dev)
    prompts = rand_prompts([3, 8, 5, 12, 6], 16, seed=2)
    tok, mask, lp = generate(m, prompts, num_samples=4, max_new_tokens=20, temperature=T, seed=7,
                             eos_id=0, pad_id=15)
    R, L = tok.shape
    assert R == 20 and L <= 20
    ended = (tok == 0) & mask
    assert 0 < ended.any(1).sum() < R, "want some rows that stop and some that do not"
    for r in range(R):
        n = int(mask[r].sum())
        assert mask[r, :n].all() and not mask[r, n:].any()  # the mask is a prefix
        assert (tok[r, n:] == 15).all() and (lp[r, n:] == 0).all()
        # stops right at its first eos
        assert (tok[r, :n - 1] != 0).all() and (n == L or tok[r, n - 1] == 0)
    assert (lp[mask] < 0).all() and torch.isfinite(lp).all()
    new = completion_logprobs(m, prompts, tok, mask, temperature=T)  # one prompt per group
    torch.testing.assert_close(new.detach(), lp, atol=1e-4, rtol=0)
    # one per row
    new_rows = completion_logprobs(m, expand_prompts(prompts, 4), tok, mask, temperature=T)
    torch.testing.assert_close(new_rows, new, atol=1e-6, rtol=0)
    new.sum().backward()
    assert m.wte.weight.grad.abs().sum() > 0
    same = generate(m, prompts, num_samples=4, max_new_tokens=20, temperature=T, seed=7, eos_id=0,
                    pad_id=15)
    assert all(torch.equal(a, b) for a, b in zip(same, (tok, mask, lp)))  # same seed, same rollout


@pytest.mark.parametrize("dev", DEVICES)
def test_trainer_rows_may_mix_prompts(dev):
    m = rigged_model(vocab=16, gain=1.0, seed=3, emb=0.1).to(dev)
    pa, pb = rand_prompts([4, 9], 16, seed=5)
    a = generate(m, [pa], num_samples=3, max_new_tokens=6, temperature=1.0, seed=1)
    b = generate(m, [pb], num_samples=2, max_new_tokens=6, temperature=1.0, seed=2)
    # one RL group, two prompts (equal L: no eos)
    tok, mask, lp = (torch.cat([x, y]) for x, y in zip(a, b))
    new = completion_logprobs(m, [pa] * 3 + [pb] * 2, tok, mask)
    torch.testing.assert_close(new.detach(), lp, atol=1e-4, rtol=0)


def test_generate_argument_errors():
    m = rigged_model()
    with pytest.raises(ValueError):
        generate(m, [[1] * 60], max_new_tokens=10)  # past block_size 64
    with pytest.raises(ValueError):
        generate(m, [[1, 2], []], max_new_tokens=4)
    with pytest.raises(ValueError):
        generate(m, [[1, 2]], num_samples=[1, 2], max_new_tokens=4)
