"""
report.py: the reproduction's report. Reads the suite's runs (the folder layout is defined here, once),
computes the claims C1-C7 with eval.py's measurements, and writes report.md, PNG plots and results.json.

    python report.py --preset tiny          # rebuild runs/tiny/report.md, plots and results.json
    python report.py --preset tiny --seeds 3

The suite (train.py) writes every run under run_dir(root, task, method, seed); the report reads the same
folders back. Nothing here trains.
"""

import json
import os

import numpy as np

import tasks
from cli import CLIParser, UserError, exit_on_user_error, positive
from eval import (area_and_threshold, compare, curve, general_accuracy, kl_at_matched_reward, mean_std,
                  sample_efficiency, sigmoid_fit, task_accuracy)
from model import load_checkpoint, write_atomic

SUITE_TASKS = ["hidden-rule", "cipher", "long-lists"]
PLASTICITY_TASK = "hidden-rule-2"                       # fresh RL on a second hidden rule, from three inits
CONTINUAL = ["hidden-rule", "cipher", "hidden-rule-2"]  # three stages, task-agnostic seed prompt
SUITE_METHODS = ["rl", "context", "fst", "instructed", "sequential"]  # the last two: controls for interleaving


def run_dir(root, task, method, seed):
    """Where the suite keeps one run: root/<task or 'plasticity' or 'continual'>/<method or init>/s<seed>."""
    return os.path.join(root, task, method, f"s{seed}")


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def _runs(root, *parts):
    """All seed folders of one configuration, e.g. _runs(root, 'cipher', 'fst') -> [(seed, rows)]."""
    d = os.path.join(root, *parts)
    if not os.path.isdir(d):
        return []
    return [(int(s[1:]), read_log(os.path.join(d, s))) for s in sorted(os.listdir(d))
            if s.startswith("s") and os.path.exists(os.path.join(d, s, "log.jsonl"))]  # s<seed>: see run_dir


def _final_model(folder, device):
    model, extra = load_checkpoint(os.path.join(folder, "model.pt"), device)
    return model.eval(), extra


def channels_and_forgetting(root, task_name, seed, base, enc, n_val, samples=4):
    """C4 and C7 for one task and seed: general skills and seed-prompt accuracy of base / rl / fst, and the
    2x2 table {base, fst weights} x {seed, fst prompt}."""
    task = tasks.make_task(task_name, n_val=n_val)
    out = {"c4": {}, "c7": {}}
    models = {"base": (base, None)}
    for m in ("rl", "fst"):
        models[m] = _final_model(run_dir(root, task_name, m, seed), base.wte.weight.device)
    for name, (model, extra) in models.items():
        out["c4"][name] = {"general_acc": general_accuracy(model, enc),
                           "no_prompt_acc": task_accuracy(model, enc, task.seed_prompt, task.val, samples)[0]}
    fst_model, fst_extra = models["fst"]
    fst_prompt = fst_extra["deployed_prompt"]
    for wname, mname in (("base_weights", "base"), ("fst_weights", "fst")):  # seed-prompt column = C4's no_prompt_acc
        out["c7"][wname] = {"seed_prompt": out["c4"][mname]["no_prompt_acc"],
                            "fst_prompt": task_accuracy(models[mname][0], enc, fst_prompt, task.val, samples)[0]}
    out["c7"]["fst_prompt_text"] = fst_prompt
    return out


def _agg(dicts):
    """Average a list of same-shaped nested dicts of numbers -> same shape with {mean, std, n} leaves."""
    first = dicts[0]
    if isinstance(first, dict):
        return {k: _agg([d[k] for d in dicts]) for k in first}
    if isinstance(first, (int, float)) or first is None:
        return mean_std(dicts)
    return first


def plot_curves(path, series, xlabel, title, vlines=()):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker=".", ms=3)
    for v in vlines:
        ax.axvline(v, color="gray", ls="--", lw=0.8)
    ax.set(xlabel=xlabel, ylabel="val exact match (mean@4)", ylim=(-0.02, 1.02))
    _finish_plot(fig, ax, path, title)


def write_report(root, seeds, suite_wall_s, device="cpu", suite_tasks=SUITE_TASKS,
                 plasticity_task=PLASTICITY_TASK, continual=CONTINUAL):
    """Compute C1-C7 from the runs under `root` on `device`; write results.json, report.md and PNG plots there.
    The preset's name and val size are read from the base model's metrics (the runs were made with them)."""
    base, extra = load_checkpoint(os.path.join(root, "base", "model.pt"), device)
    preset = extra["metrics"]["preset"]
    base.eval()
    enc = tasks.tokenizer_from_state(extra["tokenizer"])
    seed_list = list(range(seeds))
    res = {"preset": preset["name"], "seeds": seed_list, "wall_s": suite_wall_s,
           "c1_sample_efficiency": {}, "c2_asymptote": {}, "c3_kl_at_matched_reward": {}, "c4_forgetting": {},
           "c5_plasticity": {}, "c6_continual": {}, "c7_channels": {}, "runs": {}, "controls": {}}
    plots = []
    for t in suite_tasks:
        runs = {m: dict(_runs(root, t, m)) for m in SUITE_METHODS}
        runs = {m: v for m, v in runs.items() if v}  # suites made before the controls existed lack them
        res["runs"][t] = {m: {"rollouts": mean_std([r[-1]["rollouts"] for r in v.values()]),
                              "wall_s": mean_std([r[-1]["wall_s"] for r in v.values()]),
                              "final_val_acc": mean_std([curve(r)[1][-1] for r in v.values()])}
                          for m, v in runs.items()}
        final = {m: [curve(v[s])[1][-1] for s in seed_list] for m, v in runs.items()}
        res["controls"][t] = {m: {"final_val_acc": mean_std(final[m]),
                                  "fst_minus_this": compare(final["fst"], final[m])}
                              for m in runs if m != "fst"}
        res["c1_sample_efficiency"][t] = _agg([sample_efficiency(runs["rl"][s], runs["fst"][s]) for s in seed_list])
        res["c3_kl_at_matched_reward"][t] = _agg([kl_at_matched_reward(runs["rl"][s], runs["fst"][s]) for s in seed_list])
        res["c2_asymptote"][t] = {}
        for x in ("step", "rollouts"):
            series = {}
            for m, v in runs.items():
                xs, _ = curve(v[0], x)
                ys = np.mean([curve(v[s], x)[1][:len(xs)] for s in seed_list if len(curve(v[s], x)[1]) >= len(xs)], 0)
                series[m] = (xs, list(ys))
                if x == "step" and m != "context":
                    res["c2_asymptote"][t][m] = sigmoid_fit(xs, ys)
            name = f"{t}_acc_vs_{'steps' if x == 'step' else 'rollouts'}.png"
            plot_curves(os.path.join(root, name), series, "RL steps" if x == "step" else "rollouts generated (all)",
                        f"{t}: val accuracy (mean over {seeds} seed(s))")
            plots.append(name)
        name = f"{t}_kl_vs_acc.png"
        kl_series = {m: ([r["val_acc"] for r in runs[m][0] if "kl" in r], [r["kl"] for r in runs[m][0] if "kl" in r])
                     for m in ("rl", "fst")}
        _plot_kl(os.path.join(root, name), kl_series, t)
        plots.append(name)
        per_seed = [channels_and_forgetting(root, t, s, base, enc, preset["n_val"]) for s in seed_list]
        res["c4_forgetting"][t] = _agg([p["c4"] for p in per_seed])
        res["c7_channels"][t] = _agg([p["c7"] for p in per_seed])
    # C5 plasticity: fresh RL on a new task from three inits
    pl = {init: dict(_runs(root, "plasticity", init)) for init in ("base", "rl", "fst")}
    res["c5_plasticity"] = {"task": plasticity_task, "threshold": 0.5}
    for init, v in pl.items():
        res["c5_plasticity"][f"from_{init}"] = _agg([area_and_threshold(v[s], 0.5) for s in seed_list])
    plot_curves(os.path.join(root, "plasticity.png"), {f"RL from {k}-init": curve(v[0]) for k, v in pl.items()},
                "RL steps", f"plasticity: fresh RL on {plasticity_task}")
    plots.append("plasticity.png")
    # C6 continual: per-stage peak and mean accuracy, normalized by the best method's peak in that stage
    cont = {m: dict(_runs(root, "continual", m)) for m in ("rl", "fst")}
    stages = {}
    for s in seed_list:
        per = {}
        for m in ("rl", "fst"):
            rows = cont[m][s]
            per[m] = [[r["val_acc"] for r in rows if "val_acc" in r and r["task"] == name] for name in continual]
        for i, name in enumerate(continual):
            best = max(max(per[m][i]) for m in per) or 1.0
            for m in per:
                stages.setdefault(f"stage{i + 1}_{name}", {}).setdefault(m, []).append(
                    {"peak_norm": max(per[m][i]) / best, "mean_norm": float(np.mean(per[m][i])) / best,
                     "peak": max(per[m][i])})
    res["c6_continual"] = {k: {m: _agg(v) for m, v in d.items()} for k, d in stages.items()}
    bounds = np.cumsum([sum(r["task"] == name for r in cont["rl"][0]) for name in continual])[:-1]  # stage switches
    plot_curves(os.path.join(root, "continual.png"), {m: curve(v[0]) for m, v in cont.items()}, "RL steps",
                "continual: " + " -> ".join(continual), vlines=bounds)
    plots.append("continual.png")
    write_atomic(os.path.join(root, "results.json"), json.dumps(res, indent=2))
    write_atomic(os.path.join(root, "report.md"), render_report(res, plots, suite_tasks, continual))
    return res


def _plot_kl(path, series, task):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, (acc, kl) in series.items():
        ax.plot(acc, kl, marker="o", ms=3, lw=0.8, label=m)
    ax.set(xlabel="val exact match (mean@4)", ylabel="KL(pi_theta || pi_base) per token")
    _finish_plot(fig, ax, path, f"{task}: drift from the base vs accuracy")


def _finish_plot(fig, ax, path, title):
    import matplotlib.pyplot as plt
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _m(x, digits=3):
    """Format an aggregated {mean, ci95, n} leaf (or a plain number): mean [95% interval]."""
    if isinstance(x, dict) and "mean" in x:
        if x["mean"] is None:
            return "n/a"
        lo, hi = x.get("ci95") or (None, None)
        return f"{x['mean']:.{digits}f}" + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if x["n"] > 1 else "")
    return "n/a" if x is None else f"{x:.{digits}f}"


def _mean(x):
    return x["mean"] if isinstance(x, dict) else x


def render_report(res, plots, suite_tasks, continual):
    L = [f"# fastslow report: preset `{res['preset']}`", "",
         f"Seeds {res['seeds']}; suite wall time {res['wall_s']:.0f} s (pretraining and every run, each on its own "
         "clock, summed). Accuracy = exact match on the val split, "
         "mean@4 at the training temperature, with each method's deployed prompt (RL: the seed prompt; FST and "
         "context-only: the frontier candidate with the best mean on D_p). Values are mean [95% bootstrap interval] "
         "over seeds.", ""]
    L += ["## Runs", "", "| task | method | final val acc | rollouts (all) | wall s |", "|---|---|---|---|---|"]
    for t, d in res["runs"].items():
        for m, v in d.items():
            L.append(f"| {t} | {m} | {_m(v['final_val_acc'])} | {_m(v['rollouts'], 0)} | {_m(v['wall_s'], 0)} |")
    L += ["", "## Controls: does interleaving matter? (final val acc; FST minus the control, paired by seed)", "",
          "| task | control | its final val acc | FST - control | verdict |", "|---|---|---|---|---|"]
    for t, d in res["controls"].items():
        for m, v in d.items():
            diff = v["fst_minus_this"]
            L.append(f"| {t} | {m} | {_m(v['final_val_acc'])} | {_m(diff)} | FST {diff['verdict']} |")
    verdict = lambda ok: "**yes**" if ok else "**no**"
    L += ["", "## C1 sample efficiency: steps for FST to reach RL-only's peak", "",
          "| task | RL peak | RL steps to peak | FST steps to RL peak | ratio (steps) | ratio (rollouts) | trend (ratio ≥ 2) |",
          "|---|---|---|---|---|---|---|"]
    for t, d in res["c1_sample_efficiency"].items():
        r = _mean(d["ratio"])
        L.append(f"| {t} | {_m(d['rl_peak'])} | {_m(d['rl_steps_to_peak'], 0)} | {_m(d['fst_steps_to_rl_peak'], 0)} | "
                 f"{_m(d['ratio'], 2)} | {_m(d['ratio_rollouts'], 2)} | {verdict(r is not None and r >= 2)} |")
    L += ["", "## C2 asymptote: sigmoid fit R = R0 + (A - R0) / (1 + (Cmid/C)^B) of accuracy vs steps", "",
          "| task | A (RL) | A (FST) | trend (FST > RL) |", "|---|---|---|---|"]
    for t, d in res["c2_asymptote"].items():
        L.append(f"| {t} | {d['rl']['A']:.3f} | {d['fst']['A']:.3f} | {verdict(d['fst']['A'] > d['rl']['A'])} |")
    L += ["", "## C3 drift: KL(pi_theta || pi_base) per token at matched reward", "",
          "| task | reward level | RL KL | FST KL | ratio FST/RL | trend (≤ 0.5) |", "|---|---|---|---|---|---|"]
    for t, d in res["c3_kl_at_matched_reward"].items():
        r = _mean(d["ratio"])
        L.append(f"| {t} | {_m(d['reward'])} | {_m(d['rl_kl'], 4)} | {_m(d['fst_kl'], 4)} | {_m(d['ratio'], 2)} | "
                 f"{verdict(r is not None and r <= 0.5)} |")
    L += ["", "## C4 forgetting: general skills (own instruction in context) and the task with the seed prompt", "",
          "| task | base general | RL general | FST general | base no-prompt | RL no-prompt | FST no-prompt | trend (FST general ≥ RL) |",
          "|---|---|---|---|---|---|---|---|"]
    for t, d in res["c4_forgetting"].items():
        ok = _mean(d["fst"]["general_acc"]) >= _mean(d["rl"]["general_acc"])
        L.append(f"| {t} | {_m(d['base']['general_acc'])} | {_m(d['rl']['general_acc'])} | {_m(d['fst']['general_acc'])} | "
                 f"{_m(d['base']['no_prompt_acc'])} | {_m(d['rl']['no_prompt_acc'])} | {_m(d['fst']['no_prompt_acc'])} | {verdict(ok)} |")
    p = res["c5_plasticity"]
    L += ["", f"## C5 plasticity: fresh RL (seed prompt) on `{p['task']}` from three inits", "",
          f"| init | area under the accuracy curve | steps to {p['threshold']} | final |", "|---|---|---|---|"]
    for k in ("from_base", "from_rl", "from_fst"):
        L.append(f"| {k} | {_m(p[k]['auc'])} | {_m(p[k]['steps_to_threshold'], 0)} | {_m(p[k]['final'])} |")
    ok = _mean(p["from_fst"]["auc"]) > _mean(p["from_rl"]["auc"])
    L.append(f"\nTrend (FST-init learns faster than RL-init, by area): {verdict(ok)}")
    L += ["", "## C6 continual: " + " -> ".join(continual), "",
          "| stage | RL peak (norm.) | FST peak (norm.) | RL mean (norm.) | FST mean (norm.) |", "|---|---|---|---|---|"]
    for k, d in res["c6_continual"].items():
        L.append(f"| {k} | {_m(d['rl']['peak_norm'])} | {_m(d['fst']['peak_norm'])} | {_m(d['rl']['mean_norm'])} | {_m(d['fst']['mean_norm'])} |")
    later = list(res["c6_continual"].values())[1:]
    ok = all(_mean(d["fst"]["mean_norm"]) > _mean(d["rl"]["mean_norm"]) for d in later)
    L.append(f"\nTrend (FST beats RL in stages 2 and 3, normalized mean accuracy): {verdict(ok)}")
    L += ["", "## C7 which channel carries the gain: {base, FST weights} x {seed, FST prompt}", "",
          "| task | base + seed | base + FST prompt | FST weights + seed | FST weights + FST prompt | FST prompt |",
          "|---|---|---|---|---|---|"]
    for t, d in res["c7_channels"].items():
        L.append(f"| {t} | {_m(d['base_weights']['seed_prompt'])} | {_m(d['base_weights']['fst_prompt'])} | "
                 f"{_m(d['fst_weights']['seed_prompt'])} | {_m(d['fst_weights']['fst_prompt'])} | `{d['fst_prompt_text']}` |")
    L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def reflector_hit_rates(root, device="cpu", names=("oracle", "edit", "demo"), trials=100):
    """First-proposal hit rate of each reflector on each suite task (and the probe's), with the base
    model's own greedy outputs as the records: {task: {reflector: rate}} (reflectors.first_hit_rate)."""
    import reflectors
    from episodes import greedy_evaluate
    base, extra = load_checkpoint(os.path.join(root, "base", "model.pt"), device)
    enc, preset = tasks.tokenizer_from_state(extra["tokenizer"]), extra["metrics"]["preset"]
    evaluate = greedy_evaluate(base.eval(), enc, preset["max_new_tokens"])
    count = lambda text: len(enc.encode_ordinary(text))
    out = {}
    for name in SUITE_TASKS + [PLASTICITY_TASK]:
        task = tasks.make_task(name, n_pareto=preset["n_pareto"], n_val=preset["n_val"])
        out[name] = {r: reflectors.first_hit_rate(reflectors.make_reflector(r, preset["context_tokens"], count),
                                                  task, evaluate, trials=trials) for r in names}
    return out


@exit_on_user_error
def main(argv=None):
    import torch
    ap = CLIParser(prog="report.py", description="rebuild report.md, plots and results.json from existing runs")
    ap.add_argument("--preset", default="tiny", help="the runs under runs/<preset>")
    ap.add_argument("--seeds", type=positive(int), default=1)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--hit-rates", action="store_true", help="only: each reflector's first-proposal hit rate")
    args = ap.parse_args(argv)
    root = os.path.join("runs", args.preset)
    if not os.path.exists(os.path.join(root, "base", "model.pt")):
        raise UserError(f"no runs under {root}; run `python train.py --preset {args.preset}` first")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.hit_rates:
        print(json.dumps(reflector_hit_rates(root, device)))
        return
    old = os.path.join(root, "results.json")
    wall = float("nan")
    if os.path.exists(old):  # keep the suite's own wall time
        with open(old) as f:
            wall = json.load(f).get("wall_s", wall)
    write_report(root, args.seeds, wall, device=device)
    print(f"wrote {root}/report.md")


if __name__ == "__main__":
    main()
