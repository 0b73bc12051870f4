"""
adherence.py: the adherence experiment. Does interleaving matter when the base follows a prompt
imperfectly and the table is larger than the budget?

    python -m harness.adherence --measure --level adh --bases 5     # the criteria, on the bases alone
    python -m harness.adherence --run --level adh --bases 5 --seeds 2 --jobs 2   # every run (resumable)
    python -m harness.adherence --commands --level adh --bases 5 --seeds 2      # one line per run, for a
                                                                         # scheduler (xargs -P)
    python -m harness.adherence --pipeline bases & python -m harness.adherence --pipeline runs --seeds 2 &
                                          # everything, on two cores, resumable (see pipeline)

The world (tasks.table_row): pretraining rows whose context states part of a substitution table
(`rule: map 2>7 +`), followed with probability `adherence` (Preset.adherence: 0.7 in `adh`, 1.0 in
its control `adh-ctl`). The task (`table6`): a hidden 6-entry table, a budget of two entries, seed
prompt `rule: map +`. The bases live in <root>/<level>/b<k>/base (pretrained by
`python train.py pretrain --preset <level> --seed k --out ...`), the runs in
<root>/<level>/b<k>/table6/<arm>/s<seed>.

Criteria (written in LOG.md before any run, measured here by `measure_base`):
  general accuracy, adherence per stated entry, entropy where the prompt is silent, the far entries'
  probability under the seed prompt, the share of zero-variance groups under the best in-budget
  prompt. The best in-budget prompt (greedy on val, on the base) is also instructed-in-budget's
  fixed prompt.
Arms: rl, context, fst, sequential (GEPA to 600 rollouts first), sequential-1 (FST's round 0
only), instructed-budget (the best in-budget prompt, fixed) and instructed-full (the whole table: a
ceiling, not a control).
"""

import argparse
import itertools
import json
import math
import os
import shlex
import sys
import time

import torch

import rollout
from rl import zero_std_fraction
from world import tasks

TASK = "table6"
LEVELS = ("adh", "adh-ctl")
CRITERIA = dict(general=0.85, adherence={"adh": (0.5, 0.8), "adh-ctl": (0.95, 1.0)},
                entropy=0.5, far=1e-3, near=0.02, zero_std={"adh": 0.5, "adh-ctl": None},
                far_first=1e-3)  # far, amended: at first occurrences (LOG.md)
# arm: (method, the prompt instructed fixes: "budget" = the base's best in-budget prompt, "full" =
# the task's instruction)
# (in the order a replicate runs them: the primary family's arms first)
ARMS = {"fst": ("fst", None), "sequential-1": ("sequential-1", None), "rl": ("rl", None),
        "context": ("context", None), "instructed-budget": ("instructed", "budget"),
        "sequential": ("sequential", None), "instructed-full": ("instructed", "full")}
PRIMARY_ARMS = ("fst", "sequential-1", "rl")  # the arms the primary family reads: every
                                              # replicate's run first, then the other arms
# the order bases are pretrained and run in: both levels' first base, then the rest
BASE_ORDER = [("adh", 0), ("adh-ctl", 0), ("adh", 1), ("adh", 2), ("adh-ctl", 1), ("adh", 3),
              ("adh", 4), ("adh-ctl", 2)]
# bases that meet every criterion wanted per level; while a level has fewer, its next reserve
# base is pretrained (decided on the bases' criteria alone; a base that misses stays reported)
TARGET = {"adh": 5, "adh-ctl": 3}
RESERVES = [("adh", 5), ("adh", 6), ("adh", 7), ("adh-ctl", 3), ("adh-ctl", 4)]


def base_dir(root, level, b):
    return os.path.join(root, level, f"b{b}", "base")


def run_dir(root, level, b, arm, seed):
    return os.path.join(root, level, f"b{b}", TASK, arm, f"s{seed}")


# -----------------------------------------------------------------------------
# the criteria, on a base

def in_budget_prompts(task, count_tokens):
    """The seed prompt and every partial table of 1 or 2 true entries that fits the budget."""
    table = task.rule[0].arg
    out = [task.seed_prompt]
    for n in (1, 2):
        for entries in itertools.combinations(table, n):
            p = tasks.instruction((tasks.Op("map", entries, partial=True),))
            if count_tokens(p) <= task.max_context_tokens:
                out.append(p)
    return out


def greedy_reward(model, enc, context, problems):
    ro = rollout.sample_rollouts(model, enc, [context] * len(problems), problems, 1, 0.0, 0, 12)
    return sum(ro.rewards) / len(ro)


def adherence(model, enc, task, samples=4, seed=0):
    """-> {"a>b": share of a's positions that become b} under `rule: map a>b +`, sampled at T = 1
    on the val problems that hold a."""
    out = {}
    for a, b in task.rule[0].arg:
        ps = [p for p in task.val if a in p.inputs]
        ctx = tasks.instruction((tasks.Op("map", ((a, b),), partial=True),))
        ro = rollout.sample_rollouts(model, enc, [ctx] * len(ps), ps, samples, 1.0, seed, 12)
        hits = []
        for i, text in enumerate(ro.texts):
            p, got = ps[i // samples], tasks.parse_digits(text) or []
            hits += [len(got) == len(p.inputs) and got[j] == b
                     for j, x in enumerate(p.inputs) if x == a]
        out[f"{a}>{b}"] = sum(hits) / len(hits)
    return out


@torch.no_grad()
def teacher_forced(model, enc, task):
    """One teacher-forced pass over the val problems under the seed prompt -> ((N, L, V) log
    probabilities of each answer token, the ten digits' token ids)."""
    prompts = [tasks.encode_prompt(enc, task.seed_prompt, p) for p in task.val]
    answers = [tasks.encode_answer(enc, p) for p in task.val]
    L = max(map(len, answers))
    tokens = torch.zeros(len(answers), L, dtype=torch.long)
    mask = torch.zeros(len(answers), L, dtype=torch.bool)
    for i, a in enumerate(answers):
        tokens[i, :len(a)], mask[i, :len(a)] = torch.tensor(a), True
    model.eval()
    logp = torch.log_softmax(rollout.completion_logits(model, prompts, tokens, mask).float(), -1)
    return logp, [enc.encode_ordinary(f" {d}")[0] for d in range(10)]


def positions(task):
    """(problem, answer position, source digit, first occurrence?) for every input digit: answer
    token j is digit j (digits are single tokens). A first occurrence is a position whose digit
    has not appeared earlier in the list, so the teacher-forced prefix cannot show its target."""
    for i, p in enumerate(task.val):
        for j, x in enumerate(p.inputs):
            yield i, j, x, x not in p.inputs[:j]


def silent_stats(model, enc, task):
    """Teacher-forced under the seed prompt, at answer positions whose input digit is a table
    source: the next-token entropy (nats), and each entry's probability of its true target, at
    every such position and at first occurrences only.
    -> (mean entropy, {"a>b": mean probability}, {"a>b": mean probability at first occurrences})"""
    table = dict(task.rule[0].arg)
    logp, digit = teacher_forced(model, enc, task)
    ent, prob, first = [], {f"{a}>{b}": [] for a, b in table.items()}, {}
    for i, j, x, is_first in positions(task):
        if x in table:
            lp, key = logp[i, j], f"{x}>{table[x]}"
            ent.append(float(-(lp.exp() * lp).sum()))
            prob[key].append(float(lp[digit[table[x]]].exp()))
            if is_first:
                first.setdefault(key, []).append(prob[key][-1])
    mean = lambda d: {k: sum(v) / len(v) for k, v in d.items() if v}
    return sum(ent) / len(ent), mean(prob), mean(first)


def source_target_matrix(model, enc, task, first_only=False):
    """(10, 10) mean P(target digit | source digit) under the seed prompt, teacher-forced, over the
    answer positions holding each source (first occurrences only, if asked): which pairs the base
    almost never samples on its own."""
    logp, digit = teacher_forced(model, enc, task)
    S, n = torch.zeros(10, 10), torch.zeros(10)
    for i, j, x, is_first in positions(task):
        if is_first or not first_only:
            S[x] += logp[i, j, digit].exp()
            n[x] += 1
    return S / n.clamp(min=1)[:, None]


def zero_std_share(model, enc, task, prompt, problems=64, group=8, seed=0):
    """Share of G-rollout groups (T = 1) with equal rewards under `prompt`: the slow channel's
    silence at step 0."""
    ps = task.val[:problems]
    ro = rollout.sample_rollouts(model, enc, [prompt] * len(ps), ps, group, 1.0, seed, 12)
    return zero_std_fraction(torch.tensor(ro.rewards), torch.tensor(ro.group))


def far_entries(task):
    return {f"{a}>{b}" for a, b in task.rule[0].arg if (b - a) % 10 not in tasks.NEAR}


def measure_base(path, level, device="cpu"):
    """Every criterion on one base -> dict (values, and `pass` per criterion)."""
    from world.pretrain import load_base
    model, enc = load_base(path, device)
    with open(os.path.join(os.path.dirname(path), "metrics.json")) as f:
        general = json.load(f)["general_acc"]
    task = tasks.make_task(TASK)
    count = lambda text: len(enc.encode_ordinary(text))
    scores = {p: greedy_reward(model, enc, p, task.val) for p in in_budget_prompts(task, count)}
    best = max(scores, key=lambda p: (scores[p], -count(p), p == task.seed_prompt))
    adh = adherence(model, enc, task)
    ent, prob, first = silent_stats(model, enc, task)
    far = far_entries(task)
    m = dict(general=general, adherence=adh, adherence_mean=sum(adh.values()) / len(adh),
             silent_entropy=ent, target_prob=prob,
             far_prob=sum(prob[k] for k in far) / len(far),
             **far_first(prob, first, far),
             near_prob=sum(v for k, v in prob.items() if k not in far) / (len(prob) - len(far)),
             in_budget=scores, best_prompt=best, best_score=scores[best],
             full_score=greedy_reward(model, enc, task.instruction, task.val),
             zero_std=zero_std_share(model, enc, task, best))
    c, (lo, hi), z = CRITERIA, CRITERIA["adherence"][level], CRITERIA["zero_std"][level]
    m["pass"] = dict(general=general >= c["general"], adherence=lo <= m["adherence_mean"] <= hi,
                     entropy=ent >= c["entropy"], far=m["far_prob"] < c["far"],
                     near=m["near_prob"] >= c["near"],
                     zero_std=z is None or m["zero_std"] <= z, far_first=m["far_first_pass"])
    del m["far_first_pass"]
    return m


def far_first(prob, first, far):
    """The amended far-target criterion's fields: each entry's target probability at first
    occurrences, their mean over the far entries, and whether it is under the bound."""
    mean = sum(first.get(k, prob[k]) for k in far) / len(far)
    return dict(target_prob_first=first, far_prob_first=mean,
                far_first_pass=mean < CRITERIA["far_first"])


def amend(path, m):
    """Add the amended far-target criterion to a base's criteria measured before it existed,
    leaving every other value (instructed-budget's prompt among them) as it was."""
    from world.pretrain import load_base
    model, enc = load_base(path, "cpu")
    task = tasks.make_task(TASK)
    _, prob, first = silent_stats(model, enc, task)
    f = far_first(prob, first, far_entries(task))
    m.update(target_prob_first=f["target_prob_first"], far_prob_first=f["far_prob_first"])
    m["pass"]["far_first"] = f["far_first_pass"]
    return m


def eligible(m):
    """In the primary family: every criterion passes, the far-target one as amended (first
    occurrences; LOG.md), the original reported beside it."""
    return "far_first" in m["pass"] and all(v for k, v in m["pass"].items() if k != "far")


# -----------------------------------------------------------------------------
# the runs

def replicate(root, level, b, seed):
    """One replicate's runs, one per arm, as (folder, kwargs of train.run). instructed-budget
    reads the base's best in-budget prompt from its criteria.json (measure first)."""
    base = os.path.join(base_dir(root, level, b), "model.pt")
    out = []
    for arm, (method, fixed) in ARMS.items():
        prompt = ""
        if fixed == "budget":
            with open(os.path.join(base_dir(root, level, b), "criteria.json")) as f:
                prompt = json.load(f)["best_prompt"]
        out.append((run_dir(root, level, b, arm, seed),
                    dict(method=method, init=base, base=base, seed=seed, fixed_prompt=prompt)))
    return out


def jobs(root, level, bases, seeds):
    """Every run: replicate by replicate (seed-major over bases), so a grid stopped early holds
    whole replicates."""
    return [j for s in range(seeds) for b in range(bases) for j in replicate(root, level, b, s)]


def run_job(level, folder, kw, threads=1):
    """One run of the grid (resumes a stopped one; a finished one is read back)."""
    from dataclasses import replace
    import train
    torch.set_num_threads(threads)
    preset = replace(train.PRESETS[level], fixed_prompt=kw["fixed_prompt"])
    return train.run(kw["method"], [(TASK, preset.steps)], preset, kw["init"], folder,
                     seed=kw["seed"], base=kw["base"], device="cpu", resume=True,
                     log=lambda *a: None)


def measured(root, level, b):
    return os.path.exists(os.path.join(base_dir(root, level, b), "criteria.json"))


def criteria_of(root, level, b):
    """A measured base's criteria, the amended far-target one added first where it is missing."""
    path = os.path.join(base_dir(root, level, b), "criteria.json")
    with open(path) as f:
        m = json.load(f)
    if "far_first" not in m["pass"]:
        m = amend(os.path.join(os.path.dirname(path), "model.pt"), m)
        with open(path, "w") as f:
            json.dump(m, f, indent=1)
    return m


def prepare_base(root, level, b, log=print):
    """Pretrain base b of a level if it is missing (resuming a stopped pretraining), then measure
    its criteria once (criteria.json)."""
    import train
    from world import pretrain
    d = base_dir(root, level, b)
    if not os.path.exists(os.path.join(d, "model.pt")):
        pretrain.pretrain(train.PRESETS[level], d, "cpu", seed=b, log=log,
                          resume=os.path.exists(os.path.join(d, "ckpt.pt")))
    if not measured(root, level, b):
        m = measure_base(os.path.join(d, "model.pt"), level)
        with open(os.path.join(d, "criteria.json"), "w") as f:
            json.dump(m, f, indent=1)
        log(f"{level} b{b}: measured, eligible: {eligible(m)} (fails: "
            f"{[k for k, v in m['pass'].items() if not v]})")


def planned_bases(root):
    """BASE_ORDER, then each reserve whose level still has fewer eligible bases than TARGET
    (counted once every earlier base of the level is measured)."""
    plan = list(BASE_ORDER)
    for level, b in RESERVES:
        earlier = [x for x in plan if x[0] == level]
        if not all(measured(root, *x) for x in earlier):
            continue
        if sum(eligible(criteria_of(root, *x)) for x in earlier) < TARGET[level]:
            plan.append((level, b))
    return plan


def ready_jobs(root, seeds):
    """The runs not yet finished on measured bases that meet every criterion, in the grid's
    order: the primary family's arms (PRIMARY_ARMS) of every replicate first, then the other
    arms; each part replicate by replicate, seed-major over the planned bases. A base that misses
    a criterion gets no runs. -> [(level, folder, kwargs)]"""
    bases = [(level, b) for level, b in planned_bases(root)
             if measured(root, level, b) and eligible(criteria_of(root, level, b))]
    out = [(level, f, kw) for seed in range(seeds) for level, b in bases
           for f, kw in replicate(root, level, b, seed)
           if not os.path.exists(os.path.join(f, "summary.json"))]
    arm = lambda job: os.path.basename(os.path.dirname(job[1]))  # run_dir: .../<arm>/s<seed>
    return sorted(out, key=lambda job: arm(job) not in PRIMARY_ARMS)  # stable: order kept


def pipeline(root, chain, seeds, wait_s=60, log=print):
    """One of two background chains that together run the whole experiment on two cores:
    `bases` pretrains and measures the planned bases (BASE_ORDER, then reserves while a level
    has fewer than TARGET bases meeting every criterion), then joins `runs`; `runs` runs the first
    ready run (ready_jobs) that no other chain holds, again and again, so while a base is still
    pretraining the later seeds of the measured bases go first. Both resume where they stopped."""
    from harness.runs import Held
    if chain == "bases":
        done = set()
        while todo := [x for x in planned_bases(root) if x not in done]:
            prepare_base(root, *todo[0], log)
            done.add(todo[0])
    while True:
        todo = ready_jobs(root, seeds)
        for level, folder, kw in todo:
            try:  # the run's folder lock says whether another chain has it
                s = run_job(level, folder, kw)
            except Held:
                continue
            log(f"{folder}: final {s['final_val_acc']:.3f}, {s['wall_s']:.0f} s")
            break
        else:  # nothing ready, or every ready run held by another chain
            if not todo and all(measured(root, level, b) for level, b in planned_bases(root)):
                return
            time.sleep(wait_s)


def command(level, folder, kw):
    """The shell line that runs one job (for a scheduler)."""
    args = ["python", "train.py", "run", "--preset", level, "--threads", "1", "--method",
            kw["method"], "--task", TASK, "--init", kw["init"], "--base", kw["base"], "--seed",
            str(kw["seed"]), "--out", folder, "--resume"]
    if kw["fixed_prompt"]:
        args += ["--fixed-prompt", kw["fixed_prompt"]]
    return " ".join(shlex.quote(a) for a in args)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--root", default="runs/adherence")
    ap.add_argument("--level", choices=LEVELS, default="adh")
    ap.add_argument("--bases", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--measure", action="store_true", help="the criteria on each base")
    ap.add_argument("--run", action="store_true", help="every run of the grid (resumable)")
    ap.add_argument("--commands", action="store_true", help="print one command per run")
    ap.add_argument("--pipeline", choices=("bases", "runs"),
                    help="a background chain: pretrain and measure every base, or run every "
                         "replicate as its base is ready (start both)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.pipeline:
        pipeline(args.root, args.pipeline, args.seeds, log=lambda m: print(m, flush=True))
    if args.measure:
        for b in range(args.bases):
            path = os.path.join(base_dir(args.root, args.level, b), "model.pt")
            if not os.path.exists(path):
                print(f"{path}: no base yet", file=sys.stderr)
                continue
            old = os.path.join(os.path.dirname(path), "criteria.json")
            if os.path.exists(old):  # measured before the amendment: add it, change nothing else
                with open(old) as f:
                    m = json.load(f)
                if "far_first" in m["pass"]:
                    continue
                m = amend(path, m)
            else:
                m = measure_base(path, args.level)
            with open(os.path.join(os.path.dirname(path), "criteria.json"), "w") as f:
                json.dump(m, f, indent=1)
            print(f"{args.level} b{b}: " + json.dumps({k: m[k] for k in (
                "general", "adherence_mean", "silent_entropy", "far_prob", "far_prob_first",
                "near_prob",
                "best_prompt", "best_score", "full_score", "zero_std", "pass")}))
    todo = jobs(args.root, args.level, args.bases, args.seeds) if args.run or args.commands else []
    if args.commands:
        print("\n".join(command(args.level, f, kw) for f, kw in todo))
    if args.run:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for (folder, _), s in zip(todo, pool.map(run_job, [args.level] * len(todo),
                                                     [f for f, _ in todo],
                                                     [kw for _, kw in todo])):
                print(f"{folder}: final {s['final_val_acc']:.3f} in {s['wall_s']:.0f} s",
                      flush=True)


if __name__ == "__main__":
    main()
