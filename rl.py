"""
rl.py: the slow weights' update, GRPO written by hand. Plain functions on tensors that know nothing
of tokenizers or tasks: group-relative advantages, the policy-gradient losses (grpo, dr_grpo, dapo,
cispo), the k3 KL estimate, the one guarded optimizer step (pretraining uses it too), and
update_policy, which applies them to a batch of rollouts (rollout.Rollouts).

    adv = group_advantages(rewards, group_ids, scale="group")       # one baseline per problem
    row = update_policy(model, opt, rollouts, adv, preset, ref=None) # -> log fields

Choices, and why:
- Advantages follow TRL: A = r - mean_group, divided by (std + 1e-4) with the unbiased (Bessel) std,
  of the group ("group"), of the whole batch ("batch", Lite-PPO) or not at all ("none", Dr. GRPO).
  A group whose rewards are all equal (or of size 1) gets exactly 0, tested with max == min rather
  than std == 0, because the float mean of equal numbers need not equal them bit for bit.
- On-policy (old_logp equal to logp) the ratio is exactly 1, no clip is ever active, and grpo /
  dapo / cispo all reduce to the gradient of -A * logp; they differ only in the normalizer
  (per-sequence token mean, global token count, ...). The clipping matters when old_logp comes from
  another policy: update_policy takes old_logp from the sampler and makes several optimizer steps
  per batch of rollouts, so from the second step on the ratio differs from 1 and CISPO's cap can
  act.
- dapo and cispo divide by the token count of the optimizer step's batch (update_policy: one chunk);
  policy_loss(num_tokens=) lets a caller that splits a step into micro-batches pass the whole step's
  count, so that their losses add up to the full-batch loss.
- Masked positions are handled with torch.where, never by multiplying with the mask: logp at padding
  may be -inf or NaN, and 0 * inf = NaN would leak into the loss and the gradients. The log-ratio is
  masked to 0 and clamped to [-20, 20] before exp so exp can never overflow.
- guarded_step skips an optimizer step whose loss or gradient is non-finite, leaving weights and
  optimizer state untouched: pretraining (world/pretrain.py) and update_policy share it, and their
  callers log and count the skip.
- frac_zero_adv (from policy_loss) and zero_std_fraction (from the rewards) say how much of the
  batch carries no learning signal: groups where every sample got the same reward.
"""

import math

import torch

import rollout

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "cispo")
ADV_SCALES = ("group", "batch", "none")


def _group_index(group_ids):
    """Arbitrary integer ids -> contiguous ids 0..G-1 (B,) and group sizes (G,)."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # ids need not be contiguous or sorted
    return inv, torch.bincount(inv)


def _constant_groups(rewards, inv, G):
    """(G,) bool: True where every reward in the group is identical (includes groups of size 1)."""
    hi = torch.full((G,), float("-inf"), dtype=rewards.dtype, device=rewards.device)
    lo = torch.full((G,), float("inf"), dtype=rewards.dtype, device=rewards.device)
    hi = hi.scatter_reduce(0, inv, rewards, reduce="amax")
    lo = lo.scatter_reduce(0, inv, rewards, reduce="amin")
    return hi == lo


def group_advantages(rewards, group_ids, scale="group"):
    """rewards (B,) float, group_ids (B,) int -> advantages (B,).

    scale: "group" -> (r - mean_g) / (std_g + 1e-4); "batch" -> (r - mean_g) / (std_batch + 1e-4);
    "none" -> r - mean_g (Dr. GRPO). std is unbiased; groups with all-equal rewards get exactly 0.
    """
    if scale not in ADV_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; valid: 'group', 'batch', 'none'")
    r = rewards.float() if not rewards.is_floating_point() else rewards
    inv, counts = _group_index(group_ids)
    G = counts.numel()
    mean = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, inv, r) / counts  # (G,)
    adv = r - mean[inv]  # (B,)
    if scale == "group":
        var = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, inv, adv ** 2)
        # Bessel; size-1 groups are zeroed below anyway
        std = (var / (counts - 1).clamp(min=1)).sqrt()
        adv = adv / (std[inv] + 1e-4)
    elif scale == "batch":
        std = r.std() if r.numel() > 1 else r.new_zeros(())  # torch.std is unbiased by default
        adv = adv / (std + 1e-4)
    const = _constant_groups(r, inv, G)[inv]  # (B,)
    return torch.where(const, torch.zeros_like(adv), adv)  # exact zeros: no rounding-noise signal


def zero_std_fraction(rewards, group_ids):
    """Fraction of groups whose rewards are all equal (they carry no gradient), as a python
    float."""
    r = rewards.float() if not rewards.is_floating_point() else rewards
    inv, counts = _group_index(group_ids)
    return _constant_groups(r, inv, counts.numel()).float().mean().item()


def policy_loss(logp, old_logp, advantages, mask, loss_type, clip_eps=0.2, clip_higher=0.28,
                cispo_cap=5.0, num_tokens=None):
    """Policy-gradient loss to minimize -> (loss scalar, metrics dict of python floats).

    logp (B, T) with grad; old_logp (B, T) treated as a constant; advantages (B,); mask (B, T) bool
    or 0/1 float. loss_type in LOSS_TYPES (see the module docstring and the README's Algorithm
    section).
    clip_eps, clip_higher, cispo_cap: the trainer passes Preset's clip_eps, dapo_clip_higher and
    cispo_cap.
    num_tokens: masked-token count of the whole optimizer step (dapo, cispo); default: this batch's.
    metrics: clip_frac, clip_low_frac, clip_high_frac (fractions of masked tokens), ratio_mean
    (masked mean of the ratio), frac_zero_adv (fraction of sequences with advantage exactly 0).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    mask = mask.bool()  # (B, T)
    B, T = logp.shape
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # (B, T), 0 where masked
    log_ratio = torch.where(mask, logp - old_logp.detach(), zero).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)  # (B, T), exactly 1 where masked
    A = advantages.to(logp.dtype)[:, None]  # (B, 1), same advantage for every token of a sequence

    if loss_type == "cispo":
        weight = ratio.clamp(max=cispo_cap).detach()  # IS weight, capped, no gradient through it
        # (B, T); NaN/inf at masked slots is discarded by the where below
        per_tok = -weight * A * logp
        clip_low = torch.zeros_like(mask)
        clip_high = mask & (ratio > cispo_cap)
    else:
        hi = 1.0 + (clip_higher if loss_type == "dapo" else clip_eps)  # clip-higher only for dapo
        lo = 1.0 - clip_eps
        per_tok = -torch.min(ratio * A, ratio.clamp(lo, hi) * A)  # (B, T) PPO clipped surrogate
        # where the min picks the clipped term (no gradient)
        clip_low = mask & (A < 0) & (ratio < lo)
        clip_high = mask & (A > 0) & (ratio > hi)
    per_tok = torch.where(mask, per_tok, zero)  # (B, T)

    if loss_type == "grpo":  # per-sequence token mean, then mean over sequences (empty rows give 0)
        loss = (per_tok.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":  # constant normalizer: no length bias
        loss = per_tok.sum() / (B * T)
    else:  # dapo, cispo: every token of the optimizer step weighs the same
        if num_tokens is None:
            num_tokens = mask.sum().clamp(min=1)
        loss = per_tok.sum() / num_tokens

    with torch.no_grad():
        n = mask.sum().clamp(min=1).float()
        values = torch.stack([(clip_low | clip_high).sum() / n, clip_low.sum() / n,
                              clip_high.sum() / n, torch.where(mask, ratio, zero).sum() / n,
                              (advantages == 0).float().mean()]).tolist()  # one host sync, not five
        metrics = dict(zip(("clip_frac", "clip_low_frac", "clip_high_frac", "ratio_mean",
                            "frac_zero_adv"), values))
    return loss, metrics


def kl_k3(logp, ref_logp, mask):
    """Per-token k3 estimate of KL(pi || ref) (B, T): exp(d) - d - 1 with d = ref - logp; 0 where
    masked.

    Unbiased and >= 0. Add it to the loss as `beta * masked_mean(kl_k3(...), mask)`.
    """
    mask = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # (B, T), clamp: no overflow
    d = torch.where(mask, ref_logp.detach() - logp, zero).clamp(-20.0, 20.0)
    return torch.where(mask, torch.exp(d) - d - 1, zero)


def masked_mean(x, mask):
    """Mean of x (B, T) over the masked positions (0 when there are none)."""
    mask = mask.bool()
    return (torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
            / mask.sum().clamp(min=1))


def guarded_step(model, opt, loss, clip=1.0):
    """backward, clip, step, unless the loss or the gradient is non-finite (then the step is skipped
    and the weights and optimizer state are untouched). -> (grad_norm or None, reason or '')."""
    opt.zero_grad(set_to_none=True)
    if loss.requires_grad:  # a non-finite loss gives a non-finite norm: one check covers both
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    loss_v, norm = torch.stack([loss.detach().float(), norm.float()]).tolist()  # one host sync
    if not math.isfinite(norm) or not math.isfinite(loss_v):
        opt.zero_grad(set_to_none=True)  # drop the poisoned gradient
        return None, "non-finite loss" if not math.isfinite(loss_v) else "non-finite gradient"
    opt.step()
    return norm, ""


# -----------------------------------------------------------------------------
# the update: a batch of rollouts -> optimizer steps

def update_policy(model, opt, ro, adv, preset, ref=None):
    """Slow weights: the batch of rollouts is cut into preset.optimizer_steps row chunks
    (minibatches), one optimizer step each (and preset.inner_steps passes over them). Each rollout
    is re-scored conditioned on the prompt it was sampled with; the old log-probs are the
    sampler's, as an inference engine would return them, so from the second optimizer step on the
    importance ratio differs from 1 and CISPO's cap can act. -> log fields."""
    model.train()
    old_logp = ro.logp  # (R, L) the sampler's log-probs: the behaviour policy
    chunks = [c.tolist() for c in torch.arange(len(ro)).chunk(preset.optimizer_steps)]
    stats, reason, gap = [], "", None
    for _ in range(preset.inner_steps):
        for idx in chunks:  # one minibatch: these rows of the batch
            prompts, tokens, mask = [ro.prompts[r] for r in idx], ro.tokens[idx], ro.mask[idx]
            logp = rollout.completion_logprobs(model, prompts, tokens, mask,
                                               preset.temperature)  # (r, L)
            if gap is None:  # sampler vs trainer, before any update: numerics only
                gap = float(((logp.detach() - old_logp[idx]).abs() * mask).sum() / mask.sum())
            # token normalization once per optimizer step: this chunk's token count
            loss, metrics = policy_loss(logp, old_logp[idx], adv[idx], mask, preset.loss_type,
                                        preset.clip_eps, preset.dapo_clip_higher,
                                        preset.cispo_cap)
            if ref is not None:
                ref_logp = rollout.completion_logprobs(ref, prompts, tokens, mask,
                                                       preset.temperature)
                loss = loss + preset.beta * masked_mean(
                    kl_k3(logp, ref_logp.detach(), mask), mask)
            # non-finite: skipped
            grad_norm, reason = guarded_step(model, opt, loss, preset.grad_clip)
            # no NaN in JSON
            stats.append((loss.item() if torch.isfinite(loss) else None, grad_norm, metrics))
            if reason:
                break
        if reason:
            break
    rewards, group, mask = torch.tensor(ro.rewards), torch.tensor(ro.group), ro.mask
    mean = lambda xs: sum(xs) / len(xs) if xs and None not in xs else None
    row = {"skipped": reason} if reason else {}
    row.update(reward=float(rewards.mean()), loss=mean([l for l, _, _ in stats]),
               # clipped tokens, low and high; under cispo (no low clip) the same number as
               # capped_frac, the share whose IS weight hit the cap (the high side alone)
               clip_frac=mean([ms["clip_frac"] for _, _, ms in stats]),
               capped_frac=mean([ms["clip_high_frac"] for _, _, ms in stats]),
               ratio_mean=mean([ms["ratio_mean"] for _, _, ms in stats]),
               entropy=float(-(ro.logp * mask).sum() / mask.sum()),
               grad_norm=mean([g for _, g, _ in stats]),
               zero_std=zero_std_fraction(rewards, group), logp_gap=gap)
    return row
