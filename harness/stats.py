"""
stats.py: the statistics behind the report's labels, in pure numpy (no torch): the test at the
level of bases, the one function that decides every label, the cluster bootstrap for intervals,
the constants of C1's speed-up profile and C2's identifiability rule (claims.py applies them),
Holm's correction over the primary family, and a single replicate set beside the replicates'
spread. eval.py measures; report.py and phase.py read runs and call these; nothing here reads
folders.

    p, min_p = base_level_test({0: 0.3, 1: 0.2, 2: 0.25})  # exact sign-flip test on base means
    text = label("difference", 0.25, {"difference": 0.01}, primary=True, min_p=1/8, m=8)
    rows = label_family([row(...), ...])    # Holm over the primary rows, then label() for all
    lo, hi = spread(values)                  # where a single new replicate is expected to fall

Why these choices (each one answers a way an earlier analysis overstated or could not decide):
  - The unit of evidence is the base. Replicates share bases, so a test treats each base's mean
    over its run seeds as one observation: an exact sign-flip test on the base means (under the
    null each base's mean is as likely to be +d as -d). With B bases its smallest two-sided p is
    2 / 2^B: 0.25 at 3 bases. The test's resolution, not the data, would set a verdict if it
    could not reach the family's threshold, so such a claim is labelled `undecidable` with the
    number of bases that could decide it (bases_needed), never `reproduced`.
  - One primary test per claim (C1-C8), named in report.PRIMARY before the labels are read,
    corrected with Holm; every other row is exploratory and carries no verdict word.
  - Intervals: the cluster bootstrap (bases, then run seeds within each drawn base), REPS
    resamples with a fixed seed, so an interval is the same on every rebuild and moves by less
    than its last printed digit under another seed. With 3 bases an interval describes these
    bases, not bases in general.
  - C1 at RL's running peak is the maximum of noisy plateau evaluations. The profile reads C1 at
    fixed fractions of RL's plateau (the mean of its last PLATEAU_EVALS evaluations), fixed before
    any run, beside the paper's running peak and the mean-accuracy gap over the run. A level that
    the prompt alone (the context-only run) reaches in most replicates measures the baseline's own
    time, not FST's: label() calls such a row `not tested`, in every report.
  - A replicate where a method never reaches the level is right-censored at its budget. A
    Gehan-type score per pair (FST first +1, RL first -1, tie or unknown 0) keeps it as what it
    says, so no single censored replicate can block a verdict either way.
  - Labels fit claims: a "matches or beats" claim is tested for equivalence too (TOST on base
    means, margin EQUIV_MARGIN), a pattern claim as a pattern, a comparison that cannot test the
    claim is `not tested`, a cell with n < MIN_N replicates carries no verdict.
"""

import math

import numpy as np

ALPHA = 0.05            # family-wise error rate of the primary family (Holm)
MIN_N = 5               # fewer replicates than this: no verdict ("n < 5")
REPS = 10000            # bootstrap resamples for intervals, seed BOOT_SEED: the same on every
BOOT_SEED = 0           #   rebuild, and within the printed digits under another seed
EPS = 1e-9              # a level counts as reached up to float error
TIE_TOL = 1e-3          # a difference smaller than this is none: under one val problem in 256,
#                         and above the float noise of a fit (C2's A on its refined grid)
C1_FRACTIONS = (0.5, 0.8, 0.9, 1.0)  # C1 levels as fractions of RL-only's plateau, fixed a priori
PLATEAU_EVALS = 4       # RL-only's plateau = the mean of its last 4 evaluations
C1_ROWS = (("0.8", "steps"), ("0.9", "steps"), ("0.9", "rollouts"), ("peak", "steps"))
#                         the C1 cells shown as rows; the rest of the profile is in its table
KL_FLOOR = 1e-4         # C3: a KL below this (0 or float error) counts as this: no ratio dropped
EQUIV_MARGIN = 0.05     # "matches": |difference| < 0.05 accuracy (C4, C5), fixed a priori
C2_EFFECT = 0.05        # the paper's asymptote gaps are 0.03-0.08: A's interval must be narrower
C2_MID_FRACTION = 0.5   # A is observed only if the fit's midpoint Cmid <= half the last x
A_BOUND_TOL = 0.005     # A within this of 0 or 1 sits on the fit's bound
FLAT_RANGE = 0.05       # max - min accuracy below this: no rise to fit
SATURATED_TOL = 0.02    # at its final level from the first eval (within this)
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "equivalent")  # primary rows only
NO_TEST = ("not tested", "not identifiable", "cannot be rebuilt", "noise floor", "= rl")
LABELS = VERDICTS + NO_TEST + ("undecidable", "exploratory", "n < 5")
METHODS_TEXT = {  # what results.json and phase.json say about how their numbers were made
    "interval": f"95% percentile interval of a cluster bootstrap: bases resampled with "
                f"replacement, then run seeds within each drawn base; {REPS} resamples, "
                f"numpy seed {BOOT_SEED}",
    "test": "exact sign-flip test on base means (each base's mean over its run seeds is one "
            "observation), two-sided; its smallest p with B bases is 2 / 2^B; equivalence: two "
            f"one-sided sign-flip tests against +-{EQUIV_MARGIN}, smallest p 1 / 2^B",
    "family": f"one primary test per claim, Holm-corrected at a family-wise rate of {ALPHA}; a "
              "primary test whose smallest attainable p times the family's size is not below "
              "alpha is `undecidable`; every other row is exploratory and carries no verdict",
}


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


def cluster_bootstrap(values, keys, stat=None, reps=REPS, seed=BOOT_SEED):
    """stat over cluster-resampled values: values is an array whose axis 0 follows keys (a value,
    or a row of values, per replicate) -> (reps,) array of stat(values[idx]). stat None: the mean
    over replicates, in one vectorized pass."""
    arr = np.asarray(values, float)
    idx = cluster_indices(keys, reps, seed)
    if stat is None and arr.ndim == 1 and len({len(i) for i in idx}) == 1:
        return arr[np.stack(idx)].mean(1)
    stat = stat or np.mean
    return np.array([stat(arr[i]) for i in idx], float)


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


def mean_std(values, keys=None, reps=REPS, seed=BOOT_SEED):
    """One number over replicates -> {mean, std, ci95, n}: ci95 is the cluster-bootstrap 95%
    interval of the mean (keys None: every value its own base). Missing, non-finite values are
    dropped; one value gives [v, v]."""
    vals, keys = _finite(values, keys)
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    boots = cluster_bootstrap(vals, keys, reps=reps, seed=seed)
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "ci95": percentile_ci(boots),
            "n": len(vals)}


# -----------------------------------------------------------------------------
# tests at the level of bases, and the one rule that labels a row

def base_values(values, stat=None):
    """{(base, seed) or 'b{base}s{seed}': value} -> {base: stat over that base's values} (stat
    None: the mean; a stat may reduce tuples, as a pattern row's does)."""
    groups = {}
    for k, v in values.items():
        groups.setdefault(rep_key(k)[0] if isinstance(k, str) else k[0], []).append(v)
    reduce = stat or (lambda a: float(np.mean(a)))
    return {b: float(reduce(np.asarray(v, float))) for b, v in sorted(groups.items())}


def sign_flip_p(per_base, direction=0, null=0.0):
    """Exact sign-flip test that the base values' mean differs from `null`: under the null each
    base's deviation d_b is as likely to be -d_b as +d_b, so all 2^B sign patterns are equally
    likely. direction 0: two-sided (|mean|), +1 / -1: one-sided in that direction. A mean within
    TIE_TOL of the null is no difference (p = 1). -> (p, smallest p this test can give with B
    bases: 2 / 2^B two-sided, 1 / 2^B one-sided)."""
    d = np.asarray(list(per_base.values()) if isinstance(per_base, dict) else per_base,
                   float) - null
    b = len(d)
    if b == 0:
        return None, None
    min_p = (2.0 if direction == 0 else 1.0) / 2 ** b
    signs = 1 - 2 * ((np.arange(2 ** b)[:, None] >> np.arange(b)) & 1)  # (2^B, B) of +-1
    means = (signs * d).mean(1)
    obs = d.mean()
    if direction == 0:
        if abs(obs) < TIE_TOL:
            return 1.0, min_p
        p = np.mean(np.abs(means) >= abs(obs) - 1e-12)
    else:
        p = np.mean(direction * means >= direction * obs - 1e-12)
    return float(min(1.0, p)), min_p


def base_level_test(per_base_values, direction=0):
    """The primary test: {base: value} (each base's mean over its run seeds) -> (p, min_p) of the
    exact sign-flip test that their mean is 0 (direction 0: two-sided)."""
    return sign_flip_p(per_base_values, direction)


def base_level_tost(per_base_values, margin=EQUIV_MARGIN):
    """Equivalence on base means: two one-sided sign-flip tests, H0 mean >= +margin and H0 mean <=
    -margin; small p: the mean lies within +-margin. -> (p, min_p = 1 / 2^B)."""
    hi, min_p = sign_flip_p(per_base_values, -1, margin)
    lo, _ = sign_flip_p(per_base_values, +1, -margin)
    return (None, None) if hi is None else (max(hi, lo), min_p)


def bases_needed(family_size, alpha=ALPHA, two_sided=True):
    """The fewest bases with which a sign-flip test could pass Holm's first step in a family of
    `family_size` tests (a consistent effect in every base gives the smallest p, 2 / 2^B)."""
    b = 1
    while (2.0 if two_sided else 1.0) / 2 ** b * family_size >= alpha:
        b += 1
    return b


def holm(pvals):
    """Holm's step-down adjusted p values, in the input order: reject where adjusted < ALPHA
    holds the family-wise error rate at ALPHA."""
    p = np.asarray(pvals, float)
    adj, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return [float(a) for a in adj]


def prompt_alone_why(reached, n, what="the level"):
    """The guard on every level read of C1 (and C3's matched level): the prompt alone (the
    context-only run) reaches the level in `reached` of n replicates. Most: the level measures the
    baseline's own time, not FST's -> the reason, else ''."""
    return f"the context-only run reaches {what} in {reached} of {n}" if 2 * reached > n else ""


def label(kind, estimate, p=None, *, direction=1, primary=False, n=MIN_N, min_p=None,
          family_size=1, alpha=ALPHA, prompt_alone=(0, 0), aa=False, blocked=""):
    """The one rule that labels a row, in both reports. In order:
      blocked       a label the caller cannot test at all ('not identifiable', 'cannot be
                    rebuilt', '= rl', 'not tested'): that label
      prompt_alone  (k, n): the prompt alone reaches the row's level in k of n replicates; most
                    of them -> 'not tested' (prompt_alone_why)
      aa            an A/A comparison (FST's frontier never left the seed prompt): 'noise floor'
      n < MIN_N     replicates: 'n < 5'
      not primary   'exploratory': no verdict word
      min_p         the test's smallest attainable p: family_size x min_p >= alpha means no
                    outcome could pass -> 'undecidable'
    then, from the Holm-adjusted p values `p` ({test: p}) and the estimate's side (beyond TIE_TOL):
      difference / pattern  'reproduced' (in `direction`) / 'not reproduced' / 'inconclusive'
      matches or beats      'reproduced' (beats), 'equivalent' (TOST), 'not reproduced' (worse)
      equivalence           'equivalent' / 'not reproduced' / 'inconclusive'."""
    if blocked:
        return blocked
    if prompt_alone_why(*prompt_alone):
        return "not tested"
    if aa:
        return "noise floor"
    if n < MIN_N:
        return "n < 5"
    if not primary:
        return "exploratory"
    if min_p is not None and family_size * min_p >= alpha:
        return "undecidable"
    sig = {t: q is not None and q < alpha for t, q in (p or {}).items()}
    side = 1 if estimate > TIE_TOL else -1 if estimate < -TIE_TOL else 0
    differs = sig.get("difference", False) and side != 0
    if kind == "matches or beats":
        if differs and side > 0:
            return "reproduced"
        return ("equivalent" if sig.get("tost") else "not reproduced" if differs
                else "inconclusive")
    if kind == "equivalence":
        return "equivalent" if sig.get("tost") else "not reproduced" if differs else "inconclusive"
    if differs:
        return "reproduced" if side == direction else "not reproduced"
    return "inconclusive"


def spread(values):
    """Where one new replicate is expected to fall: the range [min, max] of the replicates'
    values. For n exchangeable replicates a new one lies inside it with probability (n-1)/(n+1)
    (0.8 at n = 9): a prediction interval, unlike the interval of the mean. -> [lo, hi] or None."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return [min(vals), max(vals)] if len(vals) > 1 else None


# -----------------------------------------------------------------------------
# report rows: one statistic each; the primary ones tested at the level of bases, Holm over them

# kind -> the base-level tests a row of that kind runs
TESTS = {"difference": ("difference",),          # vs 0, two-sided; the label reads the side
         "control": ("difference",),             # FST - a control: always exploratory
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


def row(claim, task, measure, values, kind="difference", direction=1, blocked="", why="",
        stat=None, reps=REPS, seed=BOOT_SEED, boots=None, prompt_alone=(0, 0), aa=False,
        **extra):
    """One row of a report: the statistic from `values` ({(base, seed): value, or a tuple of
    values that `stat` reduces}), its cluster-bootstrap 95% interval, the per-base values and
    their base-level p per test of its kind (TESTS) with the smallest p each can reach. The label
    is label()'s, set by label_family once the primary rows are known; blocked / prompt_alone /
    aa are label()'s arguments of the same names (why: the reason shown beside a blocked label).
    -> {claim, task, measure, kind, direction, mean, ci95, n, bases, per_replicate, per_base, p,
        min_p, p_holm, primary, label, why, **extra}. `measure` names the statistic and is the
    same in every run (against_grid matches on it); a run's own counts go in extra's `detail`."""
    arr, keys = _clean(values)
    reduce = stat or (lambda a: float(np.mean(a)))
    out = {"claim": claim, "task": task, "measure": measure, "kind": kind,
           "direction": direction, "mean": None, "ci95": None, "n": len(keys),
           "bases": len({k[0] for k in keys}),
           "per_replicate": {rep_name(k): (v.tolist() if v.ndim else float(v))
                             for k, v in zip(keys, arr)},
           "per_base": {}, "p": None, "min_p": None, "p_holm": None, "primary": False,
           "label": None, "why": why or prompt_alone_why(*prompt_alone), "blocked": blocked,
           "prompt_alone": list(prompt_alone), "aa": aa, **extra}
    if not keys:
        out["blocked"] = blocked or "n < 5"
        return out
    if boots is None:  # one replicate: nothing to resample
        boots = (cluster_bootstrap(arr, keys, stat=stat, reps=reps, seed=seed) if len(keys) > 1
                 else np.full(1, reduce(arr)))
    out.update(mean=float(reduce(arr)), ci95=percentile_ci(boots))
    out["per_base"] = base_values({k: v for k, v in zip(keys, arr)}, reduce)
    tests = {"difference": lambda pb: base_level_test(pb), "tost": base_level_tost}
    res = {t: tests[t](out["per_base"]) for t in TESTS[kind]}
    out["p"] = {t: r[0] for t, r in res.items()}
    out["min_p"] = {t: r[1] for t, r in res.items()}
    return out


def _testable(r):
    """A row whose label depends on its test (label() reaches the p values for it)."""
    return (r["primary"] and r["p"] is not None and r["n"] >= MIN_N and not r["blocked"]
            and not r["aa"] and not prompt_alone_why(*r["prompt_alone"]))


def label_family(rows, primary=(), alpha=ALPHA):
    """Label every row with label(). The family: the rows named primary (`primary` holds (claim,
    task, measure) triples; rows already marked primary stay so) that can be tested; Holm over
    all their tests. A primary row no outcome could pass is `undecidable`, with bases_needed.
    Mutates rows; -> {method, alpha, rows, tests, primary: [(claim, task, measure)], test}."""
    for r in rows:
        r["primary"] = r["primary"] or (r["claim"], r["task"], r["measure"]) in set(primary)
    tested = [(i, t) for i, r in enumerate(rows) if _testable(r) for t in r["p"]]
    adj = holm([rows[i]["p"][t] for i, t in tested])
    for (i, t), a in zip(tested, adj):
        rows[i]["p_holm"] = dict(rows[i]["p_holm"] or {}, **{t: a})
    m = len(tested)
    for r in rows:
        min_p = min(r["min_p"].values()) if r["min_p"] else None
        r["label"] = label(r["kind"], r["mean"] or 0.0, r["p_holm"], direction=r["direction"],
                           primary=r["primary"], n=r["n"], min_p=min_p, family_size=max(m, 1),
                           alpha=alpha, prompt_alone=tuple(r["prompt_alone"]), aa=r["aa"],
                           blocked=r["blocked"])
        if r["label"] == "undecidable":
            need = bases_needed(max(m, 1), alpha, two_sided="tost" not in r["p"])
            r["bases_needed"] = need
            r["why"] = (f"{r['bases']} bases: its smallest p is {min_p:.3g}, and {max(m, 1)} tests "
                        f"x {min_p:.3g} >= {alpha}; a consistent effect needs >= {need} bases")
        elif r["label"] == "n < 5" and not r["why"]:
            r["why"] = f"n = {r['n']} < {MIN_N}: no verdict"
    return {"method": "Holm", "alpha": alpha, "rows": len({i for i, _ in tested}),
            "tests": m, "primary": [[r["claim"], r["task"], r["measure"]] for r in rows
                                    if r["primary"]],
            "bases_needed": bases_needed(max(m, 1), alpha), **METHODS_TEXT}


def attribute(r, controls):
    """Attribution beside a claim row: controls {method: the same statistic's row with that
    control in RL's place (FST - control)}. r["vs"][method] = {mean, ci95, n, survives}; survives
    'yes' when that row's 95% interval lies wholly on the claim's side of 0 (beyond TIE_TOL),
    else 'no' (descriptive: with few bases no control comparison is a test). -> r"""
    r["vs"] = {}
    for m, c in controls.items():
        if c is None or c["mean"] is None:
            r["vs"][m] = None
            continue
        lo, hi = c["ci95"]
        yes = lo > TIE_TOL if r["direction"] > 0 else hi < -TIE_TOL
        r["vs"][m] = {"mean": c["mean"], "ci95": c["ci95"], "n": c["n"],
                      "survives": "yes" if yes else "no", "measure": c["measure"]}
    return r


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
    """A primary row's base-level p per test: 'p 0.25 (Holm 1; smallest possible 0.25)'; '' for
    an exploratory row (its raw p stays in results.json) or one that was not tested."""
    if not r["p"] or not r["primary"] or r["label"] not in VERDICTS + ("undecidable",):
        return ""
    return "; ".join(f"{t} p {p:.3g} (Holm {r['p_holm'][t]:.3g}; smallest possible "
                     f"{r['min_p'][t]:.3g})" if r["p_holm"] else
                     f"{t} p {p:.3g} (smallest possible {r['min_p'][t]:.3g})"
                     for t, p in r["p"].items())


def fmt_ratio(s):
    """A ratio_summary as text: geometric mean [interval] (how many lower / upper bounds)."""
    if s["geo_mean"] is None:
        return "n/a"
    return (f"{s['geo_mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] "
            f"({s['n_lower_bounds']} >=, {s['n_upper_bounds']} <=)")


def against_grid(rows, grid_rows):
    """A single replicate's rows beside a committed grid's: each row whose (claim, task, measure)
    the grid has, with per-replicate numbers, gains r["grid"] = {range, ci95, n, label, inside}:
    range is the spread of the grid's replicates (spread()), where one new replicate is expected
    to fall, and inside says whether this replicate's value lies in it. The grid's ci95 (the
    interval of its mean) is kept for reference only: a single replicate is not a mean.
    -> how many rows matched."""
    ref = {(g["claim"], g["task"], g["measure"]): g for g in grid_rows}
    matched = 0
    for r in rows:
        g = ref.get((r["claim"], r["task"], r["measure"]))
        rng = spread(list((g or {}).get("per_replicate", {}).values()))
        if g is None or rng is None or r["mean"] is None:
            continue
        r["grid"] = {"range": rng, "ci95": g["ci95"], "n": g["n"], "label": g["label"],
                     "inside": bool(rng[0] - EPS <= r["mean"] <= rng[1] + EPS)}
        matched += 1
    return matched


def single_replicate_lines(ref):
    """The report's note for a one-replicate run (ref: eval.grid_reference's dict, or None)."""
    if ref is None:
        return []
    where = ("Beside each number: the range of the committed grid's replicates for the same row "
             f"({ref['n']} replicates, {ref['matched']} rows matched), where one new replicate "
             "is expected to fall (inside it with probability (n-1)/(n+1) for exchangeable "
             "replicates, 0.8 at n = 9), and whether this run lies inside it. The grid's interval "
             "of the mean is narrower and is not the reference for a single run."
             if "matched" in ref else f"({ref['note']}.)")
    return ["", "**One replicate: no verdicts here.** The verdicts are in the committed reports "
            "(results/tiny/report.md, results/tiny/phase/phase.md). " + where]


def _vs_cell(v, digits=3):
    if v is None:
        return "n/a"
    return f"{v['mean']:.{digits}f} [{v['ci95'][0]:.{digits}f}, {v['ci95'][1]:.{digits}f}]"


def table(rows, controls=("sequential", "instructed")):
    """Rows as a markdown table: the statistic, its interval, replicates (bases), the base-level
    p of a primary row and the label with its reason; where rows carry attribution (attribute())
    the same statistic against each control and whether the gain survives it; where rows carry
    against_grid's column, the grid's spread and whether this run lies inside it."""
    grid = any("grid" in r for r in rows)
    vs = any("vs" in r for r in rows)
    head = "| claim | task | statistic | value [95% interval] | n (bases) | p (Holm) | label |"
    if vs:
        head += "".join(f" FST - {c} |" for c in controls) + " survives " + " / ".join(
            controls) + "? |"
    if grid:
        head += " committed grid's replicates [range], n: this run inside? |"
    out = [head, "|" + "---|" * head.count(" |")]
    for r in rows:
        g = r.get("grid")
        measure = r["measure"] + (f" ({r['detail']})" if r.get("detail") else "")
        show_why = r["why"] and r["label"] not in VERDICTS + ("exploratory",)
        line = (f"| {r['claim']} | {r['task']} | {measure} | "
                f"{fmt(r, 2 if r.get('geo_mean') is not None else 3)} | {r['n']} "
                f"({r.get('bases', '?')}) | {fmt_p(r)} | "
                f"{r['label'] + (': ' + r['why'] if show_why else '')} |")
        if vs:
            v = r.get("vs") or {}
            line += "".join(f" {_vs_cell(v.get(c))} |" for c in controls)
            line += " " + " / ".join((v.get(c) or {}).get("survives", "n/a")
                                     for c in controls) + " |"
        if grid:
            line += (" n/a |" if g is None else
                     f" [{g['range'][0]:.3f}, {g['range'][1]:.3f}], {g['n']}: "
                     f"{'inside' if g['inside'] else 'outside'} |")
        out.append(line)
    return out


def profile_table(profiles):
    """{task: c1_rows' summary} as a markdown table: per level and axis the ratio RL x / FST x,
    who reached the level first, and in how many replicates the prompt alone reaches it (where
    that is most of them the cell is the baseline's own time, not FST's)."""
    out = [f"Levels: fractions of RL-only's plateau (the mean of its last {PLATEAU_EVALS} evals) "
           "and its running peak (the paper's definition). Ratio: RL's x / FST's x, geometric "
           "mean with censored replicates at their bounds (>=: FST there at its first eval; <=: "
           "FST never there). Gehan: replicates where FST / RL reached it first / tie. Prompt "
           "alone: replicates whose context-only run reaches the level; where that is most of "
           "them the ratio is RL's own time to the level, and the cell is not a test of C1.", "",
           "| task | level | axis | ratio RL/FST | Gehan FST / RL / tie | mean score | "
           "prompt alone |", "|---|---|---|---|---|---|---|"]
    for t, d in profiles.items():
        for name, axes in d.items():
            for axis, s in axes.items():
                n = s["fst_first"] + s["rl_first"] + s["ties"]
                out.append(f"| {t} | {name} | {axis} | {fmt_ratio(s)} | {s['fst_first']} / "
                           f"{s['rl_first']} / {s['ties']} | {fmt(s['score'], 2)} | "
                           f"{s.get('prompt_alone', 0)} of {n} |")
    return out


def kl_ratio_row(task, per, prompt, blocked="", why="", vs="RL"):
    """C3's row: per {(base, seed): eval.kl_at_matched_reward}, the mean log KL ratio FST/vs (KLs
    clipped at KL_FLOOR, counted in `clipped`), paper's direction -1; geo_mean / geo_ci95 on the
    ratio scale. The matched level is guarded as C1's levels are: replicates whose level is one
    the prompt alone reaches (not above_floor) count in prompt_alone. blocked / why: a row the
    paper makes no claim for."""
    logs = {k: float(np.log(max(p["fst_kl"], KL_FLOOR) / max(p["rl_kl"], KL_FLOOR)))
            for k, p in per.items()}
    alone = sum(not p["above_floor"] for p in per.values())
    r = row("C3 less drift", task, f"log KL ratio FST/{vs} at matched reward, {prompt}", logs,
            direction=-1, blocked=blocked, prompt_alone=(alone, len(per)),
            why=why or prompt_alone_why(alone, len(per), "the matched level"),
            clipped=sum(min(p["rl_kl"], p["fst_kl"]) < KL_FLOOR for p in per.values()))
    if r["mean"] is not None:
        r["geo_mean"], r["geo_ci95"] = math.exp(r["mean"]), [math.exp(c) for c in r["ci95"]]
    return r


def pattern_row(claim, values, signs, what):
    """A pattern claim as one row: values {task: {'b{base}s{seed}': value}}, signs {task: +1 or
    -1, the sign the claim expects}. The statistic is min over tasks of sign x mean value: above
    0 when every task leans the claimed way; replicates are resampled jointly across tasks, and
    a base's value is the same statistic over its own run seeds."""
    tasks = list(values)
    names = [n for n in values[tasks[0]] if all(n in values[t] for t in tasks)]
    sign = np.array([signs[t] for t in tasks], float)
    flipped = ", ".join(t for t in tasks if signs[t] < 0)
    return row(claim, ", ".join(tasks), f"min over tasks of ({what}), sign flipped on {flipped}",
               {rep_key(n): tuple(values[t][n] for t in tasks) for n in names}, "pattern",
               stat=lambda a: float((np.atleast_2d(a).mean(0) * sign).min()))


def interaction(table2x2):
    """C7's 2x2 table for one replicate, {base_weights: {seed_prompt, fst_prompt}, fst_weights:
    {...}} -> each channel's gain over the base, both channels' gain and their interaction:
    prompt = base weights + FST prompt - base; weights = FST weights + seed prompt - base;
    both = FST weights + FST prompt - base; interaction = both - prompt - weights (= FST's own
    accuracy - prompt alone - weights alone + base: 0 when the channels add up)."""
    base = table2x2["base_weights"]["seed_prompt"]
    prompt = table2x2["base_weights"]["fst_prompt"] - base
    weights = table2x2["fst_weights"]["seed_prompt"] - base
    both = table2x2["fst_weights"]["fst_prompt"] - base
    return {"prompt": prompt, "weights": weights, "both": both,
            "interaction": both - prompt - weights}
