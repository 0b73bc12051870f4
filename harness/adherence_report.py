"""
adherence_report.py: the adherence experiment's report, from what its runs wrote to disk.

    python -m harness.adherence_report                   # runs/adherence -> runs/adherence/adherence.md
    python -m harness.adherence_report --root results/adherence/runs --out results/adherence
                                                          # the committed report, from committed runs

Per adherence level (`adh`, `adh-ctl`): the bases' criteria (criteria.json), every arm's mean and
final val accuracy, FST minus each control on both, who first reaches val accuracy 0.9 (FST
against both sequentials, on steps and on rollouts: a prediction written before the runs), the
primary family (named in LOG.md before the runs: P1 FST - sequential-1, P2 FST - RL, P3 FST's
weights under the seed prompt minus the base's; one-sided t-tests on base means, Holm), C1's
profile against RL, C2 with its identifiability, C7's 2x2 table and interaction, the KL ratio, and
the turnover and internalization curves as figures.
Intervals: cluster bootstrap (bases, then seeds; stats.mean_std, stats.REPS resamples, seed 0).
Labels: the reports' one rule (stats.label), the base as its unit: a row with fewer than 5 bases,
or outside the primary family, carries no verdict word.
"""

import argparse
import glob
import json
import math
import os

import numpy as np

from harness import claims as cl  # the numbers behind the claims, from log rows
from harness import stats
from world import tasks
from harness.adherence import ARMS, LEVELS, TASK, base_dir, eligible, far_entries

PRIMARY = ("P1 interleaving: FST - sequential-1, mean val acc",
           "P2 speed: FST - RL, mean val acc",
           "P3 internalization: FST weights - base, seed prompt, greedy")
CONTROLS = ("rl", "context", "sequential", "sequential-1", "instructed-budget")


def t_test(values, direction=1):
    """One-sided one-sample t-test that the mean of `values` (base means) exceeds 0 (direction
    +1) or falls below it (-1). -> p (None with fewer than 2 values; 1 or 0 with no spread)."""
    x = np.asarray(values, float)
    n = len(x)
    if n < 2:
        return None
    sd = x.std(ddof=1)
    if sd == 0:
        return 0.0 if direction * x.mean() > 0 else 1.0
    t = direction * x.mean() / (sd / math.sqrt(n))
    return 1.0 - student_cdf(t, n - 1)


def student_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom (regularized incomplete beta)."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def _betainc(a, b, x, iters=200):
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x, iters)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log(1 - x)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(iters * 2 + 1):
        m = i // 2
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)) if m else 0.0
        odd = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        num = 1.0 if i == 0 else even if i % 2 == 0 else odd
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > 1e-30 else 1e-30)
        c = 1.0 + num / (c if abs(c) > 1e-30 else 1e-30)
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return front * (f - 1.0)


# -----------------------------------------------------------------------------
# reading the runs

def load_runs(root, level):
    """{arm: {(base, seed): log rows}} of the finished runs of a level."""
    out = {arm: {} for arm in ARMS}
    for path in sorted(glob.glob(os.path.join(root, level, "b*", TASK, "*", "s*", "summary.json"))):
        run = os.path.dirname(path)
        arm, seed = run.split(os.sep)[-2], int(run.split(os.sep)[-1][1:])
        b = int(run.split(os.sep)[-4][1:])
        if arm in out:
            with open(os.path.join(run, "log.jsonl")) as f:
                out[arm][(b, seed)] = [json.loads(line) for line in f]
    return out


def cost(root, level):
    """What the level cost: each base's pretraining wall and each arm's summed run wall (seconds,
    as written by the runs: one thread each, on whatever machine and load they met)."""
    out = {"pretraining": {}, "runs": {}}
    for path in sorted(glob.glob(os.path.join(root, level, "b*", "base", "metrics.json"))):
        with open(path) as f:
            out["pretraining"][path.split(os.sep)[-3]] = json.load(f).get("wall_s")
    for path in sorted(glob.glob(os.path.join(root, level, "b*", TASK, "*", "s*", "summary.json"))):
        with open(path) as f:
            arm = path.split(os.sep)[-3]
            out["runs"][arm] = out["runs"].get(arm, 0.0) + (json.load(f).get("wall_s") or 0.0)
    return out


def criteria(root, level):
    """{base: criteria.json} of the level's measured bases."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, level, "b*", "base", "criteria.json"))):
        with open(path) as f:
            out[int(path.split(os.sep)[-3][1:])] = json.load(f)
    return out


def mean_acc(rows):
    return float(np.mean([r["val_acc"] for r in rows if "val_acc" in r]))


def final_acc(rows):
    return [r["val_acc"] for r in rows if "val_acc" in r][-1]


def paired(runs, arm, other, measure):
    """{(base, seed): measure(arm) - measure(other)} over replicates both finished."""
    keys = sorted(set(runs[arm]) & set(runs[other]))
    return {k: measure(runs[arm][k]) - measure(runs[other][k]) for k in keys}


def per_base(values):
    bases = {}
    for (b, _), v in values.items():
        bases.setdefault(b, []).append(v)
    return {b: float(np.mean(v)) for b, v in sorted(bases.items())}


def summary(values):
    """{(base, seed): v} -> mean, cluster interval, n, bases, per-replicate values."""
    keys = sorted(values)
    s = stats.mean_std([values[k] for k in keys], keys)
    s.update(bases=len({b for b, _ in keys}), values={stats.rep_name(k): values[k] for k in keys})
    return s


CEILING = "instructed-full"  # the whole table stated, over the budget: a ceiling, not a control


def arm_table(runs):
    """{arm: {"mean val acc": summary, "final val acc": summary}}: each arm's own accuracy over
    its finished replicates (every base), beside which FST's differences are read."""
    return {arm: {name: summary({k: fn(rows) for k, rows in reps.items()})
                  for name, fn in (("mean val acc", mean_acc), ("final val acc", final_acc))}
            for arm, reps in runs.items() if reps}


# -----------------------------------------------------------------------------
# the rows of one level

def internalization(rows_by_rep, base_seed_acc):
    """P3's values: final greedy accuracy under the seed prompt minus the base's."""
    return {k: rows[-1]["c7"]["weights"]["seed"] - base_seed_acc(k) for k, rows in
            rows_by_rep.items() if "c7" in rows[-1]}


def only_bases(runs, keep):
    """The runs of the bases in `keep` only."""
    return {arm: {k: v for k, v in reps.items() if k[0] in keep} for arm, reps in runs.items()}


def measure_rows(runs, prefix=""):
    """FST minus each control (mean and final val acc) and FST's internalization, one row each,
    over the replicates given."""
    rows = []
    for other in CONTROLS:
        for name, fn in (("mean val acc", mean_acc), ("final val acc", final_acc)):
            v = paired(runs, "fst", other, fn)
            if v:
                rows.append(dict(measure=f"{prefix}FST - {other}, {name}", **summary(v),
                                 p=t_test(list(per_base(v).values()))))
    base_seed = {k: rows_[-1]["c7"]["base"]["seed"] for k, rows_ in runs["fst"].items()
                 if "c7" in rows_[-1]}
    v = internalization(runs["fst"], lambda k: base_seed[k])
    if v:
        rows.append(dict(measure=f"{prefix}FST weights - base, seed prompt, greedy", **summary(v),
                         p=t_test(list(per_base(v).values()))))
    for other in ("sequential-1", "sequential"):
        for x, axis in (("step", "steps"), ("rollouts", "rollouts")):
            v = reach_scores(runs, other, x)
            if v:
                rows.append(dict(measure=f"{prefix}Gehan score, {axis} to val acc {REACH:g}, "
                                 f"FST vs {other} (+1: FST first)", **summary(v),
                                 p=t_test(list(per_base(v).values()))))
    return rows


REACH = 0.9  # the level of the prediction "FST reaches 0.9 sooner than both sequentials" (LOG.md)


def reach_scores(runs, other, x):
    """{(base, seed): Gehan score of FST against `other`}: who first evaluates at val acc >= REACH
    (x: 'step' or 'rollouts', the GEPA rollouts spent before RL included; censored at the last
    eval; +1: FST first, 0: a tie or left open by the censoring)."""
    out = {}
    for k in sorted(set(runs["fst"]) & set(runs[other])):
        a, b = runs["fst"][k], runs[other][k]
        if x == "rollouts" and not all("rollouts" in r for r in a + b if "val_acc" in r):
            continue
        (ta, ca, _), (tb, cb, _) = cl.reach_time(a, REACH, x), cl.reach_time(b, REACH, x)
        out[k] = cl.gehan_score(ta, ca, tb, cb)
    return out


PRIMARY_MEASURES = ("FST - sequential-1, mean val acc", "FST - rl, mean val acc",
                    "FST weights - base, seed prompt, greedy")
SENSITIVITY = "without b0 (its first replicate was seen before the amendment): "


def level_rows(runs, crit, primary):
    """Every row of a level. With `primary`, the family's three rows are computed over the
    eligible bases only (every criterion met, the far-target one as amended), followed by the
    same three without b0 (a sensitivity check, exploratory); every other row uses every base."""
    rows = measure_rows(runs)
    if not primary:
        return rows
    ok = {b for b, m in crit.items() if eligible(m)}
    fam = [dict(r, primary=PRIMARY[PRIMARY_MEASURES.index(r["measure"])])
           for r in measure_rows(only_bases(runs, ok)) if r["measure"] in PRIMARY_MEASURES]
    both = sum(1 for b in ok if crit[b]["pass"].get("far"))
    for r in fam:
        r["note"] = (f"eligible bases {sorted(ok)}; {both} of them pass the far-target "
                     "criterion as first written")
    sens = [r for r in measure_rows(only_bases(runs, ok - {0}), SENSITIVITY)
            if r["measure"][len(SENSITIVITY):] in PRIMARY_MEASURES]
    rest = [r for r in rows if r["measure"] not in PRIMARY_MEASURES]
    return fam + sens + rest


def primary_family(rows):
    """Holm over the primary rows' p values, then every row labelled by the reports' one rule
    (stats.label), with the base as its unit: fewer than 5 bases 'n < 5', a row outside the
    family 'exploratory'. A t-test on base means has no floor on p from 2 bases on, so no row is
    'undecidable' by the test's resolution alone."""
    prim = [r for r in rows if r.get("primary") and r["p"] is not None]
    for r, q in zip(prim, stats.holm([r["p"] for r in prim]) if prim else []):
        r["p_holm"] = q
    for r in rows:
        r["label"] = stats.label("difference", r["mean"] or 0.0,
                                 {"difference": r["p_holm"]} if "p_holm" in r else None,
                                 direction=1, primary=bool(r.get("primary")), n=r["bases"],
                                 family_size=len(PRIMARY))
    return rows


def c2(runs):
    """C2 per arm on the mean curve over replicates: A, its interval, identifiability."""
    out = {}
    for arm in ("rl", "fst", "sequential-1"):
        curves = [cl.curve(rows) for rows in runs[arm].values()]
        if len(curves) >= 2:
            xs, m, _, _ = cl.mean_band(curves)
            a = cl.asymptote(xs, m)
            out[arm] = {k: a[k] for k in ("A", "ci95", "identifiable", "why")}
    return out


def c7(runs):
    """C7's mean 2x2 table over FST's replicates and each replicate's interaction."""
    reps = {k: rows[-1]["c7"] for k, rows in runs["fst"].items() if "c7" in rows[-1]}
    if not reps:
        return None
    inter = {k: stats_interaction(t) for k, t in reps.items()}
    cells = {f"{w}+{p}": summary({k: t[w][p] for k, t in reps.items()})
             for w in ("base", "weights") for p in ("seed", "deployed")}
    return dict(cells=cells, **{g: summary({k: i[g] for k, i in inter.items()})
                               for g in ("prompt", "weights", "both", "interaction")})


def stats_interaction(t):
    """stats.interaction on a run log's c7 cells ({base, weights} x {seed, deployed})."""
    w, p = {"base": "base_weights", "weights": "fst_weights"}, {"seed": "seed_prompt",
                                                                "deployed": "fst_prompt"}
    return stats.interaction({w[a]: {p[b]: v for b, v in row.items()} for a, row in t.items()})


def deployed_entries(rows):
    """The table entries FST deployed over the run, in order of first appearance."""
    seen = []
    for r in rows:
        rule = None
        if "prompt" in r:
            try:
                rule = tasks.parse_rule(r["prompt"].splitlines()[0][len("rule:"):])
            except (tasks.SpecError, IndexError):
                rule = None
        for e in (rule[0].arg if rule and rule[0].name == "map" else ()):
            if e not in seen:
                seen.append(e)
    return seen


def turnover(runs):
    """Per FST replicate: distinct entries deployed, and how often the deployed prompt changed
    after round 0."""
    out = {}
    for k, rows in runs["fst"].items():
        prompts = [r["prompt"] for r in rows if "prompt" in r]
        out[stats.rep_name(k)] = {"entries": len(deployed_entries(rows)),
                                  "changes": sum(a != b for a, b in zip(prompts[1:], prompts[2:]))}
    return out


def turnover_curves(runs):
    """Per FST replicate: (steps, distinct entries deployed so far) at each logged prompt."""
    out = {}
    for k, rows in runs["fst"].items():
        seen, xs, ys = set(), [], []
        for r in rows:
            if "prompt" in r:
                seen.update(deployed_entries([r]))
                xs.append(r["step"] + 1)
                ys.append(len(seen))
        out[stats.rep_name(k)] = (xs, ys)
    return out


def mean_curves(runs):
    """{arm: {step, mean, lo, hi}}: each arm's mean val accuracy curve over its replicates."""
    out = {}
    for arm in ARMS:
        curves = [cl.curve(rows) for rows in runs[arm].values()]
        if curves:
            xs, m, lo, hi = cl.mean_band(curves)
            out[arm] = dict(step=list(map(float, xs)), mean=list(map(float, m)),
                            lo=list(map(float, lo)), hi=list(map(float, hi)))
    return out


def probe_curves(runs, task):
    """{arm: (steps, mean over replicates of the mean far-entry and near-entry accuracy)}."""
    far, out = far_entries(task), {}
    for arm in ("rl", "fst", "sequential-1", "sequential"):
        series = []
        for rows in runs[arm].values():
            pts = [(r["step"] + 1, np.mean([v or 0 for e, v in r["entries"].items() if e in far]),
                    np.mean([v or 0 for e, v in r["entries"].items() if e not in far]))
                   for r in rows if "entries" in r]
            series.append(pts)
        if series:
            n = min(map(len, series))
            arr = np.array([s[:n] for s in series], float)
            out[arm] = (arr[0, :, 0].tolist(), arr[:, :, 1].mean(0).tolist(),
                        arr[:, :, 2].mean(0).tolist())
    return out


def plots(runs, probe, out_dir, level):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for arm, c in mean_curves(runs).items():
        ax[0].plot(c["step"], c["mean"], label=arm)
    ax[0].set(xlabel="RL step", ylabel="val acc (exact)",
              title=f"{level}: accuracy (mean over replicates)")
    ax[0].legend(fontsize=7)
    for arm, (xs, far, near) in probe.items():
        line, = ax[1].plot(xs, far, label=f"{arm} far")
        ax[1].plot(xs, near, ls="--", color=line.get_color(), label=f"{arm} near")
    ax[1].set(xlabel="RL step", ylabel="entry accuracy, seed prompt",
              title="internalization (weights alone)")
    ax[1].legend(fontsize=7)
    for name, (xs, ys) in turnover_curves(runs).items():
        ax[2].step(xs, ys, where="post", label=name)
    ax[2].set(xlabel="RL step", ylabel="distinct entries deployed so far", ylim=(0, 6.5),
              title="FST's turnover (per replicate)")
    ax[2].legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{level}_curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


# -----------------------------------------------------------------------------
# the report

def fmt(s):
    if s.get("mean") is None:
        return "n/a"
    lo, hi = s["ci95"]
    return f"{s['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def c1_and_kl(runs):
    """C1 against RL per replicate (claims.c1_profile; claims.c1_rows with the context-only run's
    best val acc as the prompt-alone guard) and the KL at matched reward -> (c1, c1_rows, kl)."""
    common = sorted(set(runs["rl"]) & set(runs["fst"]))
    profiles = {k: cl.c1_profile(runs["rl"][k], runs["fst"][k]) for k in common}
    ceiling = {k: max(r["val_acc"] for r in rows if "val_acc" in r)
               for k, rows in runs["context"].items()}
    _, c1_rows = cl.c1_rows(TASK, profiles, ceiling) if profiles else (None, [])
    stats.label_family(c1_rows)
    kl = {stats.rep_name(k): cl.kl_at_matched_reward(runs["rl"][k], runs["fst"][k])
          for k in common}
    return {stats.rep_name(k): p for k, p in profiles.items()}, c1_rows, kl


def measure_lines(res):
    """A level's lines for C2, C7, C1, the KL ratio, the cost and FST's turnover."""
    lines = ["", "C2 (sigmoid asymptote on the mean curve): " + "; ".join(
        f"{a} A = {c['A']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}] "
        f"({'identifiable' if c['identifiable'] else 'not identifiable: ' + c['why']})"
        for a, c in res["c2"].items())]
    if res["c7"]:
        c = res["c7"]
        lines += ["", "C7 (FST, greedy exact): " + ", ".join(f"{k} {fmt(v)}" for k, v in
                                                            c["cells"].items()),
                  "gains over base+seed: " + ", ".join(f"{g} {fmt(c[g])}" for g in
                                                       ("prompt", "weights", "both",
                                                        "interaction"))]
    lines += ["", "C1 against RL (claims.c1_rows; 'not tested' where the context-only run alone "
              "reaches the level in most replicates):", "",
              "| measure | mean [95% cluster CI] | n | ratio RL / FST (geometric mean) | label |",
              "|---|---|---|---|---|"]
    for r in res["c1_rows"]:
        ratio = r.get("ratio") or {}
        g = "n/a" if ratio.get("geo_mean") is None else f"{ratio['geo_mean']:.2f}"
        lines.append(f"| {r['measure']} | {stats.fmt(r)} | {r['n']} | {g} | {r['label']} |")
    lines.append("")
    kl = [v["ratio"] for v in res["kl"].values() if v["ratio"]]
    if kl:
        lines.append(f"KL(FST) / KL(RL) at matched reward: geometric mean "
                     f"{math.exp(np.mean(np.log(kl))):.3f} over {len(kl)} replicates")
    c = res["cost"]
    hours = lambda x: f"{x / 60:.0f} min"
    lines.append(f"Cost (one thread per process, a shared 2-core machine): pretraining "
                 f"{hours(sum(v or 0 for v in c['pretraining'].values()))} over "
                 f"{len(c['pretraining'])} base(s); runs {hours(sum(c['runs'].values()))} ("
                 + ", ".join(f"{a} {hours(v)}" for a, v in sorted(c["runs"].items())) + ")")
    t = res["turnover"]
    lines.append("FST turnover (distinct deployed entries / prompt changes after round 0): "
                 + ", ".join(f"{k} {v['entries']}/{v['changes']}" for k, v in t.items()))
    wide, moved = (sum(v["entries"] >= 4 for v in t.values()),
                   sum(v["changes"] > 0 for v in t.values()))
    lines.append(f"FST runs whose deployed prompts covered >= 4 distinct entries (the prediction's "
                 f"rotation; every base): {wide} of {len(t)}; with a prompt change after round 0: "
                 f"{moved} of {len(t)}")
    return lines


def level_report(root, level, out_dir):
    runs, crit, task = load_runs(root, level), criteria(root, level), tasks.make_task(TASK)
    res = {"criteria": crit, "finished": {a: len(r) for a, r in runs.items()}}
    lines = [f"## {level}", "", "Bases (criteria, measured before any run):", "",
             "| base | general | adherence | silent entropy | far P (all / first occurrences) | "
             "near P | zero-var | best in-budget prompt | fails | primary family |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b, m in crit.items():
        member = ("yes" if eligible(m) else "no" if "far_first" in m["pass"] else
                  "not measured as amended (python -m harness.adherence --measure)")
        lines.append(f"| b{b} | {m['general']:.3f} | {m['adherence_mean']:.3f} | "
                     f"{m['silent_entropy']:.2f} | {m['far_prob']:.1e} / "
                     f"{m.get('far_prob_first', float('nan')):.1e} | {m['near_prob']:.3f} | "
                     f"{m['zero_std']:.2f} | `{m['best_prompt']}` ({m['best_score']:.3f}) | "
                     f"{', '.join(k for k, v in m['pass'].items() if not v) or 'none'} | "
                     f"{member} |")
    lines += ["", "A base enters the primary family when it meets every criterion, the far-target "
              "one as amended (first occurrences; LOG.md).", "",
              "Finished runs per arm: " + ", ".join(f"{a} {n}" for a, n in
                                                         res["finished"].items()), ""]
    if not runs["fst"]:
        return res, lines + ["No finished FST run yet.", ""]
    res["arms"] = arm_table(runs)
    lines += ["Each arm's own val accuracy (every base's finished runs; instructed-full states the "
              "whole table, over the budget: a ceiling, not a control):", "",
              "| arm | n (bases) | mean val acc [95% cluster CI] | final val acc [95% cluster CI] |",
              "|---|---|---|---|"]
    for arm, t in res["arms"].items():
        m, f = t["mean val acc"], t["final val acc"]
        lines.append(f"| {arm}{' (ceiling)' if arm == CEILING else ''} | {m['n']} ({m['bases']}) | "
                     f"{stats.fmt(m)} | {stats.fmt(f)} |")
    lines.append("")
    rows = primary_family(level_rows(runs, crit, primary=level == "adh"))
    res["rows"] = rows
    lines += ["| measure | mean [95% cluster CI] | n (bases) | per replicate | p (one-sided t, "
              "base means) | Holm p | label |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "n/a" if r["p"] is None else f"{r['p']:.3g}"
        reps = " ".join(f"{k} {v:+.2f}" for k, v in r["values"].items())
        lines.append(f"| {r['measure']} | {fmt(r)} | {r['n']} ({r['bases']}) | {reps} | {p} | "
                     f"{r.get('p_holm', '') if 'p_holm' not in r else format(r['p_holm'], '.3g')}"
                     f" | {r['label']} |")
    lines += [f"Primary rows: {r['primary']} ({r['note']})." for r in rows if r.get("primary")]
    res["c2"], res["c7"], res["turnover"] = c2(runs), c7(runs), turnover(runs)
    res["curves"] = mean_curves(runs)
    res["c1"], res["c1_rows"], res["kl"] = c1_and_kl(runs)
    res["cost"] = cost(root, level)
    lines += measure_lines(res)
    probe = probe_curves(runs, task)
    lines.append("Entry probe at the last evaluation (weights under the seed prompt, mean over "
                 "every base's runs; far / near entries): " + ", ".join(
                     f"{a} {far[-1]:.2f} / {near[-1]:.2f} (step {xs[-1]:.0f})"
                     for a, (xs, far, near) in probe.items()))
    lines += ["", f"![{level}]({plots(runs, probe, out_dir, level)})", ""]
    return res, lines


def write_report(root, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    res, lines = {}, ["# The adherence experiment", "", __doc__.strip().split("\n\n", 2)[-1], ""]
    for level in LEVELS:
        res[level], more = level_report(root, level, out_dir)
        lines += more
    with open(os.path.join(out_dir, "adherence.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(os.path.join(out_dir, "adherence.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="the adherence experiment's report")
    ap.add_argument("--root", default="runs/adherence")
    ap.add_argument("--out", default=None, help="the report's folder (default: the root)")
    args = ap.parse_args(argv)
    out = args.out or args.root
    write_report(args.root, out)
    print(os.path.join(out, "adherence.md"))


if __name__ == "__main__":
    main()
