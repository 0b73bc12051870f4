"""
stats.py on synthetic data with known answers: the cluster bootstrap (wider than the i.i.d. one
when bases differ), the exact sign-flip test on base means and its resolution (a consistent effect
over enough bases passes; the same effect over 3 bases is `undecidable`), Holm's adjustment, the
one label rule (its guard, the primary family, exploratory rows), the C1 profile (exact ratios on
a known curve), the censoring-aware comparison reaching either verdict, C2's identifiability rule,
the equivalence and pattern tests, C7's interaction on a 2x2 table, attribution to the controls,
and a single replicate set beside the replicates' spread. Pure numpy (claims.py's C1 and C2 too).
"""

import json

import numpy as np

import train
from harness import claims as cl
from harness import runs, stats

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


def test_sign_flip_test_is_exact():
    # 3 bases, all positive: the observed pattern and its mirror are the 2 most extreme of 8
    assert stats.base_level_test({0: 0.3, 1: 0.2, 2: 0.25}) == (0.25, 0.25)
    assert stats.base_level_test({0: 0.3, 1: -0.2, 2: 0.25})[0] == 0.5  # |mean| 0.117: 4 of 8
    assert stats.base_level_test({0: 0.0, 1: 0.0, 2: 0.0}) == (1.0, 0.25)  # no difference
    assert stats.sign_flip_p([0.1] * 5, direction=1) == (1 / 32, 1 / 32)
    assert stats.sign_flip_p([0.1] * 5, direction=-1)[0] == 1.0
    ten = {b: 0.1 + 0.01 * b for b in range(10)}
    assert stats.base_level_test(ten) == (2 / 1024, 2 / 1024)
    # equivalence: every base within the margin; the smallest p is one-sided, 1 / 2^B
    assert stats.base_level_tost({0: 0.01, 1: -0.02, 2: 0.0}) == (0.125, 0.125)
    assert stats.base_level_tost({0: 0.2, 1: 0.1, 2: 0.3})[0] == 1.0
    # how many bases a consistent effect needs to pass Holm's first step: 2 / 2^B x m < alpha
    assert stats.bases_needed(1) == 6 and stats.bases_needed(8) == 9
    assert stats.bases_needed(8, two_sided=False) == 8
    # per-base values: the mean over each base's run seeds (keys as tuples or names)
    assert stats.base_values({(0, 0): 1.0, (0, 1): 3.0, (1, 0): 5.0}) == {0: 2.0, 1: 5.0}
    assert stats.base_values({"b0s0": 1.0, "b1s0": 2.0}) == {0: 1.0, 1: 2.0}


def _grid(effect, bases, seeds=3, sd=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return {(b, s): effect + rng.normal(0, sd) for b in range(bases) for s in range(seeds)}


def test_base_level_test_on_synthetic_replicates():
    """A consistent effect over enough bases passes; the same effect over 3 bases cannot, and is
    labelled undecidable, with the number of bases that could decide it."""
    for bases, want in ((10, "reproduced"), (3, "undecidable")):
        rows = [stats.row("C1", "t", "gap", _grid(0.2, bases))]
        rows += [stats.row(f"C{i}", "t", "other", _grid(0.2, bases, seed=i)) for i in range(2, 9)]
        fam = stats.label_family(rows, primary=[(r["claim"], "t", r["measure"]) for r in rows])
        assert fam["tests"] == 8 and rows[0]["bases"] == bases
        assert [r["label"] for r in rows] == [want] * 8, [r["label"] for r in rows]
    assert rows[0]["bases_needed"] == 9 and "needs >= 9 bases" in rows[0]["why"]
    assert rows[0]["min_p"]["difference"] == 0.25 and rows[0]["p"]["difference"] == 0.25
    # the bootstrap's resolution no longer sets the verdict: 9 replicates over 3 bases are 3
    # observations, whatever the number of resamples
    assert rows[0]["n"] == 9 and rows[0]["ci95"][0] > 0.15


def test_label_is_one_rule():
    L = stats.label
    assert L("difference", 0.3, {"difference": 0.001}, primary=True) == "reproduced"
    assert L("difference", -0.3, {"difference": 0.001}, primary=True) == "not reproduced"
    assert L("difference", -0.3, {"difference": 0.001}, primary=True, direction=-1) == "reproduced"
    assert L("difference", 0.3, {"difference": 0.2}, primary=True) == "inconclusive"
    assert L("difference", 0.3, {"difference": 0.001}) == "exploratory"  # no verdict word
    assert L("control", 0.3, {"difference": 0.001}) == "exploratory"
    # the guard: the prompt alone reaches the level in most replicates, primary or not
    assert L("difference", 1.0, {"difference": 0.001}, primary=True,
             prompt_alone=(6, 9)) == "not tested"
    assert L("difference", 1.0, None, prompt_alone=(4, 9)) == "exploratory"
    assert L("difference", 0.0, None, aa=True) == "noise floor"
    assert L("difference", 0.3, None, primary=True, n=4) == "n < 5"
    assert L("difference", 0.3, {"difference": 0.25}, primary=True, min_p=0.25,
             family_size=8) == "undecidable"
    assert L("difference", 0.3, None, blocked="cannot be rebuilt") == "cannot be rebuilt"
    assert stats.prompt_alone_why(6, 9) == "the context-only run reaches the level in 6 of 9"
    assert stats.prompt_alone_why(4, 9) == ""
    assert set(stats.VERDICTS) | set(stats.NO_TEST) <= set(stats.LABELS)


def test_intervals_do_not_move_between_rebuilds():
    vals = _grid(0.2, 3, sd=0.1)
    a, b = stats.mean_std(list(vals.values()), list(vals)), stats.mean_std(list(vals.values()),
                                                                          list(vals))
    assert a == b  # a fixed seed: identical
    other = stats.mean_std(list(vals.values()), list(vals), seed=1)  # another seed: close
    assert max(abs(x - y) for x, y in zip(a["ci95"], other["ci95"])) < 0.005


def test_c7_interaction_on_a_2x2_table():
    # the paper's HoVer-hard table: base 2.0, weights alone 11.6, prompt alone 10.6, both 21.2
    t = {"base_weights": {"seed_prompt": 0.020, "fst_prompt": 0.106},
         "fst_weights": {"seed_prompt": 0.116, "fst_prompt": 0.212}}
    g = stats.interaction(t)
    assert abs(g["prompt"] - 0.086) < 1e-12 and abs(g["weights"] - 0.096) < 1e-12
    assert abs(g["both"] - 0.192) < 1e-12 and abs(g["interaction"] - 0.010) < 1e-12
    # channels that do not add up: both = prompt alone, the weights add nothing on top
    flat = stats.interaction({"base_weights": {"seed_prompt": 0.0, "fst_prompt": 0.8},
                              "fst_weights": {"seed_prompt": 0.3, "fst_prompt": 0.8}})
    assert abs(flat["interaction"] + 0.3) < 1e-12
    # FST's own accuracy enters the interaction (it cancels in prompt alone - weights alone)
    t2 = {k: dict(v) for k, v in t.items()}
    t2["fst_weights"]["fst_prompt"] += 0.1
    g2 = stats.interaction(t2)
    assert abs(g2["interaction"] - g["interaction"] - 0.1) < 1e-12
    assert abs((g2["prompt"] - g2["weights"]) - (g["prompt"] - g["weights"])) < 1e-12


def test_attribution_beside_a_claim():
    claim = stats.row("C1", "t", "gap FST - RL", _grid(0.3, 3))
    vs = {"sequential": stats.row("C1", "t", "gap FST - sequential", _grid(0.0, 3, sd=0.05)),
          "instructed": stats.row("C1", "t", "gap FST - instructed", _grid(0.2, 3)),
          "other": None}
    stats.attribute(claim, vs)
    assert claim["vs"]["sequential"]["survives"] == "no"
    assert claim["vs"]["instructed"]["survives"] == "yes" and claim["vs"]["other"] is None
    stats.label_family([claim])
    text = "\n".join(stats.table([claim]))
    assert "FST - sequential" in text and "| no / yes |" in text


# --- C1 -----------------------------------------------------------------------------------------

def test_c1_profile_on_a_known_curve():
    rl = _rows([0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9])  # plateau 0.9
    fst = _rows([0.5, 0.75, 0.85, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95], rollouts_per_step=20)
    p = cl.c1_profile(rl, fst)
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
    diff = np.mean(cl.curve(fst)[1]) - np.mean(cl.curve(rl)[1])
    assert abs(p["mean_acc"]["diff"] - diff) < 1e-12
    # the reading of x matches claims.curve and, at the peak, claims.sample_efficiency
    assert cl._evals(rl, "rollouts") == cl.curve(rl, "rollouts")
    peak = cl.sample_efficiency(rl, fst)["ratio"]
    assert abs(p["levels"]["peak"]["steps"]["ratio"] - peak) < 1e-12
    # FST never reaches the plateau: censored at its budget, RL first for certain
    slow = cl.c1_profile(rl, _rows([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.85, 0.88]))
    c = slow["levels"]["1.0"]["steps"]
    assert c["fst_censored"] and c["fst"] == 50 and abs(c["ratio"] - 30 / 50) < 1e-12
    assert c["score"] == -1


def test_gehan_score():
    assert cl.gehan_score(10, False, 20, False) == 1  # a first
    assert cl.gehan_score(20, False, 10, False) == -1
    assert cl.gehan_score(10, False, 10, False) == 0
    assert cl.gehan_score(10, False, 50, True) == 1  # b not there by its budget 50
    assert cl.gehan_score(60, False, 50, True) == 0  # b stopped at 50: unknown
    assert cl.gehan_score(50, True, 50, True) == 0  # both censored: a tie


KEYS12 = [(b, 0) for b in range(12)]  # 12 bases, one run seed each: enough to decide


def _c1_rows(fst_faster, keys=KEYS12):
    """FST (or RL) reaches the level first in all replicates but one, where the other never gets
    there."""
    rl_curve = [0.1, 0.3, 0.5, 0.7, 0.9, 0.9, 0.9, 0.9]
    fast = [0.3, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    never = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    instant = [0.9] * 8
    scores = {}
    for i, k in enumerate(keys):
        f = fast if fst_faster else rl_curve
        if i == 4:
            f = never if fst_faster else instant  # one replicate against the others
        r = rl_curve if fst_faster else fast
        cell = cl.c1_profile(_rows(r), _rows(f))["levels"]["0.9"]["steps"]
        scores[k] = cell["score"]
    return scores


def test_censoring_aware_comparison_reaches_both_verdicts():
    up = _c1_rows(True)
    assert sorted(up.values()) == [-1] + [1] * 11  # one censored FST replicate: RL first there
    down = _c1_rows(False)
    assert sorted(down.values()) == [-1] * 11 + [1]
    rows = [stats.row("C1", "t", "Gehan score, steps to 0.9 x plateau", up),
            stats.row("C1", "u", "Gehan score, steps to 0.9 x plateau", down)]
    fam = stats.label_family(rows, primary=[(r["claim"], r["task"], r["measure"]) for r in rows])
    assert fam["tests"] == 2 and [r["label"] for r in rows] == ["reproduced", "not reproduced"]
    assert rows[0]["p_holm"]["difference"] < 0.05 and rows[0]["per_replicate"]["b4s0"] == -1
    # sign flips of 11 x (+1) and 1 x (-1): |sum| >= 10 in 2 + 24 of 4096 patterns
    assert abs(rows[0]["p"]["difference"] - 26 / 4096) < 1e-12


def test_ratio_summary_counts_bounds():
    s = cl.ratio_summary([2.0, 4.0, 0.5, None], [0, 1, 0, 0], [0, 0, 1, 0],
                            [(0, 0), (0, 1), (1, 0), (1, 1)])
    assert s["n"] == 3 and s["n_lower_bounds"] == 1 and s["n_upper_bounds"] == 1
    assert abs(s["geo_mean"] - 4.0 ** (1 / 3)) < 1e-12 and s["ci95"][0] <= s["geo_mean"]


# --- C2 -----------------------------------------------------------------------------------------

def test_c2_identifiability():
    C = np.arange(5, 151, 5, dtype=float)
    noise = 0.003 * np.random.default_rng(0).standard_normal(len(C))
    plateau = 0.1 + 0.7 / (1 + (20 / C) ** 3) + noise  # bends early, levels at 0.8
    a = cl.asymptote(C, plateau, reps=60)
    assert a["identifiable"], a["why"]
    assert abs(a["A"] - 0.8) < 0.02 and a["ci95"][1] - a["ci95"][0] < stats.C2_EFFECT
    at_bound = 1 / (1 + (20 / C) ** 2) + noise  # the fit's A pinned at 1
    a = cl.asymptote(C, at_bound, reps=30)
    assert not a["identifiable"] and "bound" in a["why"]
    halfway = 0.05 + 0.85 / (1 + (140 / C) ** 2) + noise  # at the last x it is only halfway
    a = cl.asymptote(C, halfway, reps=30)
    assert not a["identifiable"] and "not bent" in a["why"]
    # a caller's (replicate) interval wider than the paper's effect: not identified either
    a = cl.asymptote(C, plateau, ci95=[0.75, 0.85])
    assert not a["identifiable"] and "wide" in a["why"]


# --- labels -------------------------------------------------------------------------------------

KEYS10 = [(b, 0) for b in range(10)]


def _vals(mean, sd, seed=0, keys=KEYS10):
    rng = np.random.default_rng(seed)
    return {k: mean + rng.normal(0, sd) for k in keys}


def _primary(rows):
    return stats.label_family(rows, primary=[(r["claim"], r["task"], r["measure"]) for r in rows])


def test_equivalence_test():
    kind = "matches or beats"
    rows = [stats.row("C4", "a", "m", _vals(0.0, 0.01), kind),    # within +-0.05: matches
            stats.row("C4", "b", "m", _vals(0.3, 0.02), kind),    # beats
            stats.row("C4", "c", "m", _vals(0.0, 0.3), kind),     # too noisy to say
            stats.row("C4", "d", "m", _vals(-0.3, 0.02), kind),   # worse
            stats.row("C5", "e", "m", _vals(0.01, 0.01), "equivalence"),
            stats.row("C5", "f", "m", _vals(0.2, 0.01), "equivalence")]
    _primary(rows)
    assert [r["label"] for r in rows] == ["equivalent", "reproduced", "inconclusive",
                                          "not reproduced", "equivalent", "not reproduced"]
    assert set(rows[0]["p"]) == {"difference", "tost"} and rows[0]["p"]["tost"] == 1 / 1024


def test_pattern_controls_and_small_cells():
    # C7: prompt gain - weights gain per task kind; the pattern statistic is the smallest of
    # (d on a prompt task, d on another, -d on the weights task), per base as over all replicates
    rng = np.random.default_rng(1)
    d = {k: (0.8 + rng.normal(0, .05), 0.7 + rng.normal(0, .05), -0.6 + rng.normal(0, .05))
         for k in KEYS10}
    pattern = lambda a: float(min(a[:, 0].mean(), a[:, 1].mean(), -a[:, 2].mean()))
    broken = {k: (v[0], v[1], -v[2]) for k, v in d.items()}  # the weights' task goes the other way
    primary = [stats.row("C7", "all", "m", d, "pattern", stat=pattern),
               stats.row("C7", "all2", "m", broken, "pattern", stat=pattern)]
    rows = primary + [
        stats.row("ctl", "t", "m", _vals(0.1, 0.01), "control"),
        stats.row("ctl", "t", "m", _vals(0.0, 0.0), "control", blocked="= rl"),
        stats.row("C1", "t", "m", {k: 1.0 for k in KEYS[:4]})]  # n = 4
    fam = stats.label_family(rows, primary=[("C7", "all", "m"), ("C7", "all2", "m")])
    assert [r["label"] for r in rows] == ["reproduced", "not reproduced", "exploratory", "= rl",
                                          "n < 5"]
    assert abs(rows[0]["mean"] - pattern(np.array(list(d.values())))) < 1e-12
    assert rows[0]["per_replicate"]["b0s0"] == list(d[(0, 0)])
    # only the primary rows are in the family; the others carry no adjusted p
    assert fam["rows"] == 2 and all(r["p_holm"] is None for r in rows[2:])
    assert rows[4]["mean"] == 1.0 and rows[4]["n"] == 4


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
        base = runs.base_root(root, b)
        for m, vals, kl, wall in (("rl", rl, 0.5, 1.0), ("fst", fst, 0.1, 2.0),
                                  ("context", ctx, 0.0, 3.0), ("instructed", rl, 0.5, 4.0)):
            _write_run(runs.run_dir(base, t, m, s), vals, [kl + 0.01 * b] * 20, wall)
    runs.write_suite(root, train.SUITE)  # the suite's table, as the reproduction writes it
    logs = {m: runs.replicates(root, reps, t, m) for m in ("rl", "fst", "context", "instructed")}
    assert len(logs["rl"]) == 6
    final = {m: {r: report._final(v[r]) for r in reps} for m, v in logs.items()}
    ctl, claims = report.controls(dict(logs, sequential={}), dict(final, sequential={}), reps, t)
    assert ctl["instructed"]["same_as_rl"] and not ctl["context"]["same_as_rl"]
    ceiling = {r: max(cl.curve(logs["context"][r])[1]) for r in reps}
    c1, rows = report.c1(logs["rl"], logs["fst"], reps, t, ceiling)
    claims += rows
    assert c1["profile"]["0.9"]["steps"]["fst_first"] == 6
    # each replicate's matched level against its own context-only ceiling
    claims += report.c3(logs["rl"], logs["fst"], reps, ceiling, "kl", t)[1]
    claims += report.c2(logs["rl"], logs["fst"], reps, t, reps=20)[1]
    # a one-replicate report names C2's statistic as the grid does: against_grid finds it
    one = report.c2(logs["rl"], logs["fst"], reps[:1], t, reps=20)[1]
    assert one[0]["measure"] == claims[-1]["measure"] and "RL " in one[0]["detail"]
    gap = ("C1 faster", t, "mean val acc over the run, FST - RL")
    fam = stats.label_family(claims, primary=[gap])
    by = lambda claim, start: next(r for r in claims
                                   if r["claim"] == claim and r["measure"].startswith(start))
    assert by("control", "final val acc FST - instructed")["label"] == "= rl"
    assert by("control", "final val acc FST - context")["label"] == "exploratory"
    assert by("C1 faster", "Gehan score, steps to 0.9 x RL")["label"] == "exploratory"
    # the primary row over 3 bases: the test cannot pass, whatever the effect
    g = by("C1 faster", "mean val acc over the run")
    assert g["label"] == "undecidable" and g["bases"] == 3 and g["bases_needed"] == 6
    c3 = by("C3 less drift", "log KL ratio")
    assert c3["label"] == "exploratory" and c3["geo_mean"] < 0.3 and c3["prompt_alone"] == [0, 6]
    c2 = by("C2 higher ceiling", "A(FST)")  # equal plateaus: identified, and no difference
    assert c2["label"] == "exploratory" and abs(c2["mean"]) < stats.TIE_TOL, c2
    assert fam["rows"] == 1 and fam["tests"] == 1 and fam["primary"] == [list(gap)]
    assert all(set(r["per_replicate"]) == {stats.rep_name(k) for k in reps} for r in claims)
    lines = stats.table(claims)
    assert len(lines) == len(claims) + 2 and "(Holm 0.25; smallest possible 0.25)" in "".join(lines)


def test_one_replicate_beside_the_committed_grid(tmp_path, monkeypatch):
    """A newcomer's replicate is compared with the spread of the grid's replicates (where one new
    replicate falls), not with the interval of their mean."""
    reps = {f"b{b}s{s}": 0.2 + 0.05 * (b - 1) + 0.02 * (s - 1) for b in range(3) for s in range(3)}
    grid = [dict(stats.row("C1 faster", "cipher", "gap", {stats.rep_key(k): v
                                                           for k, v in reps.items()}),
                 label="undecidable"),
            {"claim": "C3 less drift", "task": "cipher", "measure": "kl", "ci95": [-1.0, -0.5],
             "n": 9, "label": "exploratory", "per_replicate": {"b0s0": -1.2, "b1s0": -0.4}}]
    lo, hi = grid[0]["ci95"]
    value = 0.265  # outside the interval of the mean, inside the replicates' range
    assert not lo <= value <= hi and min(reps.values()) <= value <= max(reps.values())
    one = lambda measure, v: {"claim": grid[0]["claim"] if measure == "gap" else grid[1]["claim"],
                              "task": "cipher", "measure": measure, "mean": v, "ci95": [v, v],
                              "n": 1, "p": None, "why": "", "label": "n < 5", "primary": False}
    grid[0]["detail"] = "8 of 9 reach it"  # a run's own counts: beside the measure, not in it
    rows = [dict(one("gap", value), detail="1 of 1 reach it"), one("kl", 0.0),
            dict(one("gap", 0.2), task="hidden-rule")]  # a row the grid does not have
    assert stats.against_grid(rows, grid) == 2
    assert rows[0]["grid"]["inside"] and not rows[1]["grid"]["inside"] and "grid" not in rows[2]
    assert rows[0]["grid"]["range"] == stats.spread(reps.values())
    text = "\n".join(stats.table(rows))
    assert "[0.130, 0.270], 9: inside" in text and "[-1.200, -0.400], 9: outside" in text
    assert "| gap (1 of 1 reach it) |" in text
    assert text.splitlines()[-1].endswith("| n/a |")
    # claims.grid_reference reads results/<preset>/results.json in the repository (runs.COMMITTED)
    root = tmp_path / "repo"
    (root / "results" / "toy").mkdir(parents=True)
    monkeypatch.setattr(runs, "COMMITTED", str(root / "results"))
    assert "note" in cl.grid_reference("toy", rows)  # nothing committed
    (root / "results" / "toy" / "results.json").write_text(
        '{"replicates": 9, "claims": %s}' % json.dumps(grid))
    ref = cl.grid_reference("toy", [one("gap", 0.5)])
    assert ref["matched"] == 1 and ref["n"] == 9
    assert "9 replicates, 1 rows matched" in "\n".join(stats.single_replicate_lines(ref))
