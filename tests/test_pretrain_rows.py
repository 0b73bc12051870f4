"""
tests/test_pretrain_rows.py: checks the packed pretraining rows of tasks.py (a row keeps to its
token budget, greedily, and its first problem is the downstream sequence; the batch builder pays
exactly the tokens the packer counted; determinism per rng; the share of calibration rows under the
seed prompt) and the carriability dial of select_tasks.py (every `cipher-k<k>` level is the cipher
with a budget that fits k of its table's entries; the dial's soundness criteria). The tokenizer is
the `enc` fixture of tests/conftest.py.

Run: python -m pytest -q tests/test_pretrain_rows.py   (a few seconds on CPU)
"""

import random

from harness import select_tasks
from world import tasks
from world.tasks import UNSEEN_RULES, SEED_PROMPT, LIST_LEN, make_task


# -----------------------------------------------------------------------------
# packed pretraining rows

def test_pretrain_row_respects_the_budget_and_keeps_the_downstream_format(enc):
    rng = random.Random(0)
    counts = []
    for budget in (20, 50, 78, 200):
        for _ in range(200):
            state = rng.getstate()
            ctx, ps = tasks.pretrain_row(rng, enc, budget, UNSEEN_RULES)
            rng_all = random.Random()
            rng_all.setstate(state)
            # the same row, nothing cut
            _, drawn = tasks.pretrain_row(rng_all, enc, 10 ** 6, UNSEEN_RULES)
            ids, _ = tasks.encode_row(enc, ctx, ps)
            single, _ = tasks.encode_row(enc, ctx, ps[:1])
            assert len(ps) >= 1
            # only a lone first problem may overflow
            assert len(ids) <= budget or len(ps) == 1
            # the first problem is the downstream sequence:
            # <|bos|> context \nin: .. \nout: answer <|eos|>
            assert ids[:len(single)] == single == (tasks.encode_prompt(enc, ctx, ps[0])
                                                   + tasks.encode_answer(enc, ps[0]))
            assert ps == drawn[:len(ps)]
            # greedy: the next drawn problem would not fit
            if len(ps) < len(drawn):
                assert len(tasks.encode_row(enc, ctx, drawn[:len(ps) + 1])[0]) > budget
            counts.append(len(ps))
    # tight and loose budgets both bite
    assert min(counts) == 1 and max(counts) == 10


def test_pretrain_row_matches_the_training_batch(enc):
    from world import pretrain  # the batch builder pays exactly the tokens the packer counted
    rng = random.Random(1)
    rows = [tasks.pretrain_row(rng, enc, 78, UNSEEN_RULES) for _ in range(32)]
    x, y = pretrain.make_batch(enc, rows, "cpu")
    pad = enc.encode_single_token("<|pad|>")
    encoded = [tasks.encode_row(enc, c, ps) for c, ps in rows]
    assert x.shape[1] == max(len(ids) for ids, _ in encoded) - 1 <= 77
    assert [int((r != pad).sum()) + 1 for r in x] == [len(ids) for ids, _ in encoded]
    for (_, ps), (ids, answer), xr, yr in zip(rows, encoded, x.tolist(), y.tolist()):
        n = len(ids) - 1
        assert xr[:n] == ids[:-1]  # the row, shifted: position t predicts token t + 1
        assert yr[:n] == [tok if a else -1 for tok, a in zip(ids[1:], answer[1:])]
        # every problem's answer (its digits and <|eos|>) is a target, nothing else
        assert sum(answer) == sum(len(tasks.encode_answer(enc, p)) for p in ps)
        assert all(v == -1 for v in yr[n:])


def test_pretrain_row_is_deterministic_per_rng(enc):
    a = [tasks.pretrain_row(random.Random(7), enc, 78, UNSEEN_RULES, 0.3) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng1, rng2 = random.Random(8), random.Random(8)
    # the budget changes only how many problems are kept, never which rule or stream is drawn
    for _ in range(50):
        (c1, p1), (c2, p2) = (tasks.pretrain_row(rng1, enc, 30, UNSEEN_RULES),
                              tasks.pretrain_row(rng2, enc, 200, UNSEEN_RULES))
        assert c1 == c2 and p1 == p2[:len(p1)]
    assert rng1.random() == rng2.random()


def test_calibration_rows_use_the_seed_prompt(enc):
    rng = random.Random(3)
    rows = [tasks.pretrain_row(rng, enc, 78, UNSEEN_RULES, calibration=0.25) for _ in range(2000)]
    calib = [(c, ps) for c, ps in rows if c == SEED_PROMPT]
    assert 400 < len(calib) < 600                                    # about the asked share
    assert all(not c.startswith("rule: ?") for c, _ in rows if c != SEED_PROMPT)
    for _, ps in calib:  # answers follow a trained rule: every problem of a row the same one
        assert all(LIST_LEN[0] <= len(p.inputs) <= LIST_LEN[1] for p in ps)
    # ... a random one per row: under the one context, many different functions
    # (here: sorted, reversed, neither)
    firsts = [ps[0] for _, ps in calib if len(set(ps[0].inputs)) == len(ps[0].inputs)]
    n_sort = sum(list(p.answer) == sorted(p.inputs) for p in firsts)
    n_rev = sum(list(p.answer) == list(p.inputs)[::-1] for p in firsts)
    assert 0 < n_sort < len(firsts) / 2 and 0 < n_rev < len(firsts) / 2
    assert not any(c == SEED_PROMPT
                   for c, _ in [tasks.pretrain_row(random.Random(i), enc, 78, UNSEEN_RULES)
                                for i in range(500)])


def test_carriability_dial_levels(enc):
    # every level is the cipher (same rule, marker and splits); only the budget changes, and it fits
    # exactly k of the table's entries
    count = lambda t: len(enc.encode_ordinary(t))
    cipher = make_task("cipher", n_train=64)
    for k in tasks.DIAL_LEVELS:
        t = make_task(f"cipher-k{k}", n_train=64)
        assert (t.rule, t.val, t.train, t.pareto) == (cipher.rule, cipher.val, cipher.train,
                                                      cipher.pareto)
        entries = [len(tasks.parse_rule(p[len("rule:"):])[0].arg)
                   for p in select_tasks.dial_prompts(t, count) if p.startswith("rule: map")]
        assert max(entries, default=0) == k
        assert t.seed_prompt in select_tasks.dial_prompts(t, count)
    assert cipher.max_context_tokens is None  # the preset's budget


def test_dial_criteria():
    best, told, seed = {0: 0.05, 1: 0.3, 2: 0.6, 3: 0.9}, 0.95, 0.04
    assert all(select_tasks.dial_sound(best, told, seed).values())
    s = select_tasks.dial_sound({0: 0.05, 1: 0.06, 2: 0.6, 3: 0.7}, told, seed)
    assert not s["middle"] and not s["full"] and s["ordered"] and s["empty"]
    assert not select_tasks.dial_sound({0: 0.3, 1: 0.2, 2: 0.6, 3: 0.9}, told, seed)["ordered"]
