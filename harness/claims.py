"""
harness/claims.py: the numbers behind the paper's claims (C1 sample efficiency, C2 asymptote, C3 KL
at matched reward, C5 area under the curve), computed from a run's log rows (one dict per step;
eval steps carry val_acc in [0, 1], kl, rollouts, step). report.py and phase.py turn them into
reports; nothing here trains or reads run folders.

The claims are pure numpy functions of log rows:
  C1  steps/rollouts to RL-only's running peak (the paper's definition), read off running-max
      curves; a seed where FST never gets there is a censored ratio (an upper bound), one where FST
      is there at its first eval a lower bound. c1_profile adds fixed fractions of RL's plateau
      (stats.C1_FRACTIONS) and a censoring-aware comparison (gehan_score); c1_rows makes its rows.
  C2  a sigmoid fit with R0, A in [0, 1] enforced by the fit and an interval on A; whether A is
      identified at all is c2_identifiable's rule (a plateau below the bound observed).
  C3  KL at the first eval where each method's best val reaches a level both reach, under either
      KL key (the deployed prompt's "kl" or a common prompt's "kl_common"), flagged when that level
      is one the context alone reaches.
Intervals, tests and labels live in stats.py (one bootstrap, over bases then seeds), with the
constants fixed before any run (C1's levels, C2's rule).
"""

import json
import math
import os

import numpy as np

from harness import runs, stats
from harness.stats import EPS  # a level counts as reached up to float error
from harness.stats import (A_BOUND_TOL, C1_FRACTIONS, C1_ROWS, C2_EFFECT, C2_MID_FRACTION,
                           FLAT_RANGE, PLATEAU_EVALS, REPS, SATURATED_TOL)


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
    parameters), the noise of this one curve. identifiable follows c2_identifiable: A must
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
    why = c2_identifiable(C, R, fit, pred, ci95)
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


# one replicate against the committed grid ---------------------------------------------------

def grid_reference(preset_name, rows):
    """The committed grid's results.json (results/<preset>/ in this repository) beside a
    one-replicate run's claim rows (stats.against_grid). -> {path, n, matched} or {path, note}."""
    path = os.path.join(runs.COMMITTED, preset_name, "results.json")
    grid = {}
    if os.path.exists(path):
        with open(path) as f:
            grid = json.load(f)
    if not isinstance(grid.get("claims"), list):
        return {"path": path, "note": "no committed grid with per-row intervals to compare with"}
    return {"path": path, "n": grid.get("replicates"),
            "matched": stats.against_grid(rows, grid["claims"])}


# -----------------------------------------------------------------------------
# C1: time to fixed levels, censored at the budget

def _evals(rows, x):
    """(xs, accs) at eval rows, x = step + 1 or rollouts so far (as curve)."""
    pts = [((r["step"] + 1) if x == "step" else r["rollouts"], r["val_acc"])
           for r in rows if "val_acc" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def reach_time(rows, level, x="step"):
    """-> (x, censored, at_first): the first eval x whose val accuracy reaches `level`, or the
    last eval's x with censored True (not reached within the budget); at_first when the level is
    reached at the first eval (it may have been crossed before)."""
    xs, ys = _evals(rows, x)
    i = next((i for i, y in enumerate(ys) if y >= level - EPS), None)
    return (xs[i], False, i == 0) if i is not None else (xs[-1], True, False)


def gehan_score(t_a, censored_a, t_b, censored_b):
    """+1 when a reached the level first for certain, -1 when b did, 0 for a tie or when the
    censoring leaves it open (both censored: a tie). A censored time means 'not by then'."""
    if not censored_a and not censored_b:
        return float(np.sign(t_b - t_a))
    if not censored_a:
        return 1.0 if t_a <= t_b else 0.0
    if not censored_b:
        return -1.0 if t_b <= t_a else 0.0
    return 0.0


def _c1_cell(rl_rows, fst_rows, level, x):
    rl_t, rl_c, rl_first = reach_time(rl_rows, level, x)
    f_t, f_c, f_first = reach_time(fst_rows, level, x)
    ok = not rl_c and f_t > 0 and not (rl_first and f_first)
    return {"rl": rl_t, "fst": f_t, "rl_censored": rl_c, "fst_censored": f_c,
            "rl_at_first": rl_first, "fst_at_first": f_first,
            "ratio": rl_t / f_t if ok else None,  # FST censored: an upper bound; at first: lower
            "score": gehan_score(f_t, f_c, rl_t, rl_c)}


def c1_profile(rl_rows, fst_rows, fractions=C1_FRACTIONS, plateau_evals=PLATEAU_EVALS):
    """C1 for one replicate. RL's plateau = mean val acc of its last `plateau_evals` evals; at each
    level (fraction x plateau, and RL's running peak as in eval.sample_efficiency) and on both
    axes ('steps': x = step + 1, 'rollouts'): each method's x to reach it (censored at its last
    eval), ratio = RL x / FST x, and the Gehan score (+1: FST first). mean_acc: mean val acc over
    the eval rows of each method and their difference FST - RL.
    -> {plateau, peak, levels: {'0.5', ..., 'peak': {level, steps: cell, rollouts: cell}},
        mean_acc: {rl, fst, diff}}"""
    _, ry = _evals(rl_rows, "step")
    _, fy = _evals(fst_rows, "step")
    plateau = float(np.mean(ry[-plateau_evals:]))
    levels = {f"{f:g}" if f != 1 else "1.0": f * plateau for f in fractions}
    levels["peak"] = float(max(ry))
    out = {"plateau": plateau, "peak": levels["peak"], "levels": {},
           "mean_acc": {"rl": float(np.mean(ry)), "fst": float(np.mean(fy)),
                        "diff": float(np.mean(fy) - np.mean(ry))}}
    for name, lv in levels.items():
        out["levels"][name] = {"level": float(lv), "steps": _c1_cell(rl_rows, fst_rows, lv, "step"),
                               "rollouts": _c1_cell(rl_rows, fst_rows, lv, "rollouts")}
    return out


def ratio_summary(ratios, low, high, keys, reps=REPS, seed=0):
    """Descriptive: geometric mean of per-replicate ratios with censored ones at their bounds
    (low: a lower bound, high: an upper bound), its cluster-bootstrap interval, and how many are
    bounds. -> {geo_mean, ci95, n, n_lower_bounds, n_upper_bounds}."""
    kept = [(math.log(r), lo, hi, k) for r, lo, hi, k in zip(ratios, low, high, keys)
            if r is not None and r > 0]
    out = {"geo_mean": None, "ci95": None, "n": len(kept),
           "n_lower_bounds": sum(bool(k[1]) for k in kept),
           "n_upper_bounds": sum(bool(k[2]) for k in kept)}
    if kept:
        logs = np.array([k[0] for k in kept])
        boots = stats.cluster_bootstrap(logs, [k[3] for k in kept], reps=reps, seed=seed)
        out.update(geo_mean=float(math.exp(logs.mean())),
                   ci95=[float(math.exp(c)) for c in stats.percentile_ci(boots)])
    return out


def prompt_alone_counts(profiles, ceiling):
    """{level name: how many replicates' context-only run (ceiling: {(base, seed): its best val
    acc}) reaches that level of RL's plateau} for every level of the profiles."""
    keys = list(profiles)
    return {name: sum(ceiling.get(k, -1.0) >= profiles[k]["levels"][name]["level"] - EPS
                      for k in keys) if ceiling else 0
            for name in (profiles[keys[0]]["levels"] if keys else [])}


def c1_rows(task, profiles, ceiling=None, vs="RL"):
    """C1 over replicates. profiles: {(base, seed): c1_profile}; ceiling: {(base, seed): the
    context-only run's best val acc}. -> (summary, rows): summary[level][axis] = ratio_summary
    plus fst_first / rl_first / ties, the mean Gehan score and prompt_alone (replicates whose
    context-only run reaches the level); rows: one per C1_ROWS cell (its Gehan score; label()
    calls it 'not tested' where the prompt alone reaches the level in most replicates) and the
    paired mean-accuracy gap over the run. vs: the baseline's name in the measures (a control
    in RL's place gives the same statistic against that control)."""
    keys = list(profiles)
    alone = prompt_alone_counts(profiles, ceiling)
    summary, rows = {}, []
    for name in alone:
        summary[name] = {}
        for axis in ("steps", "rollouts"):
            cells = [profiles[k]["levels"][name][axis] for k in keys]
            scores = {k: c["score"] for k, c in zip(keys, cells)}
            s = ratio_summary([c["ratio"] for c in cells], [c["fst_at_first"] for c in cells],
                              [c["fst_censored"] for c in cells], keys)
            s.update(fst_first=sum(c["score"] > 0 for c in cells),
                     rl_first=sum(c["score"] < 0 for c in cells),
                     ties=sum(c["score"] == 0 for c in cells),
                     score=stats.mean_std(list(scores.values()), keys), prompt_alone=alone[name])
            summary[name][axis] = s
            if (name, axis) not in C1_ROWS:
                continue
            where = f"{vs}'s running peak" if name == "peak" else f"{name} x {vs}'s plateau"
            rows.append(stats.row("C1 faster", task,
                                  f"Gehan score, {axis} to {where} (+1: FST first)", scores,
                                  prompt_alone=(alone[name], len(keys)), ratio=s))
    rows.append(stats.row("C1 faster", task, f"mean val acc over the run, FST - {vs}",
                          {k: p["mean_acc"]["diff"] for k, p in profiles.items()}))
    return summary, rows


# -----------------------------------------------------------------------------
# C2: is the asymptote observed at all?

def c2_identifiable(C, R, fit, pred, ci95):
    """C2's rule: A is 'identified' only where a plateau below the bound is observed. Reasons it
    is not (an empty list: identified):
      flat          max - min accuracy < FLAT_RANGE: nothing rose
      saturated     the fit is within SATURATED_TOL of A at the first eval, or the first third of
                    the evals averages within it of the last third
      on the bound  A within A_BOUND_TOL of 0 or 1: the box, not the data, stops A
      not bent      the midpoint Cmid > C2_MID_FRACTION * the last x: the run has not got well past
                    halfway from R0 to A, so A is an extrapolation
      too wide      A's 95% interval wider than C2_EFFECT, the size of the effect it must show
    C, R: the curve (sorted by C); fit: eval.sigmoid_fit's dict; pred: the fit at C."""
    C, R = np.asarray(C, float), np.asarray(R, float)
    why = []
    if R.max() - R.min() < FLAT_RANGE:
        why.append(f"flat: accuracy range {R.max() - R.min():.3f} < {FLAT_RANGE}")
    third = max(1, len(R) // 3)
    if (abs(fit["A"] - pred[0]) <= SATURATED_TOL
            or R[:third].mean() >= R[-third:].mean() - SATURATED_TOL):
        why.append(f"saturated: within {SATURATED_TOL} of its final level from the first eval")
    if fit["A"] >= 1 - A_BOUND_TOL or fit["A"] <= A_BOUND_TOL:
        why.append(f"A = {fit['A']:.3f} on the fit's bound")
    if fit["Cmid"] > C2_MID_FRACTION * C.max():
        why.append(f"not bent: Cmid {fit['Cmid']:.3g} beyond {C2_MID_FRACTION} x the last x "
                   f"{C.max():.3g}")
    if ci95 is None or ci95[1] - ci95[0] > C2_EFFECT:
        width = "none" if ci95 is None else f"{ci95[1] - ci95[0]:.3f}"
        why.append(f"A's 95% interval {width} wide (> {C2_EFFECT}, the paper's effect size)")
    return why
