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

The claims are pure numpy functions of log rows, written so a few seeds cannot overstate them:
  C1  steps/rollouts to RL-only's peak, read off running-max curves (best val so far). A seed where
      FST never gets there is kept as a censored ratio (an upper bound), one where FST is there at
      its first eval as a lower bound; censored_summary and ratio_verdict aggregate them honestly.
  C2  a sigmoid fit with R0, A in [0, 1] enforced by the fit, a bootstrap interval on A, and an
      explicit "not identifiable" when the curve is flat, has not bent yet, or was saturated early.
  C3  KL at the first eval where each method's best val reaches a level both reach, under either
      KL key (the deployed prompt's "kl" or a common prompt's "kl_common"), flagged when that level
      is one the context alone reaches.
  verdict / ratio_verdict turn a bootstrap interval into reproduced / not reproduced / inconclusive.
"""

import math

import numpy as np
import torch

import rollout
import tasks
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


def _censored_logs(values, flags_low=None, flags_high=None):
    """Log ratios with their censoring flags, dropping missing, non-positive and doubly censored
    values (they carry no information)."""
    n = len(values)
    low = list(flags_low) if flags_low is not None else [False] * n
    high = list(flags_high) if flags_high is not None else [False] * n
    keep = [(math.log(v), bool(lo), bool(hi)) for v, lo, hi in zip(values, low, high)
            if v is not None and math.isfinite(v) and v > 0 and not (lo and hi)]
    arr = np.array(keep, float).reshape(-1, 3)
    return arr[:, 0], arr[:, 1] > 0, arr[:, 2] > 0


def _from_log(v):
    """exp of a log ratio for results.json: -inf -> 0.0, +inf or undetermined -> None."""
    return None if math.isnan(v) or v == math.inf else float(math.exp(v))


def _fmt_ratio(v):
    return "inf" if v is None else f"{v:.2f}"


def censored_summary(values, flags_low=None, flags_high=None, reps=2000, seed=0):
    """Aggregate per-seed ratios of which some are censored: flags_low[i] marks values[i] as a
    lower bound (C1's censored_low), flags_high[i] as an upper bound (C1's censored).
    -> {n, n_censored_low, n_censored_high, median, median_bounds, geo_mean, ci95, ci95_of, text}.
      median         middle value with lower bounds ranked at +inf and upper bounds at -inf (their
                     bound side), so a censored value never drags the median toward its bound
      median_bounds  [lo, hi] the sample median could take given the censoring: lo with lower
                     bounds at their bound and upper bounds at 0, hi with upper bounds at their
                     bound and lower bounds at +inf; median lies between them
      geo_mean       exp(mean log ratio) when nothing is censored (ratios average on a log scale),
                     else None: a mean moves without limit with an unbounded value
      ci95           bootstrap 95% interval, of geo_mean when nothing is censored (ci95_of =
                     'geo_mean'), else of the median (ci95_of = 'median'): 2.5th percentile of the
                     resampled lower median bound, 97.5th of the upper one, so the interval covers
                     both sampling and censoring
    Ratios are reported on their own scale; 0.0 stands for 'no lower bound', None for 'unbounded
    above' or undetermined. Missing (None) and non-positive values are dropped."""
    logs, low, high = _censored_logs(values, flags_low, flags_high)
    n = len(logs)
    out = {"n": n, "n_censored_low": int(low.sum()), "n_censored_high": int(high.sum()),
           "median": None, "median_bounds": None, "geo_mean": None, "ci95": None,
           "ci95_of": None, "text": "no data"}
    if not n:
        return out
    at_low = np.where(high, -np.inf, logs)  # each censored value as low as it can be
    at_high = np.where(low, np.inf, logs)  # each as high as it can be
    ranked = np.where(high, -np.inf, np.where(low, np.inf, logs))
    with np.errstate(invalid="ignore"):
        mid = float(np.median(ranked))  # nan: a +inf and a -inf share the middle
    out["median"] = _from_log(mid)
    out["median_bounds"] = [_from_log(float(np.median(v))) for v in (at_low, at_high)]
    if not (low.any() or high.any()):
        out["geo_mean"] = float(math.exp(logs.mean()))
        out["ci95"] = [float(math.exp(v)) for v in bootstrap_ci(logs, reps, seed)]
        out["ci95_of"] = "geo_mean"
        lo, hi = out["ci95"]
        out["text"] = f"{out['geo_mean']:.2f} [{lo:.2f}, {hi:.2f}] (geo mean, n={n})"
        return out
    idx = np.random.default_rng(seed).integers(0, n, (reps, n))
    med_lo, med_hi = np.median(at_low[idx], 1), np.median(at_high[idx], 1)
    out["ci95"] = [_from_log(float(np.percentile(med_lo, 2.5, method="lower"))),
                   _from_log(float(np.percentile(med_hi, 97.5, method="higher")))]
    out["ci95_of"] = "median"
    b_lo, b_hi = out["median_bounds"]
    if math.isnan(mid):
        m = "undetermined"
    elif math.isinf(mid):  # the middle value is censored: say on which side of its bound it lies
        m = f"< {_fmt_ratio(b_hi)}" if mid < 0 else f"> {_fmt_ratio(b_lo)}"
    else:
        m = _fmt_ratio(out["median"])
    c_lo, c_hi = out["ci95"]
    out["text"] = (f"median {m} (between {_fmt_ratio(b_lo)} and {_fmt_ratio(b_hi)}) "
                   f"[{_fmt_ratio(c_lo)}, {_fmt_ratio(c_hi)}], n={n}: {out['n_censored_low']} "
                   f"lower bound(s), {out['n_censored_high']} upper bound(s)")
    return out


# C2 ---------------------------------------------------------------------------

CMID_SPAN = 4.0  # Cmid is searched within [min(C) / 4, 4 * max(C)]
B_RANGE = (0.3, 6.0)  # the sigmoid's steepness
GRID = (48, 40)  # coarse (Cmid, B) grid; two 21 x 21 refinements around its best follow

# When asymptote() calls A not identifiable (each rule names what the data cannot tell):
FLAT_RANGE = 0.05  # max - min accuracy below this: no rise to fit, the curve is flat
SATURATED_TOL = 0.02  # saturated: the fitted curve is within this of A at the first eval, or the
#                       first third of the evals averages no more than this below the last third
CI_WIDTH_MAX = 0.5  # A's 95% bootstrap interval wider than this: the data do not pin A down
BENT_BY = 1.0  # not bent yet: the fit's Cmid lies beyond BENT_BY * max(C), so the run never got
#                halfway from R0 to A and A is an extrapolation. This includes a Cmid at the upper
#                bound of its grid; with A <= 1 enforced, a straight rising line is fit by a Cmid
#                that is beyond the run but well inside the grid, hence the wider rule.


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


def asymptote(xs, ys, reps=200, seed=0):
    """C2's asymptote A with a 95% bootstrap interval and whether the curve identifies it at all
    -> {A, ci95, identifiable, why, fit}. The interval refits `reps` curves made of the fitted
    curve plus its residuals resampled with replacement (scaled by sqrt(n / (n - 4)) for the four
    fitted parameters). identifiable is False, with the reasons in why, when the curve is flat,
    has not bent yet, is saturated from its first eval, or A's interval is wider than
    CI_WIDTH_MAX (the constants above)."""
    order = np.argsort(np.asarray(xs, float), kind="stable")
    C, R = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    n = len(R)
    fit = sigmoid_fit(C, R)
    pred = _fit_curve(C, fit)
    resid = (R - pred) * math.sqrt(n / max(n - 4, 1))
    rng = np.random.default_rng(seed)
    boots = [sigmoid_fit(C, pred + rng.choice(resid, n))["A"] for _ in range(reps)]
    ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    why = []
    if R.max() - R.min() < FLAT_RANGE:
        why.append(f"flat: accuracy range {R.max() - R.min():.3f} < {FLAT_RANGE}")
    if fit["Cmid"] > BENT_BY * C.max():
        why.append(f"not bent yet: Cmid {fit['Cmid']:.3g} beyond the last eval at {C.max():.3g}")
    third = max(1, n // 3)
    early, plateau = R[:third].mean(), R[-third:].mean()  # thirds average out eval noise
    if abs(fit["A"] - pred[0]) <= SATURATED_TOL or early >= plateau - SATURATED_TOL:
        why.append(f"saturated: within {SATURATED_TOL} of its final level from the first eval")
    if ci[1] - ci[0] > CI_WIDTH_MAX:
        why.append(f"A's 95% interval is {ci[1] - ci[0]:.2f} wide (> {CI_WIDTH_MAX})")
    ok = f"the curve bends inside the run; A's 95% interval is {ci[1] - ci[0]:.3f} wide"
    return {"A": fit["A"], "ci95": ci, "identifiable": not why, "why": "; ".join(why) or ok,
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


# aggregates over seeds and verdicts -------------------------------------------

def bootstrap_ci(values, reps=2000, seed=0):
    """95% percentile bootstrap interval of the mean: resample the values (one per base x seed)
    with replacement `reps` times -> [lo, hi]. One value gives [v, v]: no interval without
    replicates; none gives None."""
    vals = np.asarray(values, float)
    if not len(vals):
        return None
    means = vals[np.random.default_rng(seed).integers(0, len(vals), (reps, len(vals)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def mean_std(values):
    """Aggregate of one number over replicates -> {mean, std, ci95, n} (non-finite and missing
    values dropped)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "ci95": bootstrap_ci(vals),
            "n": len(vals)}


def compare(a, b):
    """Paired comparison of two methods over the same replicates (lists aligned by seed): the mean
    of a - b with its bootstrap interval, and a verdict: 'higher' / 'lower' when the interval
    excludes 0. -> {mean, std, ci95, n, verdict}."""
    diff = mean_std([x - y for x, y in zip(a, b)])
    if diff["n"] < 2:
        return dict(diff, verdict="inconclusive")
    lo, hi = diff["ci95"]
    return dict(diff, verdict="higher" if lo > 0 else "lower" if hi < 0 else "inconclusive")


def _side(summary):
    """+1 / -1 when the summary's 95% interval lies above / below 0, 0 when it straddles 0 or
    rests on fewer than two replicates."""
    if summary.get("n", 0) < 2 or summary.get("ci95") is None:
        return 0
    lo, hi = summary["ci95"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def verdict(diff_summary, direction):
    """A paired difference {mean, ci95, n} (as compare makes, FST - other) against the paper's
    direction (+1: the paper says FST is higher, -1: lower) -> 'reproduced' when the interval
    excludes 0 on the paper's side, 'not reproduced' when it excludes 0 on the other side, else
    'inconclusive' (also with n < 2)."""
    assert direction in (1, -1), direction
    side = _side(diff_summary)
    return "reproduced" if side == direction else "not reproduced" if side else "inconclusive"


def ratio_verdict(ratios, direction, flags_low=None, flags_high=None):
    """verdict for a claim stated as a ratio (C1: > 1 is the paper's direction, +1; C3: < 1, -1),
    on the log scale: the bootstrap interval of the mean log ratio against 0. Censored values
    (flags_low: lower bound, flags_high: upper bound) count at their bound, which understates
    them on their censored side only: a lower bound >= 1 still supports ratio > 1. Since the mean
    can move without limit toward a value's censored side, a conclusion on that side is withheld
    ('inconclusive'): an upper bound blocks 'above 1', a lower bound 'below 1'.
    -> {verdict, geo_mean, ci95, n, n_censored_low, n_censored_high, why}."""
    assert direction in (1, -1), direction
    logs, low, high = _censored_logs(ratios, flags_low, flags_high)
    s = mean_std(list(logs))
    side = _side(s)
    why = "the interval excludes 1" if side else "the interval contains 1 or n < 2"
    if (side > 0 and high.any()) or (side < 0 and low.any()):
        bound = "an upper bound could pull it below" if side > 0 else "a lower bound above"
        why = f"the interval excludes 1, but {bound} 1"
        side = 0
    v = "reproduced" if side == direction else "not reproduced" if side else "inconclusive"
    return {"verdict": v, "geo_mean": float(math.exp(s["mean"])) if s["n"] else None,
            "ci95": [float(math.exp(c)) for c in s["ci95"]] if s["n"] else None, "n": s["n"],
            "n_censored_low": int(low.sum()), "n_censored_high": int(high.sum()), "why": why}
