"""
harness/hit_rates.py: how strong a reflector is, measured before any run: the share of its first
proposals (from the seed prompt, on records of the model's own outputs) that state exactly the
task's hidden rule. `python -m harness.report --hit-rates` and `python -m harness.phase
--hit-rates` write the tables.
"""

import random

import rollout
from model import load_checkpoint
from world import tasks
from fast_context import make_records
from world.reflectors import make_reflector, parse_context_rule
from world.tasks import rule_text


def first_hit_rate(reflector, task, evaluate, trials=100, minibatch=3, seed=0):
    """Share of first proposals from task.seed_prompt that state exactly the hidden rule.

    Per trial: `minibatch` random problems of task.train (seeded), evaluated with the seed prompt
    (evaluate(context, problems) -> [(reward, output, feedback)], as in fast_context), turned into
    records, one reflector call. A hit: the proposal's `rule:` line parses to task.rule (compared as
    canonical text, so separators and map-entry order do not matter). A raise is a miss.
    None when the seed prompt states the rule already (a told task: nothing is hidden, and any
    proposal that keeps the rule line would count as a hit)."""
    rng, want, hits = random.Random(seed), rule_text(task.rule), 0
    seed_rule = parse_context_rule(task.seed_prompt)
    if seed_rule is not None and rule_text(seed_rule) == want:
        return None
    for _ in range(trials):
        problems = rng.sample(task.train, minibatch)
        records = make_records(problems, evaluate(task.seed_prompt, problems))
        try:
            proposal = reflector(task.seed_prompt, records)
        except Exception:
            continue
        rule = parse_context_rule(proposal) if isinstance(proposal, str) else None
        hits += rule is not None and rule_text(rule) == want
    return hits / trials


def hit_rate_table(base_path, task_names, names, device="cpu", trials=100, seed=0):
    """First-proposal hit rate (first_hit_rate) of each reflector setting in `names` on each task,
    with the base's own greedy outputs as the records; a task's own context budget, else the base's
    preset's. `seed` seeds a NAME:P reflector's mistakes. -> {task: {name: rate}}"""
    base, extra = load_checkpoint(base_path, device)
    enc, preset = tasks.tokenizer_from_state(extra["tokenizer"]), extra["metrics"]["preset"]
    evaluate = rollout.greedy_evaluate(base.eval(), enc, preset["max_new_tokens"])
    count = tasks.token_counter(enc)
    out = {}
    for name in task_names:
        task = tasks.make_task(name)  # the default splits, whichever code version made the base
        budget = task.max_context_tokens or preset["max_context_tokens"]
        out[name] = {r: first_hit_rate(make_reflector(r, budget, count, seed=seed), task, evaluate,
                                       trials=trials)
                     for r in names}
    return out
