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

The RL math (advantages, losses, the update) is rl.py.
"""

import random
from collections import namedtuple
from dataclasses import dataclass

import torch

import fast_context as fc
import rl
import rollout
from world import tasks
from model import GPT

# the methods, as switches of the one FST step: a frontier of prompts in the RL groups
# (uses_context), GEPA rounds interleaved with RL (gepa_rounds), RL updates (trains_weights), the
# task's true instruction as the fixed prompt (instructed). sequential = GEPA on the frozen base to
# its budget first, then RL over that frozen frontier (as in BetterTogether); instructed = RL with
# the fast channel's ceiling handed over free.
# sequential-1 = FST's own first GEPA round (the same rollouts), then RL over that frozen frontier:
# the control with FST's budget, so FST - sequential-1 measures what the later rounds add.
# `suite`: the reproduction's suite runs the row on every task (sequential-1 runs in the
# adherence experiment only).
METHODS = {  # name: uses_context, gepa_rounds, later_rounds, trains_weights, instructed, suite
    "rl":           dict(uses_context=0, gepa_rounds=0, later_rounds=0, trains_weights=1,
                         instructed=0, suite=1),
    "context":      dict(uses_context=1, gepa_rounds=1, later_rounds=1, trains_weights=0,
                         instructed=0, suite=1),
    "fst":          dict(uses_context=1, gepa_rounds=1, later_rounds=1, trains_weights=1,
                         instructed=0, suite=1),
    "instructed":   dict(uses_context=0, gepa_rounds=0, later_rounds=0, trains_weights=1,
                         instructed=1, suite=1),
    "sequential":   dict(uses_context=1, gepa_rounds=0, later_rounds=0, trains_weights=1,
                         instructed=0, suite=1),
    "sequential-1": dict(uses_context=1, gepa_rounds=1, later_rounds=0, trains_weights=1,
                         instructed=0, suite=0),
}
METHODS = {m: {k: bool(v) for k, v in flags.items()} for m, flags in METHODS.items()}
SUITE_METHODS = [m for m, flags in METHODS.items() if flags["suite"]]


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
    later_rounds: bool         # ... after the first one (sequential-1: the first round only)
    trains_weights: bool       # RL updates (slow weights)
    instructed: bool           # the fixed prompt is the task's true instruction (or `prompt`),
                               # not its seed prompt
    suite: bool                # (the suite runs this method; nothing in the step reads it)
    evaluate: object           # make_evaluate(...): GEPA's evaluate (greedy, current weights)
    reflect: object            # the reflector (fast_context's reflection step)
    gepa: object               # fast_context.GEPAState, or None for rl
    task: tasks.Task           # the task of the current stage
    window: list = None        # schedules: the stream's last problems, GEPA's data (else None)
    rl_rollouts: int = 0
    prompt: str = None         # instructed: this fixed prompt instead of the true instruction
    queue: list = None         # the next RL batches, drawn early for a round that scores on them


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
    if saved is not None and saved.get("queue"):
        s.queue = [problems_from(x) for x in saved["queue"]]
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
    extra = {"queue": [problems_state(x) for x in s.queue]} if s.queue else {}
    return dict(gepa=fc.state_dict(s.gepa) if s.gepa else None, window=window, **extra)


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


def gepa_round(s, preset, rescore, pareto=None):
    """Fast weights: one GEPA round of K proposals, evaluated with the current policy (the whole
    pool re-scored if preset.gepa_pool; on its own D_p `pareto` if given) -> log fields."""
    s.model.eval()
    extra = dict(pool=preset.gepa_pool) if preset.gepa_pool else {}
    if pareto is not None:
        extra["pareto"] = pareto
    r = fc.run_round(s.gepa, s.evaluate, preset.gepa_proposals, s.reflect, rescore=rescore,
                     **extra)
    row = dict(gepa_accepted=r["accepted"], frontier=r["frontier"], prompt=r["best_prompt"])
    if preset.log_frontier:  # every prompt on the frontier, with the instances it covers
        row["front"] = [[p, c] for p, c in fc.frontier_prompts(s.gepa)]
    if r["invalid"]:  # empty, over-budget or failed proposals: rejected, and logged here
        row["gepa_invalid"] = r["invalid"]
    return row


def fixed_prompt(s):
    """The prompt of a method without fast weights: the seed prompt, or the true instruction
    (instructed)."""
    return (getattr(s, "prompt", None) or s.task.instruction) if s.instructed else s.task.seed_prompt


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


def fst_step(s, step, preset):
    """One step of Fast-Slow Training -> log fields."""
    row = {}
    due = (s.gepa_rounds and (not s.trains_weights or step % preset.gepa_every == 0)
           and (s.later_rounds or step == 0))
    if due and preset.gepa_round_problems:  # the round scores on the next T batches: draw them
        s.queue = [s.rng.sample(s.task.train, preset.batch_problems)
                   for _ in range(preset.gepa_every)]
    # this step's slice of the data stream
    problems = s.queue.pop(0) if s.queue else s.rng.sample(s.task.train, preset.batch_problems)
    # 1. fast weights: a GEPA round with the current policy (every T steps; every step for
    #    context-only)
    if due:
        slid = step > 0 and slide_window(s, preset)
        ahead = [p for batch in [problems] + (s.queue or []) for p in batch]
        row.update(gepa_round(s, preset, rescore=step > 0 and (s.trains_weights or slid),
                              pareto=ahead[:preset.gepa_round_problems] or None))
    elif step == 0 and s.gepa is not None and preset.log_frontier:  # sequential's frozen frontier
        row["front"] = [[p, c] for p, c in fc.frontier_prompts(s.gepa)]
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
    adv = rl.group_advantages(torch.tensor(ro.rewards), torch.tensor(ro.group),
                              scale=preset.adv_scale)
    # 5. the update, each rollout conditioned on the prompt it actually used
    row.update(rl.update_policy(s.model, s.opt, ro, adv.to(ro.mask.device), preset,
                                ref=s.ref))
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

