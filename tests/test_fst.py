"""
fst.py, the method: the prompts each problem draws from GEPA's frontier, the switches that make the
baselines and controls, and the sliding window a schedule's GEPA reads (untold of task switches).
"""

import os
import random
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import fast_context as fc
import fst
import tasks
import train


def test_methods_are_switches_of_one_step():
    assert set(fst.METHODS) == {"rl", "context", "fst", "instructed", "sequential"}
    assert fst.METHODS["fst"] == dict(uses_context=True, gepa_rounds=True, trains_weights=True,
                                      instructed=False)
    assert not fst.METHODS["rl"]["uses_context"] and not fst.METHODS["context"]["trains_weights"]
    assert fst.METHODS["instructed"]["instructed"] and not fst.METHODS["sequential"]["gepa_rounds"]


def test_draw_prompts_splits_each_group_over_m_frontier_prompts(monkeypatch):
    preset = replace(train.PRESETS["tiny"], group_size=8, prompts_per_problem=3)
    front = [("rule: a", 3), ("rule: b", 1)]  # (prompt, instances it is best on)
    monkeypatch.setattr(fc, "frontier_prompts", lambda state: front)
    s = SimpleNamespace(gepa=object(), rng=random.Random(0))
    contexts, sizes, group = fst.draw_prompts(s, list(range(400)), preset)
    assert len(contexts) == len(sizes) == len(group) == 400 * 3
    assert sizes[:3] == [3, 3, 2] and sum(sizes[:3]) == 8  # G rollouts split over m prompts
    assert group[:6] == [0, 0, 0, 1, 1, 1]
    share = Counter(contexts)["rule: a"] / len(contexts)
    assert 0.70 < share < 0.80  # weighted by the instances each covers (3 of 4)
    # without GEPA: the fixed prompt, the whole group
    task = tasks.make_task("hidden-rule", n_train=4)
    plain = SimpleNamespace(gepa=None, task=task, instructed=False)
    assert fst.draw_prompts(plain, [0, 1], preset) == (["rule: ?"] * 2, [8, 8], [0, 1])
    told = SimpleNamespace(gepa=None, task=task, instructed=True)
    assert fst.draw_prompts(told, [0], preset)[0] == [task.instruction]


def test_continual_gepa_follows_the_stream_untold(tmp_path, monkeypatch):
    # a schedule's GEPA is never told of a switch: before each round its D_p becomes the last
    # n_pareto problems of the stream, and rounds fall every T steps whatever the stage boundaries
    preset = replace(train.PRESETS["micro"], gepa_every=2, n_pareto=4, window=8, batch_problems=4)
    base = str(tmp_path / "base")
    train.pretrain(preset, base, "cpu", log=lambda *a: None)
    seen, rounds = [], []
    real_sample = random.Random.sample

    def spy_sample(self, population, k):
        out = real_sample(self, population, k)
        if k == preset.batch_problems and population and isinstance(population[0], tasks.Problem):
            seen.append(list(out))
        return out

    def spy_round(state, evaluate, num_proposals, reflector, rescore=True):
        rounds.append((len(seen), list(state.pareto), rescore))
        return real_round(state, evaluate, num_proposals, reflector, rescore)
    real_round = fc.run_round
    monkeypatch.setattr(random.Random, "sample", spy_sample)
    monkeypatch.setattr(fc, "run_round", spy_round)
    train.run("fst", [("hidden-rule", 5), ("cipher", 5)], preset, os.path.join(base, "model.pt"),
              str(tmp_path / "run"), log=lambda *a: None)
    # steps with a round: every T, not at the switch
    assert [r[0] - 1 for r in rounds] == [0, 2, 4, 6, 8]
    for n_seen, pareto, rescore in rounds[1:]:
        stream = [p for batch in seen[:n_seen - 1] for p in batch]  # before this step's batch
        assert pareto == stream[-preset.n_pareto:] and rescore
    markers = [{p.marker for p in pareto} for _, pareto, _ in rounds]
    # the data moved, GEPA was not told
    assert markers[0] == markers[1] == {"in"} and markers[-1] == {"xs"}


def test_batched_greedy_evaluate_gives_each_contexts_own_results():
    # evaluate.many (one generate for every context, as make_policy uses on CUDA) against one call
    # per context: left-padding to the longest prompt changes nothing in greedy completions
    import torch
    from rollout import greedy_evaluate
    from model import GPT, GPTConfig
    enc = tasks.build_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=(enc.n_vocab + 63) // 64 * 64, block_size=128, n_layer=2,
                          n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # large random weights: greedy outputs that depend on the prompt
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    task = tasks.make_task("hidden-rule", n_train=8)
    contexts = ["rule: ?", "rule: sort then add 2", "rule: reverse then add 1 then sort"]
    evaluate = greedy_evaluate(model, enc, max_new_tokens=8, batched=True)
    got = evaluate.many(contexts, task.pareto[:5])
    assert got == [evaluate(c, task.pareto[:5]) for c in contexts]
    assert len({tuple(o for _, o, _ in g) for g in got}) > 1  # contexts do change the outputs
    assert not hasattr(greedy_evaluate(model, enc, 8), "many")  # the CPU default: per context
