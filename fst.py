"""
fst.py: the method. One step of Fast-Slow Training, and the same step with switches for the
baselines and controls (METHODS); the method's own phases around the step (GEPA's birth, the
sequential control's first phase, context-only's budget stop) live here too. train.py runs the
step after step and keeps the books (evaluation, logs, checkpoints).

    start_fast_weights(state, preset, max_tokens, count_tokens)   # GEPA's birth (or restore)
    row = fst_step(state, step, preset)        # a GEPA round if due, sample, advantages, update
    last_step(state, preset, step, n_steps)    # the schedule's end, or context-only's budget

The FST step (`fst_step`, one screen):
  1. every T steps, a GEPA round with the current weights (fast_context.run_round); in a schedule,
     GEPA's data first slides with the stream (slide_window), untold of any switch
  2. m prompts per problem drawn from GEPA's frontier, weighted by the instances each covers
     (draw_prompts)
  3. the problem's G rollouts split over its prompts, sampled and scored (rollout.sample_rollouts)
  4. ONE advantage baseline per problem across all its rollouts whatever prompt they used
     (group_advantages)
  5. the CISPO update over minibatches, each rollout conditioned on the prompt it actually used, old
     log-probs from the sampler (update_policy)
Evaluation deploys the frontier prompt with the best D_p mean (deployed_prompt).

The RL math is at the bottom, plain functions on tensors that know nothing of tokenizers or tasks:
group-relative advantages, the policy-gradient losses (grpo, dr_grpo, dapo, cispo), the k3 KL
estimate, and the one guarded optimizer step (pretraining uses it too). Choices, and why:
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
  optimizer state untouched: pretraining (pretrain.py) and update_policy share it, and their callers
  log and count the skip.
- frac_zero_adv (from policy_loss) and zero_std_fraction (from the rewards) say how much of the
  batch carries no learning signal: groups where every sample got the same reward.
"""

import math
import random
from collections import namedtuple
from dataclasses import dataclass

import torch

import fast_context as fc
import rollout
import tasks
from model import GPT

# the methods, as switches of the one FST step: a frontier of prompts in the RL groups
# (uses_context), GEPA rounds interleaved with RL (gepa_rounds), RL updates (trains_weights), the
# task's true instruction as the fixed prompt (instructed). sequential = GEPA on the frozen base to
# its budget first, then RL over that frozen frontier (as in BetterTogether); instructed = RL with
# the fast channel's ceiling handed over free.
METHODS = {  # name: uses_context, gepa_rounds, trains_weights, instructed
    "rl":         dict(uses_context=0, gepa_rounds=0, trains_weights=1, instructed=0),
    "context":    dict(uses_context=1, gepa_rounds=1, trains_weights=0, instructed=0),
    "fst":        dict(uses_context=1, gepa_rounds=1, trains_weights=1, instructed=0),
    "instructed": dict(uses_context=0, gepa_rounds=0, trains_weights=1, instructed=1),
    "sequential": dict(uses_context=1, gepa_rounds=0, trains_weights=1, instructed=0),
}
METHODS = {m: {k: bool(v) for k, v in flags.items()} for m, flags in METHODS.items()}


# -----------------------------------------------------------------------------
# the step: one function, five methods
#   rl          seed prompt only, weights trained  (no GEPA rounds)
#   context     GEPA on the frozen weights         (no weight updates; a step = one GEPA round)
#   fst         both: a GEPA round every T steps, RL groups drawn over the frontier prompts
#   instructed  rl with the true instruction as the fixed prompt (a control)
#   sequential  GEPA to its budget first, then rl over that frozen frontier (a control)

def make_evaluate(model, enc, preset):
    """The policy as GEPA sees it (rollout.greedy_evaluate with the current weights). On CUDA a
    frontier re-score is one generate call (evaluate.many); on the CPU it stays one call per
    candidate, the path every CPU result was measured with."""
    return rollout.greedy_evaluate(model, enc, preset.max_new_tokens,
                                   batched=model.wte.weight.device.type == "cuda")


@dataclass
class RunState:
    """Everything a run carries from one step to the next (the log rows aside)."""
    model: GPT
    enc: object                # the tokenizer
    opt: torch.optim.Optimizer
    ref: object                # the KL-penalty reference (initial weights) when preset.beta > 0,
                               # else None
    rng: random.Random         # problem and prompt draws
    seed: int
    uses_context: bool         # a frontier of prompts (fast weights) in the RL groups
    gepa_rounds: bool          # GEPA rounds with the current weights (every T steps, or every step)
    trains_weights: bool       # RL updates (slow weights)
    instructed: bool           # the fixed prompt is the task's true instruction,
                               # not its seed prompt
    evaluate: object           # make_evaluate(...): GEPA's evaluate (greedy, current weights)
    reflect: object            # the reflector (fast_context's reflection step)
    gepa: object               # fast_context.GEPAState, or None for rl
    task: tasks.Task           # the task of the current stage
    window: list = None        # schedules: the stream's last problems, GEPA's data (else None)
    rl_rollouts: int = 0


def token_counter(enc):
    """A context's size in the run's own tokens (the unit of the context budget)."""
    return lambda text: len(enc.encode_ordinary(text))


def start_fast_weights(s, preset, max_tokens, count_tokens, saved=None, windowed=False):
    """The fast weights at a run's start. Fresh: GEPA's pool holds the seed prompt, scored on D_p
    with the current weights; sequential then runs GEPA on the frozen base to its budget, before any
    RL. From `saved` (a checkpoint holding fast_weights_state): the pool, and a schedule's window
    with the GEPA data drawn from it. Methods without fast weights keep s.gepa None."""
    if windowed:  # a schedule: GEPA's data follows the stream (slide_window)
        s.window = []
    if saved is not None and saved["window"] is not None:
        s.window, pareto, train = [problems_from(x) for x in saved["window"]]
    else:
        pareto, train = s.task.pareto, s.task.train
    if s.uses_context and saved is not None:
        s.gepa = fc.load_state_dict(saved["gepa"], pareto, train, count_tokens)
    elif s.uses_context:
        s.gepa = fc.init_state(s.task.seed_prompt, s.task.pareto, s.task.train, s.evaluate,
                               seed=s.seed, minibatch_size=preset.gepa_minibatch,
                               max_context_tokens=max_tokens, count_tokens=count_tokens)
        # sequential: GEPA on the frozen base to its budget, before any RL
        if not s.gepa_rounds:
            fc.optimize(s.gepa, s.evaluate, s.reflect, preset.context_only_rollouts)


def fast_weights_state(s):
    """What a checkpoint keeps of the fast weights (start_fast_weights(saved=...) restores it):
    GEPA's state, and in a schedule the stream's window and GEPA's data drawn from it."""
    window = None
    if s.window is not None:
        window = [problems_state(x) for x in (s.window, s.gepa.pareto if s.gepa else [],
                                              s.gepa.train if s.gepa else [])]
    return dict(gepa=fc.state_dict(s.gepa) if s.gepa else None, window=window)


def last_step(s, preset, step, n_steps):
    """Is `step` the run's last? The schedule's end, or for context-only (no weight updates) GEPA's
    rollout budget spent."""
    return (step == n_steps - 1
            or (not s.trains_weights and s.gepa.rollouts >= preset.context_only_rollouts))


def total_rollouts(s):
    """Every rollout generated so far: the RL groups' and GEPA's evaluations."""
    return s.rl_rollouts + (s.gepa.rollouts if s.gepa is not None else 0)


def deployed_prompt(s):
    """The prompt evaluation deploys: the frontier prompt with the best D_p mean, or the fixed
    prompt of a method without fast weights."""
    return fc.best_prompt(s.gepa) if s.gepa is not None else fixed_prompt(s)


def gepa_round(s, preset, rescore):
    """Fast weights: one GEPA round of K proposals, evaluated with the current policy
    -> log fields."""
    s.model.eval()
    r = fc.run_round(s.gepa, s.evaluate, preset.gepa_proposals, s.reflect, rescore=rescore)
    row = dict(gepa_accepted=r["accepted"], frontier=r["frontier"], prompt=r["best_prompt"])
    if r["invalid"]:  # empty, over-budget or failed proposals: rejected, and logged here
        row["gepa_invalid"] = r["invalid"]
    return row


def fixed_prompt(s):
    """The prompt of a method without fast weights: the seed prompt, or the true instruction
    (instructed)."""
    return s.task.instruction if s.instructed else s.task.seed_prompt


# one prompt drawn for a problem: the context, its share of the G rollouts, the problem's index
Draw = namedtuple("Draw", "context rollouts problem")


def draw_prompts(s, problems, preset):
    """m frontier prompts per problem, weighted by the instances each covers; the problem's G
    rollouts are split among them. Without GEPA: the fixed prompt, G rollouts. -> [Draw]"""
    if s.gepa is None:
        return [Draw(fixed_prompt(s), preset.group_size, i) for i in range(len(problems))]
    front = fc.frontier_prompts(s.gepa)
    m = preset.prompts_per_problem
    split = [preset.group_size // m + (j < preset.group_size % m) for j in range(m)]
    return [Draw(ctx, split[j], i) for i in range(len(problems))
            for j, ctx in enumerate(s.rng.choices([p for p, _ in front],
                                                  weights=[c for _, c in front], k=m))]


def update_policy(s, ro, adv, preset):
    """Slow weights: the batch of rollouts is cut into preset.optimizer_steps row chunks
    (minibatches), one optimizer step each (and preset.inner_steps passes over them). Each rollout
    is re-scored conditioned on the prompt it was sampled with; the old log-probs are the
    sampler's, as an inference engine would return them, so from the second optimizer step on the
    importance ratio differs from 1 and CISPO's cap can act. -> log fields."""
    s.model.train()
    old_logp = ro.logp  # (R, L) the sampler's log-probs: the behaviour policy
    chunks = [idx.tolist() for idx in torch.arange(len(ro)).chunk(preset.optimizer_steps)]
    stats, reason, gap = [], "", None
    for _ in range(preset.inner_steps):
        for rows in chunks:
            prompts, tokens, mask = [ro.prompts[r] for r in rows], ro.tokens[rows], ro.mask[rows]
            logp = rollout.completion_logprobs(s.model, prompts, tokens, mask,
                                               preset.temperature)  # (r, L)
            if gap is None:  # sampler vs trainer, before any update: numerics only
                gap = float(((logp.detach() - old_logp[rows]).abs() * mask).sum() / mask.sum())
            # token normalization once per optimizer step: this chunk's token count
            loss, m = policy_loss(logp, old_logp[rows], adv[rows], mask, preset.loss_type,
                                     preset.clip_eps, preset.dapo_clip_higher, preset.cispo_cap)
            if s.ref is not None:
                ref_logp = rollout.completion_logprobs(s.ref, prompts, tokens, mask,
                                                       preset.temperature)
                loss = loss + preset.beta * masked_mean(
                    kl_k3(logp, ref_logp.detach(), mask), mask)
            # non-finite: skipped
            grad_norm, reason = guarded_step(s.model, s.opt, loss, preset.grad_clip)
            # no NaN in JSON
            stats.append((loss.item() if torch.isfinite(loss) else None, grad_norm, m))
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
               clip_frac=mean([m["clip_frac"] for _, _, m in stats]),
               capped_frac=mean([m["clip_high_frac"] for _, _, m in stats]),
               ratio_mean=mean([m["ratio_mean"] for _, _, m in stats]),
               entropy=float(-(ro.logp * mask).sum() / mask.sum()),
               grad_norm=mean([g for _, g, _ in stats]),
               zero_std=zero_std_fraction(rewards, group), logp_gap=gap)
    return row


def fst_step(s, step, preset):
    """One step of Fast-Slow Training -> log fields."""
    row = {}
    # this step's slice of the data stream
    problems = s.rng.sample(s.task.train, preset.batch_problems)
    # 1. fast weights: a GEPA round with the current policy (every T steps; every step for
    #    context-only)
    if s.gepa_rounds and (not s.trains_weights or step % preset.gepa_every == 0):
        slid = step > 0 and slide_window(s, preset)
        row.update(gepa_round(s, preset, rescore=step > 0 and (s.trains_weights or slid)))
    if s.window is not None:
        s.window = (s.window + problems)[-preset.window:]
    if not s.trains_weights:
        return row
    # 2. m frontier prompts for each problem (the fixed prompt alone without GEPA)
    s.model.train()
    draws = draw_prompts(s, problems, preset)
    # 3. sample the groups: G rollouts per problem, split over its prompts, scored by the verifier
    ro = rollout.sample_rollouts(s.model, s.enc, [d.context for d in draws],
                                 [problems[d.problem] for d in draws], [d.rollouts for d in draws],
                                 preset.temperature, s.seed * preset.rollout_seed_stride + step,
                                 max_new_tokens=preset.max_new_tokens,
                                 group=[d.problem for d in draws])
    s.rl_rollouts += len(ro)
    # 4. one advantage baseline per problem, across all its rollouts whatever prompt they used
    adv = group_advantages(torch.tensor(ro.rewards), torch.tensor(ro.group),
                              scale=preset.adv_scale)
    # 5. the update, each rollout conditioned on the prompt it actually used
    row.update(update_policy(s, ro, adv.to(ro.mask.device), preset))
    return row


def slide_window(s, preset):
    """Schedules: before a round, GEPA's D_p becomes the stream's last n_pareto problems and its
    minibatches come from the rest of the window. Nobody tells GEPA about a task switch: its data
    simply moves with the stream. -> True if its data moved (the frontier must be re-scored)."""
    if s.window is None or len(s.window) <= preset.n_pareto:
        return False
    fc.set_data(s.gepa, s.window[-preset.n_pareto:], s.window[:-preset.n_pareto])
    return True


def problems_state(problems):
    """Problems -> plain lists for a checkpoint (and back: problems_from)."""
    return [[list(p.inputs), list(p.answer), p.marker, p.exact_only] for p in problems]


def problems_from(state):
    return [tasks.Problem(tuple(i), tuple(a), m, e) for i, a, m, e in state]


# -----------------------------------------------------------------------------
# the RL math: advantages, losses, KL, the guarded optimizer step

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "cispo")


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
    if scale not in ("group", "batch", "none"):
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
