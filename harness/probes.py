"""
harness/probes.py: the claims measured on runs of their own beside the suite's tasks: C5 (the
plasticity probe: fresh RL on a new task from the base, RL-only's and FST's weights), C6 (the
continual run: three stages, untold switches) and C8 (exploration from zero reward, with the
context-only and sequential controls). Each reads the runs' logs (runs.replicates) and returns its
results.json section and its rows; harness/report.py collects them. They sit apart from the
per-task claims because each has runs of its own (its own task, inits or stages).

    out, rows, plots = plasticity(root, reps, folder)
    out, rows = exploration(root, reps)
"""

import os

import numpy as np

from harness import claims as cl  # the numbers behind the claims, from log rows
from harness import plots as draw  # the figures
from harness import stats
from harness.runs import read_suite, replicates


def _final(rows):
    return cl.curve(rows)[1][-1]


def plasticity(root, reps, folder):
    """C5: fresh RL on the suite's plasticity task from the base and from RL's and FST's final
    weights on the prior task. The paper's sub-claims apart (RL-init below base-init; FST-init ~
    base-init, TOST), on the area under the curve, with the share of runs reaching 0.5 beside
    (bimodal probes).
    -> (results.json's c5_plasticity, its claim rows, its plot's name in `folder`)."""
    S = read_suite(root)
    pl = {i: replicates(root, reps, "plasticity", i) for i in S.plasticity_inits}
    keys = [r for r in reps if all(r in v for v in pl.values())]
    out = {"task": S.plasticity_task, "prior_task": S.prior_task, "threshold": 0.5}
    per = {i: {r: cl.area_and_threshold(v[r], 0.5) for r in keys} for i, v in pl.items()}
    for init, v in pl.items():
        out[f"from_{init}"] = stats.aggregate(list(per[init].values()), keys) if keys else {}
        out[f"from_{init}"]["reached"] = sum(p["steps_to_threshold"] is not None
                                             for p in per[init].values())
        if init != "base":
            prior = replicates(root, keys, S.prior_task, init)
            out[f"from_{init}"]["prior_learned"] = sum(_final(prior[r]) >= 0.5 for r in prior)
    if not keys:
        return out, [], []
    share = lambda i: f"{i}-init: {out[f'from_{i}']['reached']} of {len(keys)} reach 0.5"
    auc = lambda a, b: {r: per[a][r]["auc"] - per[b][r]["auc"] for r in keys}
    rows = [
        stats.row("C5 RL-init barely learns", S.plasticity_task,
                  "area, RL-init - base-init", auc("rl", "base"), direction=-1,
                  detail=f"{share('rl')}; {share('base')}"),
        stats.row("C5 FST-init ~ base-init", S.plasticity_task,
                  "area, FST-init - base-init", auc("fst", "base"), "equivalence",
                  detail=share("fst")),
        stats.row("C5 stays plastic", S.plasticity_task, "area, FST-init - RL-init",
                  auc("fst", "rl"))]
    draw.bands(os.path.join(folder, "plasticity.png"),
               {f"RL from {i}-init": cl.mean_band([cl.curve(v[r]) for r in keys])
                for i, v in pl.items()},
               "RL steps", f"plasticity: RL on {S.plasticity_task} after {S.prior_task}")
    return out, rows, ["plasticity.png"]


def continual(root, reps, folder):
    """C6: per-stage peak and mean val accuracy, normalized by the better method's peak
    in that stage; each later stage's mean val acc FST - RL is a row. -> (results.json's
    c6_continual, its claim rows, its plot's name in `folder`)."""
    S = read_suite(root)
    cont = {m: replicates(root, reps, "continual", m) for m in ("rl", "fst")}
    keys = [r for r in reps if all(r in v for v in cont.values())]
    stages = {}
    for r in keys:
        per = {m: [[row["val_acc"] for row in cont[m][r]
                    if "val_acc" in row and row["task"] == name]
                   for name in S.continual] for m in cont}
        for i, name in enumerate(S.continual):
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
    bounds = np.cumsum([sum(r["task"] == name for r in rows) for name in S.continual])[:-1]
    draw.bands(os.path.join(folder, "continual.png"),
               {m: cl.mean_band([cl.curve(v[r]) for r in keys]) for m, v in cont.items()},
               "RL steps", "continual: " + " -> ".join(S.continual), vlines=bounds)
    return out, claims, ["continual.png"]


# C8: "left zero reward" = the training reward, averaged over the last 5 steps, reaches 0.05 (the
# level at which select_tasks.CRITERIA says a context unlocks RL). One lucky success is not leaving
# zero: RL-only on `sparse` had isolated successes from step 1 while its mean stayed <= 0.02 for 50
# steps (the first replicate, base 0 seed 0, which is why this definition replaced "first success").
ZERO_LEVEL, ZERO_WINDOW = 0.05, 5
C8_MEASURE = (f"Gehan score, steps until the {ZERO_WINDOW}-step mean reward reaches {ZERO_LEVEL} "
              "(+1: FST first)")


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
    task = read_suite(root).exploration_task
    runs = {m: replicates(root, reps, task, m) for m in ("rl", "fst", "sequential", "context")}
    keys = [r for r in reps if all(r in runs[m] for m in ("rl", "fst"))]
    out = {"task": task, "level": ZERO_LEVEL, "window": ZERO_WINDOW}
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
    ctx = {r: cl.curve(runs["context"][r])[1] for r in keys if r in runs["context"]}
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
    score = lambda m: {r: cl.gehan_score(steps["fst"][r], cens["fst"][r], steps[m][r],
                                            cens[m][r]) for r in keys if r in steps[m]}
    alone = (f"; the prompt alone (context-only) gets val acc >= {ZERO_LEVEL} at its first eval "
             f"in {out['context']['first_eval_at_level']} of {out['context']['n']}"
             if ctx else "")
    row = stats.row("C8 leaves zero sooner", task, C8_MEASURE, score("rl"),
                    detail=f"never: RL {out['rl']['censored']}, FST {out['fst']['censored']}"
                    + (f", sequential {out['sequential']['censored']}" if "sequential" in out
                       else "") + alone)
    vs = {"sequential": stats.row("C8", task, "Gehan score vs sequential",
                                  score("sequential")) if steps["sequential"] else None,
          "instructed": None}
    return out, [stats.attribute(row, vs)]
