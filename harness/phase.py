"""
phase.py: the phase diagram. When does FST help? A grid over two dials, every cell run against the
same RL-only baseline and controls:

    python -m harness.phase --run --bases 3 --seeds 3   # every run (resumable), then the report
    # the report alone
    python -m harness.phase --preset tiny --bases 3 --seeds 3 --out results/tiny/phase
    # keep the finished runs
    python -m harness.phase --bases 3 --seeds 3 --archive results/tiny/phase/runs
    cp -r results/tiny/phase/runs/. runs/tiny/    # a fresh checkout: resume the grid from them

- carriability (tasks.DIAL_LEVELS): the cipher under a context budget that fits k = 3, 2, 1, 0 of
  its 3 table entries. What a prompt within the budget can carry is measured on the bases alone,
  before any run (`python -m harness.select_tasks --dial`).
- reflector strength (REFLECTORS): `edit`, and `edit:0.9`, whose proposals are wrong with
  probability 0.9 (reflectors.NoisyReflector); strength = 1 - P. RL-only is strength "none".

Per cell (level x reflector) and replicate (base x run seed): FST, the sequential control and
context-only (GEPA on the frozen base, whose logs measure the reflector before any FST run). RL-only
and instructed RL ignore the budget (the seed prompt is 4 tokens; the instruction is the free
ceiling), so they are the cipher's runs and are shared by every cell. Runs are ordered replicate by
replicate (seed-major over bases), so a grid stopped early holds whole replicates of every cell.
"""

import glob
import json
import math
import os
import shutil

import numpy as np
import torch

import train  # the grid's runs are train.run's (the report part reads only files)
from harness import claims as cl  # the numbers behind the claims, from log rows
from harness import report, stats
from harness.hit_rates import hit_rate_table
from harness.cli import FOLDER, MOST_SEEDS, CLIParser, UserError, exit_on_user_error, positive
from harness.runs import (base_path, base_root, finished, method_folder, plasticity_init,
                          read_suite, replicates, run_all, run_dir, write_suite)
from model import write_atomic
from world import pretrain, tasks

LEVELS = tasks.DIAL_LEVELS                 # k: table entries the budget fits
REFLECTORS = ("edit", "edit:0.9")          # strength 1.0 and 0.1
CELL_METHODS = ("fst", "sequential")       # run per cell; context-only too, in wave 1
SHARED_METHODS = ("rl", "instructed")      # one run per replicate, every cell's baseline
SHARED_TASK = "cipher"


def level_task(k):
    return f"cipher-k{k}"


def replicate_order(bases, seeds):
    """(base, seed) pairs seed-major: every base's seed 0 first."""
    return [(b, s) for s in range(seeds) for b in range(bases)]


def jobs(preset, root, bases=3, seeds=3):
    """Every run of the phase diagram as (wave, folder, run kwargs), like train.suite_runs. Wave 1:
    context-only in every cell (the reflectors on the frozen bases); wave 2: the training runs,
    replicate by replicate."""
    out = []
    for wave in (1, 2):
        for b, seed in replicate_order(bases, seeds):
            broot = base_root(root, b)
            base = base_path(root, b)

            def add(method, task, folder, reflector="edit"):
                out.append((wave, run_dir(broot, task, folder, seed),
                            dict(method=method, schedule=[(task, preset.steps)], init=base,
                                 seed=seed, base=base, reflector=reflector)))
            if wave == 2:
                for method in SHARED_METHODS:
                    add(method, SHARED_TASK, method)
            for k in LEVELS:
                for refl in REFLECTORS:
                    for method in (("context",) if wave == 1 else CELL_METHODS):
                        add(method, level_task(k), method_folder(method, refl), refl)
    return out


# -----------------------------------------------------------------------------
# the report: per cell and replicate the five measures, then intervals and labels

MEASURES = {  # name: (what, the value when FST does the paper's thing is ...)
    "c1_0.9": "FST's speed-up to 0.9 of RL's plateau (RL's steps / FST's; geometric mean)",
    "gap": "mean val accuracy over the run, FST - RL",
    "vs_instructed": "mean val accuracy over the run, FST - instructed",
    "vs_sequential": "mean val accuracy over the run, FST - sequential",
    "kl_ratio": "KL(FST) / KL(RL) at matched reward (deployed prompt; geometric mean)",
}


def mean_acc(rows):
    accs = [r["val_acc"] for r in rows if "val_acc" in r]
    return sum(accs) / len(accs)


def gepa_settles(rows):
    """Context-only on the frozen base: the rounds until the deployed prompt stops changing (1 +
    the last round at which it changed), its final val accuracy, and the prompt."""
    prompts = [r["prompt"] for r in rows if "prompt" in r]
    last = max([i for i in range(1, len(prompts)) if prompts[i] != prompts[i - 1]], default=0)
    final = [r for r in rows if "val_acc" in r][-1]
    return {"rounds": last + 1, "final_acc": final["val_acc"], "prompt": final["prompt"]}


def cell_replicates(root, reps, k, refl, shared):
    """{(base, seed): {measure: value, ...}} of one cell, for replicates whose runs all finished.
    shared: {method: replicates(...)} of RL-only and instructed, read once for every cell.
    Each replicate also keeps what the labels need: the context-only run's best val acc (the level
    the prompt alone reaches), whether C1's level and C3's matched level are at or below it, and
    whether FST's deployed prompt ever left the seed prompt (never: an A/A comparison with RL)."""
    own = {m: replicates(root, reps, level_task(k), method_folder(m, refl))
           for m in CELL_METHODS + ("context",)}
    seed_prompt = tasks.make_task(level_task(k)).seed_prompt
    out = {}
    for key in reps:
        if not all(key in got for got in list(shared.values()) + list(own.values())):
            continue
        rl, fst = shared["rl"][key], own["fst"][key]
        prof = cl.c1_profile(rl, fst)
        c1 = prof["levels"]["0.9"]["steps"]
        ctx = gepa_settles(own["context"][key])
        ceiling = max(cl.curve(own["context"][key])[1])  # the prompt alone, as report.c1 reads it
        kl = cl.kl_at_matched_reward(rl, fst, floor=ceiling)
        out[key] = {"c1_0.9": c1["ratio"], "c1_0.9_score": c1["score"],
                    "c1_0.9_censored": c1["fst_censored"], "c1_0.9_at_first": c1["fst_at_first"],
                    "c1_0.9_prompt_alone": bool(ceiling >= prof["levels"]["0.9"]["level"]
                                                - stats.EPS),
                    "gap": prof["mean_acc"]["diff"],
                    "vs_instructed": mean_acc(fst) - mean_acc(shared["instructed"][key]),
                    "vs_sequential": mean_acc(fst) - mean_acc(own["sequential"][key]),
                    "kl_ratio": kl["ratio"], "kl_above_floor": kl["above_floor"], "kl": kl,
                    "rl_plateau": prof["plateau"], "context": ctx, "context_best": ceiling,
                    "fst_left_seed_prompt": any(r.get("prompt", seed_prompt) != seed_prompt
                                                for r in fst if "val_acc" in r)}
    return out


def cell_rows(k, refl, per):
    """The rows of one cell (stats.row; labels by stats.label through label_family), with the
    paper's direction. Every row is exploratory: the primary family is the suite report's. C1's
    level and C3's matched level are guarded as in the suite report (the prompt alone reaching
    them in most replicates: 'not tested'); a cell where FST's prompt never left the seed prompt
    is an A/A comparison with RL ('noise floor', on the rows of FST against RL). The gap row carries
    its attribution: the same statistic against sequential and instructed."""
    keys = sorted(per)
    pick = lambda m: {key: per[key][m] for key in keys if per[key][m] is not None}
    name = f"k={k} {refl}"
    aa = bool(keys) and not any(per[key]["fst_left_seed_prompt"] for key in keys)
    alone = sum(per[key]["c1_0.9_prompt_alone"] for key in keys)
    c1 = stats.row("C1", name, "c1_0.9", pick("c1_0.9_score"), direction=1, aa=aa,
                   prompt_alone=(alone, len(keys)),
                   ratio=cl.ratio_summary([per[key]["c1_0.9"] for key in keys],
                                             [per[key]["c1_0.9_at_first"] for key in keys],
                                             [per[key]["c1_0.9_censored"] for key in keys], keys))
    # C3 as the suite report computes it (stats.kl_ratio_row), named by this report's measure
    kl = stats.kl_ratio_row(name, {key: per[key]["kl"] for key in keys
                                   if per[key]["kl"]["rl_kl"] is not None}, "deployed prompts")
    kl.update(claim="C3", measure="kl_ratio", aa=aa)
    vs = {m: stats.row("control", name, f"vs_{m}", pick(f"vs_{m}"), kind="control")
          for m in ("sequential", "instructed")}  # not A/A: the control is another method
    gap = stats.attribute(stats.row("gap", name, "gap", pick("gap"), direction=1, aa=aa), vs)
    return [c1, gap, vs["instructed"], vs["sequential"],
            kl]


def mean_curves(root, reps, task, method):
    """Mean val accuracy over the replicates that finished, by step: {step: [...], acc: [...]}."""
    runs = list(replicates(root, reps, task, method).values())
    if not runs:
        return None
    xs, _ = cl.curve(runs[0])
    curves = [cl.curve(r)[1] for r in runs]
    n = min(len(c) for c in curves)
    return {"step": xs[:n], "acc": [sum(c[i] for c in curves) / len(curves) for i in range(n)],
            "n": len(curves)}


def noise_floor(cells):
    """The cells where FST's prompt never left the seed prompt (k = 0: nothing fits the budget)
    are A/A comparisons of FST with RL-only: two runs of the same method on other random streams.
    Their per-replicate spread is the noise floor of one run. -> {cell: {measure: {min, max,
    sd, n}}} for the gap and its last-four-evals version."""
    out = {}
    for name, cell in cells.items():
        if not any(r.get("aa") for r in cell["rows"]):
            continue
        vals = [v["gap"] for v in cell["per_replicate"].values()]
        out[name] = {"gap": {"min": min(vals), "max": max(vals), "sd": float(np.std(vals, ddof=1))
                             if len(vals) > 1 else None, "n": len(vals)}}
    return out


def write_report(root, bases, seeds, wall_s, device="cpu", out=None):
    """Every cell's measures over the replicates that finished, labelled by stats.label (all
    exploratory, with the suite's guards), the dial's and the reflectors' base measurements
    (dial.json, phase_hit_rates.json when present)
    -> phase.json, phase.md and one heatmap per measure in `out` (default root/phase)."""
    out = out or os.path.join(root, "phase")
    os.makedirs(out, exist_ok=True)
    reps = replicate_order(bases, seeds)
    res = {"bases": bases, "seeds": seeds, "wall_s": wall_s, "cells": {}, "curves": {},
           "measures": MEASURES, "_out": out}
    rows = []
    shared = {m: replicates(root, reps, SHARED_TASK, m) for m in SHARED_METHODS}
    for k in LEVELS:
        for refl in REFLECTORS:
            per = cell_replicates(root, reps, k, refl, shared)
            cell = {"n": len(per), "rows": cell_rows(k, refl, per),
                    "per_replicate": {stats.rep_name(key): v for key, v in per.items()}}
            rows += cell["rows"]
            res["cells"][f"k{k} {refl}"] = cell
            for m in CELL_METHODS + ("context",):
                res["curves"][f"k{k} {method_folder(m, refl)}"] = mean_curves(
                    root, reps, level_task(k), method_folder(m, refl))
    for m in SHARED_METHODS:
        res["curves"][f"cipher {m}"] = mean_curves(root, reps, SHARED_TASK, m)
    # the fair-test bar: RL-only learns the cipher (last eval - first eval, per replicate)
    res["rl_gain"] = {stats.rep_name(key): cl.curve(r)[1][-1] - cl.curve(r)[1][0]
                      for key, r in shared["rl"].items()}
    res["c2"] = c2_long(root, bases)
    if res["c2"] and "row" in res["c2"]:
        rows.append(res["c2"]["row"])
    res["family"] = stats.label_family(rows)  # no primary rows here: the suite report's family
    res["methods"] = dict(stats.METHODS_TEXT, family="every row here is exploratory (no "
                          "verdict); the primary family is the suite report's (report.PRIMARY)")
    res["noise_floor"] = noise_floor(res["cells"])
    for r in rows:
        r.pop("boots", None)
    for name in ("dial.json", "phase_hit_rates.json"):
        if os.path.exists(os.path.join(root, name)):
            with open(os.path.join(root, name)) as f:
                res[name.split(".")[0]] = json.load(f)
    for m in MEASURES:
        heatmap(os.path.join(out, f"phase_{m}.png"), res, m)
    del res["_out"]
    write_atomic(os.path.join(out, "phase.json"), json.dumps(res, indent=1, default=float))
    write_atomic(os.path.join(out, "phase.md"), render(res))
    res["_out"] = out
    return res


def cell_value(res, k, refl, measure):
    """The cell's row for `measure`, or None."""
    cell = res["cells"].get(f"k{k} {refl}")
    return next((r for r in cell["rows"] if r["measure"] == measure), None) if cell else None


def shown(r, measure):
    """A row's mean on the measure's own scale (ratios back from logs)."""
    if r is None or r["mean"] is None:
        return None
    if measure == "kl_ratio":
        return math.exp(r["mean"])
    if measure == "c1_0.9":
        return r["ratio"]["geo_mean"]
    return r["mean"]


def heatmap(path, res, measure):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    vals = np.array([[shown(cell_value(res, k, refl, measure), measure) or np.nan
                      for refl in REFLECTORS] for k in LEVELS], float)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    im = ax.imshow(vals, cmap="viridis", aspect="auto")
    for i, k in enumerate(LEVELS):
        for j, refl in enumerate(REFLECTORS):
            r = cell_value(res, k, refl, measure)
            text = "n/a" if np.isnan(vals[i, j]) else f"{vals[i, j]:.2f}\n{r['label']}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(REFLECTORS)), [f"{r} (strength {1 - reflectors_p(r):g})"
                                           for r in REFLECTORS], fontsize=7)
    ax.set_yticks(range(len(LEVELS)), [f"k={k}" for k in LEVELS], fontsize=7)
    ax.set_title(MEASURES[measure], fontsize=7)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reflectors_p(spec):
    from world import reflectors
    return reflectors.parse_reflector(spec)[1]



def _fmt(r, measure):
    if r is None or r["mean"] is None:
        return "n/a" if r is None else f"n/a: {r['label']} ({r['why']})"
    label = r["label"] + (f": {r['why']}" if r["label"] == "not tested" and r["why"] else "")
    if r.get("vs"):
        label += "; survives sequential / instructed: " + " / ".join(
            (r["vs"].get(m) or {}).get("survives", "n/a") for m in ("sequential", "instructed"))
    lo, hi = r["ci95"]
    if measure == "kl_ratio":
        lo, hi = math.exp(lo), math.exp(hi)
    if measure == "c1_0.9":
        q = r["ratio"]
        ratio = "n/a" if q["geo_mean"] is None else (
            f"{q['geo_mean']:.2f} [{q['ci95'][0]:.2f}, {q['ci95'][1]:.2f}]"
            f"{' ' + str(q['n_lower_bounds']) + ' low' if q['n_lower_bounds'] else ''}"
            f"{' ' + str(q['n_upper_bounds']) + ' high' if q['n_upper_bounds'] else ''}")
        return f"{ratio}; score {r['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] {label} (n={r['n']})"
    return f"{shown(r, measure):+.3f} [{lo:+.3f}, {hi:+.3f}] {label} (n={r['n']})"


def render(res):
    """phase.md: the dial on the bases, the reflectors on the bases, then the diagram."""
    lines = ["# The phase diagram: carriability x reflector strength (cipher)", "",
             f"Replicates: {res['bases']} bases x {res['seeds']} run seeds, ordered seed-major; a "
             "cell counts the replicates whose runs all finished (n). Values: mean [95% interval]. "
             f"Intervals: {res['methods']['interval']}; with 3 bases an interval describes these "
             "bases, not bases in general. Every row here is exploratory and carries no verdict "
             "(the primary family, one test per claim, is the suite report's). The labels come "
             "from the suite report's one rule (stats.label): `not tested` where the prompt alone "
             "(the context-only run) reaches C1's level or C3's matched level in most replicates, "
             "`noise floor` where FST's prompt never left the seed prompt (an A/A comparison with "
             "RL-only), `n < 5` below five replicates. The gap row says whether FST's lead over RL "
             "survives each control (yes: FST - control's interval lies above 0). Instructed RL "
             "gets the whole table whatever the budget: at k < 3 it is a ceiling, not a control.",
             "", "Stage wall time summed: " + ("n/a" if res["wall_s"] != res["wall_s"]
                                               else f"{res['wall_s']:.0f} s"), ""]
    gains = res["rl_gain"]
    if gains:
        per = ", ".join(f"{k} {v:.2f}" for k, v in gains.items())
        lines += [f"RL-only's gain on the cipher (last eval - first; the bar is 0.3), per "
                  f"replicate: {per}. Reflector strength 'none' is RL-only itself: every measure "
                  "below is 0 (or a ratio of 1) there by definition.", ""]
    if "dial" in res:
        lines += ["## What a prompt within each budget carries (measured on the bases first)", "",
                  "| k | budget | per base: best prompt's mean@4 (carried = best / told) |",
                  "|---|---|---|"]
        for k, lvl in res["dial"]["levels"].items():
            cells = "; ".join(f"b{b}: {x['best']:.2f} ({x['carried']:.2f}) `{x['best_prompt']}`"
                              for b, x in enumerate(lvl["per_base"]))
            lines.append(f"| {k} | {lvl['budget']} | {cells} |")
        told = "; ".join(f"b{b}: seed {x['seed']:.2f}, told {x['told']:.2f}"
                         for b, x in enumerate(res["dial"]["levels"]["3"]["per_base"]))
        lines += ["", f"Seed prompt and full instruction: {told}. Criteria per base "
                  f"(select_tasks.DIAL_CRITERIA): {res['dial']['sound']}", ""]
    if "phase_hit_rates" in res:
        lines += ["## The reflectors on the frozen bases: first-proposal hit rate", "",
                  "| base | task | " + " | ".join(HIT_REFLECTORS) + " |",
                  "|---|---|" + "---|" * len(HIT_REFLECTORS)]
        for b, by_task in res["phase_hit_rates"].items():
            for t, rates in by_task.items():
                shown_rates = ["n/a" if rates[r] is None else f"{rates[r]:.2f}"
                               for r in HIT_REFLECTORS]
                lines.append(f"| {b} | {t} | " + " | ".join(shown_rates) + " |")
        lines.append("")
    lines += _context_lines(res)
    for m, what in MEASURES.items():
        lines += ["", f"## {what}", "", "![](phase_" + m + ".png)", "",
                  "| k | " + " | ".join(REFLECTORS) + " |", "|---|" + "---|" * len(REFLECTORS)]
        for k in LEVELS:
            lines.append(f"| {k} | " + " | ".join(_fmt(cell_value(res, k, r, m), m)
                                                  for r in REFLECTORS) + " |")
    if res.get("c2"):
        lines += [""] + render_c2(res["c2"])
    return "\n".join(lines) + "\n"


def _context_lines(res):
    """phase.md's context-only table (GEPA on the frozen bases) and k = 0's noise floor."""
    lines = ["## Context-only on the frozen bases (GEPA to its budget, before any FST run)", "",
             "| k | reflector | rounds until the deployed prompt stops changing | its final val "
             "acc | n |", "|---|---|---|---|---|"]
    for k in LEVELS:
        for refl in REFLECTORS:
            ctx = [v["context"] for v in res["cells"][f"k{k} {refl}"]["per_replicate"].values()]
            if ctx:
                lines.append(f"| {k} | {refl} | {sum(c['rounds'] for c in ctx) / len(ctx):.1f} | "
                             f"{sum(c['final_acc'] for c in ctx) / len(ctx):.3f} | {len(ctx)} |")
    if res.get("noise_floor"):
        lines += ["", "## k = 0: the noise floor of one run (an A/A test)", "",
                  "Nothing but the seed prompt fits the budget, and FST's deployed prompt never "
                  "left it: FST is RL-only on another random stream. The spread of FST - RL over "
                  "replicates is what one run's noise alone gives; a single-replicate difference "
                  "inside it is not an effect.", "",
                  "| cell | mean val acc FST - RL: min | max | sd | n |", "|---|---|---|---|---|"]
        for name, d in res["noise_floor"].items():
            g = d["gap"]
            sd = "n/a" if g["sd"] is None else f"{g['sd']:.3f}"
            lines.append(f"| {name} | {g['min']:+.3f} | {g['max']:+.3f} | {sd} | {g['n']} |")
    return lines


# -----------------------------------------------------------------------------
# C2 on the dial: one level run long, its budget set from RL-only's long curves alone (LOG.md)

C2_LEVEL, C2_REFLECTOR = 2, "edit"     # the dial's middle level, the default reflector
C2_RL_STEPS = 800                      # RL-only's long runs (cipher), run seed 0 on every base
C2_WINDOW, C2_MOVE = 200, 0.05         # flat: moved < C2_MOVE from B - C2_WINDOW to the end
C2_RL_TASK = f"{SHARED_TASK}-long{C2_RL_STEPS}"


def c2_budget(rl_runs, steps=C2_RL_STEPS, window=C2_WINDOW, move=C2_MOVE):
    """-> (B, met): B the smallest multiple of 100 steps from which back `window` steps every
    RL-only curve (log rows) moves by less than `move` (max - min of its evals) to its end, met
    True; (steps, False) if none."""
    for budget in range(window, steps + 1, 100):
        if all(np.ptp([a for x, a in zip(*cl.curve(rows)) if x > budget - window]) < move
               for rows in rl_runs.values()):
            return budget, True
    return steps, False


def c2_task(budget):
    return f"{level_task(C2_LEVEL)}-long{budget}"


def c2_long(root, bases, seed=0):
    """RL-only's long runs -> B; FST at C2_LEVEL for B steps; report.c2 on both, RL cut at B.
    -> {budget, rl (each base's long curve), row, fits} (row once FST's runs are there), or None
    before RL-only's long runs finished."""
    reps = [(b, seed) for b in range(bases)]
    rl = replicates(root, reps, C2_RL_TASK, "rl")
    if len(rl) < bases:
        return None
    budget, met = c2_budget(rl)
    out = {"budget": budget, "rule_met": met, "rl_steps": C2_RL_STEPS,
           "task": c2_task(budget),
           "rl": {stats.rep_name(k): cl.curve(rows) for k, rows in rl.items()}}
    fst = replicates(root, reps, c2_task(budget), method_folder("fst", C2_REFLECTOR))
    if len(fst) == bases:
        cut = {k: [r for r in rows if r["step"] < budget] for k, rows in rl.items()}
        out["fits"], claims = report.c2(cut, fst, sorted(fst), c2_task(budget))
        out["row"] = claims[0]
        out["fst"] = {stats.rep_name(k): cl.curve(rows) for k, rows in fst.items()}
    return out


def render_c2(c2):
    """phase.md's C2 section."""
    lines = [f"## C2 on the dial: a long run at k = {C2_LEVEL}", ""]
    finals = "; ".join(f"{k}: {ys[-1]:.2f} at step {xs[-1]}" for k, (xs, ys) in c2["rl"].items())
    how = (f"the smallest multiple of 100 from which back {C2_WINDOW} steps every base's curve "
           f"moves by less than {C2_MOVE} to its end" if c2["rule_met"] else
           f"no budget up to {c2['rl_steps']} steps has every base's curve flat; RL's plateau is "
           "not observed")
    lines += [f"RL-only on the cipher for {c2['rl_steps']} steps (final val acc {finals}) sets the "
              f"budget B = {c2['budget']} steps: {how}."]
    if "row" not in c2:
        return lines + ["", f"FST at `{c2['task']}` has not run yet.", ""]
    r, fits = c2["row"], c2["fits"]
    lines += ["", "| method | A | A's 95% interval | identified? |", "|---|---|---|---|"]
    for m in ("rl", "fst"):
        f = fits[m]
        lines.append(f"| {m} | {f['A']:.3f} | [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}] | "
                     f"{'yes' if f['identifiable'] else 'no: ' + f['why']} |")
    lines += ["", f"A(FST) - A(RL): {r['mean']:.3f}, n = {r['n']}, label `{r.get('label')}`"
              + (f" ({r['why']})" if r.get("why") else ""), "",
              f"Per replicate: the last {stats.PLATEAU_EVALS} evals' mean (the level each run "
              "ends on) and A of its own fit, RL / FST:", ""]
    end = lambda ys: float(np.mean(ys[-stats.PLATEAU_EVALS:]))
    for k, a in r["per_replicate"].items():
        lines.append(f"- {k}: end {end(c2['rl'][k][1]):.2f} / {end(c2['fst'][k][1]):.2f}; "
                     f"A {a['A_rl']:.2f} / {a['A_fst']:.2f}")
    return lines + [""]


# -----------------------------------------------------------------------------
# the reflectors on the frozen bases, before any FST run (--hit-rates); the archive

HIT_REFLECTORS = ("oracle", "oracle:0.5", "oracle:0.9", "edit", "edit:0.5", "edit:0.9",
                  "demo")


def archive(root, bases, seeds, dest):
    """Copy the grid's finished runs (runs.finished: log.jsonl and summary.json; weights only
    where an unfinished plasticity run starts from them) and the bases (model.pt, metrics.json)
    from `root` into `dest`, same layout, with dial.json and phase_hit_rates.json. A checkout that
    copies `dest` back (cp -r DEST/. runs/<preset>/) resumes the grid where it stood. -> the number
    of runs copied."""
    def copy(folder, names):
        to = os.path.join(dest, os.path.relpath(folder, root))
        os.makedirs(to, exist_ok=True)
        for name in names:
            shutil.copyfile(os.path.join(folder, name), os.path.join(to, name))
    S = read_suite(root)
    keep = {plasticity_init(root, b, init, s, S.prior_task)  # an unfinished probe's init
            for b in range(bases) for s in range(seeds) for init in S.plasticity_inits
            if init != "base" and not finished(run_dir(base_root(root, b),
                                                             "plasticity", init, s))}
    runs = [run for b in range(bases) for s in range(seeds)
            for run in sorted(glob.glob(os.path.join(base_root(root, b), "*", "*", f"s{s}")))
            if finished(run)]
    for run in runs:
        weights = ("model.pt",) if os.path.join(run, "model.pt") in keep else ()
        extra = ("measures.json",) if os.path.exists(os.path.join(run, "measures.json")) else ()
        copy(run, ("log.jsonl", "summary.json") + extra + weights)
    for b in range(bases):
        base = os.path.dirname(base_path(root, b))
        if os.path.exists(os.path.join(base, "model.pt")):
            copy(base, ("model.pt", "metrics.json"))
    for name in ("dial.json", "phase_hit_rates.json", "suite.json"):
        if os.path.exists(os.path.join(root, name)):
            shutil.copyfile(os.path.join(root, name), os.path.join(dest, name))
    return len(runs)


def run_grid(preset, root, bases, seeds, device="cpu", procs=2, log=print, fresh_bases=False):
    """Every run of the phase diagram (finished ones skipped, interrupted ones resumed), wave by
    wave, in `procs` processes (train.run, harness.runs.run_all), then its report. The wall time
    sums the runs' and the bases' pretraining. -> phase.json's dict."""
    walls = pretrain.prepare_bases(preset, root, bases, device, log, fresh_bases)
    write_suite(root, train.SUITE)  # the runs' folders follow the suite's table
    todo = jobs(preset, root, bases, seeds)
    for wave in (1, 2):
        batch = [(folder, kw) for w, folder, kw in todo if w == wave]
        walls += [s["wall_s"] for _, s in run_all(train.run, preset, batch, device, procs, log,
                                                  root)]
    res = write_report(root, bases, seeds, sum(walls), device=device)
    log(f"report: {os.path.join(res['_out'], 'phase.md')} (runs {sum(walls):.0f}s)")
    return res


def build_parser():
    ap = CLIParser(prog="python -m harness.phase",
                   description="the phase diagram: its runs (--run), or its report from them")
    ap.add_argument("--preset", default="tiny", help="the runs under runs/<preset>")
    ap.add_argument("--runs", type=FOLDER, default=None,
                    help="read the runs and bases here instead of runs/<preset> (e.g. the "
                         "committed archive, results/tiny/runs)")
    ap.add_argument("--bases", type=positive(int, MOST_SEEDS), default=3,
                    help=f"bases (pretraining seeds 0..N-1) (at most {MOST_SEEDS})")
    ap.add_argument("--seeds", type=positive(int, MOST_SEEDS), default=3,
                    help=f"run seeds 0..N-1 (at most {MOST_SEEDS})")
    ap.add_argument("--out", type=FOLDER, default=None,
                    help="write the report here (default runs/<preset>/phase)")
    ap.add_argument("--hit-rates", action="store_true",
                    help="only: each reflector setting's first-proposal hit rate on every base "
                         "(-> runs/<preset>/phase_hit_rates.json)")
    ap.add_argument("--run", action="store_true",
                    help="run the grid first (resumable; missing bases: the committed grid's)")
    ap.add_argument("--jobs", type=positive(int), default=2,
                    help="--run: runs in N processes (the preset's threads split among them)")
    ap.add_argument("--fresh-bases", action="store_true",
                    help="--run: pretrain missing bases here instead of copying the committed's")
    ap.add_argument("--archive", type=FOLDER, default=None,
                    help="only: copy the finished runs' logs and summaries and the bases here "
                         "(copy back into runs/<preset>/ to resume the grid)")
    return ap


@exit_on_user_error
def main(argv=None):
    args = build_parser().parse_args(argv)
    root = args.runs or os.path.join("runs", args.preset)
    if args.run:
        if args.preset not in train.PRESETS:
            raise UserError(f"unknown preset '{args.preset}'; choose one of "
                            f"{', '.join(train.PRESETS)}")
        preset = train.PRESETS[args.preset]
        torch.set_num_threads(preset.threads)
        run_grid(preset, root, args.bases, args.seeds, procs=args.jobs,
                 fresh_bases=args.fresh_bases)
        return
    missing = [b for b in range(args.bases)
               if not os.path.exists(base_path(root, b))]
    if missing:
        raise UserError(f"no base {missing[0]} under {root}; run `python train.py pretrain "
                        f"--preset {args.preset} --seed {missing[0]}` first")
    if args.archive:
        n = archive(root, args.bases, args.seeds, args.archive)
        print(f"copied {n} finished runs and the bases to {args.archive}")
        return
    if args.hit_rates:
        # each setting on the dial's full level (cipher-k3: the table fits) and on hidden-rule,
        # each base's own greedy outputs as the records (each base seeds the noisy mistakes)
        rates = {b: hit_rate_table(base_path(root, b), (level_task(3), "hidden-rule"),
                                         HIT_REFLECTORS, seed=b) for b in range(args.bases)}
        write_atomic(os.path.join(root, "phase_hit_rates.json"), json.dumps(rates, indent=1))
        print(json.dumps(rates))
        return
    walls = []  # every finished run of the grid, on its own clock
    for b, seed in replicate_order(args.bases, args.seeds):
        for task in [SHARED_TASK] + [level_task(k) for k in LEVELS]:
            for path in glob.glob(os.path.join(base_root(root, b), task, "*", f"s{seed}",
                                               "summary.json")):
                with open(path) as f:
                    walls.append(json.load(f)["wall_s"])
    res = write_report(root, args.bases, args.seeds, sum(walls), out=args.out)
    print(f"wrote {res['_out']}/phase.md")


if __name__ == "__main__":
    main()
