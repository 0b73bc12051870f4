"""
harness/report.py: the reproduction's report. Reads what the runs wrote (the suite's table in
<root>/suite.json; each run's log.jsonl, summary.json and measures.json in its folder:
runs.run_dir), computes the claims C1-C8 (claims.py, probes.py) over every replicate (pretraining
seed x run seed), tests them with stats.py, and writes report.md (markdown.py), PNG plots and
results.json. It loads no weights and never imports train.py: everything rebuilds from the files
the archive keeps.

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

import numpy as np

import eval as ev
from harness import claims as cl  # the numbers behind the claims, from log rows
from harness import plots as draw  # the figures
from harness import stats
from harness.cli import (FOLDER, MOST_SEEDS, CLIParser, UserError, exit_on_user_error, positive,
                         writable_folder)
from harness.hit_rates import hit_rate_table
from harness.markdown import render_report
from harness.probes import C8_MEASURE, continual, exploration, plasticity
from harness.runs import (base_path, base_root, measures, method_folder, read_suite, replicates,
                          run_dir)
from model import setup_device, write_atomic
from world import tasks


def _final(rows):
    return cl.curve(rows)[1][-1]


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
           ("C7 channel split (pattern)", ", ".join(PROMPT_TASKS + WEIGHTS_TASKS), C7_MEASURE),
           ("C8 leaves zero sooner", "sparse", C8_MEASURE))  # the suite's exploration task


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
    runs = {m: replicates(root, reps, t, m) for m in read_suite(root).methods}
    keys = [r for r in reps if all(r in runs[m] for m in ("rl", "fst"))]
    final = {m: {r: _final(v[r]) for r in keys if r in v} for m, v in runs.items()}
    gain = {m: {r: _final(v[r]) - cl.curve(v[r])[1][0] for r in keys if r in v}
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
    ceiling = {r: max(cl.curve(runs["context"][r])[1]) for r in keys if r in runs["context"]}
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
    for m in runs:
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
                series[m] = cl.mean_band([cl.curve(v[r]) for r in keys if r in v])
            else:
                grid = np.linspace(0, min(rows[-1]["rollouts"] for rows in v.values()), 60)
                series[m] = cl.mean_band([(grid, cl.on_grid(v[r], grid)) for r in keys if r in v])
            xs, mean = series[m][0], series[m][1]
            c = curves.setdefault(m, {"n": sum(r in v for r in keys)})
            c["steps" if x == "step" else "rollouts"] = [float(a) for a in xs]
            c["val_acc" if x == "step" else "val_acc_on_rollouts"] = [
                None if np.isnan(a) else float(a) for a in mean]
        bands[x] = series
    return curves, draw.task_figures(folder, t, bands, len(keys),
                                     {m: [cl.kl_curve(runs[m][r]) for r in keys]
                                      for m in ("rl", "fst", "instructed") if runs[m]})


def c1(rl, fst, keys, t, ceiling=None, vs="RL"):
    """C1 per replicate: cl.c1_profile (fixed fractions of the baseline's plateau and its
    running peak, both axes) beside cl.sample_efficiency (the paper's running-peak ratio);
    cl.c1_rows summarizes the profile and guards every level the prompt alone reaches. `rl`:
    the baseline's runs (RL-only, or a control named `vs`). -> ({profile, per_replicate}, rows)."""
    per = {r: cl.c1_profile(rl[r], fst[r]) for r in keys}
    profile, rows = cl.c1_rows(t, per, ceiling, vs=vs)
    return {"profile": profile, "per_replicate": {stats.rep_name(r): dict(
        per[r], running_peak=cl.sample_efficiency(rl[r], fst[r])) for r in keys}}, rows


def c2(rl, fst, keys, t, reps=200, seed=0):
    """Asymptote A of the bounded sigmoid fit on each method's mean curve; A's interval and that of
    A(FST) - A(RL) resample replicates (bases, then seeds). The row is 'not identifiable' unless
    both methods' A pass cl.c2_identifiable. -> ({rl, fst: cl.asymptote}, [its row]), or
    ({}, []) without replicates."""
    if not keys:
        return {}, []
    n = min(len(cl.curve(v[r])[1]) for v in (rl, fst) for r in keys)
    xs = np.array(cl.curve(rl[keys[0]])[0][:n], float)
    curves = np.array([cl.curve(rl[r])[1][:n] + cl.curve(fst[r])[1][:n] for r in keys])  # (k, 2n)
    fit_a = lambda c: cl.sigmoid_fit(xs, c)["A"]
    half = {"rl": slice(0, n), "fst": slice(n, 2 * n)}
    boots = {m: stats.cluster_bootstrap(curves, keys, lambda a, h=h: fit_a(a[:, h].mean(0)), reps,
                                        seed) for m, h in half.items()} if len(keys) > 1 else None
    out = {m: cl.asymptote(xs, curves[:, h].mean(0), ci95=stats.percentile_ci(boots[m])
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
    per = {r: cl.kl_at_matched_reward(rl[r], fst[r], floor=(ceiling or {}).get(r), key=key)
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


def reflector_sweep(root, seeds, hit_rates):
    """C1 and C3 of FST with each sweep reflector (suite.json's sweep_reflectors) on the first base,
    beside the default's runs there: exploratory rows (n = run seeds). Only reflectors with runs
    enter; without any, the sweep is not in the report. -> ({reflector: {task: hit rate, told, n,
    c1_profile}}, the rows)."""
    S, reps = read_suite(root), [(0, s) for s in seeds]
    out, rows = {}, []
    have = [(n, method_folder("fst", n)) for n in S.sweep_reflectors
            if any(replicates(root, reps, t, method_folder("fst", n)) for t in S.tasks)]
    for name, method in ([("edit", "fst")] + have) if have else []:
        out[name] = {}
        for t in S.tasks:
            rl, fst = replicates(root, reps, t, "rl"), replicates(root, reps, t, method)
            ctx = replicates(root, reps, t, "context")
            keys = [r for r in reps if r in rl and r in fst]
            if not keys:
                continue
            ceiling = {r: max(cl.curve(ctx[r])[1]) for r in keys if r in ctx}
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
    for t in read_suite(root).tasks:
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
    the runs' own clocks (wall_from_folders). `device` is kept for callers; nothing here runs a
    model.
    -> results.json's dict."""
    out = out or root
    os.makedirs(out, exist_ok=True)
    reps = [(b, s) for b in range(bases) for s in range(seeds)]
    metrics = {}
    for b in range(bases):
        with open(os.path.join(os.path.dirname(base_path(root, b)), "metrics.json")) as f:
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
        res["grid_reference"] = cl.grid_reference(res["preset"], res["claims"])
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
    S = read_suite(root)
    for b, s in reps:
        for t in S.tasks:
            path = os.path.join(run_dir(base_root(root, b), t, "rl", s, S.budget_blind),
                                "summary.json")
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)["config"]
    return None


def suite_folders(root, bases, seeds, sweep=False):
    """The folders of the suite's runs (its table: suite.json) for bases x seeds, each once (a dial
    level's budget-blind runs are its family's), the reflector sweep's with sweep=True."""
    S, folders = read_suite(root), []
    for s in range(seeds):  # in train.suite_runs' order
        for b in range(bases):
            broot = base_root(root, b)
            for name, methods in ([("continual", ["fst", "rl"])] + [(t, S.methods) for t in S.tasks]
                                  + [(S.exploration_task, S.exploration_methods)]):
                folders += [run_dir(broot, name, m, s, S.budget_blind) for m in methods]
            if sweep and b == 0:
                folders += [run_dir(broot, t, method_folder("fst", r), s)
                            for r in S.sweep_reflectors for t in S.tasks]
            folders += [run_dir(broot, "plasticity", i, s) for i in S.plasticity_inits]
    return list(dict.fromkeys(folders))


def unfinished_suite(root, bases, seeds, preset):
    """The report reads every run of the suite: one line naming what is missing, if any."""
    folders = suite_folders(root, bases, seeds)
    todo = [f for f in folders if not os.path.exists(os.path.join(f, "summary.json"))]
    if todo:
        raise UserError(f"{len(todo)} of the suite's {len(folders)} runs under {root} are not "
                        f"finished (the first: {todo[0]}); run `python train.py --preset {preset} "
                        f"--bases {bases} --seeds {seeds}` first (`python -m harness.phase` "
                        "reports the phase grid)")


def wall_from_folders(root, bases, seeds):
    """The suite's wall time as train.reproduce sums it, from what was written to disk: each base's
    pretraining and each finished run of the suite (the reflector sweep's too, where it ran), each
    on its own clock (a grid run by a scheduler has no results.json to take it from)."""
    paths = [os.path.join(os.path.dirname(base_path(root, b)), "metrics.json")
             for b in range(bases)]
    paths += [os.path.join(f, "summary.json") for f in suite_folders(root, bases, seeds, True)]
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
    if not os.path.exists(os.path.join(os.path.dirname(base_path(root, 0)),
                                       "metrics.json")):
        raise UserError(f"no runs under {root}; run `python train.py --preset {args.preset}` first")
    writable_folder(args.out or root)
    if not args.hit_rates:
        unfinished_suite(root, args.bases, args.seeds, args.preset)
    if args.hit_rates:
        S = read_suite(root)  # each reflector on each suite task (and the probes'), the first base
        rates = hit_rate_table(base_path(root, 0), S.tasks + [S.plasticity_task,
                               S.exploration_task], ("oracle", "edit", "demo"), device)
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
