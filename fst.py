"""
fst.py: the method. One step of Fast-Slow Training, and the same step with switches for the
baselines and controls (METHODS); train.py runs it step after step and keeps the books.

    row = fst_step(state, step, preset)        # a GEPA round if due, sample, advantages, update
    evaluate_step(state, base, preset, step, last, row)

The FST step (`fst_step`, one screen):
  1. every T steps, a GEPA round with the current weights (fast_context.run_round); in a schedule,
     GEPA's data first slides with the stream (slide_window), untold of any switch
  2. m prompts per problem drawn from GEPA's frontier, weighted by the instances each covers
     (draw_prompts)
  3. the problem's G rollouts split over its prompts, sampled and scored (episodes.sample_rollouts)
  4. ONE advantage baseline per problem across all its rollouts, whatever prompt they used
     (rl.group_advantages)
  5. the CISPO update over minibatches, each rollout conditioned on the prompt it actually used, old
     log-probs from the sampler (update_policy)
Evaluation deploys the frontier prompt with the best D_p mean (evaluate_step).
"""

import random
from dataclasses import dataclass

import torch

import eval as ev
import fast_context as fc
import rl
import rollout
import tasks
from episodes import greedy_evaluate, sample_rollouts
from model import GPT
from pretrain import guarded_step

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

def make_policy(model, enc, preset):
    """The policy as GEPA sees it (episodes.greedy_evaluate with the current weights). On CUDA a
    frontier re-score is one generate call (evaluate.many); on the CPU it stays one call per
    candidate, the path every CPU result was measured with."""
    return greedy_evaluate(model, enc, preset.max_new_tokens,
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
    policy: object             # make_policy(...): GEPA's evaluate
    reflect: object            # the reflector (fast_context's reflection step)
    gepa: object               # fast_context.GEPAState, or None for rl
    task: tasks.Task           # the task of the current stage
    window: list = None        # schedules: the stream's last problems, GEPA's data (else None)
    rl_rollouts: int = 0


def gepa_round(s, preset, rescore):
    """Fast weights: one GEPA round of K proposals, evaluated with the current policy
    -> log fields."""
    s.model.eval()
    r = fc.run_round(s.gepa, s.policy, preset.gepa_proposals, s.reflect, rescore=rescore)
    row = dict(gepa_accepted=r["accepted"], frontier=r["frontier"], prompt=r["best_prompt"])
    if r["invalid"]:  # empty, over-budget or failed proposals: rejected, and logged here
        row["gepa_invalid"] = r["invalid"]
    return row


def fixed_prompt(s):
    """The prompt of a method without fast weights: the seed prompt, or the true instruction
    (instructed)."""
    return s.task.instruction if s.instructed else s.task.seed_prompt


def draw_prompts(s, problems, preset):
    """m frontier prompts per problem, weighted by the instances each covers; the problem's G
    rollouts are split among them. Without GEPA: the seed prompt, G rollouts. -> per prompt:
    contexts, sizes, problem ids."""
    if s.gepa is None:
        n = len(problems)
        return [fixed_prompt(s)] * n, [preset.group_size] * n, list(range(n))
    front = fc.frontier_prompts(s.gepa)
    m = preset.prompts_per_problem
    split = [preset.group_size // m + (j < preset.group_size % m) for j in range(m)]
    contexts, sizes, group = [], [], []
    for i in range(len(problems)):
        for j, ctx in enumerate(s.rng.choices([p for p, _ in front],
                                              weights=[c for _, c in front], k=m)):
            contexts.append(ctx)
            sizes.append(split[j])
            group.append(i)
    return contexts, sizes, group


def update_policy(s, ro, adv, preset):
    """Slow weights: the batch of rollouts is cut into preset.minibatches row chunks, one optimizer
    step each (and preset.inner_steps passes over them). Each rollout is re-scored conditioned on
    the prompt it was sampled with; the old log-probs are the sampler's, as an inference engine
    would return them, so from the second optimizer step on the importance ratio differs from 1 and
    CISPO's cap can act. -> log fields."""
    s.model.train()
    old_logp = ro.logp  # (R, L) the sampler's log-probs: the behaviour policy
    chunks = [idx.tolist() for idx in torch.arange(len(ro)).chunk(preset.minibatches)]
    stats, reason, gap = [], "", None
    for _ in range(preset.inner_steps):
        for rows in chunks:
            prompts, tokens, mask = [ro.prompts[r] for r in rows], ro.tokens[rows], ro.mask[rows]
            logp = rollout.completion_logprobs(s.model, prompts, tokens, mask,
                                               preset.temperature)  # (r, L)
            if gap is None:  # sampler vs trainer, before any update: numerics only
                gap = float(((logp.detach() - old_logp[rows]).abs() * mask).sum() / mask.sum())
            # token normalization once per optimizer step: this chunk's token count
            loss, m = rl.policy_loss(logp, old_logp[rows], adv[rows], mask, preset.loss_type)
            if s.ref is not None:
                ref_logp = rollout.completion_logprobs(s.ref, prompts, tokens, mask,
                                                       preset.temperature)
                loss = loss + preset.beta * rl.masked_mean(
                    rl.kl_k3(logp, ref_logp.detach(), mask), mask)
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
               clip_frac=mean([m["clip_frac"] for _, _, m in stats]),
               # CISPO: weight hit the cap
               capped_frac=mean([m["clip_high_frac"] for _, _, m in stats]),
               ratio_mean=mean([m["ratio_mean"] for _, _, m in stats]),
               entropy=float(-(ro.logp * mask).sum() / mask.sum()),
               grad_norm=mean([g for _, g, _ in stats]),
               zero_std=rl.zero_std_fraction(rewards, group), logp_gap=gap)
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
    contexts, sizes, group = draw_prompts(s, problems, preset)
    # 3. sample the groups: G rollouts per problem, split over its prompts, scored by the verifier
    ro = sample_rollouts(s.model, s.enc, contexts, [problems[i] for i in group], sizes,
                         preset.temperature, seed=s.seed * preset.rollout_seed_stride + step,
                         max_new_tokens=preset.max_new_tokens, group=group)
    s.rl_rollouts += len(ro)
    # 4. one advantage baseline per problem, across all its rollouts whatever prompt they used
    adv = rl.group_advantages(torch.tensor(ro.rewards), torch.tensor(ro.group),
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
    s.gepa.pareto, s.gepa.train = s.window[-preset.n_pareto:], s.window[:-preset.n_pareto]
    s.gepa.order, s.gepa.pos = [], 0
    return True


def evaluate_step(s, base_model, preset, step, last, row):
    """Val accuracy with the deployed prompt every eval_every steps and at the end (greedy exact
    match at the end only); at every kl_every-th of those steps and at the end, KL to the base under
    the deployed prompt and under the task's seed prompt, which every method shares
    (`kl_common`)."""
    if not (step % preset.eval_every == 0 or last):
        return
    deployed = fc.best_prompt(s.gepa) if s.gepa is not None else fixed_prompt(s)
    val = s.task.val
    acc, greedy = ev.task_accuracy(s.model, s.enc, deployed, val, preset.eval_samples,
                                   preset.temperature, seed=step,
                                   max_new_tokens=preset.max_new_tokens, greedy=last)
    row.update(val_acc=acc, prompt=deployed)
    if last:
        row["val_greedy"] = greedy
    if step % preset.kl_every == 0 or last:
        def kl(context):
            return ev.kl_to_base(s.model, base_model, s.enc, context, val[:preset.kl_problems],
                                 preset.kl_samples, preset.temperature, seed=step,
                                 max_new_tokens=preset.max_new_tokens)
        row["kl"] = kl(deployed)
        row["kl_common"] = row["kl"] if deployed == s.task.seed_prompt else kl(s.task.seed_prompt)


def problems_state(problems):
    """Problems -> plain lists for a checkpoint (and back: problems_from)."""
    return [[list(p.inputs), list(p.answer), p.marker, p.exact_only] for p in problems]


def problems_from(state):
    return [tasks.Problem(tuple(i), tuple(a), m, e) for i, a, m, e in state]
