"""
eval.py's measurements against naive references: KL(pi_theta || pi_base) along sampled
completions (exact over the vocabulary, one prefix at a time), and harness/claims.py's claims
computed from synthetic log rows: censored C1 on both axes, the bounded C2 fit and its
identifiability, C3 under either KL key with a floor (intervals and labels: tests/test_stats.py).
Only the KL test builds a model.
"""

import random

import numpy as np
import torch

import eval as ev
from harness import claims
from rollout import sample_rollouts
from world import tasks
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
    fit = claims.sigmoid_fit(C, R)
    assert abs(fit["A"] - 0.8) < 0.03 and abs(fit["R0"] - 0.1) < 0.05


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
    assert claims.curve(rows) == ([5, 10, 15, 20, 25], [0.1, 0.3, 0.2, 0.5, 0.4])
    assert claims.curve(rows, "rollouts")[0] == [80, 160, 240, 320, 400]
    assert claims.running_max([0.1, 0.3, 0.2, 0.5, 0.4]) == [0.1, 0.3, 0.3, 0.5, 0.5]
    assert claims.running_max([]) == []
    assert claims.first_reach([5, 10, 15], claims.running_max([0.1, 0.5, 0.2]), 0.4) == 10
    a = claims.area_and_threshold(rows, 0.3)
    assert abs(a["auc"] - 0.3) < 1e-12 and a["steps_to_threshold"] == 10 and a["final"] == 0.4


def test_c1_uncensored_on_both_axes():
    rl = _rows(RL_VALS)
    fst = _rows([0.1, 0.4, 0.3, 0.65, 0.5, 0.7, 0.7, 0.7, 0.7, 0.7], rollouts_per_step=20)
    c1 = claims.sample_efficiency(rl, fst)
    assert c1["rl_peak"] == 0.6 and c1["fst_peak"] == 0.7
    assert c1["rl_steps_to_peak"] == 30 and c1["fst_steps_to_rl_peak"] == 20
    assert c1["rl_rollouts_to_peak"] == 480 and c1["fst_rollouts_to_rl_peak"] == 400
    assert abs(c1["ratio"] - 1.5) < 1e-12 and abs(c1["ratio_rollouts"] - 1.2) < 1e-12
    assert not c1["censored"] and not c1["censored_low"]


def test_c1_censored_when_fst_never_reaches_rl_peak():
    rl = _rows(RL_VALS)
    fst = _rows([0.1, 0.2, 0.5, 0.4, 0.5, 0.45, 0.5, 0.5, 0.55, 0.5], rollouts_per_step=20)
    c1 = claims.sample_efficiency(rl, fst)
    assert c1["censored"] and not c1["censored_low"]
    assert c1["fst_steps_to_rl_peak"] is None and c1["fst_rollouts_to_rl_peak"] is None
    assert c1["fst_last_step"] == 50 and c1["fst_last_rollouts"] == 1000
    assert abs(c1["ratio"] - 30 / 50) < 1e-12  # an upper bound: FST needs more than its run
    assert abs(c1["ratio_rollouts"] - 480 / 1000) < 1e-12


def test_c1_lower_bound_when_fst_is_there_at_its_first_eval():
    c1 = claims.sample_efficiency(_rows(RL_VALS), _rows([0.62] + [0.7] * 9))
    assert c1["censored_low"] and not c1["censored"]
    assert c1["fst_steps_to_rl_peak"] == 5 and abs(c1["ratio"] - 30 / 5) < 1e-12  # ratio >= 6
    # RL's own peak at its first eval: its x is an upper bound too, the ratio bounded neither way
    both = claims.sample_efficiency(_rows([0.6, 0.5, 0.55]), _rows([0.7, 0.7, 0.7]))
    assert both["censored"] and both["censored_low"] and both["ratio"] is None
    late = claims.sample_efficiency(_rows([0.6, 0.5, 0.55]), _rows([0.1, 0.7, 0.7]))
    assert late["censored"] and not late["censored_low"] and abs(late["ratio"] - 0.5) < 1e-12


def test_bounded_sigmoid_fit_recovers_a_known_curve():
    C = np.arange(5, 151, 5, dtype=float)
    R = 0.1 + (0.8 - 0.1) / (1 + (40 / C) ** 2.0)
    fit = claims.sigmoid_fit(C, R)
    assert abs(fit["A"] - 0.8) < 0.03 and abs(fit["R0"] - 0.1) < 0.03
    assert abs(fit["Cmid"] - 40) < 2 and abs(fit["B"] - 2) < 0.1 and fit["mse"] < 1e-6
    a = claims.asymptote(C, R, reps=50)
    assert a["identifiable"] and a["ci95"][0] - 1e-3 <= 0.8 <= a["ci95"][1] + 1e-3, a


def test_bounded_sigmoid_fit_stays_in_bounds_and_is_exact_there():
    C = np.arange(5, 151, 5, dtype=float)
    for r0, a in ((-0.3, 1.2), (-0.3, 0.7)):  # a free fit would leave [0, 1]
        R = r0 + (a - r0) / (1 + (60 / C) ** 3)
        fit = claims.sigmoid_fit(C, R)
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
    a = claims.asymptote(C, flat, reps=30)
    assert not a["identifiable"] and "flat" in a["why"]
    saturated = 0.8 + 0.03 * (-1.0) ** np.arange(len(C))  # at its level from the first eval on
    a = claims.asymptote(C, saturated, reps=30)
    assert not a["identifiable"] and "saturated" in a["why"] and "flat" not in a["why"]
    line = 0.1 + 0.2 * (C - 5) / 145  # still rising straight at the last eval
    a = claims.asymptote(C, line, reps=30)
    assert not a["identifiable"] and "not bent" in a["why"]


def test_kl_at_matched_reward_under_either_key_and_a_floor():
    rl = _rows([0.1, 0.3, 0.5, 0.6], kl=[0.01, 0.05, 0.1, 0.2], kl_common=[0.02, 0.06, 0.12, 0.25])
    fst = _rows([0.2, 0.65, 0.4, 0.7], kl=[0.005, 0.01, 0.015, 0.03],
                kl_common=[0.01, None, 0.03, 0.05])
    c3 = claims.kl_at_matched_reward(rl, fst)
    assert c3["reward"] == 0.6 and c3["rl_kl"] == 0.2 and c3["fst_kl"] == 0.01  # FST at x = 10
    assert abs(c3["ratio"] - 0.05) < 1e-12 and c3["above_floor"]
    common = claims.kl_at_matched_reward(rl, fst, key="kl_common")  # FST's x = 10 row lacks the key
    assert common["reward"] == 0.6 and common["rl_kl"] == 0.25 and common["fst_kl"] == 0.05
    assert abs(common["ratio"] - 0.2) < 1e-12
    assert claims.kl_at_matched_reward(rl, fst, floor=0.5)["above_floor"]
    # the prompt alone gets 0.6
    assert not claims.kl_at_matched_reward(rl, fst, floor=0.6)["above_floor"]
    none = claims.kl_at_matched_reward(rl, fst, key="kl_other")
    assert none == {"reward": None, "rl_kl": None, "fst_kl": None, "ratio": None,
                    "above_floor": False}
    assert claims.kl_curve(fst, "kl_common") == ([0.2, 0.4, 0.7], [0.01, 0.03, 0.05])
    assert claims.kl_curve(rl) == ([0.1, 0.3, 0.5, 0.6], [0.01, 0.05, 0.1, 0.2])
