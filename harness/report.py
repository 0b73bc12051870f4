"""
report.py: the reproduction's report. Reads the suite's runs (their folders: suite.py), computes
the claims C1-C8 with eval.py's measurements over every replicate (pretraining seed x run seed),
tests them with stats.py, and writes report.md, PNG plots and results.json.

    python -m harness.report --preset tiny             # rebuild runs/tiny/{report.md, ...}
    # the grid, copied out
    python -m harness.report --preset tiny --bases 3 --seeds 3 --out results/tiny
    python -m harness.report --preset tiny --hit-rates # each reflector's first-proposal hit rate

Every aggregate in results.json is {mean, std, ci95, n} over replicates (a bootstrap over bases,
then seeds). res["claims"] holds one row per tested statistic (stats.row: mean, ci95, n,
per-replicate values "b{base}s{seed}", p values raw and Holm-adjusted over the family, label);
res["curves"] the mean val acc curve of each task and method on steps and on rollouts. Nothing here
trains.
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
from model import load_checkpoint, setup_device, write_atomic

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


def _final(rows):
    return ev.curve(rows)[1][-1]


# Which task each claim is the paper's for (its figures): C3 is stated for CodeIO and HoVer, not for
# Math, whose analogue here is long-chain; C7's pattern puts the gain in the prompt on the first
# two kinds and in the weights on the third.
C3_TASKS = ("hidden-rule", "cipher", "cipher-k2")
PROMPT_TASKS, WEIGHTS_TASKS = ("hidden-rule", "cipher"), ("long-chain",)


# -----------------------------------------------------------------------------
# per-task claims (each returns its labelled rows; the caller collects them)

def task_claims(root, reps, t, base_models, preset, folder, base_cache):
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
    part["c1_sample_efficiency"], rows = c1(runs["rl"], runs["fst"], keys, t, ceiling)
    claims += rows
    floor = float(np.mean(list(ceiling.values()))) if ceiling else None  # context-only ceiling
    part["c3_kl_at_matched_reward"] = {}
    for k in ("kl", "kl_common"):
        part["c3_kl_at_matched_reward"][k], rows = c3(runs["rl"], runs["fst"], keys, floor, k, t)
        claims += rows
    part["c2_asymptote"], rows = c2(runs["rl"], runs["fst"], keys, t)
    claims += rows
    part["curves"], plots = curves_and_plots(runs, keys, t, folder)
    per = [channels_and_forgetting(root, t, r, *base_models[r[0]], preset, base_cache)
           for r in keys]
    if per:
        part["c4_forgetting"] = stats.aggregate([p["c4"] for p in per], keys)
        claims.append(stats.row(
            "C4 forgets less (matches or beats)", t, "general acc FST - RL",
            {r: p["c4"]["fst"]["general_acc"] - p["c4"]["rl"]["general_acc"]
             for r, p in zip(keys, per)}, "matches or beats"))
        gains = {r: (p["c7"]["fst_weights"]["fst_prompt"] - p["c7"]["fst_weights"]["seed_prompt"],
                     p["c7"]["fst_weights"]["fst_prompt"] - p["c7"]["base_weights"]["fst_prompt"])
                 for r, p in zip(keys, per)}  # (prompt's gain, weights' gain) per replicate
        part["c7_channels"] = dict(
            stats.aggregate([p["c7"] for p in per], keys),
            prompt_gain=stats.mean_std([g[0] for g in gains.values()], keys),
            weights_gain=stats.mean_std([g[1] for g in gains.values()], keys),
            prompt_minus_weights={stats.rep_name(r): g[0] - g[1] for r, g in gains.items()})
    return part, claims, plots


def controls(runs, final, keys, t):
    """FST's final val acc minus each other method's, labelled higher / lower / tie (the paper
    makes no claim about them); a control whose logs equal RL-only's on every replicate is '= rl'
    and not tested. -> ({method: its final val acc, same_as_rl}, the control rows)."""
    clockless = lambda rows: [{k: v for k, v in r.items() if "wall" not in k} for r in rows]
    out, rows = {}, []
    for m in suite.SUITE_METHODS:
        if m == "fst" or len(final[m]) != len(keys):
            continue
        same = m != "rl" and all(clockless(runs[m][r]) == clockless(runs["rl"][r]) for r in keys)
        rows.append(stats.row("control", t, f"final val acc FST - {m}",
                              {r: final["fst"][r] - final[m][r] for r in keys}, "control",
                              label="= rl" if same else None, method=m,
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


def c1(rl, fst, keys, t, ceiling=None):
    """C1 per replicate: stats.c1_profile (fixed fractions of RL's plateau and its running peak,
    both axes) beside eval.sample_efficiency (the paper's running-peak ratio); stats.c1_rows
    summarizes the profile -> ({profile, per_replicate}, the tested rows)."""
    per = {r: stats.c1_profile(rl[r], fst[r]) for r in keys}
    profile, rows = stats.c1_rows(t, per, ceiling)
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
                    label="not identifiable" if why else None, why=why,
                    stat=lambda a: fit_a(a[:, n:].mean(0)) - fit_a(a[:, :n].mean(0)),
                    boots=boots["fst"] - boots["rl"] if boots else None, reps=reps)
    row["per_replicate"] = {stats.rep_name(r): {"A_rl": fit_a(c[:n]), "A_fst": fit_a(c[n:])}
                            for r, c in zip(keys, curves)}  # each replicate's own fit
    return out, [row]


def c3(rl, fst, keys, floor, key, t):
    """C3's row (stats.kl_ratio_row: mean log KL ratio FST/RL at matched reward); 'not tested' on a
    task the paper makes no C3 claim for, or where the matched level is at or below the
    context-only ceiling in most replicates (the prompt alone reaches it). -> ({reward, rl_kl,
    fst_kl, above_floor}, [its row])."""
    per = {r: ev.kl_at_matched_reward(rl[r], fst[r], floor=floor, key=key) for r in keys}
    per = {r: p for r, p in per.items() if p["rl_kl"] is not None}
    out = stats.aggregate([{k: p[k] for k in ("reward", "rl_kl", "fst_kl")}
                           for p in per.values()], list(per)) if per else {}
    out["above_floor"] = sum(bool(p["above_floor"]) for p in per.values())
    prompt = "deployed prompts" if key == "kl" else "common seed prompt"
    why = ("the paper makes no C3 claim for this task kind" if t not in C3_TASKS else
           f"the matched level is one the prompt alone reaches in {len(per) - out['above_floor']}"
           f" of {len(per)}" if 2 * out["above_floor"] < len(per) else "")
    return out, [stats.kl_ratio_row(t, per, prompt, why)]


def channels_and_forgetting(root, task_name, rep, base, enc, preset, base_cache, samples=4):
    """C4 and C7 for one task and replicate: general skills and seed-prompt accuracy of
    base / rl / fst, and the 2x2 table {base, fst weights} x {seed, fst prompt}. The base's own
    numbers are the same for every run seed and are measured once (base_cache)."""
    task = tasks.make_task(task_name, n_val=preset["n_val"])  # the runs' own val split
    broot, device = suite.base_root(root, rep[0]), base.wte.weight.device
    models = {"base": (base, None)}
    for m in ("rl", "fst"):
        model, extra = load_checkpoint(
            os.path.join(suite.run_dir(broot, task_name, m, rep[1]), "model.pt"), device)
        models[m] = (model.eval(), extra)
    out = {"c4": {}, "c7": {}}
    for name, (model, _) in models.items():
        cache = base_cache if name == "base" else {}  # a base's numbers: the same for every seed
        g, p = ("general", rep[0]), ("no_prompt", rep[0], task_name)
        if g not in cache:
            cache[g] = ev.general_accuracy(model, enc)
        if p not in cache:
            cache[p] = ev.task_accuracy(model, enc, task.seed_prompt, task.val, samples,
                                        greedy=False)[0]
        out["c4"][name] = {"general_acc": cache[g], "no_prompt_acc": cache[p]}
    fst_prompt = models["fst"][1]["deployed_prompt"]
    for wname, mname in (("base_weights", "base"), ("fst_weights", "fst")):
        out["c7"][wname] = {"seed_prompt": out["c4"][mname]["no_prompt_acc"],
                            "fst_prompt": ev.task_accuracy(models[mname][0], enc, fst_prompt,
                                                           task.val, samples, greedy=False)[0]}
    return out


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
    """C7 as the paper states it, a pattern: which channel carries the gain depends on the task
    (stats.pattern_row on prompt's gain - weights' gain, PROMPT_TASKS vs WEIGHTS_TASKS)
    -> [its row], or [] before any of those tasks has its C7 table."""
    tasks_ = [t for t in PROMPT_TASKS + WEIGHTS_TASKS if t in c7_channels]
    if not tasks_:
        return []
    return [stats.pattern_row(
        "C7 channel split (pattern)", {t: c7_channels[t]["prompt_minus_weights"] for t in tasks_},
        {t: 1 if t in PROMPT_TASKS else -1 for t in tasks_}, "prompt's gain - weights' gain")]


# C8: "left zero reward" = the training reward, averaged over the last 5 steps, reaches 0.05 (the
# level at which select_tasks.CRITERIA says a context unlocks RL). One lucky success is not leaving
# zero: RL-only on `sparse` had isolated successes from step 1 while its mean stayed <= 0.02 for 50
# steps (the first replicate, base 0 seed 0, which is why this definition replaced "first success").
ZERO_LEVEL, ZERO_WINDOW = 0.05, 5


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
    'not by then' rather than at a made-up time. -> (results.json's c8_exploration, its rows)."""
    runs = {m: replicates(root, reps, suite.EXPLORATION_TASK, m) for m in ("rl", "fst")}
    keys = [r for r in reps if all(r in v for v in runs.values())]
    out = {"task": suite.EXPLORATION_TASK, "level": ZERO_LEVEL, "window": ZERO_WINDOW}
    steps, cens = {}, {}
    for m, v in runs.items():
        found = [leave_zero(v[r]) for r in keys]
        # censored runs enter at their length: a lower bound on the steps they would need
        steps[m] = [f if f is not None else v[r][-1]["step"] + 1 for f, r in zip(found, keys)]
        cens[m] = [f is None for f in found]
        out[m] = {"steps_to_leave_zero": stats.mean_std(steps[m], keys),
                  "censored": found.count(None),
                  "first_success": stats.mean_std([first_success(v[r]) for r in keys], keys),
                  "final_val_acc": stats.mean_std([_final(v[r]) for r in keys], keys)}
    if not keys:
        return out, []
    return out, [stats.row(
        "C8 leaves zero sooner", suite.EXPLORATION_TASK,
        f"Gehan score, steps until the {ZERO_WINDOW}-step mean reward reaches {ZERO_LEVEL} "
        "(+1: FST first)",
        {r: stats.gehan_score(steps["fst"][i], cens["fst"][i], steps["rl"][i], cens["rl"][i])
         for i, r in enumerate(keys)},
        detail=f"never: RL {out['rl']['censored']}, FST {out['fst']['censored']}")]


def reflector_sweep(root, seeds, hit_rates):
    """C1 and C3 of FST with each reflector on the first base (the default's runs included). Its
    rows are a family of their own (n = run seeds: below MIN_N, no verdict, in the default grid).
    -> ({reflector: {task: hit rate, told, n, c1_profile}} of those with runs, the rows)."""
    reps = [(0, s) for s in seeds]
    out, rows = {}, []
    for name, method in [("edit", "fst")] + [(n, f"fst-{n}") for n in suite.SWEEP_REFLECTORS]:
        out[name] = {}
        for t in suite.SUITE_TASKS:
            rl, fst = replicates(root, reps, t, "rl"), replicates(root, reps, t, method)
            keys = [r for r in reps if r in rl and r in fst]
            if not keys:
                continue
            c1_, new = c1(rl, fst, keys, t)
            new += c3(rl, fst, keys, None, "kl", t)[1]
            for r in new:
                r["reflector"] = name
            rows += new
            out[name][t] = {"first_hit_rate": hit_rates.get(t, {}).get(name),
                            "told": tasks.NAMED_TASKS[t].told, "n": len(keys),
                            "c1_profile": c1_["profile"]}
    return {k: v for k, v in out.items() if v}, rows


# -----------------------------------------------------------------------------
# the report

def claims_and_plots(root, reps, base_models, preset, folder):
    """C1-C8 over the replicates `reps` -> (results.json's sections of them, every claim and
    control row in order, the plots' names in `folder`)."""
    res = {k: {} for k in ("curves", "runs", "rl_gain_by_base", "controls", "c1_sample_efficiency",
                           "c2_asymptote", "c3_kl_at_matched_reward", "c4_forgetting",
                           "c7_channels")}
    claims, plots, base_cache = [], [], {}  # base_cache: a base's numbers, once for every seed
    for t in suite.SUITE_TASKS:
        part, rows, names = task_claims(root, reps, t, base_models, preset, folder, base_cache)
        for k, v in part.items():
            res[k][t] = v
        claims += rows
        plots += names
    claims += c7_pattern(res["c7_channels"])
    res["c5_plasticity"], rows, names = plasticity(root, reps, folder)
    claims += rows
    plots += names
    res["c6_continual"], rows, names = continual(root, reps, folder)
    claims += rows
    plots += names
    res["c8_exploration"], rows = exploration(root, reps)
    return res, claims + rows, plots


def write_report(root, bases, seeds, suite_wall_s, device="cpu", out=None, hit_rates=None):
    """Compute C1-C8 from the runs under `root` (bases 0..bases-1 x seeds 0..seeds-1) on `device`;
    label every claim and control row (Holm over all of them, stats.label_family); write
    results.json, report.md and PNG plots to `out` (default root). -> results.json's dict."""
    out = out or root
    os.makedirs(out, exist_ok=True)
    reps = [(b, s) for b in range(bases) for s in range(seeds)]
    base_models, metrics = {}, {}
    for b in range(bases):
        model, extra = load_checkpoint(suite.base_path(root, b), device)
        # each pretraining seed builds its own BPE: a base is read with its own tokenizer
        base_models[b] = (model.eval(), tasks.tokenizer_from_state(extra["tokenizer"]))
        metrics[b] = extra["metrics"]
    preset = run_config(root, reps) or metrics[0]["preset"]
    sections, claims, plots = claims_and_plots(root, reps, base_models, preset, out)
    res = {"preset": preset["name"], "bases": list(range(bases)), "seeds": list(range(seeds)),
           "replicates": len(reps), "wall_s": suite_wall_s,
           "base_quality": {b: {"general_acc": m["general_acc"],
                                "min_op_acc": min(m["acc_by_op"].values()),
                                "acc_by_op": m["acc_by_op"], "wall_s": m["wall_s"]}
                            for b, m in metrics.items()},
           "claims": claims, "family": stats.label_family(claims), **sections}
    if len(reps) == 1:  # one replicate: its numbers beside the committed grid's intervals
        res["grid_reference"] = ev.grid_reference(res["preset"], res["claims"])
    if hit_rates is None and os.path.exists(os.path.join(root, "hit_rates.json")):
        with open(os.path.join(root, "hit_rates.json")) as f:
            hit_rates = json.load(f)
    res["reflector_sweep"], res["reflector_sweep_rows"] = reflector_sweep(root, range(seeds),
                                                                          hit_rates or {})
    res["reflector_sweep_family"] = stats.label_family(res["reflector_sweep_rows"])
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
    L = [f"# fastslow report: preset `{res['preset']}`", "",
         f"Bases (pretraining seeds) {res['bases']} x run seeds {res['seeds']} = {n} replicates; "
         f"wall time {res['wall_s']:.0f} s (pretraining and every run, each on its own clock, "
         "summed). Accuracy = exact match on the 256-problem val split at the training "
         "temperature, with each method's deployed prompt. Values: mean [95% interval] over "
         "replicates; intervals resample bases, then run seeds within each base, so with "
         f"{len(res['bases'])} bases an interval describes these bases, not bases in general.",
         "", f"Tests: the family is every row below with a p value ({fam['rows']} rows, "
         f"{fam['tests']} tests), Holm-corrected to a family-wise error rate of {fam['alpha']}. "
         "Labels: `reproduced` / `not reproduced` (the adjusted test excludes 0 in / against "
         "the paper's direction), `inconclusive`, `equivalent` (TOST within "
         f"+-{stats.EQUIV_MARGIN}, for a claim of matching), `not tested` (the comparison cannot "
         "test the claim), `not identifiable` (C2 without an observed plateau), "
         f"`n < {stats.MIN_N}` (no verdict); controls: `higher` / `lower` / `tie` / `= rl`.",
         *stats.single_replicate_lines(res.get("grid_reference")),
         "", "## Bases", "", "| base | general acc | weakest op | wall s |", "|---|---|---|---|"]
    for b, q in res["base_quality"].items():
        L.append(f"| {b} | {q['general_acc']:.3f} | {q['min_op_acc']:.3f} | {q['wall_s']:.0f} |")
    L += ["", "## Claims", ""] + stats.table([r for r in res["claims"]
                                              if r["claim"] != "control"])
    L += ["", "## C1 profile (untested cells shown for the whole picture)", ""]
    L += stats.profile_table({t: d["profile"] for t, d in res["c1_sample_efficiency"].items()})
    L += _runs_lines(res)
    L += ["", "## C7: {base, FST weights} x {seed, FST prompt}", "",
          "| task | base + seed | base + FST prompt | FST weights + seed | "
          "FST weights + FST prompt | prompt's gain | weights' gain |",
          "|---|---|---|---|---|---|---|"]
    for t, d in res["c7_channels"].items():
        L.append(f"| {t} | {_m(d['base_weights']['seed_prompt'])} | "
                 f"{_m(d['base_weights']['fst_prompt'])} | "
                 f"{_m(d['fst_weights']['seed_prompt'])} | {_m(d['fst_weights']['fst_prompt'])} | "
                 f"{_m(d['prompt_gain'])} | {_m(d['weights_gain'])} |")
    L += _sweep_lines(res)
    L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def _runs_lines(res):
    """The runs table with each control's comparison, and RL-only's gain base by base."""
    L = ["", "## Runs and controls (final val acc; FST minus the control, paired by replicate)",
          "",
          "Gain = final minus first val accuracy (after step 0); its minimum over replicates shows "
          "whether every replicate learned (the fair-test bar for RL only: >= 0.3).", "",
          "| task | method | final val acc | gain (min) | FST - it | label | rollouts | wall s |",
          "|---|---|---|---|---|---|---|---|"]
    ctl = {(r["task"], r["method"]): r for r in res["claims"] if r["claim"] == "control"}
    for t, d in res["runs"].items():
        for m, v in d.items():
            c = ctl.get((t, m))
            L.append(f"| {t} | {m} | {_m(v['final_val_acc'])} | {_m(v['gain'], 2)} "
                     f"({_m(v['min_gain'], 2)}) | {stats.fmt(c) if c else ''} | "
                     f"{(c['label'] + ' ' + stats.fmt_p(c)).strip() if c else ''} | "
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


def _sweep_lines(res):
    if not res.get("reflector_sweep_rows"):
        return []
    return ["", "## Reflector sweep (first base): how much of FST's gain depends on the reflector",
            "", "A family of its own; first-proposal hit rates: " + "; ".join(
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


def build_parser():
    ap = CLIParser(prog="python -m harness.report",
                   description="rebuild report.md, plots and results.json from existing runs")
    ap.add_argument("--preset", default="tiny", help="the runs under runs/<preset>")
    ap.add_argument("--bases", type=positive(int, MOST_SEEDS), default=1,
                    help=f"bases (pretraining seeds 0..N-1) (at most {MOST_SEEDS})")
    ap.add_argument("--seeds", type=positive(int, MOST_SEEDS), default=1,
                    help=f"run seeds 0..N-1 (at most {MOST_SEEDS})")
    ap.add_argument("--out", type=FOLDER, default=None,
                    help="write the report here (default runs/<preset>)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--hit-rates", action="store_true",
                    help="only: each reflector's first-proposal hit rate "
                         "(-> runs/<preset>/hit_rates.json)")
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
    root = os.path.join("runs", args.preset)
    if not os.path.exists(suite.base_path(root, 0)):
        raise UserError(f"no runs under {root}; run `python train.py --preset {args.preset}` first")
    writable_folder(args.out or root)
    if not args.hit_rates:
        unfinished_suite(root, args.bases, args.seeds, args.preset)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
    device = setup_device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
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
    write_report(root, args.bases, args.seeds, wall, device=device, out=out)
    print(f"wrote {out}/report.md")


if __name__ == "__main__":
    main()
