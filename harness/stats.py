"""
stats.py: the statistics behind the report's labels, in pure numpy (no torch): one bootstrap (over
bases, then run seeds within each base), the C1 speed-up profile and its censoring-aware test, the
equivalence and pattern tests, C2's identifiability rule, and Holm's correction over the family of
tests. eval.py measures; report.py reads runs and calls these; nothing here reads folders.

    boots = cluster_bootstrap(values, keys)          # keys: (base, seed) per value
    s = summarize({(0, 0): 0.3, (0, 1): 0.2, ...})   # {mean, std, ci95, n, p, per_replicate}
    p = c1_profile(rl_rows, fst_rows)                # one replicate's C1 at fixed levels
    rows = label_family([row(...), ...])             # Holm over every tested row, then labels

Why these choices (each one answers a way the plain analysis overstated or could not decide):
  - Replicates share bases. Resampling the 9 (base, seed) values as independent covered the true
    mean 0.74-0.77 of the time at a nominal 0.95; resampling bases first, then seeds within each
    drawn base, carries the between-base spread into the interval. With 3 bases an interval
    describes these bases, not bases in general.
  - C1 at RL's running peak is the maximum of noisy plateau evaluations. The profile reads C1 at
    fixed fractions of RL's plateau (the mean of its last PLATEAU_EVALS evaluations), fixed here
    before any run, beside the paper's running peak and the mean-accuracy gap over the run.
  - A replicate where a method never reaches the level is right-censored at its budget. A
    Gehan-type score per pair (FST first +1, RL first -1, tie or unknown 0) keeps it as what it
    says, so no single censored replicate can block a verdict either way.
  - About 40 rows are tested at once. Holm's step-down correction holds the family-wise error
    rate at ALPHA over every tested row; each row shows its raw and adjusted p.
  - Labels fit claims: a "matches or beats" claim is tested for equivalence (TOST, margin
    EQUIV_MARGIN), a pattern claim as a pattern, a control as higher / lower / tie, a comparison
    that cannot test the claim is `not tested`, and a cell with n < MIN_N carries no verdict.
Bootstrap p values are percentile ones, (count + 1) / (reps + 1) per side: never 0, and a
two-sided p < 0.05 matches a 95% interval that excludes the null.
"""

import math

import numpy as np

ALPHA = 0.05            # family-wise error rate of the report's tests (Holm)
MIN_N = 5               # fewer replicates than this: no verdict ("n < 5")
REPS = 2000             # bootstrap resamples
EPS = 1e-9              # a level counts as reached up to float error
TIE_TOL = 1e-3          # a difference smaller than this is none: under one val problem in 256,
#                         and above the float noise of a fit (C2's A on its refined grid)
C1_FRACTIONS = (0.5, 0.8, 0.9, 1.0)  # C1 levels as fractions of RL-only's plateau, fixed a priori
PLATEAU_EVALS = 4       # RL-only's plateau = the mean of its last 4 evaluations
C1_TESTED = (("0.8", "steps"), ("0.9", "steps"), ("0.9", "rollouts"), ("peak", "steps"))
#                         the C1 cells that enter the family; the rest of the profile is shown
KL_FLOOR = 1e-4         # C3: a KL below this (0 or float error) counts as this: no ratio dropped
EQUIV_MARGIN = 0.05     # "matches": |difference| < 0.05 accuracy (C4, C5), fixed a priori
C2_EFFECT = 0.05        # the paper's asymptote gaps are 0.03-0.08: A's interval must be narrower
C2_MID_FRACTION = 0.5   # A is observed only if the fit's midpoint Cmid <= half the last x
A_BOUND_TOL = 0.005     # A within this of 0 or 1 sits on the fit's bound
FLAT_RANGE = 0.05       # max - min accuracy below this: no rise to fit
SATURATED_TOL = 0.02    # at its final level from the first eval (within this)
LABELS = ("reproduced", "not reproduced", "inconclusive", "equivalent", "not tested",
          "not identifiable", "n < 5", "higher", "lower", "tie", "= rl")


def rep_name(key):
    """(base, seed) -> 'b{base}s{seed}', the per-replicate key of results.json."""
    return f"b{key[0]}s{key[1]}"


def rep_key(name):
    """'b{base}s{seed}' -> (base, seed)."""
    b, s = name[1:].split("s")
    return int(b), int(s)


# -----------------------------------------------------------------------------
# the bootstrap: bases, then seeds within each base

def cluster_indices(keys, reps=REPS, seed=0):
    """Resampled index sets into `keys` ((base, seed) tuples): draw as many bases as there are,
    with replacement, then for each drawn base as many of its seeds as it has, with replacement.
    -> list of `reps` int arrays. Keys that are all distinct bases give the i.i.d. bootstrap."""
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k[0], []).append(i)
    members = [np.array(g) for g in groups.values()]
    rng = np.random.default_rng(seed)
    sizes = {len(g) for g in members}
    if len(sizes) == 1:  # balanced: one vectorized draw
        m = sizes.pop()
        table = np.stack(members)  # (bases, seeds)
        b = rng.integers(0, len(members), (reps, len(members)))
        s = rng.integers(0, m, (reps, len(members), m))
        return list(table[b[:, :, None], s].reshape(reps, -1))
    out = []
    for _ in range(reps):
        drawn = rng.integers(0, len(members), len(members))
        out.append(np.concatenate([members[j][rng.integers(0, len(members[j]),
                                                           len(members[j]))] for j in drawn]))
    return out


def cluster_bootstrap(values, keys, stat=np.mean, reps=REPS, seed=0):
    """stat over cluster-resampled values: values is an array whose axis 0 follows keys (a value,
    or a row of values, per replicate) -> (reps,) array of stat(values[idx])."""
    arr = np.asarray(values, float)
    return np.array([stat(arr[i]) for i in cluster_indices(keys, reps, seed)], float)


def iid_keys(n):
    """Keys that make cluster_bootstrap the i.i.d. bootstrap: every value its own base."""
    return [(i, 0) for i in range(n)]


def _finite(values, keys):
    keys = iid_keys(len(values)) if keys is None else list(keys)
    pairs = [(v, k) for v, k in zip(values, keys) if v is not None and math.isfinite(v)]
    return [float(v) for v, _ in pairs], [k for _, k in pairs]


def aggregate(dicts, keys):
    """Same-shaped nested dicts of numbers, one per replicate key -> the same shape with
    mean_std leaves ({mean, std, ci95, n}); other leaves are taken from the first dict."""
    first = dicts[0]
    if isinstance(first, dict):
        return {k: aggregate([d[k] for d in dicts], keys) for k in first}
    if isinstance(first, (int, float)) or first is None:
        return mean_std(dicts, keys)
    return first


def percentile_ci(boots):
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def mean_std(values, keys=None, reps=REPS, seed=0):
    """One number over replicates -> {mean, std, ci95, n}: ci95 is the cluster-bootstrap 95%
    interval of the mean (keys None: every value its own base). Missing, non-finite values are
    dropped; one value gives [v, v]."""
    vals, keys = _finite(values, keys)
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    boots = cluster_bootstrap(vals, keys, reps=reps, seed=seed)
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "ci95": percentile_ci(boots),
            "n": len(vals)}


def p_two_sided(boots, null=0.0, tol=TIE_TOL):
    """Percentile-bootstrap p of 'the statistic differs from null'; resamples within tol of the
    null count on both sides."""
    r = len(boots)
    below = (np.sum(boots <= null + tol) + 1) / (r + 1)
    above = (np.sum(boots >= null - tol) + 1) / (r + 1)
    return float(min(1.0, 2 * min(below, above)))


def p_tost(boots, margin=EQUIV_MARGIN):
    """Two one-sided tests of |statistic| < margin: the larger of p(H0: <= -margin) and
    p(H0: >= +margin). Small: the statistic lies within the margin."""
    r = len(boots)
    return float(max((np.sum(boots <= -margin) + 1) / (r + 1),
                     (np.sum(boots >= margin) + 1) / (r + 1)))


def summarize(values, reps=REPS, seed=0, stat=np.mean):
    """{(base, seed): value} -> {mean, std, ci95, n, p, boots, per_replicate}: the tested
    statistic with its cluster-bootstrap interval and two-sided p against 0; `boots` stays in
    memory for further tests (report rows drop it)."""
    vals, keys = _finite(list(values.values()), list(values))
    out = {"mean": None, "std": None, "ci95": None, "n": len(vals), "p": None, "boots": None,
           "per_replicate": {rep_name(k): v for k, v in zip(keys, vals)}}
    if vals:
        boots = cluster_bootstrap(vals, keys, stat=stat, reps=reps, seed=seed)
        out.update(mean=float(stat(np.asarray(vals))), std=float(np.std(vals)),
                   ci95=percentile_ci(boots), p=p_two_sided(boots), boots=boots)
    return out


def holm(pvals):
    """Holm's step-down adjusted p values, in the input order: reject where adjusted < ALPHA
    holds the family-wise error rate at ALPHA."""
    p = np.asarray(pvals, float)
    adj, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return [float(a) for a in adj]


# -----------------------------------------------------------------------------
# C1: time to fixed levels, censored at the budget

def _evals(rows, x):
    """(xs, accs) at eval rows, x = step + 1 or rollouts so far (as eval.curve)."""
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
        boots = cluster_bootstrap(logs, [k[3] for k in kept], reps=reps, seed=seed)
        out.update(geo_mean=float(math.exp(logs.mean())),
                   ci95=[float(math.exp(c)) for c in percentile_ci(boots)])
    return out


def c1_rows(task, profiles, ceiling=None):
    """C1 over replicates. profiles: {(base, seed): c1_profile}; ceiling: {(base, seed): the
    context-only run's best val acc}. -> (summary, rows): summary[level][axis] = ratio_summary
    plus fst_first / rl_first / ties and the mean Gehan score; rows: one per C1_TESTED cell (its
    Gehan score, 'not tested' where the context-only run alone reaches the level in most
    replicates) and the paired mean-accuracy gap over the run."""
    keys = list(profiles)
    summary, rows = {}, []
    for name in (profiles[keys[0]]["levels"] if keys else []):
        summary[name] = {}
        for axis in ("steps", "rollouts"):
            cells = [profiles[k]["levels"][name][axis] for k in keys]
            scores = {k: c["score"] for k, c in zip(keys, cells)}
            s = ratio_summary([c["ratio"] for c in cells], [c["fst_at_first"] for c in cells],
                              [c["fst_censored"] for c in cells], keys)
            s.update(fst_first=sum(c["score"] > 0 for c in cells),
                     rl_first=sum(c["score"] < 0 for c in cells),
                     ties=sum(c["score"] == 0 for c in cells), score=mean_std(list(scores.values()),
                                                                               keys))
            summary[name][axis] = s
            if (name, axis) not in C1_TESTED:
                continue
            alone = sum(ceiling.get(k, -1.0) >= profiles[k]["levels"][name]["level"] - EPS
                        for k in keys) if ceiling else 0
            where = "RL's running peak" if name == "peak" else f"{name} x RL's plateau"
            why = (f"the context-only run reaches the level in {alone} of {len(keys)}"
                   if 2 * alone > len(keys) else "")
            rows.append(row("C1 faster", task, f"Gehan score, {axis} to {where} (+1: FST first)",
                            scores, label="not tested" if why else None, why=why, ratio=s))
    rows.append(row("C1 faster", task, "mean val acc over the run, FST - RL",
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


# -----------------------------------------------------------------------------
# report rows: one tested statistic each, labelled after Holm over the family

# kind -> the tests a row of that kind runs on its bootstrap distribution
TESTS = {"difference": ("difference",),          # vs 0, in the paper's direction
         "control": ("difference",),             # higher / lower / tie, no paper claim
         "pattern": ("difference",),             # a pattern statistic vs 0 (C7)
         "matches or beats": ("difference", "tost"),  # C4: beats, or equivalent within margin
         "equivalence": ("tost", "difference")}  # "about the same" (C5's FST-init vs base)


def _clean(values):
    """{key: number or tuple} -> (array (n,) or (n, k), keys) without missing / non-finite rows."""
    pairs = [(np.asarray(v, float), k) for k, v in values.items() if v is not None]
    pairs = [(v, k) for v, k in pairs if np.all(np.isfinite(v))]
    if not pairs:
        return np.zeros(0), []
    return np.stack([v for v, _ in pairs]), [k for _, k in pairs]


def row(claim, task, measure, values, kind="difference", direction=1, label=None, why="",
        stat=None, reps=REPS, seed=0, boots=None, **extra):
    """One row of the report: the tested statistic from `values` ({(base, seed): value, or a tuple
    of values that `stat` reduces}), its cluster-bootstrap 95% interval and raw p values (one per
    test of its kind, TESTS). label: set it here when the row cannot carry a verdict ('not tested',
    '= rl', 'not identifiable'); None leaves it to label_family. n < MIN_N is labelled 'n < 5'.
    -> {claim, task, measure, kind, direction, mean, ci95, n, per_replicate, p, p_holm, label,
        why, **extra}; p is None for a row outside the family. `measure` names the statistic and
    is the same in every run (against_grid matches on it); a run's own counts or fits go in
    extra's `detail`, shown beside it."""
    arr, keys = _clean(values)
    stat = stat or (lambda a: float(np.mean(a)))
    out = {"claim": claim, "task": task, "measure": measure, "kind": kind,
           "direction": direction, "mean": None, "ci95": None, "n": len(keys),
           "per_replicate": {rep_name(k): (v.tolist() if v.ndim else float(v))
                             for k, v in zip(keys, arr)},
           "p": None, "p_holm": None, "label": label, "why": why, **extra}
    if not keys:
        out["label"] = label or "n < 5"
        return out
    if boots is None:  # one replicate: nothing to resample
        boots = (cluster_bootstrap(arr, keys, stat=stat, reps=reps, seed=seed) if len(keys) > 1
                 else np.full(1, stat(arr)))
    out.update(mean=float(stat(arr)), ci95=percentile_ci(boots))
    if label is None and len(keys) < MIN_N:
        out["label"], out["why"] = "n < 5", why or f"n = {len(keys)} < {MIN_N}: no verdict"
    if out["label"] is None:
        out["p"] = {t: (p_two_sided(boots) if t == "difference" else p_tost(boots))
                    for t in TESTS[kind]}
    return out


def label_family(rows, alpha=ALPHA):
    """The family = every row still without a label (i.e. every tested row). Holm-adjust all
    their p values together, then label each row from its adjusted p values (_label).
    Mutates rows; -> {method, alpha, rows, tests}."""
    tested = [(i, t) for i, r in enumerate(rows) if r["label"] is None for t in r["p"]]
    adj = holm([rows[i]["p"][t] for i, t in tested])
    for (i, t), a in zip(tested, adj):
        rows[i]["p_holm"] = dict(rows[i]["p_holm"] or {}, **{t: a})
    for r in rows:
        if r["label"] is None:
            r["label"] = _label(r, alpha)
    return {"method": "Holm", "alpha": alpha, "rows": len({i for i, _ in tested}),
            "tests": len(tested)}


def _label(r, alpha):
    sig = {t: p < alpha for t, p in r["p_holm"].items()}
    side = 1 if r["mean"] > TIE_TOL else -1 if r["mean"] < -TIE_TOL else 0
    differs = sig.get("difference", False) and side != 0
    if r["kind"] == "control":
        return ("higher" if side > 0 else "lower") if differs else "tie"
    if r["kind"] == "matches or beats":
        if differs and side > 0:
            return "reproduced"
        return "equivalent" if sig["tost"] else "not reproduced" if differs else "inconclusive"
    if r["kind"] == "equivalence":
        return "equivalent" if sig["tost"] else "not reproduced" if differs else "inconclusive"
    if differs:
        return "reproduced" if side == r["direction"] else "not reproduced"
    return "inconclusive"


def fmt(r, digits=3):
    """A row's (or a mean_std's) value as text: mean [95% interval]; C3's also on the ratio
    scale; a plain number as itself."""
    if not isinstance(r, dict):
        return "n/a" if r is None else f"{r:.{digits}f}"
    if r["mean"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    text = f"{r['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    if r.get("geo_mean") is not None:
        g_lo, g_hi = r["geo_ci95"]
        return f"ratio {r['geo_mean']:.2f} [{g_lo:.2f}, {g_hi:.2f}] (log {text})"
    return text


def fmt_p(r):
    """'difference p 0.012 (Holm 0.31)' per test of the row, or '' outside the family."""
    if not r["p"]:
        return ""
    return "; ".join(f"{t} p {p:.3g} (Holm {r['p_holm'][t]:.3g})" if r["p_holm"] else
                     f"{t} p {p:.3g}" for t, p in r["p"].items())


def fmt_ratio(s):
    """A ratio_summary as text: geometric mean [interval] (how many lower / upper bounds)."""
    if s["geo_mean"] is None:
        return "n/a"
    return (f"{s['geo_mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] "
            f"({s['n_lower_bounds']} >=, {s['n_upper_bounds']} <=)")


def against_grid(rows, grid_rows):
    """A single replicate's rows beside a committed grid's: each row whose (claim, task, measure)
    the grid has gains r["grid"] = {ci95, n, label, inside}, inside = this replicate's value lies
    in the grid's 95% interval (both on the row's own scale). -> how many rows matched."""
    ref = {(g["claim"], g["task"], g["measure"]): g for g in grid_rows}
    matched = 0
    for r in rows:
        g = ref.get((r["claim"], r["task"], r["measure"]))
        if g is None or g["ci95"] is None or r["mean"] is None:
            continue
        r["grid"] = {"ci95": g["ci95"], "n": g["n"], "label": g["label"],
                     "inside": bool(g["ci95"][0] <= r["mean"] <= g["ci95"][1])}
        matched += 1
    return matched


def single_replicate_lines(ref):
    """The report's note for a one-replicate run (ref: eval.grid_reference's dict, or None)."""
    if ref is None:
        return []
    where = ("Beside each number: the committed grid's interval for the same row "
             f"({ref['n']} replicates, {ref['matched']} rows matched) and whether this run lies "
             "inside it." if "matched" in ref else f"({ref['note']}.)")
    return ["", "**One replicate: no verdicts here.** The verdicts are in the committed reports "
            "(results/tiny/report.md, results/tiny/phase/phase.md). " + where]


def table(rows):
    """Rows as a markdown table: the tested statistic beside its p values and label (with the
    reason where a row is outside the family); with against_grid's column where rows have it."""
    grid = any("grid" in r for r in rows)
    out = ["| claim | task | tested statistic | value [95% interval] | n | p (Holm) | label |"
           + (" committed grid [95%], n: this run inside? |" if grid else ""),
           "|---|---|---|---|---|---|---|" + ("---|" if grid else "")]
    for r in rows:
        why = r["why"] and r["p"] is None and r["label"] != "n < 5"
        g = r.get("grid")
        col = ("" if not grid else " n/a |" if g is None else
               f" [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}], {g['n']}: "
               f"{'inside' if g['inside'] else 'outside'} |")
        measure = r["measure"] + (f" ({r['detail']})" if r.get("detail") else "")
        out.append(f"| {r['claim']} | {r['task']} | {measure} | "
                   f"{fmt(r, 2 if r.get('geo_mean') is not None else 3)} | {r['n']} | "
                   f"{fmt_p(r)} | {r['label'] + (': ' + r['why'] if why else '')} |" + col)
    return out


def profile_table(profiles):
    """{task: c1_rows' summary} as a markdown table: per level and axis the ratio RL x / FST x
    and who reached the level first."""
    out = [f"Levels: fractions of RL-only's plateau (the mean of its last {PLATEAU_EVALS} evals) "
           "and its running peak (the paper's definition). Ratio: RL's x / FST's x, geometric "
           "mean with censored replicates at their bounds (>=: FST there at its first eval; <=: "
           "FST never there). Gehan: replicates where FST / RL reached it first / tie.", "",
           "| task | level | axis | ratio RL/FST | Gehan FST / RL / tie | mean score |",
           "|---|---|---|---|---|---|"]
    for t, d in profiles.items():
        for name, axes in d.items():
            for axis, s in axes.items():
                out.append(f"| {t} | {name} | {axis} | {fmt_ratio(s)} | {s['fst_first']} / "
                           f"{s['rl_first']} / {s['ties']} | {fmt(s['score'], 2)} |")
    return out


def kl_ratio_row(task, per, prompt, why=""):
    """C3's row: per {(base, seed): eval.kl_at_matched_reward}, the mean log KL ratio FST/RL (KLs
    clipped at KL_FLOOR, counted in `clipped`), paper's direction -1; geo_mean / geo_ci95 on the
    ratio scale. why: a reason the row is 'not tested' ('' tests it)."""
    logs = {k: float(np.log(max(p["fst_kl"], KL_FLOOR) / max(p["rl_kl"], KL_FLOOR)))
            for k, p in per.items()}
    r = row("C3 less drift", task, f"log KL ratio FST/RL at matched reward, {prompt}", logs,
            direction=-1, label="not tested" if why else None, why=why,
            clipped=sum(min(p["rl_kl"], p["fst_kl"]) < KL_FLOOR for p in per.values()))
    if r["mean"] is not None:
        r["geo_mean"], r["geo_ci95"] = math.exp(r["mean"]), [math.exp(c) for c in r["ci95"]]
    return r


def pattern_row(claim, values, signs, what):
    """A pattern claim as one row: values {task: {'b{base}s{seed}': value}}, signs {task: +1 or
    -1, the sign the claim expects}. The statistic is min over tasks of sign x mean value: above
    0 when every task leans the claimed way; replicates are resampled jointly across tasks."""
    tasks = list(values)
    names = [n for n in values[tasks[0]] if all(n in values[t] for t in tasks)]
    sign = np.array([signs[t] for t in tasks], float)
    flipped = ", ".join(t for t in tasks if signs[t] < 0)
    return row(claim, ", ".join(tasks), f"min over tasks of ({what}), sign flipped on {flipped}",
               {rep_key(n): tuple(values[t][n] for t in tasks) for n in names}, "pattern",
               stat=lambda a: float((a.mean(0) * sign).min()))
