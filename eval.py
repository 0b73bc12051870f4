"""
eval.py: what a run measures. Accuracy on a task, general accuracy, KL to the base model, and the
evaluation a run logs every few steps (`evaluate`). Nothing here trains or reads folders.

    acc, greedy = task_accuracy(model, enc, context, problems)  # mean@4, greedy exact match
    kl = kl_to_base(model, base, enc, context, problems)        # KL(pi_theta || pi_base) per token
    measures = run_measures(model, enc, task, prompt, base)     # a finished run's measures.json
    row.update(evaluate(model, base, enc, task, prompt, preset, step, last, with_kl))

Every measurement samples through rollout.sample_rollouts, i.e. the sampler and verifier the RL
loop uses:
  task_accuracy     exact-match mean@k (k samples per problem at the training temperature), greedy
  kl_to_base        KL(pi_theta || pi_base) per token, exact over the vocabulary, along completions
                    sampled from pi_theta; both models conditioned on the same prompt
  general_accuracy  the pretraining distribution, each problem with its own instruction in context

The claims computed from the log rows these measurements fill are harness/claims.py.
"""

import random

import torch

import rollout
from rollout import sample_rollouts
from world import tasks


@torch.no_grad()
def task_accuracy(model, enc, context, problems, samples=4, temperature=1.0, seed=0,
                  max_new_tokens=12, greedy=True):
    """-> (mean@samples exact match, greedy exact match or None) of `model` with `context` on
    `problems`."""
    contexts = [context] * len(problems)
    exact = lambda ro: sum(r == 1.0 for r in ro.rewards) / len(ro)
    sampled = sample_rollouts(model, enc, contexts, problems, samples, temperature, seed,
                              max_new_tokens)
    if not greedy:
        return exact(sampled), None
    greedy = sample_rollouts(model, enc, contexts, problems, 1, 0.0, seed, max_new_tokens)
    return exact(sampled), exact(greedy)


@torch.no_grad()
def general_accuracy(model, enc, n=256, exclude=tasks.UNSEEN_RULES):
    """Greedy exact match on fresh problems of the pretraining distribution, own instruction in
    context."""
    items = general_eval_set(n=n, exclude=exclude)
    ro = sample_rollouts(model, enc, [c for c, _, _ in items], [p for _, p, _ in items], 1, 0.0)
    return sum(r == 1.0 for r in ro.rewards) / len(ro)


@torch.no_grad()
def kl_to_base(model, base, enc, context, problems, samples=4, temperature=1.0, seed=0,
               max_new_tokens=12):
    """Mean per-token KL(pi_theta || pi_base), exact over the vocabulary, along completions sampled
    from pi_theta with `context`; both models see the same prompt and prefix at every position."""
    ro = sample_rollouts(model, enc, [context] * len(problems), problems, samples, temperature,
                         seed, max_new_tokens)
    lp_theta = _position_logprobs(model, ro, temperature)  # (R, L, V)
    lp_base = _position_logprobs(base, ro, temperature)
    kl = (lp_theta.exp() * (lp_theta - lp_base)).sum(-1)  # (R, L)
    return float((kl * ro.mask).sum() / ro.mask.sum().clamp(min=1))


def _position_logprobs(model, ro, temperature):
    """Full next-token log-distributions at each completion position, on the model's device:
    (R, L, V)."""
    was_training = model.training
    model.eval()
    device = model.wte.weight.device
    pred = rollout.completion_logits(model, ro.prompts, ro.tokens.to(device), ro.mask.to(device))
    model.train(was_training)
    return torch.log_softmax(pred.float() / max(temperature, 1e-6), -1)


# -----------------------------------------------------------------------------
# what the report needs from a run's final weights (C4, C7), written beside summary.json

MEASURE_SAMPLES = 4  # mean@4 on the val split for the prompt accuracies below


@torch.no_grad()
def run_measures(model, enc, task, deployed_prompt, base=None, samples=MEASURE_SAMPLES):
    """The numbers a report reads off a finished run's weights, so that it never needs them:
    general_acc (C4: the pretraining distribution, own instruction in context). With `base` (the
    model the run started from; an FST run's C7 table) also seed_prompt_acc and deployed_prompt_acc
    of the run's weights (the task under its seed prompt and under the deployed prompt, mean@4 on
    the val split), and the same three of the base under this run's prompts.
    -> {general_acc, deployed_prompt, samples[, seed_prompt_acc, deployed_prompt_acc, base]}"""
    out = {"general_acc": general_accuracy(model, enc), "deployed_prompt": deployed_prompt,
           "samples": samples}
    if base is None:
        return out
    acc = lambda m, p: task_accuracy(m, enc, p, task.val, samples, greedy=False)[0]
    for name, m in (("run", model), ("base", base)):
        seed_acc = acc(m, task.seed_prompt)
        d = {"seed_prompt_acc": seed_acc, "deployed_prompt_acc": seed_acc
             if deployed_prompt == task.seed_prompt else acc(m, deployed_prompt)}
        if name == "run":
            out.update(d)
        else:
            out["base"] = dict(d, general_acc=general_accuracy(base, enc))
    return out


# -----------------------------------------------------------------------------
# the evaluation sets of general skills (fresh problems of the pretraining distribution)

def general_eval_set(n=256, seed=1234, exclude=()):
    """General skills: fresh problems of the pretraining distribution, each with its own
    instruction."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rule = tasks.random_rule(rng, exclude)
        out.append((tasks.instruction(rule), tasks.make_problem(rule, rng, *tasks.LIST_LEN), rule))
    return out


def trained_short_rules():
    """Every trained rule of 1 or 2 ops (map excluded: its tables are too many to list)."""
    singles = [op for (op,) in tasks.single_ops()]
    pairs = [(a, b) for a in singles for b in singles
             if a.name != b.name and (a.name, b.name) not in tasks.HELDOUT_TYPES]
    return [(o,) for o in singles] + pairs


def heldout_eval_set(n=128, seed=4321):
    """Held-out chain types (never trained), instruction in context: compositional generalization.

    On short lists some held-out chains compute the same answer as a trained rule (e.g. `swap then
    reverse` = `rotate 2` on 4 digits); such problems are skipped, so the probe only counts answers
    that no trained 1- or 2-op rule would produce."""
    rng = random.Random(seed)
    types = sorted(tasks.HELDOUT_TYPES)
    trained = trained_short_rules()
    out, i = [], 0
    while len(out) < n:
        rule = tuple(tasks.random_op(nm, rng) for nm in types[i % len(types)])
        p = tasks.make_problem(rule, rng, *tasks.LIST_LEN)
        i += 1
        if all(tasks.apply_rule(r, list(p.inputs)) != list(p.answer) for r in trained):
            out.append((tasks.instruction(rule), p, rule))
    return out


# -----------------------------------------------------------------------------
# the evaluation a run logs

def evaluate(model, base, enc, task, prompt, preset, step, last, with_kl):
    """Val accuracy with the deployed `prompt` (greedy exact match too at the `last` step); with_kl:
    KL to the base under the deployed prompt and under the task's seed prompt, which every method
    shares (`kl_common`); with preset.probe_entries, the weights alone under the seed prompt
    (seed_prompt_probe) and at the end C7's table (channel_table). -> log fields."""
    val = task.val
    acc, greedy = task_accuracy(model, enc, prompt, val, preset.eval_samples, preset.temperature,
                                seed=step, max_new_tokens=preset.max_new_tokens, greedy=last)
    row = dict(val_acc=acc, prompt=prompt)
    if last:
        row["val_greedy"] = greedy
    if with_kl:
        def kl(context):
            return kl_to_base(model, base, enc, context, val[:preset.kl_problems],
                              preset.kl_samples, preset.temperature, seed=step,
                              max_new_tokens=preset.max_new_tokens)
        row["kl"] = kl(prompt)
        row["kl_common"] = row["kl"] if prompt == task.seed_prompt else kl(task.seed_prompt)
    if preset.probe_entries:  # the weights alone, under the seed prompt; C7's table at the end
        row.update(seed_prompt_probe(model, enc, task, preset))
        if last:
            row["c7"] = channel_table(model, base, enc, task, preset, prompt)
    return row


def _greedy(model, enc, preset):
    """Greedy rollouts of `model`, as GEPA evaluates a prompt (rollout.greedy_evaluate)."""
    return rollout.greedy_evaluate(model, enc, preset.max_new_tokens,
                                   batched=model.wte.weight.device.type == "cuda")


def entry_accuracy(problems, outputs, table):
    """The internalization probe's numbers: for each entry a>b of `table`, the share of the
    positions holding digit a at which `outputs` (the model's completions, text) hold b; positions
    of an output of the wrong length count as wrong. -> {"a>b": share, or None if a never occurs}"""
    hits = {a: [] for a, _ in table}
    target = dict(table)
    for p, out in zip(problems, outputs):
        got = tasks.parse_digits(out) or []
        for i, x in enumerate(p.inputs):
            if x in hits:
                hits[x].append(len(got) == len(p.inputs) and got[i] == target[x])
    return {f"{a}>{b}": (sum(hits[a]) / len(hits[a]) if hits[a] else None) for a, b in table}


def seed_prompt_probe(model, enc, task, preset):
    """What the weights alone know: greedy exact match on val under the task's seed prompt and,
    for a table task, each entry's accuracy there (entry_accuracy). -> log fields"""
    res = _greedy(model, enc, preset)(task.seed_prompt, task.val)
    row = {"val_seed_greedy": sum(r == 1.0 for r, _, _ in res) / len(res)}
    op = task.rule[0]
    if len(task.rule) == 1 and op.name == "map":
        row["entries"] = entry_accuracy(task.val, [o for _, o, _ in res], op.arg)
    return row


def channel_table(model, base, enc, task, preset, deployed):
    """C7's 2x2 table at a run's end, greedy exact match on val: {base, weights} x {seed,
    deployed}, the weights being the run's final ones and the prompts the seed and the deployed
    one. Written into the log, so the report never needs the weights again."""
    def acc(m, context):
        res = _greedy(m, enc, preset)(context, task.val)
        return sum(r == 1.0 for r, _, _ in res) / len(res)
    return {who: {"seed": acc(m, task.seed_prompt), "deployed": acc(m, deployed)}
            for who, m in (("base", base), ("weights", model))}
