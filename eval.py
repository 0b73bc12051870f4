"""
eval.py: the measurements. Accuracy, KL to the base model, general skills, and the numbers behind the
paper's claims (C1 sample efficiency, C2 asymptote, C3 KL at matched reward, C5 area under the curve)
computed from a run's log rows. report.py turns them into the report; nothing here trains or reads folders.

    acc, greedy = task_accuracy(model, enc, context, problems)     # mean@4 and greedy exact match
    kl = kl_to_base(model, base, enc, context, problems)           # KL(pi_theta || pi_base) per token

Every measurement samples through episodes.sample_rollouts, i.e. the sampler and verifier the RL loop uses:
  task_accuracy     exact-match mean@k (k samples per problem at the training temperature) and greedy
  kl_to_base        KL(pi_theta || pi_base) per token, exact over the vocabulary, along completions
                    sampled from pi_theta; both models conditioned on the same prompt
  general_accuracy  the pretraining distribution, each problem with its own instruction in context
"""

import math

import numpy as np
import torch

import rollout
import tasks
from episodes import sample_rollouts


@torch.no_grad()
def task_accuracy(model, enc, context, problems, samples=4, temperature=1.0, seed=0, max_new_tokens=12,
                  greedy=True):
    """-> (mean@samples exact match, greedy exact match or None) of `model` with `context` on `problems`."""
    contexts = [context] * len(problems)
    exact = lambda ro: sum(r == 1.0 for r in ro.rewards) / len(ro)
    sampled = sample_rollouts(model, enc, contexts, problems, samples, temperature, seed, max_new_tokens)
    if not greedy:
        return exact(sampled), None
    return exact(sampled), exact(sample_rollouts(model, enc, contexts, problems, 1, 0.0, seed, max_new_tokens))


@torch.no_grad()
def general_accuracy(model, enc, n=256, exclude=tasks.UNSEEN_RULES):
    """Greedy exact match on fresh problems of the pretraining distribution, own instruction in context."""
    items = tasks.general_eval_set(n=n, exclude=exclude)
    ro = sample_rollouts(model, enc, [c for c, _, _ in items], [p for _, p, _ in items], 1, 0.0)
    return sum(r == 1.0 for r in ro.rewards) / len(ro)


@torch.no_grad()
def kl_to_base(model, base, enc, context, problems, samples=4, temperature=1.0, seed=0, max_new_tokens=12):
    """Mean per-token KL(pi_theta || pi_base), exact over the vocabulary, along completions sampled from
    pi_theta with `context`; both models see the same prompt and prefix at every position."""
    ro = sample_rollouts(model, enc, [context] * len(problems), problems, samples, temperature, seed,
                         max_new_tokens)
    lp_theta = _position_logprobs(model, ro, temperature)  # (R, L, V)
    lp_base = _position_logprobs(base, ro, temperature)
    kl = (lp_theta.exp() * (lp_theta - lp_base)).sum(-1)  # (R, L)
    return float((kl * ro.mask).sum() / ro.mask.sum().clamp(min=1))


def _position_logprobs(model, ro, temperature):
    """Full next-token log-distributions at each completion position, on the model's device: (R, L, V)."""
    was_training = model.training
    model.eval()
    device = model.wte.weight.device
    pred = rollout.completion_logits(model, ro.prompts, ro.tokens.to(device), ro.mask.to(device))
    model.train(was_training)
    return torch.log_softmax(pred.float() / max(temperature, 1e-6), -1)


# -----------------------------------------------------------------------------
# claims from log rows (one dict per step; eval steps carry val_acc and kl)

def curve(rows, x="step"):
    """-> (xs, accs) at eval steps; x = 'step' (RL steps done) or 'rollouts' (all rollouts so far)."""
    pts = [((r["step"] + 1) if x == "step" else r["rollouts"], r["val_acc"]) for r in rows if "val_acc" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def first_reach(xs, ys, level):
    return next((x for x, y in zip(xs, ys) if y >= level - 1e-9), None)


def sample_efficiency(rl_rows, fst_rows):
    """C1: how many steps (and rollouts) FST needs to reach RL-only's peak val accuracy."""
    out = {}
    for x in ("step", "rollouts"):
        rx, ry = curve(rl_rows, x)
        fx, fy = curve(fst_rows, x)
        peak = max(ry)
        r_at, f_at = first_reach(rx, ry, peak), first_reach(fx, fy, peak)
        key = "steps" if x == "step" else "rollouts"
        out[f"rl_{key}_to_peak"] = r_at
        out[f"fst_{key}_to_rl_peak"] = f_at
        out["ratio" if x == "step" else "ratio_rollouts"] = (r_at / f_at) if f_at else None
    out["rl_peak"] = max(curve(rl_rows)[1])
    out["fst_peak"] = max(curve(fst_rows)[1])
    return out


def sigmoid_fit(xs, ys):
    """C2: fit R = R0 + (A - R0) / (1 + (Cmid / C)^B). For fixed (Cmid, B) the model is linear in (R0, A),
    so a grid over (Cmid, B) with a 2-parameter least squares at each point finds the global best cheaply."""
    C, R = np.asarray(xs, float), np.asarray(ys, float)
    best = None
    for cmid in np.geomspace(max(C.min(), 1.0) / 4, C.max() * 4, 60):
        for b in np.linspace(0.3, 6.0, 40):
            s = 1.0 / (1.0 + (cmid / C) ** b)
            X = np.stack([1 - s, s], 1)
            coef, *_ = np.linalg.lstsq(X, R, rcond=None)
            r0, a = np.clip(coef, 0.0, 1.0)  # accuracies live in [0, 1]
            err = float(((X @ np.array([r0, a]) - R) ** 2).mean())
            if best is None or err < best["mse"]:
                best = {"A": float(a), "R0": float(r0), "Cmid": float(cmid), "B": float(b), "mse": err}
    return best


def kl_at_matched_reward(rl_rows, fst_rows):
    """C3: KL(pi || pi_base) of each method at the first eval where it reaches a reward both reach."""
    level = min(max(r["val_acc"] for r in rows if "val_acc" in r) for rows in (rl_rows, fst_rows))
    def kl_at(rows):
        return next(r["kl"] for r in rows if "val_acc" in r and r["val_acc"] >= level - 1e-9)
    rl_kl, fst_kl = kl_at(rl_rows), kl_at(fst_rows)
    return {"reward": level, "rl_kl": rl_kl, "fst_kl": fst_kl, "ratio": fst_kl / rl_kl if rl_kl > 0 else None}


def area_and_threshold(rows, threshold):
    xs, ys = curve(rows)
    return {"auc": float(np.mean(ys)), "steps_to_threshold": first_reach(xs, ys, threshold), "final": ys[-1]}


def bootstrap_ci(values, reps=2000, seed=0):
    """95% percentile bootstrap interval of the mean: resample the values (one per base x seed) with
    replacement `reps` times -> [lo, hi]. One value gives [v, v]: no interval without replicates."""
    vals = np.asarray(values, float)
    means = vals[np.random.default_rng(seed).integers(0, len(vals), (reps, len(vals)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def mean_std(values):
    """Aggregate of one number over replicates -> {mean, std, ci95, n} (non-finite and missing values dropped)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "ci95": bootstrap_ci(vals), "n": len(vals)}


def compare(a, b):
    """Paired comparison of two methods over the same replicates (lists aligned by seed): the mean of a - b
    with its bootstrap interval, and a verdict: 'higher' / 'lower' when the interval excludes 0."""
    diff = mean_std([x - y for x, y in zip(a, b)])
    if diff["n"] < 2:
        return dict(diff, verdict="inconclusive")
    lo, hi = diff["ci95"]
    return dict(diff, verdict="higher" if lo > 0 else "lower" if hi < 0 else "inconclusive")
