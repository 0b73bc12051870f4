"""
tests/test_rl.py: checks the RL math of rl.py (advantages, losses, KL) against
plain for-loop references, the on-policy identities (ratio 1 -> every loss is the gradient of
-A*logp under its normalizer), micro-batch additivity, NaN-safety at masked positions, and that a
tiny GPT actually learns a trivial reward with cispo.

Run: python -m pytest -q tests/test_rl.py   (a few seconds on CPU)
"""

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rl import (group_advantages, zero_std_fraction, policy_loss, kl_k3, masked_mean,  # noqa: E402
                LOSS_TYPES)

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine


# -----------------------------------------------------------------------------
# naive references: explicit loops over sequences and tokens, written independently of rl.py

def ref_advantages(rewards, group_ids, scale):
    r, g = rewards.tolist(), group_ids.tolist()
    B = len(r)
    allmean = sum(r) / B
    batch_std = math.sqrt(sum((x - allmean) ** 2 for x in r) / (B - 1))
    out = []
    for i in range(B):
        members = [r[j] for j in range(B) if g[j] == g[i]]
        mean = sum(members) / len(members)
        if all(x == members[0] for x in members):
            out.append(0.0)
            continue
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
        a = r[i] - mean
        if scale == "group":
            a = a / (std + 1e-4)
        elif scale == "batch":
            a = a / (batch_std + 1e-4)
        out.append(a)
    return torch.tensor(out, dtype=torch.float64)


def ref_loss(logp, old_logp, adv, mask, loss_type, eps_low=0.2, eps_high=0.28, cap=5.0,
             num_tokens=None):
    B, T = logp.shape
    total_tokens = sum(int(mask[i, t]) for i in range(B) for t in range(T))
    seq_losses, total = [], 0.0
    for i in range(B):
        seq_sum, n_i = 0.0, 0
        for t in range(T):
            if not mask[i, t]:
                continue
            lr = min(max(logp[i, t] - old_logp[i, t], torch.tensor(-20.0, dtype=logp.dtype)),
                     torch.tensor(20.0, dtype=logp.dtype))
            ratio = torch.exp(lr)
            if loss_type == "cispo":
                w = min(ratio.item(), cap)  # a python float: no gradient through the weight
                l = -w * adv[i] * logp[i, t]
            else:
                hi = 1 + (eps_high if loss_type == "dapo" else eps_low)
                clipped = min(max(ratio, torch.tensor(1 - eps_low, dtype=logp.dtype)),
                              torch.tensor(hi, dtype=logp.dtype))
                l = -min(ratio * adv[i], clipped * adv[i])
            seq_sum = seq_sum + l
            n_i += 1
        seq_losses.append(seq_sum / n_i if n_i > 0 else 0.0)
        total = total + seq_sum
    if loss_type == "grpo":
        return sum(seq_losses) / B
    if loss_type == "dr_grpo":
        return total / (B * T)
    return total / (num_tokens if num_tokens is not None else max(total_tokens, 1))


def ref_k3(logp, ref_logp, mask):
    B, T = logp.shape
    rows = []
    for i in range(B):
        row = []
        for t in range(T):
            if mask[i, t]:
                d = min(max(ref_logp[i, t] - logp[i, t], torch.tensor(-20.0, dtype=logp.dtype)),
                        torch.tensor(20.0, dtype=logp.dtype))
                row.append(torch.exp(d) - d - 1)
            else:
                row.append(torch.zeros((), dtype=logp.dtype))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def random_batch(B=6, T=7, seed=0, spread=0.5):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    # ratios both sides of the clip
    old_logp = logp + torch.randn(B, T, generator=g, dtype=torch.float64) * spread
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    adv[1] = 0.0
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[2] = False  # a fully masked row
    mask[0, 0] = True
    return logp, old_logp, adv, mask


# -----------------------------------------------------------------------------
# advantages

@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_reference(scale):
    g = torch.Generator().manual_seed(1)
    rewards = torch.rand(20, generator=g, dtype=torch.float64)
    # scrambled, sparse
    ids = torch.tensor([42, 7, 7, 42, 1000, 3, 3, 3, 42, 7, 1000, 1000, 5, 5, 5, 5, 9, 3, 7, 42])
    rewards[ids == 5] = 0.25  # a constant group
    rewards[ids == 9] = 0.9   # a group of size 1
    got = group_advantages(rewards, ids, scale)
    assert torch.allclose(got, ref_advantages(rewards, ids, scale), atol=1e-10)
    assert (got[ids == 5] == 0).all() and (got[ids == 9] == 0).all()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_zero_std_groups_get_exact_zero(scale):
    # 0.1*3/3 != 0.1 in float: must still be 0
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 0.0, 1.0, 0.3])
    ids = torch.tensor([11, 11, 11, 4, 4, -2, -2, 99])
    adv = group_advantages(rewards, ids, scale)
    assert (adv[:5] == 0).all() and (adv[7] == 0)
    assert adv[5] < 0 < adv[6]
    # groups 11, 4, 99 of {11, 4, -2, 99}
    assert zero_std_fraction(rewards, ids) == pytest.approx(3 / 4)


def test_unbiased_std_hand_example():
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0, 2.0, 4.0])
    ids = torch.tensor([3, 3, 3, 8, 8, 8])
    adv = group_advantages(rewards, ids, "group")
    for gid in (3, 8):
        r = rewards[ids == gid]
        expected = (r - r.mean()) / (torch.std(r) + 1e-4)  # torch.std is Bessel-corrected
        assert torch.allclose(adv[ids == gid], expected, atol=1e-6)
    std_b = torch.std(rewards)
    expected_b = torch.tensor([-2 / 3, 1 / 3, 1 / 3, -2.0, 0.0, 2.0]) / (std_b + 1e-4)
    assert torch.allclose(group_advantages(rewards, ids, "batch"), expected_b, atol=1e-6)
    assert torch.allclose(group_advantages(rewards, ids, "none"),
                          torch.tensor([-2 / 3, 1 / 3, 1 / 3, -2.0, 0.0, 2.0]))


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="grpo, dr_grpo, dapo, cispo"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), "ppo")
    with pytest.raises(ValueError, match="valid"):
        group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), "std")


# -----------------------------------------------------------------------------
# losses

@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("float_mask", [False, True])
def test_loss_and_grad_match_reference(loss_type, float_mask):
    logp, old_logp, adv, mask = random_batch()
    lp1 = logp.clone().requires_grad_(True)
    loss, metrics = policy_loss(lp1, old_logp, adv, mask.double() if float_mask else mask,
                                loss_type)
    loss.backward()
    lp2 = logp.clone().requires_grad_(True)
    ref = ref_loss(lp2, old_logp, adv, mask, loss_type)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(lp1.grad, lp2.grad, atol=1e-5)
    assert (lp1.grad[~mask] == 0).all()
    # spread 0.5 puts some ratios outside the band
    assert 0 < metrics["clip_frac"] < 1 or loss_type == "cispo"
    assert metrics["frac_zero_adv"] == pytest.approx(1 / 6)
    ratio = torch.exp(logp - old_logp)[mask]
    assert metrics["ratio_mean"] == pytest.approx(ratio.mean().item())


def test_clip_metrics_by_hand():
    # ratios e^0.5 = 1.65 and e^-0.5 = 0.61, with A = +1 and A = -1
    logp = torch.tensor([[0.5, -0.5], [0.5, -0.5]])
    old = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2, dtype=torch.bool)
    _, m = policy_loss(logp, old, adv, mask, "dapo")
    # clip active only where it matters: A>0 & ratio>1.28 (row 0, tok 0); A<0 & ratio<0.8
    # (row 1, tok 1)
    assert (m["clip_frac"], m["clip_high_frac"], m["clip_low_frac"]) == (0.5, 0.25, 0.25)
    _, m = policy_loss(torch.tensor([[2.0, 1.0]]), torch.zeros(1, 2), torch.ones(1),
                       torch.ones(1, 2), "cispo")
    assert m["clip_frac"] == 0.5  # e^2 = 7.4 > 5 is capped, e^1 = 2.7 is not


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_on_policy_reduces_to_reinforce(loss_type):
    logp, _, adv, mask = random_batch(seed=3)
    lp = logp.clone().requires_grad_(True)
    loss, m = policy_loss(lp, lp.detach(), adv, mask, loss_type)
    loss.backward()
    assert m["ratio_mean"] == 1.0 and m["clip_frac"] == 0.0
    lp2 = logp.clone().requires_grad_(True)
    pg = torch.where(mask, -adv[:, None] * lp2, torch.zeros(()))  # (B, T) REINFORCE per-token loss
    B, T = logp.shape
    if loss_type == "grpo":
        target = (pg.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        target = pg.sum() / (B * T)
    else:
        target = pg.sum() / mask.sum()
    target.backward()
    assert torch.allclose(lp.grad, lp2.grad, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["dapo", "cispo"])
def test_shared_num_tokens_makes_micro_batches_add_up(loss_type):
    logp, old_logp, adv, mask = random_batch(B=8, seed=4)
    full_lp = logp.clone().requires_grad_(True)
    full, _ = policy_loss(full_lp, old_logp, adv, mask, loss_type)
    full.backward()
    lp = logp.clone().requires_grad_(True)
    n = mask.sum()
    halves = [policy_loss(lp[s], old_logp[s], adv[s], mask[s], loss_type, num_tokens=n)[0]
              for s in (slice(0, 3), slice(3, 8))]
    (halves[0] + halves[1]).backward()
    assert torch.allclose(halves[0] + halves[1], full, atol=1e-12)
    assert torch.allclose(lp.grad, full_lp.grad, atol=1e-12)
    # explicit num_tokens rescales: doubling it halves the loss
    half_loss, _ = policy_loss(logp, old_logp, adv, mask, loss_type, num_tokens=2 * n)
    assert torch.allclose(half_loss, full.detach() / 2, atol=1e-12)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_masked_extremes_stay_finite(loss_type):
    logp, old_logp, adv, mask = random_batch(seed=5)
    bad = [-1e9, 1e9, float("-inf"), float("nan"), float("inf")]
    masked = (~mask).nonzero().tolist()
    for k, (i, t) in enumerate(masked):
        logp[i, t] = bad[k % len(bad)]
        old_logp[i, t] = bad[(k + 2) % len(bad)]
    lp = logp.clone().requires_grad_(True)
    loss, m = policy_loss(lp, old_logp, adv, mask, loss_type)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert all(math.isfinite(v) for v in m.values())
    # and the masked garbage does not change anything at the real positions
    clean = random_batch(seed=5)
    ref, _ = policy_loss(clean[0], clean[1], clean[2], clean[3], loss_type)
    assert torch.allclose(loss, ref, atol=1e-12)


# -----------------------------------------------------------------------------
# k3

def test_kl_k3_matches_reference_and_is_safe():
    logp, ref_logp, _, mask = random_batch(seed=6)
    lp1 = logp.clone().requires_grad_(True)
    kl = kl_k3(lp1, ref_logp, mask)
    lp2 = logp.clone().requires_grad_(True)
    ref = ref_k3(lp2, ref_logp, mask)
    assert torch.allclose(kl, ref, atol=1e-10) and (kl >= 0).all()
    masked_mean(kl, mask).backward()
    (ref.sum() / mask.sum()).backward()
    assert torch.allclose(lp1.grad, lp2.grad, atol=1e-10)
    bad = [-1e9, 1e9, float("-inf"), float("nan"), float("inf")]
    for k, (i, t) in enumerate((~mask).nonzero().tolist()):
        logp[i, t] = bad[k % len(bad)]
        ref_logp[i, t] = bad[(k + 1) % len(bad)]
    lp = logp.clone().requires_grad_(True)
    kl = kl_k3(lp, ref_logp, mask)
    masked_mean(kl, mask).backward()
    assert torch.isfinite(kl).all() and (kl[~mask] == 0).all() and torch.isfinite(lp.grad).all()
    assert (kl_k3(logp, logp, mask) == 0).all()  # KL of a policy with itself


# -----------------------------------------------------------------------------
# end to end: a tiny GPT learns "always answer 7"

def test_tiny_policy_learns_trivial_reward():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    V, P, G, L = 16, 4, 8, 3  # vocab, prompts per step, samples per prompt, completion length
    model = GPT(GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=32, block_size=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    history = []
    for step in range(40):
        prompts = torch.randint(0, V, (P, 2)).repeat_interleave(G, dim=0)  # (P*G, 2)
        seq = prompts
        with torch.no_grad():
            for _ in range(L):  # plain sampling, no KV cache: the sequences are 5 tokens long
                probs = torch.softmax(model(seq)[:, -1], dim=-1)
                seq = torch.cat([seq, torch.multinomial(probs, 1)], dim=1)
        completion = seq[:, 2:]                                             # (B, L)
        rewards = (completion == 7).float().mean(-1)                        # (B,)
        history.append(rewards.mean().item())
        adv = group_advantages(rewards, torch.arange(P).repeat_interleave(G), "group")
        # (B, L, V) predicting the completion
        logits = model(seq[:, :-1])[:, 1:]
        logp = torch.log_softmax(logits, -1).gather(-1, completion[..., None]).squeeze(-1)  # (B, L)
        mask = torch.ones_like(logp, dtype=torch.bool)
        loss, _ = policy_loss(logp, logp.detach(), adv, mask, "cispo")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert history[0] < 0.25, history  # starts near chance (1/16)
    # and learns; a flipped advantage sign drives it to ~0
    assert sum(history[-5:]) / 5 > 0.8, history


def test_cispo_gradient_is_the_importance_weighted_one_until_the_cap_acts():
    """Off-policy tokens (ratio != 1): below the cap CISPO's gradient equals that of the
    importance-weighted policy gradient -sum(ratio * A) / N; a token whose ratio exceeds the cap
    gets weight `cap` instead."""
    old = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    # e^2.5 = 12.2 > cap 5
    logp0 = torch.tensor([[-0.3, 0.4, -1.0], [0.2, -0.5, 2.5]], dtype=torch.float64)
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    lp = logp0.clone().requires_grad_(True)
    loss, m = policy_loss(lp, old, adv, mask, "cispo", cispo_cap=5.0)
    loss.backward()
    lp_is = logp0.clone().requires_grad_(True)
    # importance-weighted PG, no cap
    (-(torch.exp(lp_is - old) * adv[:, None]).sum() / 6).backward()
    capped = torch.zeros(2, 3, dtype=torch.bool)
    capped[1, 2] = True
    # uncapped tokens: equal
    assert torch.allclose(lp.grad[~capped], lp_is.grad[~capped], atol=1e-12)
    # the capped token differs ...
    assert not torch.allclose(lp.grad[capped], lp_is.grad[capped])
    # ... its weight is exactly the cap
    assert torch.allclose(lp.grad[1, 2], -5.0 * adv[1] / 6)
    assert m["clip_high_frac"] == pytest.approx(1 / 6) and m["clip_frac"] == pytest.approx(1 / 6)
    lp_pg = logp0.clone().requires_grad_(True)
    (-(adv[:, None] * lp_pg).sum() / 6).backward()  # plain REINFORCE: not the same when ratio != 1
    assert not torch.allclose(lp.grad, lp_pg.grad)
