"""
eval.py: the measurements. Accuracy, KL to the base model, general skills, and the numbers behind
the paper's claims (C1 sample efficiency, C2 asymptote, C3 KL at matched reward, C5 area under the
curve) computed from a run's log rows. report.py turns them into the report; nothing here trains or
reads folders.

    acc, greedy = task_accuracy(model, enc, context, problems)  # mean@4, greedy exact match
    kl = kl_to_base(model, base, enc, context, problems)        # KL(pi_theta || pi_base) per token

Every measurement samples through rollout.sample_rollouts, i.e. the sampler and verifier the RL
loop uses:
  task_accuracy     exact-match mean@k (k samples per problem at the training temperature), greedy
  kl_to_base        KL(pi_theta || pi_base) per token, exact over the vocabulary, along completions
                    sampled from pi_theta; both models conditioned on the same prompt
  general_accuracy  the pretraining distribution, each problem with its own instruction in context

The claims are pure numpy functions of log rows:
  C1  steps/rollouts to RL-only's running peak (the paper's definition), read off running-max
      curves; a seed where FST never gets there is a censored ratio (an upper bound), one where FST
      is there at its first eval a lower bound. stats.c1_profile adds fixed fractions of RL's
      plateau and the censoring-aware comparison that decides the verdict.
  C2  a sigmoid fit with R0, A in [0, 1] enforced by the fit and an interval on A; whether A is
      identified at all is stats.c2_identifiable's rule (a plateau below the bound observed).
  C3  KL at the first eval where each method's best val reaches a level both reach, under either
      KL key (the deployed prompt's "kl" or a common prompt's "kl_common"), flagged when that level
      is one the context alone reaches.
Intervals, tests and labels live in stats.py (one bootstrap, over bases then seeds).
"""

import json
import math
import os

import numpy as np
import torch

import fst
import rollout
from harness import stats
from world import tasks
from rollout import sample_rollouts


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
    items = tasks.general_eval_set(n=n, exclude=exclude)
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
# claims from log rows (one dict per step; eval steps carry val_acc in [0, 1], kl, rollouts, step)

EPS = 1e-9  # a level counts as reached up to float error (accuracies are means of 0/1 scores)


def curve(rows, x="step"):
    """-> (xs, accs) at eval rows; x = 'step' (RL steps done) or 'rollouts' (all so far)."""
    pts = [((r["step"] + 1) if x == "step" else r["rollouts"], r["val_acc"])
           for r in rows if "val_acc" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def running_max(ys):
    """Best value so far at each point: what a run deploys if it keeps its best checkpoint, and a
    monotone curve, so a level is reached once and stays reached."""
    return [float(v) for v in np.maximum.accumulate(np.asarray(ys, float))] if len(ys) else []


def mean_band(curves):
    """[(xs, ys)] of replicates -> (xs, mean, lo, hi) on the first curve's xs (curves cut to the
    shortest); the band is the 95% interval of the mean (normal approximation) over replicates."""
    n = min(len(c[1]) for c in curves)
    ys = np.array([c[1][:n] for c in curves], float)  # (reps, n)
    m = ys.mean(0)
    half = 1.96 * ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else np.zeros(n)
    return list(curves[0][0][:n]), m, m - half, m + half


def on_grid(rows, grid):
    """Val accuracy as a step function of rollouts, read at `grid` (NaN before the first eval):
    replicates with different rollout counts on one axis."""
    xs, ys = curve(rows, "rollouts")
    idx = np.searchsorted(xs, grid, side="right") - 1
    return [ys[i] if i >= 0 else np.nan for i in idx]


def first_reach(xs, ys, level):
    """First x whose y reaches `level`, None if none does."""
    return next((x for x, y in zip(xs, ys) if y >= level - EPS), None)


def _first_index(ys, level):
    return next((i for i, y in enumerate(running_max(ys)) if y >= level - EPS), None)


# what the report needs from a run's final weights (C4, C7), written beside summary.json --------

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


# C1 ---------------------------------------------------------------------------

def sample_efficiency(rl_rows, fst_rows):
    """C1: steps and rollouts FST needs to reach RL-only's peak val, read off running-max curves.
    ratio (steps) and ratio_rollouts = RL's x to its peak / FST's x to the same level (> 1: FST
    is faster). Both axes read the same eval rows, so one pair of flags covers both ratios:
      censored      FST never reaches the peak, it needs more than its whole run: the ratio is an
                    upper bound rl_x / fst_last_x (show it as "< r").
      censored_low  FST is there at its first eval and may have crossed before it: the ratio is a
                    lower bound rl_x / fst_first_x (show it as ">= r").
    RL's x is itself an upper bound when its peak is its first eval, which makes the ratio an upper
    bound too; if FST is also there at its first eval the ratio is bounded neither way: None.
    -> {rl_peak, fst_peak, censored, censored_low, rl_steps_to_peak, fst_steps_to_rl_peak,
        fst_last_step, ratio, rl_rollouts_to_peak, fst_rollouts_to_rl_peak, fst_last_rollouts,
        ratio_rollouts}; x values None where undefined."""
    _, ry = curve(rl_rows)
    _, fy = curve(fst_rows)
    peak = max(ry) if ry and fy else None
    r_i = _first_index(ry, peak) if peak is not None else None
    f_i = _first_index(fy, peak) if peak is not None else None
    out = {"rl_peak": peak, "fst_peak": max(fy) if fy else None,
           "censored": peak is not None and (f_i is None or r_i == 0),
           "censored_low": f_i == 0}
    for x, key, name in (("step", "steps", "ratio"), ("rollouts", "rollouts", "ratio_rollouts")):
        rx, fx = curve(rl_rows, x)[0], curve(fst_rows, x)[0]
        r_at = rx[r_i] if r_i is not None else None
        f_at = fx[f_i] if f_i is not None else None
        f_last = fx[-1] if fx else None
        denom = f_at if f_i is not None else f_last
        ok = r_at is not None and denom and denom > 0 and not (out["censored"] and f_i == 0)
        out.update({f"rl_{key}_to_peak": r_at, f"fst_{key}_to_rl_peak": f_at,
                    f"fst_last_{x}": f_last, name: r_at / denom if ok else None})
    return out


# C2 ---------------------------------------------------------------------------

CMID_SPAN = 4.0  # Cmid is searched within [min(C) / 4, 4 * max(C)]
B_RANGE = (0.3, 6.0)  # the sigmoid's steepness
GRID = (48, 40)  # coarse (Cmid, B) grid; two 21 x 21 refinements around its best follow


def _cmid_grid(C):
    """(lo, hi, coarse step ratio) of the Cmid search for curve points at C (positive ones)."""
    pos = C[C > 0] if (C > 0).any() else np.ones(1)
    lo, hi = pos.min() / CMID_SPAN, max(C.max(), pos.min()) * CMID_SPAN
    return lo, hi, (hi / lo) ** (1.0 / (GRID[0] - 1))


def _sigmoid_s(C, cmids, bs):
    """s = 1 / (1 + (Cmid / C)^B) for each (Cmid, B) pair: (pairs, points); s = 0 where C = 0."""
    with np.errstate(divide="ignore", over="ignore"):
        return 1.0 / (1.0 + (np.asarray(cmids)[:, None] / C[None, :]) ** np.asarray(bs)[:, None])


def _box_lstsq(S, R):
    """For each row s of S: min over r0, a in [0, 1] of |r0 (1 - s) + a s - R|^2, exactly. The
    objective is a convex quadratic in (r0, a), so its minimum over the box is the free minimum if
    that lies inside, else on an edge; on each of the four edges it is a 1-D quadratic whose
    minimum is its free minimum clipped to [0, 1]. -> (r0, a, sse), one per row."""
    U = 1.0 - S
    uu, uv, vv = (U * U).sum(1), (U * S).sum(1), (S * S).sum(1)
    uy, vy, yy = U @ R, S @ R, R @ R
    det = uu * vv - uv * uv
    with np.errstate(divide="ignore", invalid="ignore"):
        cands = [((vv * uy - uv * vy) / det, (uu * vy - uv * uy) / det)]  # free minimum
        for c in (0.0, 1.0):
            cands.append((np.full_like(uu, c), np.clip((vy - c * uv) / vv, 0, 1)))
            cands.append((np.clip((uy - c * uv) / uu, 0, 1), np.full_like(uu, c)))
        errs = []
        for r0, a in cands:
            e = yy - 2 * (r0 * uy + a * vy) + r0 * r0 * uu + 2 * r0 * a * uv + a * a * vv
            inside = (r0 >= 0) & (r0 <= 1) & (a >= 0) & (a <= 1)
            errs.append(np.where(inside & np.isfinite(e), e, np.inf))
    k = np.argmin(np.stack(errs), 0)
    pick = lambda j: np.stack([c[j] for c in cands])[k, np.arange(len(k))]
    return pick(0), pick(1), np.stack(errs)[k, np.arange(len(k))]


def _grid_best(C, R, cmids, bs):
    """Best bounded fit over the grid cmids x bs -> (sse, r0, a, cmid, b)."""
    cm, b = (g.ravel() for g in np.meshgrid(cmids, bs, indexing="ij"))
    r0, a, sse = _box_lstsq(_sigmoid_s(C, cm, b), R)
    i = int(np.argmin(sse))
    return float(sse[i]), float(r0[i]), float(a[i]), float(cm[i]), float(b[i])


def sigmoid_fit(xs, ys):
    """C2: fit R = R0 + (A - R0) / (1 + (Cmid / C)^B) with R0, A in [0, 1], Cmid in
    [min(C) / 4, 4 max(C)] and B in [0.3, 6], all enforced by the fit. For fixed (Cmid, B) the
    model is linear in (R0, A) and _box_lstsq solves the bounded 2-parameter problem exactly, so a
    coarse grid over (Cmid, B) and two finer ones around its best find the global optimum cheaply.
    -> {A, R0, Cmid, B, mse}."""
    C, R = np.asarray(xs, float), np.asarray(ys, float)
    lo, hi, step_c = _cmid_grid(C)
    bs = np.linspace(*B_RANGE, GRID[1])
    step_b = bs[1] - bs[0]
    best = _grid_best(C, R, np.geomspace(lo, hi, GRID[0]), bs)
    for _ in range(2):
        cm = np.clip(best[3] * step_c ** np.linspace(-1, 1, 21), lo, hi)
        b = np.clip(best[4] + step_b * np.linspace(-1, 1, 21), *B_RANGE)
        best = min(best, _grid_best(C, R, cm, b))
        step_c, step_b = step_c ** 0.1, step_b / 10
    _, r0, a, cmid, b = best
    pred = r0 + (a - r0) * _sigmoid_s(C, [cmid], [b])[0]
    return {"A": a, "R0": r0, "Cmid": cmid, "B": b, "mse": float(((pred - R) ** 2).mean())}


def _fit_curve(C, fit):
    return fit["R0"] + (fit["A"] - fit["R0"]) * _sigmoid_s(C, [fit["Cmid"]], [fit["B"]])[0]


def asymptote(xs, ys, reps=200, seed=0, ci95=None):
    """C2's asymptote A with a 95% interval and whether the curve identifies it at all
    -> {A, ci95, identifiable, why, fit}. ci95: an interval from the caller (report.c2 passes the
    one from resampling replicates); without it, `reps` refits of the fitted curve plus its
    residuals resampled with replacement (scaled by sqrt(n / (n - 4)) for the four fitted
    parameters), the noise of this one curve. identifiable follows stats.c2_identifiable: A must
    sit below the fit's bound, the midpoint well inside the run, the interval narrower than the
    paper's effect."""
    order = np.argsort(np.asarray(xs, float), kind="stable")
    C, R = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    n = len(R)
    fit = sigmoid_fit(C, R)
    pred = _fit_curve(C, fit)
    if ci95 is None:
        resid = (R - pred) * math.sqrt(n / max(n - 4, 1))
        rng = np.random.default_rng(seed)
        boots = [sigmoid_fit(C, pred + rng.choice(resid, n))["A"] for _ in range(reps)]
        ci95 = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    why = stats.c2_identifiable(C, R, fit, pred, ci95)
    ok = f"a plateau below the bound is observed; A's 95% interval is {ci95[1] - ci95[0]:.3f} wide"
    return {"A": fit["A"], "ci95": ci95, "identifiable": not why, "why": "; ".join(why) or ok,
            "fit": fit}


# C3 ---------------------------------------------------------------------------

def kl_curve(rows, key="kl"):
    """-> (accs, kls) at the eval rows that carry `key` ('kl' or 'kl_common'), for plotting."""
    pts = [(r["val_acc"], r[key]) for r in rows if "val_acc" in r and r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def kl_at_matched_reward(rl_rows, fst_rows, floor=None, key="kl"):
    """C3: KL(pi || pi_base) of each method at the first eval where its running-max val reaches a
    level both reach: the lower of the two peaks. key = 'kl' (each method's deployed prompt) or
    'kl_common' (one prompt for all methods); eval rows without it are skipped. floor is the
    context-only ceiling: a level at or below it is one a prompt alone reaches, which says little
    about what the weights had to move; when both peaks exceed it the level (the lower peak) is
    above it too, and above_floor says so (True without a floor: nothing to clear).
    -> {reward, rl_kl, fst_kl, ratio = fst_kl / rl_kl, above_floor}; None values (above_floor
    False) when either run has no eval row with `key`."""
    (ra, rk), (fa, fk) = kl_curve(rl_rows, key), kl_curve(fst_rows, key)
    if not ra or not fa:
        return {"reward": None, "rl_kl": None, "fst_kl": None, "ratio": None, "above_floor": False}
    level = min(max(ra), max(fa))
    rl_kl, fst_kl = rk[_first_index(ra, level)], fk[_first_index(fa, level)]
    return {"reward": level, "rl_kl": rl_kl, "fst_kl": fst_kl,
            "ratio": fst_kl / rl_kl if rl_kl > 0 else None,
            "above_floor": floor is None or level > floor + EPS}


# C5 ---------------------------------------------------------------------------

def area_and_threshold(rows, threshold):
    """C5: mean val accuracy over the evals (area under the curve per eval), the steps to reach
    `threshold` (None if never) and the final accuracy."""
    xs, ys = curve(rows)
    return {"auc": float(np.mean(ys)), "steps_to_threshold": first_reach(xs, ys, threshold),
            "final": ys[-1]}


# the per-step measurement the run loop logs ---------------------------------------

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


def seed_prompt_probe(s, preset):
    """What the weights alone know: greedy exact match on val under the task's seed prompt and,
    for a table task, each entry's accuracy there (entry_accuracy). -> log fields"""
    res = fst.make_evaluate(s.model, s.enc, preset)(s.task.seed_prompt, s.task.val)
    row = {"val_seed_greedy": sum(r == 1.0 for r, _, _ in res) / len(res)}
    op = s.task.rule[0]
    if len(s.task.rule) == 1 and op.name == "map":
        row["entries"] = entry_accuracy(s.task.val, [o for _, o, _ in res], op.arg)
    return row


def channel_table(s, base_model, preset, deployed):
    """C7's 2x2 table at a run's end, greedy exact match on val: {base, weights} x {seed,
    deployed}, the weights being the run's final ones and the prompts the seed and the deployed
    one. Written into the log, so the report never needs the weights again."""
    def acc(model, context):
        res = fst.make_evaluate(model, s.enc, preset)(context, s.task.val)
        return sum(r == 1.0 for r, _, _ in res) / len(res)
    return {who: {"seed": acc(m, s.task.seed_prompt), "deployed": acc(m, deployed)}
            for who, m in (("base", base_model), ("weights", s.model))}


def evaluate_step(s, base_model, preset, step, last, row):
    """Val accuracy with the deployed prompt every eval_every steps and at the end (greedy exact
    match at the end only); at every kl_every-th of those steps and at the end, KL to the base under
    the deployed prompt and under the task's seed prompt, which every method shares
    (`kl_common`)."""
    if not (step % preset.eval_every == 0 or last):
        return
    deployed = fst.deployed_prompt(s)
    val = s.task.val
    acc, greedy = task_accuracy(s.model, s.enc, deployed, val, preset.eval_samples,
                                   preset.temperature, seed=step,
                                   max_new_tokens=preset.max_new_tokens, greedy=last)
    row.update(val_acc=acc, prompt=deployed)
    if last:
        row["val_greedy"] = greedy
    if step % preset.kl_every == 0 or last:
        def kl(context):
            return kl_to_base(s.model, base_model, s.enc, context, val[:preset.kl_problems],
                                 preset.kl_samples, preset.temperature, seed=step,
                                 max_new_tokens=preset.max_new_tokens)
        row["kl"] = kl(deployed)
        row["kl_common"] = row["kl"] if deployed == s.task.seed_prompt else kl(s.task.seed_prompt)
    if preset.probe_entries:  # the weights alone, under the seed prompt; C7's table at the end
        row.update(seed_prompt_probe(s, preset))
        if last:
            row["c7"] = channel_table(s, base_model, preset, deployed)


# the reflectors on a frozen base -----------------------------------------------------------

def hit_rates(base_path, task_names, names, device="cpu", trials=100, seed=0):
    """First-proposal hit rate (reflectors.first_hit_rate) of each reflector setting in `names` on
    each task, with the base's own greedy outputs as the records; a task's own context budget, else
    the base's preset's. `seed` seeds a NAME:P reflector's mistakes. -> {task: {name: rate}}"""
    from world import reflectors
    from model import load_checkpoint
    base, extra = load_checkpoint(base_path, device)
    enc, preset = tasks.tokenizer_from_state(extra["tokenizer"]), extra["metrics"]["preset"]
    evaluate = rollout.greedy_evaluate(base.eval(), enc, preset["max_new_tokens"])
    count = lambda text: len(enc.encode_ordinary(text))
    out = {}
    for name in task_names:
        task = tasks.make_task(name)  # the default splits, whichever code version made the base
        budget = task.max_context_tokens or preset["max_context_tokens"]
        out[name] = {r: reflectors.first_hit_rate(reflectors.make_reflector(r, budget, count,
                                                                            seed=seed),
                                                  task, evaluate, trials=trials)
                     for r in names}
    return out


# one replicate against the committed grid ---------------------------------------------------

def grid_reference(preset_name, rows):
    """The committed grid's results.json (results/<preset>/ in this repository) beside a
    one-replicate run's claim rows (stats.against_grid). -> {path, n, matched} or {path, note}."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", preset_name,
                        "results.json")
    grid = {}
    if os.path.exists(path):
        with open(path) as f:
            grid = json.load(f)
    if not isinstance(grid.get("claims"), list):
        return {"path": path, "note": "no committed grid with per-row intervals to compare with"}
    return {"path": path, "n": grid.get("replicates"),
            "matched": stats.against_grid(rows, grid["claims"])}
