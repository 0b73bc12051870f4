"""
report.py: the reproduction's report. Reads the suite's runs (the folder layout is defined here,
once), computes the claims C1-C8 with eval.py's measurements over every replicate (pretraining seed
x run seed), and writes report.md, PNG plots and results.json.

    python report.py --preset tiny                # rebuild runs/tiny/{report.md, ...}
    python report.py --preset tiny --bases 3 --seeds 3 --out results/tiny   # the grid, copied out
    python report.py --preset tiny --hit-rates    # each reflector's first-proposal hit rate

Layout: root/b<base seed>/base/model.pt is a base; its runs sit in
run_dir(base_root(root, b), task, method, seed). Every aggregate in results.json is
{mean, std, ci95, n} over replicates (bootstrap 95% interval of the mean), and every claim per task
carries a `verdict`: `reproduced` (the interval excludes no effect, in the paper's direction),
`not reproduced` (it excludes no effect the other way) or `inconclusive`. Nothing here trains.
"""

import json
import os

import numpy as np

import eval as ev
import plots as draw  # the figures
import tasks
from cli import FOLDER, CLIParser, UserError, exit_on_user_error, positive, writable_folder
from model import load_checkpoint, write_atomic

SUITE_TASKS = ["hidden-rule", "cipher", "long-chain"]   # like CodeIO, HoVer, Math
PRIOR_TASK = "hidden-rule"                              # the plasticity probe starts from
                                                        # its weights ...
PLASTICITY_TASK = "hidden-rule-2"                       # ... and learns this one
                                                        # (another input marker)
CONTINUAL = ["hidden-rule", "cipher", "hidden-rule-2"]  # three stages, three markers,
                                                        # untold switches
EXPLORATION_TASK = "sparse"                             # C8: zero reward under the seed prompt
SUITE_METHODS = ["rl", "context", "fst", "instructed", "sequential"]  # the last two: controls
SWEEP_REFLECTORS = ["oracle", "demo"]                   # FST with these too (`--sweep`, first base)


def base_root(root, b):
    """Where base `b` (pretraining seed b) and every run from it live."""
    return os.path.join(root, f"b{b}")


def run_dir(root, task, method, seed):
    """One run: <base root>/<task or 'plasticity' or 'continual'>/<method or init>/s<seed>."""
    return os.path.join(root, task, method, f"s{seed}")


def read_log(folder):
    with open(os.path.join(folder, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def replicates(root, reps, task, method):
    """{(base, seed): log rows} of one configuration, for the replicates whose run finished."""
    out = {}
    for b, s in reps:
        folder = run_dir(base_root(root, b), task, method, s)
        if os.path.exists(os.path.join(folder, "summary.json")):
            out[(b, s)] = read_log(folder)
    return out


def _agg(dicts):
    """Average same-shaped nested dicts of numbers
    -> the same shape with {mean, std, ci95, n} leaves."""
    first = dicts[0]
    if isinstance(first, dict):
        return {k: _agg([d[k] for d in dicts]) for k in first}
    if isinstance(first, (int, float)) or first is None:
        return ev.mean_std(dicts)
    return first


def _paired(a, b, direction):
    """a - b over the same replicates, with the claim's verdict
    (direction +1: the paper says a > b)."""
    diff = ev.compare(a, b)
    return dict(diff, verdict=ev.verdict(diff, direction))


# -----------------------------------------------------------------------------
# per-task claims

def task_claims(root, reps, t, base_models, preset, res, plots):
    runs = {m: replicates(root, reps, t, m) for m in SUITE_METHODS}
    keys = [r for r in reps if all(r in runs[m] for m in ("rl", "fst"))]
    final = {m: [ev.curve(v[r])[1][-1] for r in keys if r in v] for m, v in runs.items()}
    gain = {m: [ev.curve(v[r])[1][-1] - ev.curve(v[r])[1][0] for r in keys if r in v]
            for m, v in runs.items()}  # final minus the first eval (logged after step 0)
    res["runs"][t] = {m: {"final_val_acc": ev.mean_std(final[m]), "gain": ev.mean_std(gain[m]),
                          "min_gain": min(gain[m]) if gain[m] else None,
                          "rollouts": ev.mean_std([v[r][-1]["rollouts"] for r in v]),
                          "wall_s": ev.mean_std([v[r][-1]["wall_s"] for r in v])}
                      for m, v in runs.items() if v}
    by_base = {}  # the fair-test bar, base by base: RL-only's gain over that base's run seeds
    for r, g in zip([r for r in keys if r in runs["rl"]], gain["rl"]):
        by_base.setdefault(str(r[0]), []).append(g)
    res["rl_gain_by_base"][t] = {b: dict(ev.mean_std(g), min=min(g)) for b, g in by_base.items()}
    res["controls"][t] = {m: {"final_val_acc": ev.mean_std(final[m]),
                              "fst_minus_this": _paired(final["fst"], final[m], +1)}
                          for m in SUITE_METHODS if m != "fst" and len(final[m]) == len(keys)}
    res["c1_sample_efficiency"][t] = c1(runs["rl"], runs["fst"], keys)
    ceiling = [max(ev.curve(runs["context"][r])[1]) for r in keys if r in runs["context"]]
    floor = float(np.mean(ceiling)) if ceiling else None  # the context-only ceiling
    res["c3_kl_at_matched_reward"][t] = {k: c3(runs["rl"], runs["fst"], keys, floor, k)
                                         for k in ("kl", "kl_common")}
    res["c2_asymptote"][t] = c2(runs["rl"], runs["fst"], keys)
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
        name = f"{t}_acc_vs_{'steps' if x == 'step' else 'rollouts'}.png"
        draw.bands(os.path.join(res["_out"], name), series,
                   "RL steps" if x == "step" else "rollouts generated (all)",
                   f"{t}: val accuracy, mean and 95% band over {len(keys)} replicates")
        plots.append(name)
    name = f"{t}_kl_vs_acc.png"
    draw.kl_vs_acc(os.path.join(res["_out"], name), {m: [ev.kl_curve(runs[m][r]) for r in keys]
                                                     for m in ("rl", "fst", "instructed")
                                                     if runs[m]}, t)
    plots.append(name)
    per = [channels_and_forgetting(root, t, r, *base_models[r[0]], preset, res["_base_cache"])
           for r in keys]
    if per:
        c4 = _agg([p["c4"] for p in per])
        c4["fst_minus_rl_general"] = _paired([p["c4"]["fst"]["general_acc"] for p in per],
                                             [p["c4"]["rl"]["general_acc"] for p in per], +1)
        res["c4_forgetting"][t] = c4
        c7 = _agg([p["c7"] for p in per])
        both = [p["c7"]["fst_weights"]["fst_prompt"] for p in per]
        c7["weights_gain"] = _paired(both, [p["c7"]["base_weights"]["fst_prompt"] for p in per], +1)
        c7["prompt_gain"] = _paired(both, [p["c7"]["fst_weights"]["seed_prompt"] for p in per], +1)
        res["c7_channels"][t] = c7


def c1(rl, fst, keys):
    """RL's steps (rollouts) to its peak over FST's to reach it, per replicate; censored replicates
    (FST never got there: an upper bound; FST there at its first eval: a lower bound) are kept."""
    per = [ev.sample_efficiency(rl[r], fst[r]) for r in keys]
    low, high = [p["censored_low"] for p in per], [p["censored"] for p in per]
    out = {"per_replicate": per}
    for axis in ("ratio", "ratio_rollouts"):
        vals = [p[axis] for p in per]
        out[axis] = dict(ev.censored_summary(vals, low, high),
                         test=ev.ratio_verdict(vals, +1, low, high))
        out[axis]["verdict"] = out[axis]["test"]["verdict"]
        # `mean`: the geometric mean, or the median where a value is censored (ci95 is of that)
        g = out[axis]["geo_mean"]
        out[axis]["mean"] = g if g is not None else out[axis]["median"]
    out["verdict"] = out["ratio"]["verdict"]
    return out


def c2(rl, fst, keys, reps=200, seed=0):
    """Asymptote A of the bounded sigmoid fit on the mean curve of each method; the paired
    difference's interval resamples replicates (both methods together). Not identifiable
    -> inconclusive."""
    if not keys:
        return {}
    curves = {m: np.array([ev.curve(v[r])[1] for r in keys]) for m, v in (("rl", rl), ("fst", fst))}
    xs = np.array(ev.curve(rl[keys[0]])[0], float)
    out = {m: ev.asymptote(xs, c.mean(0)) for m, c in curves.items()}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(reps if len(keys) > 1 else 0):
        idx = rng.integers(0, len(keys), len(keys))
        a = {m: ev.sigmoid_fit(xs, c[idx].mean(0))["A"] for m, c in curves.items()}
        diffs.append(a["fst"] - a["rl"])
    diff = {"mean": out["fst"]["A"] - out["rl"]["A"], "n": len(keys),
            "ci95": ([float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
                     if diffs else None)}
    ok = out["rl"]["identifiable"] and out["fst"]["identifiable"]
    out["fst_minus_rl"] = dict(diff, verdict=ev.verdict(diff, +1) if ok else "inconclusive")
    out["verdict"] = out["fst_minus_rl"]["verdict"] if ok else "not identifiable"
    return out


def c3(rl, fst, keys, floor, key):
    per = [ev.kl_at_matched_reward(rl[r], fst[r], floor=floor, key=key) for r in keys]
    per = [p for p in per if p["ratio"] is not None]
    if not per:
        return {"n": 0, "verdict": "inconclusive"}
    out = _agg([{k: p[k] for k in ("reward", "rl_kl", "fst_kl")} for p in per])
    # geometric mean, interval, verdict
    out["ratio"] = ev.ratio_verdict([p["ratio"] for p in per], -1)
    out["ratio"]["mean"] = out["ratio"]["geo_mean"]  # ratios average on the log scale
    out["above_floor"] = sum(bool(p["above_floor"]) for p in per)
    out["verdict"] = out["ratio"]["verdict"]
    return out


def channels_and_forgetting(root, task_name, rep, base, enc, preset, base_cache, samples=4):
    """C4 and C7 for one task and replicate: general skills and seed-prompt accuracy of
    base / rl / fst, and the 2x2 table {base, fst weights} x {seed, fst prompt}. The base's own
    numbers are the same for every run seed and are measured once (base_cache)."""
    task = tasks.make_task(task_name, n_val=preset["n_val"])  # the runs' own val split
    broot, device = base_root(root, rep[0]), base.wte.weight.device
    models = {"base": (base, None)}
    for m in ("rl", "fst"):
        model, extra = load_checkpoint(
            os.path.join(run_dir(broot, task_name, m, rep[1]), "model.pt"), device)
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
# C5, C6, C8 and the reflector sweep

def plasticity(root, reps, res, plots):
    """C5: fresh RL on PLASTICITY_TASK from the base and from the final weights of RL and FST on the
    prior task. A prior run counts as learned when its final val accuracy is >= 0.5."""
    pl = {i: replicates(root, reps, "plasticity", i) for i in ("base", "rl", "fst")}
    keys = [r for r in reps if all(r in v for v in pl.values())]
    out = {"task": PLASTICITY_TASK, "prior_task": PRIOR_TASK, "threshold": 0.5}
    for init, v in pl.items():
        out[f"from_{init}"] = _agg([ev.area_and_threshold(v[r], 0.5) for r in keys]) if keys else {}
        if init != "base":
            prior = replicates(root, keys, PRIOR_TASK, init)
            out[f"from_{init}"]["prior_learned"] = sum(ev.curve(prior[r])[1][-1] >= 0.5
                                                       for r in prior)
    if keys:
        auc = {i: [ev.area_and_threshold(pl[i][r], 0.5)["auc"] for r in keys] for i in pl}
        out["fst_minus_rl_auc"] = _paired(auc["fst"], auc["rl"], +1)
        out["verdict"] = out["fst_minus_rl_auc"]["verdict"]
        draw.bands(os.path.join(res["_out"], "plasticity.png"),
                   {f"RL from {i}-init": ev.mean_band([ev.curve(v[r]) for r in keys])
                    for i, v in pl.items()},
                   "RL steps", f"plasticity: RL on {PLASTICITY_TASK} after {PRIOR_TASK}")
        plots.append("plasticity.png")
    res["c5_plasticity"] = out


def continual(root, reps, res, plots):
    """C6: per-stage peak and mean val accuracy, normalized by the better method's peak
    in that stage."""
    cont = {m: replicates(root, reps, "continual", m) for m in ("rl", "fst")}
    keys = [r for r in reps if all(r in v for v in cont.values())]
    stages = {}
    for r in keys:
        per = {m: [[row["val_acc"] for row in cont[m][r]
                    if "val_acc" in row and row["task"] == name]
                   for name in CONTINUAL] for m in cont}
        for i, name in enumerate(CONTINUAL):
            best = max(max(per[m][i]) for m in per) or 1.0
            for m in per:
                stages.setdefault(f"stage{i + 1}_{name}", {}).setdefault(m, []).append(
                    {"peak_norm": max(per[m][i]) / best,
                     "mean_norm": float(np.mean(per[m][i])) / best,
                     "peak": max(per[m][i]), "mean": float(np.mean(per[m][i]))})
    out = {}
    for k, d in stages.items():
        out[k] = {m: _agg(v) for m, v in d.items()}
        out[k]["fst_minus_rl_mean"] = _paired([x["mean"] for x in d["fst"]],
                                              [x["mean"] for x in d["rl"]], +1)
        out[k]["verdict"] = out[k]["fst_minus_rl_mean"]["verdict"]
    res["c6_continual"] = out
    if keys:
        rows = cont["rl"][keys[0]]
        bounds = np.cumsum([sum(r["task"] == name for r in rows) for name in CONTINUAL])[:-1]
        draw.bands(os.path.join(res["_out"], "continual.png"),
                   {m: ev.mean_band([ev.curve(v[r]) for r in keys]) for m, v in cont.items()},
                   "RL steps", "continual: " + " -> ".join(CONTINUAL), vlines=bounds)
        plots.append("continual.png")


# C8: "left zero reward" = the training reward, averaged over the last 5 steps, reaches 0.05 (the
# level at which tasks.CRITERIA says a context unlocks RL). A single lucky success is not leaving
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


def exploration(root, reps, res):
    runs = {m: replicates(root, reps, EXPLORATION_TASK, m) for m in ("rl", "fst")}
    keys = [r for r in reps if all(r in v for v in runs.values())]
    out = {"task": EXPLORATION_TASK, "level": ZERO_LEVEL, "window": ZERO_WINDOW}
    steps = {}
    for m, v in runs.items():
        found = [leave_zero(v[r]) for r in keys]
        n_steps = [v[r][-1]["step"] + 1 for r in keys]
        # censored runs enter at their length: a lower bound on the steps they would need
        steps[m] = [f if f is not None else n for f, n in zip(found, n_steps)]
        out[m] = {"steps_to_leave_zero": ev.mean_std(steps[m]), "censored": found.count(None),
                  "first_success": ev.mean_std([first_success(v[r]) for r in keys]),
                  "final_val_acc": ev.mean_std([ev.curve(v[r])[1][-1] for r in keys])}
    out["rl_minus_fst_steps"] = _paired(steps["rl"], steps["fst"], +1) if keys else {}
    out["verdict"] = out["rl_minus_fst_steps"].get("verdict", "inconclusive")
    res["c8_exploration"] = out


def reflector_sweep(root, seeds, res, hit_rates):
    """C1 and C3 of FST with each reflector on the first base (the default's runs included)."""
    reps = [(0, s) for s in seeds]
    out = {}
    for name, method in [("edit", "fst")] + [(n, f"fst-{n}") for n in SWEEP_REFLECTORS]:
        out[name] = {}
        for t in SUITE_TASKS:
            rl, fst = replicates(root, reps, t, "rl"), replicates(root, reps, t, method)
            keys = [r for r in reps if r in rl and r in fst]
            if not keys:
                continue
            out[name][t] = {"first_hit_rate": hit_rates.get(t, {}).get(name),
                            "told": tasks.NAMED_TASKS[t].told,
                            "c1": c1(rl, fst, keys), "c3": c3(rl, fst, keys, None, "kl"),
                            "n": len(keys)}
            out[name][t]["c1"].pop("per_replicate")
    res["reflector_sweep"] = {k: v for k, v in out.items() if v}


# -----------------------------------------------------------------------------
# the report

def write_report(root, bases, seeds, suite_wall_s, device="cpu", out=None, hit_rates=None):
    """Compute C1-C8 from the runs under `root` (bases 0..bases-1 x seeds 0..seeds-1) on `device`;
    write results.json, report.md and PNG plots to `out` (default root)."""
    out = out or root
    os.makedirs(out, exist_ok=True)
    reps = [(b, s) for b in range(bases) for s in range(seeds)]
    base_models, metrics = {}, {}
    for b in range(bases):
        model, extra = load_checkpoint(os.path.join(base_root(root, b), "base", "model.pt"), device)
        # each pretraining seed builds its own BPE: a base is read with its own tokenizer
        base_models[b] = (model.eval(), tasks.tokenizer_from_state(extra["tokenizer"]))
        metrics[b] = extra["metrics"]
    preset = run_config(root, reps) or metrics[0]["preset"]
    res = {"preset": preset["name"], "bases": list(range(bases)), "seeds": list(range(seeds)),
           "replicates": len(reps), "wall_s": suite_wall_s, "_out": out, "_base_cache": {},
           "base_quality": {b: {"general_acc": m["general_acc"],
                                "min_op_acc": min(m["acc_by_op"].values()),
                                "acc_by_op": m["acc_by_op"], "wall_s": m["wall_s"]}
                            for b, m in metrics.items()},
           "runs": {}, "rl_gain_by_base": {}, "controls": {}, "c1_sample_efficiency": {},
           "c2_asymptote": {}, "c3_kl_at_matched_reward": {}, "c4_forgetting": {},
           "c7_channels": {}}
    plots = []
    for t in SUITE_TASKS:
        task_claims(root, reps, t, base_models, preset, res, plots)
    plasticity(root, reps, res, plots)
    continual(root, reps, res, plots)
    exploration(root, reps, res)
    if hit_rates is None and os.path.exists(os.path.join(root, "hit_rates.json")):
        with open(os.path.join(root, "hit_rates.json")) as f:
            hit_rates = json.load(f)
    reflector_sweep(root, range(seeds), res, hit_rates or {})
    res["reflector_first_hit_rate"] = hit_rates
    del res["_out"], res["_base_cache"]
    write_atomic(os.path.join(out, "results.json"), json.dumps(res, indent=1))
    write_atomic(os.path.join(out, "report.md"), render_report(res, plots))
    return res


def run_config(root, reps):
    """The preset the runs were made with (from the first finished run's summary), or None."""
    for b, s in reps:
        for t in SUITE_TASKS:
            path = os.path.join(run_dir(base_root(root, b), t, "rl", s), "summary.json")
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)["config"]
    return None


def _m(x, digits=3):
    """Format an aggregate {mean, ci95, n} (or a plain number): mean [95% interval]."""
    if isinstance(x, dict) and "mean" in x:
        if x["mean"] is None:
            return "n/a"
        ci = x.get("ci95")
        return f"{x['mean']:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
                                             if ci and x.get("n", 0) > 1 else "")
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ratio(d):
    """A ratio_verdict dict: geometric mean [interval]."""
    if not d or d.get("geo_mean") is None:
        return "n/a"
    ci = d["ci95"]
    return f"{d['geo_mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if d["n"] > 1 else "")


def render_report(res, plots):
    n = res["replicates"]
    L = [f"# fastslow report: preset `{res['preset']}`", "",
         f"Bases (pretraining seeds) {res['bases']} x run seeds {res['seeds']} = {n} replicates; "
         f"wall time {res['wall_s']:.0f} s (pretraining and every run, each on its own clock, "
         "summed). Accuracy = exact match on the 256-problem val split at the training "
         "temperature, with each method's deployed prompt. Values: mean [95% bootstrap interval] "
         "over replicates. Verdict: `reproduced` when the interval excludes no effect in the "
         "paper's direction, `not reproduced` when it excludes it the other way, else "
         "`inconclusive`.", "", "## Bases", "", "| base | general acc | weakest op | wall s |",
         "|---|---|---|---|"]
    for b, q in res["base_quality"].items():
        L.append(f"| {b} | {q['general_acc']:.3f} | {q['min_op_acc']:.3f} | {q['wall_s']:.0f} |")
    L += ["", "## Claims", "", "| claim | task | measure | value | verdict |",
          "|---|---|---|---|---|"]
    for t, d in res["c1_sample_efficiency"].items():
        for axis, label in (("ratio", "steps"), ("ratio_rollouts", "rollouts")):
            s = d[axis]
            L.append(f"| C1 faster | {t} | RL {label} to its running peak / FST {label} to reach "
                     f"it | {s['text']} | {s['verdict']} |")
    for t, d in res["c2_asymptote"].items():
        if d:
            why = "" if d["verdict"] != "not identifiable" else (
                f"; RL: {d['rl']['why'] or 'ok'}, FST: {d['fst']['why'] or 'ok'}")
            L.append(f"| C2 higher ceiling | {t} | A(FST) - A(RL) (RL {d['rl']['A']:.2f}, FST "
                     f"{d['fst']['A']:.2f}{why}) | {_m(d['fst_minus_rl'])} | {d['verdict']} |")
    for t, d in res["c3_kl_at_matched_reward"].items():
        for k, label in (("kl", "deployed prompts"), ("kl_common", "common seed prompt")):
            v = d[k]
            if v.get("n", 1):
                L.append(f"| C3 less drift | {t} | KL ratio FST/RL at matched reward "
                         f"{_m(v['reward'], 2)}, {label} ({v['above_floor']} of "
                         f"{v['ratio']['n']} above the context-only ceiling) | "
                         f"{_ratio(v['ratio'])} | {v['verdict']} |")
    for t, d in res["c4_forgetting"].items():
        v = d["fst_minus_rl_general"]
        L.append(f"| C4 forgets less | {t} | general acc FST - RL "
                 f"(base {_m(d['base']['general_acc'])}) | {_m(v)} | {v['verdict']} |")
    p = res["c5_plasticity"]
    if "verdict" in p:
        L.append(f"| C5 stays plastic | {p['task']} | area, RL from FST-init - from RL-init | "
                 f"{_m(p['fst_minus_rl_auc'])} | {p['verdict']} |")
    for k, d in res["c6_continual"].items():
        if not k.startswith("stage1"):
            L.append(f"| C6 keeps learning | {k} | mean val acc FST - RL | "
                     f"{_m(d['fst_minus_rl_mean'])} | {d['verdict']} |")
    for t, d in res["c7_channels"].items():
        L.append(f"| C7 channels | {t} | weights' gain (FST weights vs base, FST prompt) | "
                 f"{_m(d['weights_gain'])} | {d['weights_gain']['verdict']} |")
        L.append(f"| C7 channels | {t} | prompt's gain (FST prompt vs seed, FST weights) | "
                 f"{_m(d['prompt_gain'])} | {d['prompt_gain']['verdict']} |")
    e = res["c8_exploration"]
    if e.get("rl_minus_fst_steps"):
        L.append(f"| C8 leaves zero sooner | {e['task']} | steps until the 5-step mean reward "
                 f"reaches {e['level']}, RL - FST (RL "
                 f"{_m(e['rl']['steps_to_leave_zero'], 0)}, {e['rl']['censored']} never; FST "
                 f"{_m(e['fst']['steps_to_leave_zero'], 0)}, {e['fst']['censored']} never) | "
                 f"{_m(e['rl_minus_fst_steps'], 1)} | {e['verdict']} |")
    L += ["", "## Runs and controls (final val acc; FST minus the control, paired by replicate)",
          "",
          "Gain = final minus first val accuracy (after step 0); its minimum over replicates shows "
          "whether every replicate learned (the fair-test bar for RL only: >= 0.3).", "",
          "| task | method | final val acc | gain (min) | FST - it | verdict (FST higher) | "
          "rollouts | wall s |", "|---|---|---|---|---|---|---|---|"]
    for t, d in res["runs"].items():
        for m, v in d.items():
            c = res["controls"][t].get(m)
            diff = (_m(c["fst_minus_this"]), c["fst_minus_this"]["verdict"]) if c else ("", "")
            L.append(f"| {t} | {m} | {_m(v['final_val_acc'])} | {_m(v['gain'], 2)} "
                     f"({_m(v['min_gain'], 2)}) | {diff[0]} | {diff[1]} | "
                     f"{_m(v['rollouts'], 0)} | {_m(v['wall_s'], 0)} |")
    if res.get("rl_gain_by_base"):
        bases = sorted({b for d in res["rl_gain_by_base"].values() for b in d}, key=int)
        L += ["", "RL-only gain by base: mean [interval] over run seeds (lowest seed).", "",
              "| task | " + " | ".join(f"base {b}" for b in bases) + " |",
              "|---|" + "---|" * len(bases)]
        for t, d in res["rl_gain_by_base"].items():
            L.append(f"| {t} | " + " | ".join(f"{_m(d[b], 2)} ({d[b]['min']:.2f})" if b in d
                                              else "" for b in bases) + " |")
    L += ["", "## C7: {base, FST weights} x {seed, FST prompt}", "",
          "| task | base + seed | base + FST prompt | FST weights + seed | "
          "FST weights + FST prompt |",
          "|---|---|---|---|---|"]
    for t, d in res["c7_channels"].items():
        L.append(f"| {t} | {_m(d['base_weights']['seed_prompt'])} | "
                 f"{_m(d['base_weights']['fst_prompt'])} | "
                 f"{_m(d['fst_weights']['seed_prompt'])} | {_m(d['fst_weights']['fst_prompt'])} |")
    if res.get("reflector_sweep"):
        L += ["",
              "## Reflector sweep (first base): how much of FST's gain depends on the reflector",
              "",
              "| reflector | task | first-proposal hit rate | C1 ratio (steps) | C3 KL ratio | n |",
              "|---|---|---|---|---|---|"]
        for name, d in res["reflector_sweep"].items():
            for t, v in d.items():
                hit = ("n/a (told: the seed prompt states the rule)" if v.get("told")
                       else _m(v["first_hit_rate"], 2))
                L.append(f"| {name} | {t} | {hit} | "
                         f"{v['c1']['ratio']['text']} | {_ratio(v['c3'].get('ratio'))} | "
                         f"{v['n']} |")
    L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def reflector_hit_rates(root, device="cpu", names=("oracle", "edit", "demo"), trials=100):
    """First-proposal hit rate of each reflector on each suite task (and the probe's), with the
    first base's own greedy outputs as the records: {task: {reflector: rate}}
    (reflectors.first_hit_rate)."""
    import reflectors
    from episodes import greedy_evaluate
    base, extra = load_checkpoint(os.path.join(base_root(root, 0), "base", "model.pt"), device)
    enc, preset = tasks.tokenizer_from_state(extra["tokenizer"]), extra["metrics"]["preset"]
    evaluate = greedy_evaluate(base.eval(), enc, preset["max_new_tokens"])
    count = lambda text: len(enc.encode_ordinary(text))
    out = {}
    for name in SUITE_TASKS + [PLASTICITY_TASK, EXPLORATION_TASK]:
        task = tasks.make_task(name)  # the default splits, whichever code version made the base
        out[name] = {r: reflectors.first_hit_rate(
                         reflectors.make_reflector(r, preset["context_tokens"], count),
                         task, evaluate, trials=trials)
                     for r in names}
    return out


def build_parser():
    ap = CLIParser(prog="report.py",
                   description="rebuild report.md, plots and results.json from existing runs")
    ap.add_argument("--preset", default="tiny", help="the runs under runs/<preset>")
    ap.add_argument("--bases", type=positive(int), default=1)
    ap.add_argument("--seeds", type=positive(int), default=1)
    ap.add_argument("--out", type=FOLDER, default=None,
                    help="write the report here (default runs/<preset>)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--hit-rates", action="store_true",
                    help="only: each reflector's first-proposal hit rate "
                         "(-> runs/<preset>/hit_rates.json)")
    return ap


@exit_on_user_error
def main(argv=None):
    import torch
    args = build_parser().parse_args(argv)
    root = os.path.join("runs", args.preset)
    if not os.path.exists(os.path.join(base_root(root, 0), "base", "model.pt")):
        raise UserError(f"no runs under {root}; run `python train.py --preset {args.preset}` first")
    writable_folder(args.out or root)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
    device = (("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
              else args.device)
    if args.hit_rates:
        rates = reflector_hit_rates(root, device)
        write_atomic(os.path.join(root, "hit_rates.json"), json.dumps(rates, indent=1))
        print(json.dumps(rates))
        return
    wall = float("nan")
    if os.path.exists(os.path.join(root, "results.json")):  # keep the suite's own wall time
        with open(os.path.join(root, "results.json")) as f:
            wall = json.load(f).get("wall_s", wall)
    out = args.out or root
    write_report(root, args.bases, args.seeds, wall, device=device, out=out)
    print(f"wrote {out}/report.md")


if __name__ == "__main__":
    main()
