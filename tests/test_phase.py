"""
phase.py on a synthetic runs folder: the grid's jobs (context-only first, replicates seed-major,
RL-only and instructed shared by every cell), and the report's per-cell measures and labels where
the answer is known (FST far ahead where the whole table fits, FST = RL where nothing fits).

Run: python -m pytest -q tests/test_phase.py   (seconds)
"""

import json
import os

import numpy as np

import train
from harness import phase, runs


def _write(folder, vals, kl, every=5, prompts=None):
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i, v in enumerate(vals):
        for step in range(i * every, (i + 1) * every):
            rows.append({"step": step, "rollouts": (step + 1) * 128})
        rows[-1].update(val_acc=float(v), kl=kl, kl_common=kl,
                        prompt=prompts[i] if prompts else "rule: ?")
    with open(os.path.join(folder, "log.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({}, f)


def test_jobs_order_and_sharing():
    jobs = phase.jobs(train.PRESETS["micro"], "R", bases=2, seeds=2)
    waves = [w for w, _, _ in jobs]
    assert waves == sorted(waves) and waves.count(1) == 2 * 2 * len(phase.LEVELS) * 2
    assert all(kw["method"] == "context" for w, _, kw in jobs if w == 1)
    wave2 = [(f, kw) for w, f, kw in jobs if w == 2]
    per_rep = 2 + len(phase.LEVELS) * len(phase.REFLECTORS) * 2
    assert len(wave2) == 4 * per_rep
    # seed-major: both bases' seed 0 before any seed 1
    assert [kw["seed"] for _, kw in wave2[::per_rep]] == [0, 0, 1, 1]
    assert {kw["schedule"][0][0] for f, kw in wave2 if kw["method"] in ("rl", "instructed")} == \
        {"cipher"}
    assert len({f for _, f, _ in jobs}) == len(jobs)  # every run its own folder


def test_report_on_a_synthetic_grid(tmp_path):
    root, x = str(tmp_path), np.arange(1, 21) * 5.0
    rng = np.random.default_rng(0)
    rl = lambda: 0.05 + 0.6 / (1 + (50 / x) ** 3) + rng.normal(0, 0.01, 20)
    for b in range(3):
        for s in range(2):
            broot = runs.base_root(root, b)
            for m, kl in (("rl", 1.0), ("instructed", 0.3)):
                _write(runs.run_dir(broot, "cipher", m, s), rl() if m == "rl" else
                       0.9 + 0.0 * x, kl)
            for k in phase.LEVELS:
                for refl in phase.REFLECTORS:
                    # k = 3: FST at the top from the start; k = 0: FST is RL
                    fst = 0.9 + 0.0 * x if k == 3 else rl()
                    for m in ("fst", "sequential"):  # k = 0: the seed prompt alone
                        _write(runs.run_dir(broot, phase.level_task(k),
                                            runs.method_folder(m, refl), s), fst,
                               0.1 if k else 1.0,
                               prompts=["rule: map 2>7"] * 20 if k else None)
                    _write(runs.run_dir(broot, phase.level_task(k),
                                        runs.method_folder("context", refl), s),
                           [0.1] * 20, 0.0, prompts=["rule: ?"] * 3 + ["rule: map 2>7"] * 17)
    runs.write_suite(root, train.SUITE)  # the suite's table, as the reproduction writes it
    res = phase.write_report(root, 3, 2, 1.0, out=os.path.join(root, "out"))
    assert os.path.exists(os.path.join(root, "out", "phase.md"))
    assert all(os.path.exists(os.path.join(root, "out", f"phase_{m}.png")) for m in phase.MEASURES)
    gap = lambda k, r: phase.cell_value(res, k, r, "gap")
    # every row here is exploratory: no verdict words; the primary family is the suite's
    assert gap(3, "edit")["label"] == "exploratory" and gap(3, "edit")["n"] == 6
    assert gap(3, "edit")["vs"]["sequential"]["survives"] == "no"  # FST = sequential here
    assert gap(3, "edit")["vs"]["instructed"]["survives"] == "no"
    # k = 0: FST's prompt never left the seed prompt, an A/A comparison with RL
    assert gap(0, "edit")["label"] == "noise floor" and abs(gap(0, "edit")["mean"]) < 0.05
    assert "k0 edit" in res["noise_floor"] and res["noise_floor"]["k0 edit"]["gap"]["n"] == 6
    assert phase.cell_value(res, 3, "edit", "vs_sequential")["label"] == "exploratory"
    assert phase.cell_value(res, 0, "edit", "vs_instructed")["label"] == "exploratory"
    c1 = phase.cell_value(res, 3, "edit", "c1_0.9")
    assert c1["label"] == "exploratory" and c1["ratio"]["n_lower_bounds"] == 6
    assert res["family"]["tests"] == 0 and "cluster bootstrap" in res["methods"]["interval"]
    ctx = next(iter(res["cells"]["k3 edit"]["per_replicate"].values()))["context"]
    assert ctx["rounds"] == 4 and ctx["prompt"] == "rule: map 2>7"
    assert res["curves"]["cipher rl"]["n"] == 6


def test_archive_keeps_finished_runs_and_bases(tmp_path):
    root, dest = str(tmp_path / "runs"), str(tmp_path / "kept")
    broot = runs.base_root(root, 0)
    os.makedirs(os.path.join(broot, "base"))
    for name in ("model.pt", "metrics.json"):
        with open(os.path.join(broot, "base", name), "w") as f:
            f.write(name)
    done = runs.run_dir(broot, "cipher", "rl", 0)
    busy = runs.run_dir(broot, phase.level_task(2), runs.method_folder("fst", "edit"), 0)
    _write(done, [0.1, 0.2], 1.0)
    _write(busy, [0.1], 1.0)
    with open(os.path.join(busy, "ckpt.pt"), "w") as f:  # unfinished: a checkpoint is kept
        f.write("ckpt")
    with open(os.path.join(done, "model.pt"), "w") as f:
        f.write("weights")
    # the plasticity probe starts from the prior task's weights: kept while its run is unfinished
    for init, probe_done in (("rl", False), ("fst", True)):
        prior = runs.run_dir(broot, train.SUITE["prior_task"], init, 0)
        _write(prior, [0.1, 0.2], 1.0)
        with open(os.path.join(prior, "model.pt"), "w") as f:
            f.write("weights")
        if probe_done:
            _write(runs.run_dir(broot, "plasticity", init, 0), [0.1, 0.2], 1.0)
    runs.write_suite(root, train.SUITE)
    assert phase.archive(root, 1, 1, dest) == 4
    kept = sorted(os.path.relpath(os.path.join(d, f), dest)
                  for d, _, fs in os.walk(dest) for f in fs)
    prior = "b0/" + train.SUITE["prior_task"]
    assert kept == ["b0/base/metrics.json", "b0/base/model.pt",
                    "b0/cipher/rl/s0/log.jsonl", "b0/cipher/rl/s0/summary.json",
                    f"{prior}/fst/s0/log.jsonl", f"{prior}/fst/s0/summary.json",
                    f"{prior}/rl/s0/log.jsonl", f"{prior}/rl/s0/model.pt",
                    f"{prior}/rl/s0/summary.json",
                    "b0/plasticity/fst/s0/log.jsonl", "b0/plasticity/fst/s0/summary.json",
                    "suite.json"]
    for name in ("log.jsonl", "summary.json"):
        with open(os.path.join(done, name)) as a:
            with open(os.path.join(dest, "b0/cipher/rl/s0", name)) as b:
                assert a.read() == b.read()


def test_c2_budget_waits_for_every_rl_curve_to_stop_moving():
    def rows(vals):
        return [{"step": (i + 1) * 5 - 1, "val_acc": v} for i, v in enumerate(vals)]
    x = np.arange(1, 161) * 5  # 800 steps, an eval every 5
    flat_early = rows(np.where(x <= 100, 0.2, 0.5))
    step_late = rows(np.where(x <= 400, 0.5, 0.9))  # a flat stretch, then one more step up
    assert phase.c2_budget({0: flat_early}) == (300, True)
    assert phase.c2_budget({0: flat_early, 1: step_late}) == (600, True)
    assert phase.c2_budget({0: rows(x / 1000)}) == (800, False)  # never flat: the whole run


def test_c2_long_reads_rl_long_runs_then_fst_at_the_budget(tmp_path):
    root, x = str(tmp_path), np.arange(1, 161) * 5
    runs.write_suite(root, train.SUITE)
    assert phase.c2_long(root, 3) is None  # before RL-only's long runs
    for b in range(3):
        rl = np.where(x <= 100, 0.3, 0.6) + 0.01 * b
        _write(runs.run_dir(runs.base_root(root, b), phase.C2_RL_TASK, "rl", 0), rl, 1.0)
    c2 = phase.c2_long(root, 3)
    assert c2["budget"] == 300 and c2["rule_met"] and "row" not in c2
    assert c2["task"] == "cipher-k2-long300"
    assert "has not run yet" in "\n".join(phase.render_c2(c2))
    for b in range(3):
        fst = 0.95 - 0.6 * np.exp(-x[:60] / 30) + 0.01 * b
        _write(runs.run_dir(runs.base_root(root, b), c2["task"],
                              runs.method_folder("fst", "edit"), 0), fst, 0.5)
    c2 = phase.c2_long(root, 3)
    assert c2["row"]["n"] == 3 and c2["row"]["mean"] > 0.2  # FST's A above RL's
    assert set(c2["fits"]) == {"rl", "fst"} and 0.55 < c2["fits"]["rl"]["A"] < 0.65
    assert "| fst |" in "\n".join(phase.render_c2(c2))


def test_one_label_rule_for_both_reports(tmp_path, monkeypatch):
    """C1 at 0.9 of RL's plateau where the prompt alone (context-only) reaches the level: the
    phase report's cell and the suite report's row get the same label from the same function."""
    from harness import claims as cl, report, stats
    root, x = str(tmp_path), np.arange(1, 21) * 5.0
    rng = np.random.default_rng(0)
    for b in range(3):
        for s in range(3):
            broot = runs.base_root(root, b)
            for m in ("rl", "instructed"):
                _write(runs.run_dir(broot, "cipher", m, s),
                       0.05 + 0.6 / (1 + (50 / x) ** 3) + rng.normal(0, 0.01, 20), 1.0)
            for k in phase.LEVELS:
                for refl in phase.REFLECTORS:
                    for m in ("fst", "sequential", "context"):  # the prompt alone is at 0.9
                        _write(runs.run_dir(broot, phase.level_task(k),
                                            runs.method_folder(m, refl), s), 0.9 + 0.0 * x, 0.1,
                               prompts=["rule: map 2>7"] * 20)
    runs.write_suite(root, train.SUITE)  # the suite's table, as the reproduction writes it
    calls = []
    rule = stats.label
    monkeypatch.setattr(stats, "label", lambda *a, **kw: calls.append(kw) or rule(*a, **kw))
    res = phase.write_report(root, 3, 3, 1.0, out=os.path.join(root, "out"))
    cell = phase.cell_value(res, 2, "edit", "c1_0.9")
    from_phase = len(calls)
    reps = [(b, s) for b in range(3) for s in range(3)]
    t = phase.level_task(2)
    rl, fst = (runs.replicates(root, reps, "cipher", "rl"),
               runs.replicates(root, reps, t, "fst"))
    ctx = runs.replicates(root, reps, t, "context")
    ceiling = {r: max(cl.curve(ctx[r])[1]) for r in reps}
    _, rows = report.c1(rl, fst, reps, t, ceiling)
    stats.label_family(rows, report.PRIMARY)
    row = next(r for r in rows if r["measure"].startswith("Gehan score, steps to 0.9"))
    assert from_phase > 0 and len(calls) > from_phase  # both reports went through stats.label
    assert cell["label"] == row["label"] == "not tested"
    assert cell["why"] == row["why"] == "the context-only run reaches the level in 9 of 9"
    assert cell["per_replicate"] == row["per_replicate"] and cell["mean"] == row["mean"]
    assert "not tested: the context-only run reaches the level in 9 of 9" in open(
        os.path.join(root, "out", "phase.md")).read()
