"""
harness/markdown.py: report.md, written from results.json's dict (harness/report.py builds it):
how the numbers were made, the primary family and the exploratory rows with their labels, the C1
profile, the runs and controls, C7's 2x2 table, C8 with its controls and the reflector sweep.
The text is kept apart from the numbers: report.py computes results.json, this only formats it.

    text = render_report(results, plot_names)
"""

from harness import stats

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
