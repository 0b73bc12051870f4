"""
eval.py's measurements against naive references: KL(pi_theta || pi_base) along sampled
completions (exact over the vocabulary, one prefix at a time), and the claims computed from
synthetic log rows: censored C1 on both axes, the bounded C2 fit and its identifiability, C3 under
either KL key with a floor, bootstrap intervals and verdicts. Only the KL test builds a model.
"""

import random

import numpy as np
import torch

import eval as ev
from rollout import sample_rollouts
import tasks
from model import GPT, GPTConfig


def _models_and_tokenizer():
    enc = tasks.build_tokenizer()
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=(enc.n_vocab + 63) // 64 * 64, block_size=128, n_layer=1, n_head=2,
                    n_embd=32)
    return GPT(cfg).eval(), GPT(cfg).eval(), enc


def test_kl_is_zero_against_itself_and_matches_a_naive_loop():
    a, b, enc = _models_and_tokenizer()
    rule = tasks.parse_rule("reverse")
    problems = [tasks.make_problem(rule, random.Random(i), 3, 5) for i in range(3)]
    ctx = tasks.instruction(rule)
    assert ev.kl_to_base(a, a, enc, ctx, problems, samples=2, max_new_tokens=6) < 1e-6
    got = ev.kl_to_base(a, b, enc, ctx, problems, samples=2, max_new_tokens=6, seed=3)
    # naive: the same completions, then one full forward per row and per position
    ro = sample_rollouts(a, enc, [ctx] * 3, problems, 2, 1.0, 3, 6)
    tokens, mask, prompts = ro.tokens, ro.mask, ro.prompts  # one prompt per row
    total, count = 0.0, 0
    with torch.no_grad():
        for r in range(tokens.shape[0]):
            for t in range(tokens.shape[1]):
                if not mask[r, t]:
                    continue
                prefix = torch.tensor([prompts[r] + tokens[r, :t].tolist()])
                p = torch.log_softmax(a(prefix)[0, -1], -1)
                q = torch.log_softmax(b(prefix)[0, -1], -1)
                total += float((p.exp() * (p - q)).sum())
                count += 1
    assert got > 0.01
    assert abs(got - total / count) < 1e-4


def test_sigmoid_fit_recovers_its_asymptote():
    C = np.arange(1, 151, 5, dtype=float)
    R = 0.1 + (0.8 - 0.1) / (1 + (40 / C) ** 2.0)
    fit = ev.sigmoid_fit(C, R)
    assert abs(fit["A"] - 0.8) < 0.03 and abs(fit["R0"] - 0.1) < 0.05


def test_bootstrap_interval_and_paired_verdicts():
    one = ev.mean_std([0.4])
    assert one["ci95"] == [0.4, 0.4] and one["n"] == 1  # no replicates, no width
    rng = random.Random(0)
    small = [0.5 + rng.gauss(0, 0.1) for _ in range(9)]
    big = [0.5 + rng.gauss(0, 0.1) for _ in range(400)]
    s, b = ev.mean_std(small), ev.mean_std(big)
    assert s["ci95"][0] < s["mean"] < s["ci95"][1]
    assert b["ci95"][1] - b["ci95"][0] < (s["ci95"][1] - s["ci95"][0]) / 3  # ~1/sqrt(n)
    assert abs(b["mean"] - 0.5) < b["ci95"][1] - b["ci95"][0]  # true mean inside (for this draw)
    assert ev.bootstrap_ci(small) == ev.bootstrap_ci(small)  # seeded: a report rebuilds identically
    fst, rl = [0.9, 0.8, 0.95, 0.85], [0.5, 0.4, 0.6, 0.45]
    assert ev.compare(fst, rl)["verdict"] == "higher"
    assert ev.compare(rl, fst)["verdict"] == "lower"
    mixed = ev.compare([0.5, 0.7, 0.4], [0.6, 0.5, 0.5])  # signs disagree
    assert mixed["verdict"] == "inconclusive"
    assert ev.compare([0.9], [0.1])["verdict"] == "inconclusive"  # one seed decides nothing


# --- claims from synthetic log rows ------------------------------------------------------------

def _rows(vals, every=5, rollouts_per_step=16, **series):
    """Log rows with an eval every `every` steps (x = step + 1 = every, 2 * every, ...) carrying
    val_acc = vals[i] and, per keyword, key = series[key][i] (None: the row lacks that key)."""
    rows = []
    for i, v in enumerate(vals):
        for step in range(i * every, (i + 1) * every):
            rows.append({"step": step, "rollouts": (step + 1) * rollouts_per_step})
        rows[-1]["val_acc"] = v
        rows[-1].update({k: s[i] for k, s in series.items() if s[i] is not None})
    return rows


RL_VALS = [0.1, 0.2, 0.3, 0.5, 0.4, 0.6, 0.55, 0.6, 0.58, 0.59]  # peak 0.6 first at x = 30


def test_curve_running_max_and_area():
    rows = _rows([0.1, 0.3, 0.2, 0.5, 0.4])
    assert ev.curve(rows) == ([5, 10, 15, 20, 25], [0.1, 0.3, 0.2, 0.5, 0.4])
    assert ev.curve(rows, "rollouts")[0] == [80, 160, 240, 320, 400]
    assert ev.running_max([0.1, 0.3, 0.2, 0.5, 0.4]) == [0.1, 0.3, 0.3, 0.5, 0.5]
    assert ev.running_max([]) == []
    assert ev.first_reach([5, 10, 15], ev.running_max([0.1, 0.5, 0.2]), 0.4) == 10
    a = ev.area_and_threshold(rows, 0.3)
    assert abs(a["auc"] - 0.3) < 1e-12 and a["steps_to_threshold"] == 10 and a["final"] == 0.4


def test_c1_uncensored_on_both_axes():
    rl = _rows(RL_VALS)
    fst = _rows([0.1, 0.4, 0.3, 0.65, 0.5, 0.7, 0.7, 0.7, 0.7, 0.7], rollouts_per_step=20)
    c1 = ev.sample_efficiency(rl, fst)
    assert c1["rl_peak"] == 0.6 and c1["fst_peak"] == 0.7
    assert c1["rl_steps_to_peak"] == 30 and c1["fst_steps_to_rl_peak"] == 20
    assert c1["rl_rollouts_to_peak"] == 480 and c1["fst_rollouts_to_rl_peak"] == 400
    assert abs(c1["ratio"] - 1.5) < 1e-12 and abs(c1["ratio_rollouts"] - 1.2) < 1e-12
    assert not c1["censored"] and not c1["censored_low"]


def test_c1_censored_when_fst_never_reaches_rl_peak():
    rl = _rows(RL_VALS)
    fst = _rows([0.1, 0.2, 0.5, 0.4, 0.5, 0.45, 0.5, 0.5, 0.55, 0.5], rollouts_per_step=20)
    c1 = ev.sample_efficiency(rl, fst)
    assert c1["censored"] and not c1["censored_low"]
    assert c1["fst_steps_to_rl_peak"] is None and c1["fst_rollouts_to_rl_peak"] is None
    assert c1["fst_last_step"] == 50 and c1["fst_last_rollouts"] == 1000
    assert abs(c1["ratio"] - 30 / 50) < 1e-12  # an upper bound: FST needs more than its run
    assert abs(c1["ratio_rollouts"] - 480 / 1000) < 1e-12


def test_c1_lower_bound_when_fst_is_there_at_its_first_eval():
    c1 = ev.sample_efficiency(_rows(RL_VALS), _rows([0.62] + [0.7] * 9))
    assert c1["censored_low"] and not c1["censored"]
    assert c1["fst_steps_to_rl_peak"] == 5 and abs(c1["ratio"] - 30 / 5) < 1e-12  # ratio >= 6
    # RL's own peak at its first eval: its x is an upper bound too, the ratio bounded neither way
    both = ev.sample_efficiency(_rows([0.6, 0.5, 0.55]), _rows([0.7, 0.7, 0.7]))
    assert both["censored"] and both["censored_low"] and both["ratio"] is None
    late = ev.sample_efficiency(_rows([0.6, 0.5, 0.55]), _rows([0.1, 0.7, 0.7]))
    assert late["censored"] and not late["censored_low"] and abs(late["ratio"] - 0.5) < 1e-12


def test_censored_summary():
    plain = ev.censored_summary([1.5, 2.0, 3.0, 2.5])
    geo = float(np.exp(np.mean(np.log([1.5, 2.0, 3.0, 2.5]))))
    assert abs(plain["geo_mean"] - geo) < 1e-12 and plain["ci95_of"] == "geo_mean"
    assert plain["ci95"][0] < geo < plain["ci95"][1] and plain["n_censored_low"] == 0
    # 1.5 is a lower bound, 0.8 an upper bound: ranked at +inf and -inf for the median
    vals, low, high = [2.0, 3.0, 4.0, 1.5, 0.8], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]
    c = ev.censored_summary(vals, low, high)
    assert c["n"] == 5 and c["n_censored_low"] == 1 and c["n_censored_high"] == 1
    assert c["geo_mean"] is None and c["ci95_of"] == "median"
    assert abs(c["median"] - 3.0) < 1e-12 and [round(b, 9) for b in c["median_bounds"]] == [2, 3]
    assert c["ci95"][0] <= 2.0 and (c["ci95"][1] is None or c["ci95"][1] >= 3.0)
    # mostly "never reached": the median is only bounded above, and below 1
    m = ev.censored_summary([0.5, 0.6, 0.7, 2.0], flags_high=[1, 1, 1, 0])
    assert m["median_bounds"][0] == 0.0 and m["median_bounds"][1] < 1
    # doubly censored and missing values carry nothing
    assert ev.censored_summary([None, 2.0], [0, 1], [0, 1])["n"] == 0
    assert ev.censored_summary([])["median"] is None


def test_bootstrap_one_value_and_shrinking():
    assert ev.bootstrap_ci([0.3]) == [0.3, 0.3]
    rng = np.random.default_rng(0)
    few, many = rng.normal(1, 1, 8), rng.normal(1, 1, 800)
    lo, hi = ev.bootstrap_ci(few)
    assert lo < few.mean() < hi
    lo2, hi2 = ev.bootstrap_ci(many)
    assert lo2 < many.mean() < hi2 and hi2 - lo2 < (hi - lo) / 4


def test_verdicts():
    assert ev.verdict({"mean": 0.2, "ci95": [0.1, 0.3], "n": 4}, +1) == "reproduced"
    assert ev.verdict({"mean": 0.2, "ci95": [0.1, 0.3], "n": 4}, -1) == "not reproduced"
    assert ev.verdict({"mean": 0.05, "ci95": [-0.1, 0.2], "n": 4}, +1) == "inconclusive"
    assert ev.verdict({"mean": 0.8, "ci95": [0.8, 0.8], "n": 1}, +1) == "inconclusive"
    assert ev.verdict(ev.compare([0.9, 0.8, 0.95, 0.85], [0.5, 0.4, 0.6, 0.45]), -1) \
        == "not reproduced"
    c1 = [2.0, 3.0, 2.5, 4.0]
    assert ev.ratio_verdict(c1, +1)["verdict"] == "reproduced"
    assert ev.ratio_verdict(c1, -1)["verdict"] == "not reproduced"
    assert ev.ratio_verdict([0.3, 0.4, 0.35], -1)["verdict"] == "reproduced"  # C3: FST/RL < 1
    assert ev.ratio_verdict([0.5, 2.0, 1.1], +1)["verdict"] == "inconclusive"
    assert ev.ratio_verdict([3.0], +1)["verdict"] == "inconclusive"
    # a lower bound >= 1 still supports > 1; an upper bound could pull the mean below 1
    low = ev.ratio_verdict(c1, +1, flags_low=[0, 0, 0, 1])
    assert low["verdict"] == "reproduced" and low["n_censored_low"] == 1
    high = ev.ratio_verdict(c1, +1, flags_high=[0, 0, 0, 1])
    assert high["verdict"] == "inconclusive" and high["n_censored_high"] == 1
    r = ev.ratio_verdict(c1, +1)
    assert r["ci95"][0] < r["geo_mean"] < r["ci95"][1] and r["n"] == 4


def test_bounded_sigmoid_fit_recovers_a_known_curve():
    C = np.arange(5, 151, 5, dtype=float)
    R = 0.1 + (0.8 - 0.1) / (1 + (40 / C) ** 2.0)
    fit = ev.sigmoid_fit(C, R)
    assert abs(fit["A"] - 0.8) < 0.03 and abs(fit["R0"] - 0.1) < 0.03
    assert abs(fit["Cmid"] - 40) < 2 and abs(fit["B"] - 2) < 0.1 and fit["mse"] < 1e-6
    a = ev.asymptote(C, R, reps=50)
    assert a["identifiable"] and a["ci95"][0] - 1e-3 <= 0.8 <= a["ci95"][1] + 1e-3, a


def test_bounded_sigmoid_fit_stays_in_bounds_and_is_exact_there():
    C = np.arange(5, 151, 5, dtype=float)
    for r0, a in ((-0.3, 1.2), (-0.3, 0.7)):  # a free fit would leave [0, 1]
        R = r0 + (a - r0) / (1 + (60 / C) ** 3)
        fit = ev.sigmoid_fit(C, R)
        assert 0 <= fit["R0"] <= 1 and 0 <= fit["A"] <= 1
        assert C.min() / 4 <= fit["Cmid"] <= 4 * C.max() and 0.3 <= fit["B"] <= 6
        # at the fitted (Cmid, B) the bounded solve beats every point of a fine (R0, A) grid
        s = 1 / (1 + (fit["Cmid"] / C) ** fit["B"])
        g = np.linspace(0, 1, 201)
        grid = g[:, None, None] * (1 - s) + g[None, :, None] * s
        assert fit["mse"] <= ((grid - R) ** 2).mean(-1).min() + 1e-12
        # clipping a free least squares afterwards is no better, and worse when it moves A
        coef = np.clip(np.linalg.lstsq(np.stack([1 - s, s], 1), R, rcond=None)[0], 0, 1)
        clipped = (((coef[0] * (1 - s) + coef[1] * s) - R) ** 2).mean()
        assert fit["mse"] < clipped - 1e-4 if a < 1 else fit["mse"] <= clipped + 1e-12
    assert fit["R0"] == 0.0 and fit["A"] < 0.7  # the bound on R0 moves A down, not just R0 up


def test_asymptote_not_identifiable_when_flat_saturated_or_not_bent():
    C = np.arange(5, 151, 5, dtype=float)
    flat = 0.3 + 0.015 * np.sin(C)  # range < 0.05
    a = ev.asymptote(C, flat, reps=30)
    assert not a["identifiable"] and "flat" in a["why"]
    saturated = 0.8 + 0.03 * (-1.0) ** np.arange(len(C))  # at its level from the first eval on
    a = ev.asymptote(C, saturated, reps=30)
    assert not a["identifiable"] and "saturated" in a["why"] and "flat" not in a["why"]
    line = 0.1 + 0.2 * (C - 5) / 145  # still rising straight at the last eval
    a = ev.asymptote(C, line, reps=30)
    assert not a["identifiable"] and "not bent" in a["why"]


def test_kl_at_matched_reward_under_either_key_and_a_floor():
    rl = _rows([0.1, 0.3, 0.5, 0.6], kl=[0.01, 0.05, 0.1, 0.2], kl_common=[0.02, 0.06, 0.12, 0.25])
    fst = _rows([0.2, 0.65, 0.4, 0.7], kl=[0.005, 0.01, 0.015, 0.03],
                kl_common=[0.01, None, 0.03, 0.05])
    c3 = ev.kl_at_matched_reward(rl, fst)
    assert c3["reward"] == 0.6 and c3["rl_kl"] == 0.2 and c3["fst_kl"] == 0.01  # FST at x = 10
    assert abs(c3["ratio"] - 0.05) < 1e-12 and c3["above_floor"]
    common = ev.kl_at_matched_reward(rl, fst, key="kl_common")  # FST's x = 10 row lacks the key
    assert common["reward"] == 0.6 and common["rl_kl"] == 0.25 and common["fst_kl"] == 0.05
    assert abs(common["ratio"] - 0.2) < 1e-12
    assert ev.kl_at_matched_reward(rl, fst, floor=0.5)["above_floor"]
    assert not ev.kl_at_matched_reward(rl, fst, floor=0.6)["above_floor"]  # prompt alone gets 0.6
    none = ev.kl_at_matched_reward(rl, fst, key="kl_other")
    assert none == {"reward": None, "rl_kl": None, "fst_kl": None, "ratio": None,
                    "above_floor": False}
    assert ev.kl_curve(fst, "kl_common") == ([0.2, 0.4, 0.7], [0.01, 0.03, 0.05])
    assert ev.kl_curve(rl) == ([0.1, 0.3, 0.5, 0.6], [0.01, 0.05, 0.1, 0.2])
