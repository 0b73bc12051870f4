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
