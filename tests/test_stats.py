"""
stats.py on synthetic data with known answers: the cluster bootstrap (wider than the i.i.d. one
when bases differ), Holm's adjustment, the C1 profile (exact ratios on a known curve), the
censoring-aware time-to-level comparison reaching either verdict, C2's identifiability rule, the
equivalence and pattern tests, and "n < 5" carrying no verdict. Pure numpy apart from eval's
sigmoid fit.
"""

import json

import numpy as np

import eval as ev
from harness import stats
from harness import suite

KEYS = [(b, s) for b in range(3) for s in range(3)]  # 3 bases x 3 run seeds


def _rows(vals, every=5, rollouts_per_step=16):
    """Log rows with an eval every `every` steps (x = step + 1 = every, 2 * every, ...)."""
    rows = []
    for i, v in enumerate(vals):
        for step in range(i * every, (i + 1) * every):
            rows.append({"step": step, "rollouts": (step + 1) * rollouts_per_step})
        rows[-1]["val_acc"] = v
    return rows


# --- the bootstrap ------------------------------------------------------------------------------

def test_cluster_bootstrap_is_wider_than_iid_when_bases_differ():
    rng = np.random.default_rng(0)
    vals = np.array([b + rng.normal(0, 0.05) for b, _ in KEYS])  # base means 0, 1, 2
    clustered = stats.percentile_ci(stats.cluster_bootstrap(vals, KEYS))
    iid = stats.percentile_ci(stats.cluster_bootstrap(vals, stats.iid_keys(len(vals))))
    assert clustered[0] < vals.mean() < clustered[1] and iid[0] < vals.mean() < iid[1]
    assert clustered[1] - clustered[0] > 1.4 * (iid[1] - iid[0])
    # bases that agree: clustering changes little
    same = np.array([0.5 + rng.normal(0, 0.05) for _ in KEYS])
    w_c = np.diff(stats.percentile_ci(stats.cluster_bootstrap(same, KEYS)))[0]
    w_i = np.diff(stats.percentile_ci(stats.cluster_bootstrap(same, stats.iid_keys(9))))[0]
    assert 0.5 < w_c / w_i < 1.6
    # seeded (a report rebuilds identically), resamples stay within bases, unbalanced bases work
    idx = stats.cluster_indices(KEYS, reps=50, seed=3)
    assert all(len(i) == 9 for i in idx)
    assert [list(i) for i in idx] == [list(i) for i in stats.cluster_indices(KEYS, 50, 3)]
    uneven = [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert {len(i) for i in stats.cluster_indices(uneven, reps=200)} >= {4, 6}
    few, many = rng.normal(1, 1, 8), rng.normal(1, 1, 800)  # i.i.d.: the interval ~ 1 / sqrt(n)
    w_few, w_many = (np.diff(stats.mean_std(v)["ci95"])[0] for v in (few, many))
    assert w_many < w_few / 4
    one = stats.mean_std([0.4])
    assert one["ci95"] == [0.4, 0.4] and one["n"] == 1
    assert stats.mean_std([None, float("nan")])["n"] == 0


def test_holm_on_known_p_values():
    assert np.allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert np.allclose(stats.holm([0.01, 0.9]), [0.02, 0.9])
    assert stats.holm([0.2]) == [0.2]


def test_bootstrap_p_values():
    boots = np.linspace(0.1, 0.3, 1000)  # all above 0
    assert stats.p_two_sided(boots) == 2 / 1001
    assert stats.p_two_sided(np.zeros(100)) == 1.0  # a degenerate statistic at the null
    assert stats.p_two_sided(np.full(100, 1e-5)) == 1.0  # float noise is no difference
    assert stats.p_tost(np.linspace(-0.02, 0.02, 1000)) == 1 / 1001
    assert stats.p_tost(np.linspace(0.0, 0.1, 1001)) > 0.4


# --- C1 -----------------------------------------------------------------------------------------

def test_c1_profile_on_a_known_curve():
    rl = _rows([0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9])  # plateau 0.9
    fst = _rows([0.5, 0.75, 0.85, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95], rollouts_per_step=20)
    p = stats.c1_profile(rl, fst)
    assert abs(p["plateau"] - 0.9) < 1e-12 and p["peak"] == 0.9
    assert set(p["levels"]) == {"0.5", "0.8", "0.9", "1.0", "peak"}
    # level 0.45: RL at x = 20, FST at its first eval x = 5 (a lower bound on the ratio)
    c = p["levels"]["0.5"]["steps"]
    assert (c["rl"], c["fst"], c["fst_at_first"], c["ratio"], c["score"]) == (20, 5, True, 4.0, 1)
    for name, rl_x, fst_x in (("0.8", 25, 10), ("0.9", 30, 15), ("1.0", 30, 20), ("peak", 30, 20)):
        c = p["levels"][name]["steps"]
        assert (c["rl"], c["fst"], c["fst_censored"]) == (rl_x, fst_x, False), name
        assert abs(c["ratio"] - rl_x / fst_x) < 1e-12 and c["score"] == 1
        r = p["levels"][name]["rollouts"]
        assert (r["rl"], r["fst"]) == (rl_x * 16, fst_x * 20)
        assert abs(r["ratio"] - rl_x * 16 / (fst_x * 20)) < 1e-12
    assert abs(p["levels"]["0.8"]["level"] - 0.72) < 1e-12
    diff = np.mean(ev.curve(fst)[1]) - np.mean(ev.curve(rl)[1])
    assert abs(p["mean_acc"]["diff"] - diff) < 1e-12
    # the reading of x matches eval.curve and, at the peak, eval.sample_efficiency
    assert stats._evals(rl, "rollouts") == ev.curve(rl, "rollouts")
    peak = ev.sample_efficiency(rl, fst)["ratio"]
    assert abs(p["levels"]["peak"]["steps"]["ratio"] - peak) < 1e-12
    # FST never reaches the plateau: censored at its budget, RL first for certain
    slow = stats.c1_profile(rl, _rows([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.85, 0.88]))
    c = slow["levels"]["1.0"]["steps"]
    assert c["fst_censored"] and c["fst"] == 50 and abs(c["ratio"] - 30 / 50) < 1e-12
    assert c["score"] == -1


def test_gehan_score():
    assert stats.gehan_score(10, False, 20, False) == 1  # a first
    assert stats.gehan_score(20, False, 10, False) == -1
    assert stats.gehan_score(10, False, 10, False) == 0
    assert stats.gehan_score(10, False, 50, True) == 1  # b not there by its budget 50
    assert stats.gehan_score(60, False, 50, True) == 0  # b stopped at 50: unknown
    assert stats.gehan_score(50, True, 50, True) == 0  # both censored: a tie


def _c1_rows(fst_faster):
    """9 replicates; FST (or RL) reaches the level first in 8, the other one never gets there."""
    rl_curve = [0.1, 0.3, 0.5, 0.7, 0.9, 0.9, 0.9, 0.9]
    fast = [0.3, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    never = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    instant = [0.9] * 8
    scores = {}
    for i, k in enumerate(KEYS):
        f = fast if fst_faster else rl_curve
        if i == 4:
            f = never if fst_faster else instant  # one replicate against the others
        r = rl_curve if fst_faster else fast
        cell = stats.c1_profile(_rows(r), _rows(f))["levels"]["0.9"]["steps"]
        scores[k] = cell["score"]
    return scores


def test_censoring_aware_comparison_reaches_both_verdicts():
    up = _c1_rows(True)
    assert sorted(up.values()) == [-1] + [1] * 8  # one censored FST replicate: RL first there
    down = _c1_rows(False)
    assert sorted(down.values()) == [-1] * 8 + [1]
    rows = [stats.row("C1", "t", "Gehan score, steps to 0.9 x plateau", up),
            stats.row("C1", "t", "Gehan score, steps to 0.9 x plateau", down)]
    fam = stats.label_family(rows)
    assert fam["tests"] == 2 and [r["label"] for r in rows] == ["reproduced", "not reproduced"]
    assert rows[0]["p_holm"]["difference"] < 0.05 and rows[0]["per_replicate"]["b1s1"] == -1


def test_ratio_summary_counts_bounds():
    s = stats.ratio_summary([2.0, 4.0, 0.5, None], [0, 1, 0, 0], [0, 0, 1, 0],
                            [(0, 0), (0, 1), (1, 0), (1, 1)])
    assert s["n"] == 3 and s["n_lower_bounds"] == 1 and s["n_upper_bounds"] == 1
    assert abs(s["geo_mean"] - 4.0 ** (1 / 3)) < 1e-12 and s["ci95"][0] <= s["geo_mean"]


# --- C2 -----------------------------------------------------------------------------------------

def test_c2_identifiability():
    C = np.arange(5, 151, 5, dtype=float)
    noise = 0.003 * np.random.default_rng(0).standard_normal(len(C))
    plateau = 0.1 + 0.7 / (1 + (20 / C) ** 3) + noise  # bends early, levels at 0.8
    a = ev.asymptote(C, plateau, reps=60)
    assert a["identifiable"], a["why"]
    assert abs(a["A"] - 0.8) < 0.02 and a["ci95"][1] - a["ci95"][0] < stats.C2_EFFECT
    at_bound = 1 / (1 + (20 / C) ** 2) + noise  # the fit's A pinned at 1
    a = ev.asymptote(C, at_bound, reps=30)
    assert not a["identifiable"] and "bound" in a["why"]
    halfway = 0.05 + 0.85 / (1 + (140 / C) ** 2) + noise  # at the last x it is only halfway
    a = ev.asymptote(C, halfway, reps=30)
    assert not a["identifiable"] and "not bent" in a["why"]
    # a caller's (replicate) interval wider than the paper's effect: not identified either
    a = ev.asymptote(C, plateau, ci95=[0.75, 0.85])
    assert not a["identifiable"] and "wide" in a["why"]


# --- labels -------------------------------------------------------------------------------------

def _vals(mean, sd, seed=0):
    rng = np.random.default_rng(seed)
    return {k: mean + rng.normal(0, sd) for k in KEYS}


def test_equivalence_test():
    kind = "matches or beats"
    rows = [stats.row("C4", "a", "m", _vals(0.0, 0.01), kind),    # within +-0.05: matches
            stats.row("C4", "b", "m", _vals(0.3, 0.02), kind),    # beats
            stats.row("C4", "c", "m", _vals(0.0, 0.3), kind),     # too noisy to say
            stats.row("C4", "d", "m", _vals(-0.3, 0.02), kind),   # worse
            stats.row("C5", "e", "m", _vals(0.01, 0.01), "equivalence"),
            stats.row("C5", "f", "m", _vals(0.2, 0.01), "equivalence")]
    stats.label_family(rows)
    assert [r["label"] for r in rows] == ["equivalent", "reproduced", "inconclusive",
                                          "not reproduced", "equivalent", "not reproduced"]
    assert set(rows[0]["p"]) == {"difference", "tost"} and rows[0]["p"]["tost"] < 0.01


def test_pattern_controls_and_small_cells():
    # C7: prompt gain - weights gain per task kind; the pattern statistic is the smallest of
    # (d on a prompt task, d on another, -d on the weights task)
    rng = np.random.default_rng(1)
    d = {k: (0.8 + rng.normal(0, .05), 0.7 + rng.normal(0, .05), -0.6 + rng.normal(0, .05))
         for k in KEYS}
    pattern = lambda a: float(min(a[:, 0].mean(), a[:, 1].mean(), -a[:, 2].mean()))
    broken = {k: (v[0], v[1], -v[2]) for k, v in d.items()}  # the weights' task goes the other way
    rows = [stats.row("C7", "all", "m", d, "pattern", stat=pattern),
            stats.row("C7", "all", "m", broken, "pattern", stat=pattern),
            stats.row("ctl", "t", "m", _vals(0.1, 0.01), "control"),
            stats.row("ctl", "t", "m", _vals(-0.1, 0.01), "control"),
            stats.row("ctl", "t", "m", _vals(0.0, 0.2), "control"),
            stats.row("ctl", "t", "m", _vals(0.0, 0.0), "control", label="= rl"),
            stats.row("C1", "t", "m", {k: 1.0 for k in KEYS[:4]})]  # n = 4
    fam = stats.label_family(rows)
    assert [r["label"] for r in rows] == ["reproduced", "not reproduced", "higher", "lower", "tie",
                                          "= rl", "n < 5"]
    assert abs(rows[0]["mean"] - pattern(np.array(list(d.values())))) < 1e-12
    assert rows[0]["per_replicate"]["b0s0"] == list(d[(0, 0)])
    # rows with a label of their own are outside the family and carry no p
    assert fam["rows"] == 5 and rows[5]["p"] is None and rows[6]["p"] is None
    assert rows[6]["mean"] == 1.0 and rows[6]["n"] == 4


# --- report.py on a synthetic runs folder -------------------------------------------------------

def _write_run(folder, vals, kls, wall=1.0, every=5):
    import json
    import os
    os.makedirs(folder, exist_ok=True)
    rows = _rows(vals, every)
    evals = [r for r in rows if "val_acc" in r]
    for r, kl in zip(evals, kls):
        r.update(kl=kl, kl_common=kl)
    for r in rows:
        r["wall_s"] = wall
    with open(os.path.join(folder, "log.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({}, f)


def test_report_claims_on_a_synthetic_runs_folder(tmp_path):
    from harness import report
    root, t = str(tmp_path), "hidden-rule"
    reps = [(b, s) for b in range(3) for s in range(2)]  # n = 6
    x = np.arange(1, 21) * 5.0
    for b, s in reps:
        jitter = 0.01 * (b - 1) + 0.005 * s
        rl = list(0.05 + 0.85 / (1 + (40 / x) ** 3) + jitter)
        fst = list(0.05 + 0.85 / (1 + (15 / x) ** 3) + jitter)
        ctx = [0.2 + jitter] * 20
        base = suite.base_root(root, b)
        for m, vals, kl, wall in (("rl", rl, 0.5, 1.0), ("fst", fst, 0.1, 2.0),
                                  ("context", ctx, 0.0, 3.0), ("instructed", rl, 0.5, 4.0)):
            _write_run(suite.run_dir(base, t, m, s), vals, [kl + 0.01 * b] * 20, wall)
    runs = {m: report.replicates(root, reps, t, m) for m in ("rl", "fst", "context", "instructed")}
    assert len(runs["rl"]) == 6
    final = {m: {r: report._final(v[r]) for r in reps} for m, v in runs.items()}
    ctl, claims = report.controls(dict(runs, sequential={}), dict(final, sequential={}), reps, t)
    assert ctl["instructed"]["same_as_rl"] and not ctl["context"]["same_as_rl"]
    ceiling = {r: max(ev.curve(runs["context"][r])[1]) for r in reps}
    c1, rows = report.c1(runs["rl"], runs["fst"], reps, t, ceiling)
    claims += rows
    assert c1["profile"]["0.9"]["steps"]["fst_first"] == 6
    claims += report.c3(runs["rl"], runs["fst"], reps, 0.2, "kl", t)[1]
    claims += report.c2(runs["rl"], runs["fst"], reps, t, reps=20)[1]
    # a one-replicate report names C2's statistic as the grid does: against_grid finds it
    one = report.c2(runs["rl"], runs["fst"], reps[:1], t, reps=20)[1]
    assert one[0]["measure"] == claims[-1]["measure"] and "RL " in one[0]["detail"]
    fam = stats.label_family(claims)
    by = lambda claim, start: next(r for r in claims
                                   if r["claim"] == claim and r["measure"].startswith(start))
    assert by("control", "final val acc FST - instructed")["label"] == "= rl"
    assert by("control", "final val acc FST - context")["label"] == "higher"
    assert by("C1 faster", "Gehan score, steps to 0.9 x RL")["label"] == "reproduced"
    assert by("C1 faster", "mean val acc over the run")["label"] == "reproduced"
    c3 = by("C3 less drift", "log KL ratio")
    assert c3["label"] == "reproduced" and c3["geo_mean"] < 0.3
    c2 = by("C2 higher ceiling", "A(FST)")  # equal plateaus: identified, and no difference
    assert c2["label"] == "inconclusive" and abs(c2["mean"]) < stats.TIE_TOL, c2
    assert fam["rows"] == len([r for r in claims if r["p"]]) and fam["rows"] >= 7
    assert all(set(r["per_replicate"]) == {stats.rep_name(k) for k in reps} for r in claims)
    lines = stats.table(claims)
    assert len(lines) == len(claims) + 2 and "(Holm " in "".join(lines)


def test_one_replicate_beside_the_committed_grid(tmp_path, monkeypatch):
    grid = [{"claim": "C1 faster", "task": "cipher", "measure": "gap", "ci95": [0.1, 0.3],
             "n": 9, "label": "reproduced"},
            {"claim": "C3 less drift", "task": "cipher", "measure": "kl", "ci95": [-1.0, -0.5],
             "n": 9, "label": "reproduced"}]
    one = lambda measure, v: {"claim": grid[0]["claim"] if measure == "gap" else grid[1]["claim"],
                              "task": "cipher", "measure": measure, "mean": v, "ci95": [v, v],
                              "n": 1, "p": None, "why": "", "label": "n < 5"}
    grid[0]["detail"] = "8 of 9 reach it"  # a run's own counts: beside the measure, not in it
    rows = [dict(one("gap", 0.2), detail="1 of 1 reach it"), one("kl", 0.0),
            dict(one("gap", 0.2), task="hidden-rule")]  # a row the grid does not have
    assert stats.against_grid(rows, grid) == 2
    assert rows[0]["grid"]["inside"] and not rows[1]["grid"]["inside"] and "grid" not in rows[2]
    text = "\n".join(stats.table(rows))
    assert "[0.100, 0.300], 9: inside" in text and "[-1.000, -0.500], 9: outside" in text
    assert "| gap (1 of 1 reach it) |" in text
    assert text.splitlines()[-1].endswith("| n/a |")
    # eval.grid_reference reads results/<preset>/results.json beside eval.py
    root = tmp_path / "repo"
    (root / "results" / "toy").mkdir(parents=True)
    monkeypatch.setattr(ev, "__file__", str(root / "eval.py"))
    assert "note" in ev.grid_reference("toy", rows)  # nothing committed
    (root / "results" / "toy" / "results.json").write_text(
        '{"replicates": 9, "claims": %s}' % json.dumps(grid))
    ref = ev.grid_reference("toy", [one("gap", 0.5)])
    assert ref["matched"] == 1 and ref["n"] == 9
    assert "9 replicates, 1 rows matched" in "\n".join(stats.single_replicate_lines(ref))
