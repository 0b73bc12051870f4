"""
select_tasks.py: choose the downstream tasks by criteria measured on the base models alone, before
any RL or FST run (so no task is picked by looking at how a method does on it).

    python select_tasks.py --preset tiny --bases 3  # -> runs/tiny/task_selection.json,
                                                    #    and a summary

For every candidate rule and every base (runs/<preset>/b<k>/base/model.pt) it measures exact-match
mean@4 at temperature 1 with the task's seed prompt and with the true instruction, and keeps the
rules that meet tasks.CRITERIA for their kind on every base and are no single op in disguise
(tasks.in_disguise). Candidates:
  hidden   every trained 2-op rule                 (hidden-rule-2, the plasticity probe's task)
  told     96 random trained 3-op rules, seed prompt = the instruction  (long-chain, like Math)
  zero     the same 96 rules, seed prompt `rule: ?`, binary reward       (sparse, C8)
Screening uses the first `screen` val problems; the rules that pass are confirmed on the full val
split, in the order of a seeded shuffle, and the first one confirmed is the task's rule. hidden-rule
and cipher are fixed (the CodeIO and HoVer analogues): their criteria are measured and reported, not
drawn.
"""

import json
import os
import random

import torch

import report
import tasks
from cli import (CLIParser, UserError, checkpoint_file, exit_on_user_error, positive,
                 writable_folder)
from eval import task_accuracy
from model import write_atomic
from pretrain import load_base

# task -> kind it is drawn for
DRAWN = {"hidden-rule-2": "hidden", "long-chain": "told", "sparse": "zero"}


def candidates(kind, n3=96, seed=0):
    """Rule texts a task of this kind is drawn from (no single op in disguise, one per function)."""
    if kind == "hidden":
        rules = [r for r in tasks._trained_short_rules() if len(r) == 2]
    else:
        rng, rules = random.Random(f"candidates/{seed}"), []
        while len(rules) < n3:
            rules.append(tuple(tasks.random_op(nm, rng) for nm in tasks.random_type(rng, 3)))
    out, seen = [], set()
    for r in rules:
        sig = tasks.signature(r)
        if sig not in seen and sig not in tasks.UNSEEN_RULES and tasks.in_disguise(r) is None:
            seen.add(sig)
            out.append(tasks.rule_text(r))
    return out


def measure(models, name, rule_text, kind, n_val):
    """-> per base [seed-prompt acc, instruction acc] of a rule as task `name` would pose it.
    models: [(model, its own tokenizer)], one per base (each pretraining seed builds its own
    BPE)."""
    d = tasks.NAMED_TASKS[name]
    # posed exactly as the named task would be
    t = tasks.build_task(name, tasks.TaskDef(rule_text, kind, d.marker, told=d.told,
                                             exact_only=d.exact_only),
                         n_train=1, n_pareto=1, n_val=n_val)
    out = []
    for model, enc in models:
        told = task_accuracy(model, enc, t.instruction, t.val, greedy=False)[0]
        seed = told if t.seed_prompt == t.instruction else task_accuracy(
            model, enc, t.seed_prompt, t.val, greedy=False)[0]  # a told task's seed prompt is it
        out.append([seed, told])
    return out


def select(models, screen=64, n_val=256, log=print):
    out = {"criteria": tasks.CRITERIA, "fixed": {}, "drawn": {}}
    for name in ("hidden-rule", "cipher"):
        d = tasks.NAMED_TASKS[name]
        accs = measure(models, name, d.rule, d.kind, n_val)
        out["fixed"][name] = {"rule": d.rule, "per_base": accs,
                              "passes": all(tasks.passes(d.kind, s, t) for s, t in accs)}
        log(f"{name:14s} {d.rule!r}: {accs} passes={out['fixed'][name]['passes']}")
    for name, kind in DRAWN.items():
        screened = {}
        for r in candidates(kind):
            if kind == "hidden" and r == tasks.NAMED_TASKS["hidden-rule"].rule:
                continue  # the probe needs a second rule
            screened[r] = measure(models, name, r, kind, screen)
        passing = sorted(r for r, accs in screened.items()
                         if all(tasks.passes(kind, s, t) for s, t in accs))
        random.Random(f"select/{name}").shuffle(passing)
        chosen, confirmed = None, {}
        for r in passing:
            confirmed[r] = measure(models, name, r, kind, n_val)
            if all(tasks.passes(kind, s, t) for s, t in confirmed[r]):
                chosen = r
                break
        out["drawn"][name] = {"kind": kind, "screened": screened, "passing": passing,
                              "confirmed": confirmed, "chosen": chosen}
        log(f"{name:14s} {len(screened)} candidates, {len(passing)} pass screening -> {chosen!r} "
            f"{confirmed.get(chosen)}")
    return out


def build_parser():
    ap = CLIParser(prog="select_tasks.py",
                   description="measure the task selection criteria on the bases")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--bases", type=positive(int), default=3)
    ap.add_argument("--screen", type=positive(int), default=64, help="val problems used to screen")
    return ap


@exit_on_user_error
def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(2)
    root = os.path.join("runs", args.preset)
    paths = [os.path.join(report.base_root(root, k), "base", "model.pt") for k in range(args.bases)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"no base at {missing[0]}; "
                        "run `python train.py pretrain --seed K --out ...` first")
    for p in paths:
        checkpoint_file(p)
    writable_folder(root)  # task_selection.json goes there
    models = [load_base(p, "cpu") for p in paths]  # each base with its own tokenizer
    out = select([(m.eval(), enc) for m, enc in models], screen=args.screen)
    write_atomic(os.path.join(root, "task_selection.json"), json.dumps(out, indent=1))
    print(f"wrote {root}/task_selection.json")


if __name__ == "__main__":
    main()
