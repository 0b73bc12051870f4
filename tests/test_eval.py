"""
eval.py's measurements against naive references: KL(pi_theta || pi_base) along sampled completions
(exact over the vocabulary, one prefix at a time) and the sigmoid fit on a curve with known parameters.
"""

import random

import numpy as np
import torch

import eval as ev
from episodes import sample_rollouts
import tasks
from model import GPT, GPTConfig


def _models_and_tokenizer():
    enc = tasks.build_tokenizer()
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=(enc.n_vocab + 63) // 64 * 64, block_size=128, n_layer=1, n_head=2, n_embd=32)
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
    assert b["ci95"][1] - b["ci95"][0] < (s["ci95"][1] - s["ci95"][0]) / 3  # ~1/sqrt(n) narrower
    assert abs(b["mean"] - 0.5) < b["ci95"][1] - b["ci95"][0]  # the true mean is inside (for this draw)
    assert ev.bootstrap_ci(small) == ev.bootstrap_ci(small)  # seeded: a report rebuilds identically
    fst, rl = [0.9, 0.8, 0.95, 0.85], [0.5, 0.4, 0.6, 0.45]
    assert ev.compare(fst, rl)["verdict"] == "higher" and ev.compare(rl, fst)["verdict"] == "lower"
    assert ev.compare([0.5, 0.7, 0.4], [0.6, 0.5, 0.5])["verdict"] == "inconclusive"  # signs disagree
    assert ev.compare([0.9], [0.1])["verdict"] == "inconclusive"  # one seed decides nothing
