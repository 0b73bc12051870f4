"""
report.py: the reproduction's report. Reads the suite's runs (their folders: suite.py), computes
the claims C1-C8 from what the runs wrote (log.jsonl, summary.json, measures.json) over every
replicate (pretraining seed x run seed), tests them with stats.py, and writes report.md, PNG plots
and results.json. It loads no weights: everything rebuilds from the files the archive keeps.

    python -m harness.report --preset tiny             # rebuild runs/tiny/{report.md, ...}
    # the committed report, from committed files alone
    python -m harness.report --runs results/tiny/runs --bases 3 --seeds 3 --out results/tiny
    python -m harness.report --preset tiny --hit-rates # each reflector's first-proposal hit rate
    python -m harness.report --measure DIR ...         # a finished run's measures.json from model.pt

Every aggregate in results.json is {mean, std, ci95, n} over replicates (a cluster bootstrap over
bases, then seeds). res["claims"] holds one row per statistic (stats.row: mean, ci95, n, bases,
per-replicate and per-base values, base-level p, label; the primary family's rows also their
Holm-adjusted p), with attribution beside each claim (the same statistic against the sequential
and instructed controls, res["claims"][i]["vs"]); res["methods"] says how intervals and tests were
made; res["curves"] the mean val acc curve of each task and method on steps and on rollouts.
"""

import json
import os
import types

import numpy as np

import eval as ev
from harness import plots as draw  # the figures
from harness import stats
from harness import suite
from world import tasks
from harness.cli import (FOLDER, MOST_SEEDS, CLIParser, UserError, exit_on_user_error, positive,
                         writable_folder)
from model import setup_device, write_atomic

def read_log(folder):
    with open(os.path.join(folder, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def replicates(root, reps, task, method):
    """{(base, seed): log rows} of one configuration, for the replicates whose run finished."""
    out = {}
    for b, s in reps:
        folder = suite.run_dir(suite.base_root(root, b), task, method, s)
        if os.path.exists(os.path.join(folder, "summary.json")):
            out[(b, s)] = read_log(folder)
    return out


def measures(root, reps, task, method):
    """{(base, seed): the run's measures.json (eval.run_measures)} for the finished runs that
    have one, and {(base, seed): the run's logged wall time} for those that do not (what
    re-running them would cost)."""
    have, missing = {}, {}
    for b, s in reps:
        folder = suite.run_dir(suite.base_root(root, b), task, method, s)
        if not os.path.exists(os.path.join(folder, "summary.json")):
            continue
        if os.path.exists(os.path.join(folder, "measures.json")):
            with open(os.path.join(folder, "measures.json")) as f:
                have[(b, s)] = json.load(f)
        else:
            with open(os.path.join(folder, "summary.json")) as f:
                missing[(b, s)] = json.load(f)["wall_s"]
    return have, missing


def _final(rows):
    return ev.curve(rows)[1][-1]


# Which task each claim is the paper's for (its figures): C3 is stated for CodeIO and HoVer, not for
# Math, whose analogue here is long-chain; C7's pattern puts the gain in the prompt on the first
# two kinds and in the weights on the third.
C3_TASKS = ("hidden-rule", "cipher", "cipher-k2")
PROMPT_TASKS, WEIGHTS_TASKS = ("hidden-rule", "cipher"), ("long-chain",)
CONTROLS = ("sequential", "instructed")  # attribution: the same statistic with these in RL's place
# The primary family: one test per claim, named by a rule rather than by its result. A per-task
# claim is tested on cipher-k2, the suite's partial-regime task (a prompt within the budget carries
# 2 of its 3 entries, so both channels have work: DESIGN.md, "the paper's regime is the partial
# one"); C5, C6 and C8 on their own task or stage (C6: the first switch); C7 as its pattern. Every
# other row is exploratory.
PRIMARY_TASK = "cipher-k2"
C7_MEASURE = ("min over tasks of (prompt alone - weights alone, each over the base), sign "
              "flipped on long-chain")
PRIMARY = (("C1 faster", PRIMARY_TASK, "mean val acc over the run, FST - RL"),
           ("C2 higher ceiling", PRIMARY_TASK, "A(FST) - A(RL) of the mean curves"),
           ("C3 less drift", PRIMARY_TASK,
            "log KL ratio FST/RL at matched reward, deployed prompts"),
           ("C4 forgets less (matches or beats)", PRIMARY_TASK, "general acc FST - RL"),
           ("C5 stays plastic", "hidden-rule-2", "area, FST-init - RL-init"),
           ("C6 keeps learning", "stage2_cipher", "mean val acc FST - RL"),
           ("C7 channel split (pattern)", ", ".join(PROMPT_TASKS + WEIGHTS_TASKS), C7_MEASURE))


def _pair(rows, vs_rows):
    """Attribution: each claim row beside the rows of the same statistic with a control in RL's
    place ({control: rows in the same order, or None})."""
    for i, r in enumerate(rows):
        stats.attribute(r, {m: (v[i] if v else None) for m, v in vs_rows.items()})
    return rows


# -----------------------------------------------------------------------------
# per-task claims (each returns its labelled rows; the caller collects them)

def task_claims(root, reps, t, folder):
    """Every per-task measure of task t -> ({results.json section: t's entry}, its claim rows,
    its plot names in `folder`)."""
    runs = {m: replicates(root, reps, t, m) for m in suite.SUITE_METHODS}
    keys = [r for r in reps if all(r in runs[m] for m in ("rl", "fst"))]
    final = {m: {r: _final(v[r]) for r in keys if r in v} for m, v in runs.items()}
    gain = {m: {r: _final(v[r]) - ev.curve(v[r])[1][0] for r in keys if r in v}
            for m, v in runs.items()}  # final minus the first eval (logged after step 0)
    agg = lambda d: stats.mean_std(list(d.values()), list(d))  # {(base, seed): value}
    part = {"runs": {m: {"final_val_acc": agg(final[m]), "gain": agg(gain[m]),
                         "min_gain": min(gain[m].values()) if gain[m] else None,
                         "rollouts": stats.mean_std([v[r][-1]["rollouts"] for r in v], list(v)),
                         "wall_s": stats.mean_std([v[r][-1]["wall_s"] for r in v], list(v))}
                     for m, v in runs.items() if v}}
    by_base = {}  # the fair-test bar, base by base: RL-only's gain over that base's run seeds
    for r, g in gain["rl"].items():
        by_base.setdefault(str(r[0]), []).append(g)
    part["rl_gain_by_base"] = {b: dict(stats.mean_std(g), min=min(g)) for b, g in by_base.items()}
    part["controls"], claims = controls(runs, final, keys, t)
    ceiling = {r: max(ev.curve(runs["context"][r])[1]) for r in keys if r in runs["context"]}
    ctl = {m: [r for r in keys if r in runs[m]] for m in CONTROLS}
    part["c1_sample_efficiency"], rows = c1(runs["rl"], runs["fst"], keys, t, ceiling)
    claims += _pair(rows, {m: c1(runs[m], runs["fst"], ctl[m], t, ceiling, vs=m)[1]
                           if ctl[m] else None for m in CONTROLS})
    part["c3_kl_at_matched_reward"] = {}
    for k in ("kl", "kl_common"):
        part["c3_kl_at_matched_reward"][k], rows = c3(runs["rl"], runs["fst"], keys, ceiling, k, t)
        claims += _pair(rows, {m: c3(runs[m], runs["fst"], ctl[m], ceiling, k, t, vs=m)[1]
                               if ctl[m] else None for m in CONTROLS})
    part["c2_asymptote"], rows = c2(runs["rl"], runs["fst"], keys, t)
    claims += _pair(rows, {m: None for m in CONTROLS})  # A is not identified: no attribution
    part["curves"], plots = curves_and_plots(runs, keys, t, folder)
    part["c4_forgetting"], rows = c4(root, keys, t)
    claims += rows
    part["c7_channels"], rows = c7(root, keys, t)
    claims += rows
    return part, claims, plots


def controls(runs, final, keys, t):
    """FST's final val acc minus each other method's: exploratory rows (the paper makes no claim
    about them; the claims carry their attribution); a control whose logs equal RL-only's on every
    replicate is '= rl'. -> ({method: its final val acc, same_as_rl}, the control rows)."""
    clockless = lambda rows: [{k: v for k, v in r.items() if "wall" not in k} for r in rows]
    out, rows = {}, []
    for m in suite.SUITE_METHODS:
        if m == "fst" or len(final[m]) != len(keys):
            continue
        same = m != "rl" and all(clockless(runs[m][r]) == clockless(runs["rl"][r]) for r in keys)
        rows.append(stats.row("control", t, f"final val acc FST - {m}",
                              {r: final["fst"][r] - final[m][r] for r in keys}, "control",
                              blocked="= rl" if same else "", method=m,
                              why="its logs are RL-only's, bit for bit" if same else ""))
        out[m] = {"final_val_acc": stats.mean_std(list(final[m].values()), keys),
                  "same_as_rl": same}
    return out, rows


def curves_and_plots(runs, keys, t, folder):
    """Per method, the mean val acc curve over replicates on steps and on a rollouts grid, and the
    figures drawn from them -> (results.json's curves[t], the figures' names in `folder`)."""
    curves, bands = {}, {}
    for x in ("step", "rollouts"):
        series = {}
        for m, v in runs.items():
            if not v:
                continue
            if x == "step":
                series[m] = ev.mean_band([ev.curve(v[r]) for r in keys if r in v])
            else:
                grid = np.linspace(0, min(rows[-1]["rollouts"] for rows in v.values()), 60)
                series[m] = ev.mean_band([(grid, ev.on_grid(v[r], grid)) for r in keys if r in v])
            xs, mean = series[m][0], series[m][1]
            c = curves.setdefault(m, {"n": sum(r in v for r in keys)})
            c["steps" if x == "step" else "rollouts"] = [float(a) for a in xs]
            c["val_acc" if x == "step" else "val_acc_on_rollouts"] = [
                None if np.isnan(a) else float(a) for a in mean]
        bands[x] = series
    return curves, draw.task_figures(folder, t, bands, len(keys),
                                     {m: [ev.kl_curve(runs[m][r]) for r in keys]
                                      for m in ("rl", "fst", "instructed") if runs[m]})


def c1(rl, fst, keys, t, ceiling=None, vs="RL"):
    """C1 per replicate: stats.c1_profile (fixed fractions of the baseline's plateau and its
    running peak, both axes) beside eval.sample_efficiency (the paper's running-peak ratio);
    stats.c1_rows summarizes the profile and guards every level the prompt alone reaches. `rl`:
    the baseline's runs (RL-only, or a control named `vs`). -> ({profile, per_replicate}, rows)."""
    per = {r: stats.c1_profile(rl[r], fst[r]) for r in keys}
    profile, rows = stats.c1_rows(t, per, ceiling, vs=vs)
    return {"profile": profile, "per_replicate": {stats.rep_name(r): dict(
        per[r], running_peak=ev.sample_efficiency(rl[r], fst[r])) for r in keys}}, rows


def c2(rl, fst, keys, t, reps=200, seed=0):
    """Asymptote A of the bounded sigmoid fit on each method's mean curve; A's interval and that of
    A(FST) - A(RL) resample replicates (bases, then seeds). The row is 'not identifiable' unless
    both methods' A pass stats.c2_identifiable. -> ({rl, fst: eval.asymptote}, [its row]), or
    ({}, []) without replicates."""
    if not keys:
        return {}, []
    n = min(len(ev.curve(v[r])[1]) for v in (rl, fst) for r in keys)
    xs = np.array(ev.curve(rl[keys[0]])[0][:n], float)
    curves = np.array([ev.curve(rl[r])[1][:n] + ev.curve(fst[r])[1][:n] for r in keys])  # (k, 2n)
    fit_a = lambda c: ev.sigmoid_fit(xs, c)["A"]
    half = {"rl": slice(0, n), "fst": slice(n, 2 * n)}
    boots = {m: stats.cluster_bootstrap(curves, keys, lambda a, h=h: fit_a(a[:, h].mean(0)), reps,
                                        seed) for m, h in half.items()} if len(keys) > 1 else None
    out = {m: ev.asymptote(xs, curves[:, h].mean(0), ci95=stats.percentile_ci(boots[m])
                           if boots else None) for m, h in half.items()}  # the same resamples
    why = "; ".join(f"{m.upper()}: {out[m]['why']}" for m in ("rl", "fst")
                    if not out[m]["identifiable"])
    row = stats.row("C2 higher ceiling", t,
                    "A(FST) - A(RL) of the mean curves",
                    {r: tuple(c) for r, c in zip(keys, curves)},
                    detail=f"RL {out['rl']['A']:.2f}, FST {out['fst']['A']:.2f}",
                    blocked="not identifiable" if why else "", why=why,
                    stat=lambda a: fit_a(np.atleast_2d(a)[:, n:].mean(0))
                    - fit_a(np.atleast_2d(a)[:, :n].mean(0)),
                    boots=boots["fst"] - boots["rl"] if boots else None, reps=reps)
    row["per_replicate"] = {stats.rep_name(r): {"A_rl": fit_a(c[:n]), "A_fst": fit_a(c[n:])}
                            for r, c in zip(keys, curves)}  # each replicate's own fit
    return out, [row]


def c3(rl, fst, keys, ceiling, key, t, vs="RL"):
    """C3's row (stats.kl_ratio_row: mean log KL ratio FST/baseline at matched reward). Each
    replicate's matched level is compared with its own context-only run's best val acc (ceiling):
    a level the prompt alone reaches says nothing about what the weights had to move, and where
    that is most replicates label() calls the row 'not tested'; so does a task the paper makes no
    C3 claim for. -> ({reward, rl_kl, fst_kl, above_floor}, [its row])."""
    per = {r: ev.kl_at_matched_reward(rl[r], fst[r], floor=(ceiling or {}).get(r), key=key)
           for r in keys}
    per = {r: p for r, p in per.items() if p["rl_kl"] is not None}
    out = stats.aggregate([{k: p[k] for k in ("reward", "rl_kl", "fst_kl")}
                           for p in per.values()], list(per)) if per else {}
    out["above_floor"] = sum(bool(p["above_floor"]) for p in per.values())
    prompt = "deployed prompts" if key == "kl" else "common seed prompt"
    no_claim = t not in C3_TASKS
    return out, [stats.kl_ratio_row(t, per, prompt, blocked="not tested" if no_claim else "",
                                    why="the paper makes no C3 claim for this task kind"
                                    if no_claim else "", vs=vs)]


def _rebuild_cost(missing, what):
    """The reason a row cannot be rebuilt, with what re-running its runs here would cost."""
    return (f"{what}: {len(missing)} finished runs have no measures.json and the archive keeps no "
            f"final weights; re-running them costs about {sum(missing.values()) / 60:.0f} "
            "CPU-minutes (their own logged wall time, one thread each)")


def c4(root, keys, t):
    """C4: general accuracy (eval.run_measures, from each run's measures.json) of FST's weights
    minus RL-only's, a 'matches or beats' row, with the same statistic against each control.
    Replicates without measures are left out; with none at all the row 'cannot be rebuilt'.
    -> ({method: {general_acc, seed_prompt_acc}, n_rebuilt, missing}, [its row])."""
    got, missing = {}, {}
    for m in ("rl", "fst") + CONTROLS + ("base",):
        if m == "base":  # the base's numbers come with every FST run's measures
            got[m] = {r: v["base"] for r, v in got["fst"].items() if "base" in v}
            continue
        got[m], miss = measures(root, keys, t, m)
        if m in ("rl", "fst"):  # what the row itself needs
            missing.update({(m,) + r: w for r, w in miss.items()})
    out = {m: {k: stats.mean_std([v[k] for v in d.values()], list(d))
               for k in ("general_acc", "seed_prompt_acc") if all(k in v for v in d.values())}
           for m, d in got.items() if d}
    both = [r for r in keys if r in got["rl"] and r in got["fst"]]
    out["rebuilt"] = len(both)
    diff = lambda m: {r: got["fst"][r]["general_acc"] - got[m][r]["general_acc"]
                      for r in both if r in got[m]}
    row = stats.row("C4 forgets less (matches or beats)", t, "general acc FST - RL", diff("rl"),
                    "matches or beats", detail=f"{len(both)} of {len(keys)} replicates rebuilt"
                    if len(both) < len(keys) else "")
    if not both:
        row["blocked"] = "cannot be rebuilt"
        row["why"] = _rebuild_cost(missing, "FST's and RL-only's final weights")
    elif len(both) < len(keys):
        row["why"] = _rebuild_cost(missing, "the other replicates")
    vs = {m: stats.row("C4", t, f"general acc FST - {m}", diff(m)) if diff(m) else None
          for m in CONTROLS}
    return out, [stats.attribute(row, vs)]


def c7(root, keys, t):
    """C7 as the paper reads it: the 2x2 table {base, FST weights} x {seed prompt, FST prompt}
    (from FST's measures.json: its weights under both prompts, the base under both), each
    channel's gain over the base, both channels' gain, and their interaction (stats.interaction:
    FST's own accuracy - prompt alone - weights alone + base). Rows: the interaction and each
    channel's gain, exploratory. -> ({table, gains, per_replicate, rebuilt}, rows)."""
    got, missing = measures(root, keys, t, "fst")
    got = {r: v for r, v in got.items() if "base" in v}
    if not got:
        return {"rebuilt": 0}, [stats.row("C7 channels", t, "interaction: both - prompt alone - "
                                          "weights alone + base", {}, blocked="cannot be rebuilt",
                                          why=_rebuild_cost(missing, "FST's final weights"))]
    cells = {r: {"base_weights": {"seed_prompt": v["base"]["seed_prompt_acc"],
                                  "fst_prompt": v["base"]["deployed_prompt_acc"]},
                 "fst_weights": {"seed_prompt": v["seed_prompt_acc"],
                                 "fst_prompt": v["deployed_prompt_acc"]}} for r, v in got.items()}
    gains = {r: stats.interaction(c) for r, c in cells.items()}
    out = dict(stats.aggregate(list(cells.values()), list(cells)),
               gains=stats.aggregate(list(gains.values()), list(gains)), rebuilt=len(got),
               per_replicate={stats.rep_name(r): dict(cells[r], **gains[r]) for r in got})
    names = {"prompt": "prompt alone - base (base weights + FST prompt)",
             "weights": "weights alone - base (FST weights + seed prompt)",
             "both": "both - base (FST's own accuracy)",
             "interaction": "interaction: both - prompt alone - weights alone + base"}
    rows = [stats.row("C7 channels", t, what, {r: g[k] for r, g in gains.items()},
                      detail=f"{len(got)} of {len(keys)} replicates rebuilt"
                      if len(got) < len(keys) else "") for k, what in names.items()]
    return out, rows


# -----------------------------------------------------------------------------
# C5, C6, C7's pattern, C8 and the reflector sweep

def plasticity(root, reps, folder):
    """C5: fresh RL on suite.PLASTICITY_TASK from the base and from RL's and FST's final weights on the
    prior task. The paper's sub-claims apart (RL-init below base-init; FST-init ~ base-init, TOST),
    on the area under the curve, with the share of runs reaching 0.5 beside (bimodal probes).
    -> (results.json's c5_plasticity, its claim rows, its plot's name in `folder`)."""
    pl = {i: replicates(root, reps, "plasticity", i) for i in suite.PLASTICITY_INITS}
    keys = [r for r in reps if all(r in v for v in pl.values())]
    out = {"task": suite.PLASTICITY_TASK, "prior_task": suite.PRIOR_TASK, "threshold": 0.5}
    per = {i: {r: ev.area_and_threshold(v[r], 0.5) for r in keys} for i, v in pl.items()}
    for init, v in pl.items():
        out[f"from_{init}"] = stats.aggregate(list(per[init].values()), keys) if keys else {}
        out[f"from_{init}"]["reached"] = sum(p["steps_to_threshold"] is not None
                                             for p in per[init].values())
        if init != "base":
            prior = replicates(root, keys, suite.PRIOR_TASK, init)
            out[f"from_{init}"]["prior_learned"] = sum(_final(prior[r]) >= 0.5 for r in prior)
    if not keys:
        return out, [], []
    share = lambda i: f"{i}-init: {out[f'from_{i}']['reached']} of {len(keys)} reach 0.5"
    auc = lambda a, b: {r: per[a][r]["auc"] - per[b][r]["auc"] for r in keys}
    rows = [
        stats.row("C5 RL-init barely learns", suite.PLASTICITY_TASK,
                  "area, RL-init - base-init", auc("rl", "base"), direction=-1,
                  detail=f"{share('rl')}; {share('base')}"),
        stats.row("C5 FST-init ~ base-init", suite.PLASTICITY_TASK,
                  "area, FST-init - base-init", auc("fst", "base"), "equivalence",
                  detail=share("fst")),
        stats.row("C5 stays plastic", suite.PLASTICITY_TASK, "area, FST-init - RL-init",
                  auc("fst", "rl"))]
    draw.bands(os.path.join(folder, "plasticity.png"),
               {f"RL from {i}-init": ev.mean_band([ev.curve(v[r]) for r in keys])
                for i, v in pl.items()},
               "RL steps", f"plasticity: RL on {suite.PLASTICITY_TASK} after {suite.PRIOR_TASK}")
    return out, rows, ["plasticity.png"]


def continual(root, reps, folder):
    """C6: per-stage peak and mean val accuracy, normalized by the better method's peak
    in that stage; each later stage's mean val acc FST - RL is a row. -> (results.json's
    c6_continual, its claim rows, its plot's name in `folder`)."""
    cont = {m: replicates(root, reps, "continual", m) for m in ("rl", "fst")}
    keys = [r for r in reps if all(r in v for v in cont.values())]
    stages = {}
    for r in keys:
        per = {m: [[row["val_acc"] for row in cont[m][r]
                    if "val_acc" in row and row["task"] == name]
                   for name in suite.CONTINUAL] for m in cont}
        for i, name in enumerate(suite.CONTINUAL):
            best = max(max(per[m][i]) for m in per) or 1.0
            for m in per:
                stages.setdefault(f"stage{i + 1}_{name}", {}).setdefault(m, []).append(
                    {"peak_norm": max(per[m][i]) / best,
                     "mean_norm": float(np.mean(per[m][i])) / best,
                     "peak": max(per[m][i]), "mean": float(np.mean(per[m][i]))})
    out, claims = {}, []
    for k, d in stages.items():
        out[k] = {m: stats.aggregate(v, keys) for m, v in d.items()}
        if not k.startswith("stage1"):
            claims.append(stats.row(
                "C6 keeps learning", k, "mean val acc FST - RL",
                {r: f["mean"] - g["mean"] for r, f, g in zip(keys, d["fst"], d["rl"])}))
    if not keys:
        return out, claims, []
    rows = cont["rl"][keys[0]]
    bounds = np.cumsum([sum(r["task"] == name for r in rows) for name in suite.CONTINUAL])[:-1]
    draw.bands(os.path.join(folder, "continual.png"),
               {m: ev.mean_band([ev.curve(v[r]) for r in keys]) for m, v in cont.items()},
               "RL steps", "continual: " + " -> ".join(suite.CONTINUAL), vlines=bounds)
    return out, claims, ["continual.png"]



def c7_pattern(c7_channels):
    """C7 as a pattern: which channel carries the gain depends on the task. Per replicate and task
    the prompt channel's gain over the base minus the weights channel's (= prompt alone - weights
    alone: FST's own accuracy cancels, which is why the 2x2 table and the interaction stand beside
    it); stats.pattern_row over PROMPT_TASKS (+) and WEIGHTS_TASKS (-) -> [its row], or [] before
    any of those tasks has its 2x2 table."""
    tasks_ = [t for t in PROMPT_TASKS + WEIGHTS_TASKS
              if c7_channels.get(t, {}).get("rebuilt")]
    if len(tasks_) < len(PROMPT_TASKS + WEIGHTS_TASKS):
        return [stats.row("C7 channel split (pattern)", ", ".join(PROMPT_TASKS + WEIGHTS_TASKS),
                          C7_MEASURE, {}, "pattern", blocked="cannot be rebuilt",
                          why="FST's final weights on " + ", ".join(
                              t for t in PROMPT_TASKS + WEIGHTS_TASKS if t not in tasks_)
                          + " are not in the archive and their runs have no measures.json")]
    per = {t: {n: v["prompt"] - v["weights"]
               for n, v in c7_channels[t]["per_replicate"].items()} for t in tasks_}
    r = stats.pattern_row("C7 channel split (pattern)", per,
                          {t: 1 if t in PROMPT_TASKS else -1 for t in tasks_},
                          "prompt alone - weights alone, each over the base")
    return [stats.attribute(r, {m: None for m in CONTROLS})]


# C8: "left zero reward" = the training reward, averaged over the last 5 steps, reaches 0.05 (the
# level at which select_tasks.CRITERIA says a context unlocks RL). One lucky success is not leaving
# zero: RL-only on `sparse` had isolated successes from step 1 while its mean stayed <= 0.02 for 50
# steps (the first replicate, base 0 seed 0, which is why this definition replaced "first success").
ZERO_LEVEL, ZERO_WINDOW = 0.05, 5
C8_MEASURE = (f"Gehan score, steps until the {ZERO_WINDOW}-step mean reward reaches {ZERO_LEVEL} "
              "(+1: FST first)")
PRIMARY += (("C8 leaves zero sooner", suite.EXPLORATION_TASK, C8_MEASURE),)


def leave_zero(rows, level=ZERO_LEVEL, window=ZERO_WINDOW):
    """C8: the first step at which the mean training reward of the last `window` steps reaches
    `level`, or None (censored: the run never left zero reward)."""
    rewards = [r.get("reward", 0.0) for r in rows]
    return next((rows[i]["step"] for i in range(len(rows))
                 if sum(rewards[max(0, i - window + 1):i + 1]) / window >= level), None)


def first_success(rows):
    """The first step with any rewarded rollout (binary reward), or None."""
    return next((r["step"] for r in rows if r.get("reward", 0) > 0), None)


def exploration(root, reps):
    """C8: steps until each method leaves zero reward, right-censored at its run's length; the row
    is the Gehan score per replicate (+1: FST left first), so a run that never left counts as
    'not by then' rather than at a made-up time. Attribution: the same score against the
    sequential control; the context-only run (GEPA on the frozen base, no RL) says whether the
    prompt alone already gets reward (its val accuracy, binary like the reward, >= ZERO_LEVEL).
    -> (results.json's c8_exploration, its rows)."""
    runs = {m: replicates(root, reps, suite.EXPLORATION_TASK, m)
            for m in ("rl", "fst", "sequential", "context")}
    keys = [r for r in reps if all(r in runs[m] for m in ("rl", "fst"))]
    out = {"task": suite.EXPLORATION_TASK, "level": ZERO_LEVEL, "window": ZERO_WINDOW}
    steps, cens = {}, {}
    for m in ("rl", "fst", "sequential"):
        v = runs[m]
        found = {r: leave_zero(v[r]) for r in keys if r in v}
        # censored runs enter at their length: a lower bound on the steps they would need
        steps[m] = {r: f if f is not None else v[r][-1]["step"] + 1 for r, f in found.items()}
        cens[m] = {r: f is None for r, f in found.items()}
        if found:
            out[m] = {"steps_to_leave_zero": stats.mean_std(list(steps[m].values()), list(found)),
                      "censored": sum(cens[m].values()), "n": len(found),
                      "first_success": stats.mean_std([first_success(v[r]) for r in found],
                                                      list(found)),
                      "final_val_acc": stats.mean_std([_final(v[r]) for r in found],
                                                      list(found))}
    ctx = {r: ev.curve(runs["context"][r])[1] for r in keys if r in runs["context"]}
    if ctx:
        out["context"] = {"n": len(ctx),
                          "first_eval_at_level": sum(c[0] >= ZERO_LEVEL for c in ctx.values()),
                          "best_at_level": sum(max(c) >= ZERO_LEVEL for c in ctx.values()),
                          "first_val_acc": stats.mean_std([c[0] for c in ctx.values()],
                                                          list(ctx)),
                          "final_val_acc": stats.mean_std([c[-1] for c in ctx.values()],
                                                          list(ctx))}
    if not keys:
        return out, []
    score = lambda m: {r: stats.gehan_score(steps["fst"][r], cens["fst"][r], steps[m][r],
                                            cens[m][r]) for r in keys if r in steps[m]}
    alone = (f"; the prompt alone (context-only) gets val acc >= {ZERO_LEVEL} at its first eval "
             f"in {out['context']['first_eval_at_level']} of {out['context']['n']}"
             if ctx else "")
    row = stats.row("C8 leaves zero sooner", suite.EXPLORATION_TASK, C8_MEASURE, score("rl"),
                    detail=f"never: RL {out['rl']['censored']}, FST {out['fst']['censored']}"
                    + (f", sequential {out['sequential']['censored']}" if "sequential" in out
                       else "") + alone)
    vs = {"sequential": stats.row("C8", suite.EXPLORATION_TASK, "Gehan score vs sequential",
                                  score("sequential")) if steps["sequential"] else None,
          "instructed": None}
    return out, [stats.attribute(row, vs)]


def reflector_sweep(root, seeds, hit_rates):
    """C1 and C3 of FST with each sweep reflector (suite.SWEEP_REFLECTORS) on the first base,
    beside the default's runs there: exploratory rows (n = run seeds). Only reflectors with runs
    enter; without any, the sweep is not in the report. -> ({reflector: {task: hit rate, told, n,
    c1_profile}}, the rows)."""
    reps = [(0, s) for s in seeds]
    out, rows = {}, []
    have = [(n, f"fst-{n}") for n in suite.SWEEP_REFLECTORS
            if any(replicates(root, reps, t, f"fst-{n}") for t in suite.SUITE_TASKS)]
    for name, method in ([("edit", "fst")] + have) if have else []:
        out[name] = {}
        for t in suite.SUITE_TASKS:
            rl, fst = replicates(root, reps, t, "rl"), replicates(root, reps, t, method)
            ctx = replicates(root, reps, t, "context")
            keys = [r for r in reps if r in rl and r in fst]
            if not keys:
                continue
            ceiling = {r: max(ev.curve(ctx[r])[1]) for r in keys if r in ctx}
            c1_, new = c1(rl, fst, keys, t, ceiling)
            new += c3(rl, fst, keys, ceiling, "kl", t)[1]
            for r in new:
                r["reflector"] = name
            rows += new
            out[name][t] = {"first_hit_rate": hit_rates.get(t, {}).get(name),
                            "told": tasks.NAMED_TASKS[t].told, "n": len(keys),
                            "c1_profile": c1_["profile"]}
    return {k: v for k, v in out.items() if v}, rows


# -----------------------------------------------------------------------------
# the report

def claims_and_plots(root, reps, folder):
    """C1-C8 over the replicates `reps` -> (results.json's sections of them, every claim and
    control row in order, the plots' names in `folder`)."""
    res = {k: {} for k in ("curves", "runs", "rl_gain_by_base", "controls", "c1_sample_efficiency",
                           "c2_asymptote", "c3_kl_at_matched_reward", "c4_forgetting",
                           "c7_channels")}
    claims, plots = [], []
    for t in suite.SUITE_TASKS:
        part, rows, names = task_claims(root, reps, t, folder)
        for k, v in part.items():
            res[k][t] = v
        claims += rows
        plots += names
    claims += c7_pattern(res["c7_channels"])
    res["c5_plasticity"], rows, names = plasticity(root, reps, folder)
    claims += _pair(rows, {m: None for m in CONTROLS})
    plots += names
    res["c6_continual"], rows, names = continual(root, reps, folder)
    claims += _pair(rows, {m: None for m in CONTROLS})
    plots += names
    res["c8_exploration"], rows = exploration(root, reps)
    return res, claims + rows, plots


def write_report(root, bases, seeds, suite_wall_s=None, device="cpu", out=None, hit_rates=None):
    """Compute C1-C8 from the files of the runs under `root` (bases 0..bases-1 x seeds
    0..seeds-1): logs, summaries, measures.json and the bases' metrics.json, no weights; label
    every row (stats.label_family: Holm over the primary family PRIMARY, label() for all); write
    results.json, report.md and PNG plots to `out` (default root). suite_wall_s None: summed from
    the runs' own clocks (wall_from_folders). `device` is kept for callers; nothing here runs a model.
    -> results.json's dict."""
    out = out or root
    os.makedirs(out, exist_ok=True)
    reps = [(b, s) for b in range(bases) for s in range(seeds)]
    metrics = {}
    for b in range(bases):
        with open(os.path.join(os.path.dirname(suite.base_path(root, b)), "metrics.json")) as f:
            metrics[b] = json.load(f)
    preset = run_config(root, reps) or metrics[0]["preset"]
    sections, claims, plots = claims_and_plots(root, reps, out)
    if suite_wall_s is None:
        suite_wall_s = wall_from_folders(root, bases, seeds)
    res = {"preset": preset["name"], "bases": list(range(bases)), "seeds": list(range(seeds)),
           "replicates": len(reps), "wall_s": suite_wall_s,
           "methods": dict(stats.METHODS_TEXT, primary_rule=(
               f"per-task claims on {PRIMARY_TASK} (the suite's partial-regime task); C5 on its "
               "probe, C6 at the first switch, C7 as its pattern, C8 on its task")),
           "base_quality": {b: {"general_acc": m["general_acc"],
                                "min_op_acc": min(m["acc_by_op"].values()),
                                "acc_by_op": m["acc_by_op"], "wall_s": m["wall_s"]}
                            for b, m in metrics.items()},
           "claims": claims, "family": stats.label_family(claims, PRIMARY), **sections}
    if len(reps) == 1:  # one replicate: its numbers beside the committed grid's spread
        res["grid_reference"] = ev.grid_reference(res["preset"], res["claims"])
    if hit_rates is None and os.path.exists(os.path.join(root, "hit_rates.json")):
        with open(os.path.join(root, "hit_rates.json")) as f:
            hit_rates = json.load(f)
    res["reflector_sweep"], res["reflector_sweep_rows"] = reflector_sweep(root, range(seeds),
                                                                          hit_rates or {})
    stats.label_family(res["reflector_sweep_rows"])  # all exploratory
    res["reflector_first_hit_rate"] = hit_rates
    write_atomic(os.path.join(out, "results.json"), json.dumps(res, indent=1))
    write_atomic(os.path.join(out, "report.md"), render_report(res, plots))
    return res


def run_config(root, reps):
    """The preset the runs were made with (from the first finished run's summary), or None."""
    for b, s in reps:
        for t in suite.SUITE_TASKS:
            path = os.path.join(suite.run_dir(suite.base_root(root, b), t, "rl", s), "summary.json")
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)["config"]
    return None


_m = stats.fmt  # an aggregate or a number as text: mean [95% interval]


def render_report(res, plots):
    n, fam = res["replicates"], res["family"]
    nb = len(res["bases"])
    primary = sorted((r for r in res["claims"] if r["primary"]), key=lambda r: r["claim"][:2])
    explore = [r for r in res["claims"] if not r["primary"] and r["claim"] != "control"]
    L = [f"# fastslow report: preset `{res['preset']}`", "",
         f"Bases (pretraining seeds) {res['bases']} x run seeds {res['seeds']} = {n} replicates; "
         f"wall time {res['wall_s']:.0f} s (pretraining and every run, each on its own clock, "
         "summed). Accuracy = exact match on the 256-problem val split at the training "
         "temperature, with each method's deployed prompt. Rebuilt from the runs' files alone "
         "(logs, summaries, measures.json), no weights.", "",
         f"- **Intervals**: {fam['interval']}. With {nb} bases an interval describes these bases, "
         "not bases in general.",
         f"- **Tests**: {fam['test']}. The base is the unit of evidence: with {nb} bases the "
         f"smallest two-sided p is {2 / 2 ** nb:.3g}.",
         f"- **Family**: {fam['family']}. Primary tests ({fam['tests']} performed): "
         f"{res['methods']['primary_rule']}. With {fam['tests']} tests at {fam['alpha']}, a "
         f"claim can be decided only with >= {fam['bases_needed']} bases (a consistent effect in "
         "every one of them).",
         "- **Labels**: `reproduced` / `not reproduced` / `inconclusive` / `equivalent` (primary "
         "rows only, after Holm); `undecidable` (a primary test whose smallest p cannot pass); "
         "`exploratory` (no verdict); `not tested` (the comparison cannot test the claim, e.g. "
         "the prompt alone reaches the level); `not identifiable` (C2 without an observed "
         "plateau); `cannot be rebuilt` (the files it needs are not in the archive); `n < 5`; "
         "`= rl` (a control whose logs are RL-only's).",
         "- **Attribution**: beside each claim, the same statistic with the sequential and the "
         "instructed control in RL's place (FST - control), and whether FST's gain survives each "
         "(yes: that difference's 95% interval lies wholly on the claim's side of 0; a "
         "description, not a test).",
         *stats.single_replicate_lines(res.get("grid_reference")),
         "", "## Bases", "", "| base | general acc | weakest op | wall s |", "|---|---|---|---|"]
    for b, q in res["base_quality"].items():
        L.append(f"| {b} | {q['general_acc']:.3f} | {q['min_op_acc']:.3f} | {q['wall_s']:.0f} |")
    L += ["", "## The primary family: one test per claim", ""] + stats.table(primary)
    L += ["", "## Exploratory rows (no verdicts)", ""] + stats.table(explore)
    L += ["", "## C1 profile (every cell, with how often the prompt alone reaches its level)", ""]
    L += stats.profile_table({t: d["profile"] for t, d in res["c1_sample_efficiency"].items()})
    L += _runs_lines(res)
    L += _c7_lines(res)
    L += _c8_lines(res)
    L += _sweep_lines(res)
    L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def _runs_lines(res):
    """The runs table with each control's comparison, and RL-only's gain base by base."""
    L = ["", "## Runs and controls (final val acc; FST minus the method, paired by replicate)",
          "",
          "Gain = final minus first val accuracy (after step 0); its minimum over replicates shows "
          "whether every replicate learned (the fair-test bar for RL only: >= 0.3). Note: the "
          "sequential control spends context_only_rollouts on GEPA before RL, more than FST's "
          "first round, and the instructed control gets the whole instruction whatever the "
          "context budget (a ceiling on cipher-k2).", "",
          "| task | method | final val acc | gain (min) | FST - it | rollouts | wall s |",
          "|---|---|---|---|---|---|---|"]
    ctl = {(r["task"], r["method"]): r for r in res["claims"] if r["claim"] == "control"}
    for t, d in res["runs"].items():
        for m, v in d.items():
            c = ctl.get((t, m))
            diff = (stats.fmt(c) + (" (= rl)" if c["label"] == "= rl" else "")) if c else ""
            L.append(f"| {t} | {m} | {_m(v['final_val_acc'])} | {_m(v['gain'], 2)} "
                     f"({_m(v['min_gain'], 2)}) | {diff} | "
                     f"{_m(v['rollouts'], 0)} | {_m(v['wall_s'], 0)} |")
    if res.get("rl_gain_by_base"):
        bases = sorted({b for d in res["rl_gain_by_base"].values() for b in d}, key=int)
        L += ["", "RL-only gain by base: mean [interval] over run seeds (lowest seed).", "",
              "| task | " + " | ".join(f"base {b}" for b in bases) + " |",
              "|---|" + "---|" * len(bases)]
        for t, d in res["rl_gain_by_base"].items():
            L.append(f"| {t} | " + " | ".join(f"{_m(d[b], 2)} ({d[b]['min']:.2f})" if b in d
                                              else "" for b in bases) + " |")
    return L


def _c7_lines(res):
    L = ["", "## C7: {base, FST weights} x {seed prompt, FST prompt}", "",
         "From each FST run's measures.json (mean@4 on the val split). Gains are over the base "
         "(base weights + seed prompt); the interaction is both - prompt alone - weights alone + "
         "base (0 when the channels add up). The pattern row compares the two single-channel "
         "cells, in which FST's own accuracy cancels; the columns with FST's weights and prompt "
         "together carry it.", "",
         "| task | rebuilt | base + seed | base + FST prompt | FST weights + seed | "
         "FST weights + FST prompt | prompt's gain | weights' gain | both | interaction |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for t, d in res["c7_channels"].items():
        if not d.get("rebuilt"):
            L.append(f"| {t} | 0 | cannot be rebuilt: FST's final weights are not in the archive "
                     "and its runs have no measures.json |" + " |" * 7)
            continue
        g = d["gains"]
        L.append(f"| {t} | {d['rebuilt']} | {_m(d['base_weights']['seed_prompt'])} | "
                 f"{_m(d['base_weights']['fst_prompt'])} | "
                 f"{_m(d['fst_weights']['seed_prompt'])} | {_m(d['fst_weights']['fst_prompt'])} | "
                 f"{_m(g['prompt'])} | {_m(g['weights'])} | {_m(g['both'])} | "
                 f"{_m(g['interaction'])} |")
    return L


def _c8_lines(res):
    c8 = res.get("c8_exploration", {})
    L = ["", f"## C8 on `{c8.get('task')}`: leaving zero reward, with its controls", "",
         f"Steps until the {c8.get('window')}-step mean training reward reaches {c8.get('level')} "
         "(censored runs at their length).", "",
         "| method | n | steps to leave zero | never left | final val acc |",
         "|---|---|---|---|---|"]
    for m in ("rl", "fst", "sequential"):
        if m in c8:
            d = c8[m]
            L.append(f"| {m} | {d['n']} | {_m(d['steps_to_leave_zero'], 1)} | {d['censored']} | "
                     f"{_m(d['final_val_acc'])} |")
    if "context" in c8:
        d = c8["context"]
        L += ["", f"Context-only (GEPA on the frozen base, no RL), n = {d['n']}: val acc at its "
              f"first eval {_m(d['first_val_acc'])}, at its end {_m(d['final_val_acc'])}; the "
              f"prompt alone reaches {c8['level']} at its first eval in "
              f"{d['first_eval_at_level']} of {d['n']} and at some eval in {d['best_at_level']}."]
    return L


def _sweep_lines(res):
    if not res.get("reflector_sweep_rows"):
        return []
    return ["", "## Reflector sweep (first base): how much of FST's gain depends on the reflector",
            "", "Exploratory; first-proposal hit rates: " + "; ".join(
                f"{name} on {t} " + ("n/a (told)" if v.get("told") else _m(v["first_hit_rate"], 2))
                for name, d in res["reflector_sweep"].items() for t, v in d.items()), ""
            ] + stats.table([dict(r, claim=f"{r['reflector']}: {r['claim']}")
                             for r in res["reflector_sweep_rows"]])


def reflector_hit_rates(root, device="cpu", names=("oracle", "edit", "demo"), trials=100):
    """First-proposal hit rate of each reflector on each suite task (and the probe's), with the
    first base's own greedy outputs as the records: {task: {reflector: rate}} (eval.hit_rates)."""
    return ev.hit_rates(suite.base_path(root, 0),
                        suite.SUITE_TASKS + [suite.PLASTICITY_TASK, suite.EXPLORATION_TASK], names, device, trials)


def wall_from_folders(root, bases, seeds):
    """The suite's wall time as suite() sums it, from what was written to disk: each base's
    pretraining and each finished run of the suite (the reflector sweep's too, where it ran), each
    on its own clock (a grid run by a scheduler has no results.json to take it from)."""
    lengths = types.SimpleNamespace(steps=0, continual_steps=0)  # folders do not depend on them
    paths = [os.path.join(os.path.dirname(suite.base_path(root, b)), "metrics.json")
             for b in range(bases)]
    paths += [os.path.join(folder, "summary.json")
              for _, folder, _ in suite.jobs(lengths, root, bases, seeds, sweep=True)]
    walls = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as f:
                walls.append(json.load(f)["wall_s"])
    return sum(walls)


def measure_run(run_dir, device="cpu"):
    """measures.json for a finished single-task run from its model.pt (a run made before runs
    wrote it): eval.run_measures with the run's own task, deployed prompt and base (its summary's
    settings), the numbers train.py writes at a run's end. -> the dict written."""
    import torch
    from model import load_checkpoint
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    (spec, _), = summary["schedule"]
    model, extra = load_checkpoint(os.path.join(run_dir, "model.pt"), device)
    enc = tasks.tokenizer_from_state(extra["tokenizer"])
    base_path = summary["settings"]["base"] if "settings" in summary else summary["init"]
    base = None
    if summary["method"] == "fst":  # as train.py: the C7 table for FST's runs
        base, _ = load_checkpoint(base_path, device)
        base.eval()
    task = tasks.make_task(spec, n_val=summary["config"]["n_val"])  # the run's own val split
    torch.manual_seed(0)
    m = ev.run_measures(model.eval(), enc, task, summary["deployed_prompt"], base=base)
    write_atomic(os.path.join(run_dir, "measures.json"), json.dumps(m, indent=1))
    return m


def build_parser():
    ap = CLIParser(prog="python -m harness.report",
                   description="rebuild report.md, plots and results.json from existing runs")
    ap.add_argument("--preset", default="tiny", help="the runs under runs/<preset>")
    ap.add_argument("--runs", type=FOLDER, default=None,
                    help="read the runs and bases here instead of runs/<preset> (e.g. the "
                         "committed archive, results/tiny/runs)")
    ap.add_argument("--bases", type=positive(int, MOST_SEEDS), default=1,
                    help=f"bases (pretraining seeds 0..N-1) (at most {MOST_SEEDS})")
    ap.add_argument("--seeds", type=positive(int, MOST_SEEDS), default=1,
                    help=f"run seeds 0..N-1 (at most {MOST_SEEDS})")
    ap.add_argument("--out", type=FOLDER, default=None,
                    help="write the report here (default: the runs' folder)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--hit-rates", action="store_true",
                    help="only: each reflector's first-proposal hit rate "
                         "(-> runs/<preset>/hit_rates.json)")
    ap.add_argument("--measure", nargs="+", type=FOLDER, default=None, metavar="RUN_DIR",
                    help="only: write measures.json of these finished runs from their model.pt")
    return ap


def unfinished_suite(root, bases, seeds, preset):
    """The report reads every run of the suite: one line naming what is missing, if any."""
    folders = suite.run_folders(root, bases, seeds)
    todo = [f for f in folders if not os.path.exists(os.path.join(f, "summary.json"))]
    if todo:
        raise UserError(f"{len(todo)} of the suite's {len(folders)} runs under {root} are not "
                        f"finished (the first: {todo[0]}); run `python train.py --preset {preset} "
                        f"--bases {bases} --seeds {seeds}` first (`python -m harness.phase` "
                        "reports the phase grid)")


@exit_on_user_error
def main(argv=None):
    import torch
    args = build_parser().parse_args(argv)
    root = args.runs or os.path.join("runs", args.preset)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
    device = setup_device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    if args.measure:
        for d in args.measure:
            if not os.path.exists(os.path.join(d, "model.pt")):
                raise UserError(f"{d} has no model.pt to measure")
            print(d, json.dumps(measure_run(d, device)))
        return
    if not os.path.exists(os.path.join(os.path.dirname(suite.base_path(root, 0)),
                                       "metrics.json")):
        raise UserError(f"no runs under {root}; run `python train.py --preset {args.preset}` first")
    writable_folder(args.out or root)
    if not args.hit_rates:
        unfinished_suite(root, args.bases, args.seeds, args.preset)
    if args.hit_rates:
        rates = reflector_hit_rates(root, device)
        write_atomic(os.path.join(root, "hit_rates.json"), json.dumps(rates, indent=1))
        print(json.dumps(rates))
        return
    wall = wall_from_folders(root, args.bases, args.seeds)
    if os.path.exists(os.path.join(root, "results.json")):  # keep the suite's own wall time
        with open(os.path.join(root, "results.json")) as f:
            wall = json.load(f).get("wall_s", wall)
    out = args.out or root
    write_report(root, args.bases, args.seeds, wall, out=out)
    print(f"wrote {out}/report.md")


if __name__ == "__main__":
    main()
