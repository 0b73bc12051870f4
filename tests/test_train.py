"""
train.py, the method's wiring: the switches that make the baselines and controls, the prompts each
problem draws from GEPA's frontier (fast_context.draw_prompts), the sliding window a schedule's
GEPA reads (untold of task switches), one whole FST step over a two-prompt frontier, and the update
(rl.update_policy) against a per-row naive reference.
"""

import copy
import os
import random
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import torch

import fast_context as fc
import rl
import rollout
import train
from model import GPT, GPTConfig
from world import pretrain, tasks


def test_methods_are_switches_of_one_step():
    assert {"rl", "context", "fst", "instructed", "sequential"} <= set(train.METHODS)
    assert all(set(flags) == {"uses_context", "gepa_rounds", "later_rounds", "trains_weights",
                              "instructed", "suite"} for flags in train.METHODS.values())
    M = train.METHODS
    assert M["fst"] == dict(uses_context=True, gepa_rounds=True, later_rounds=True,
                            trains_weights=True, instructed=False, suite=True)
    assert train.SUITE["methods"] == ["rl", "context", "fst", "instructed", "sequential"]
    assert M["sequential-1"]["gepa_rounds"] and not M["sequential-1"]["later_rounds"]
    assert not M["rl"]["uses_context"] and not M["context"]["trains_weights"]
    assert M["instructed"]["instructed"] and not M["sequential"]["gepa_rounds"]


def test_draw_prompts_splits_each_group_over_m_frontier_prompts(monkeypatch):
    preset = replace(train.PRESETS["tiny"], group_size=8, prompts_per_problem=3)
    front = [("rule: a", 3), ("rule: b", 1)]  # (prompt, instances it is best on)
    monkeypatch.setattr(fc, "frontier_prompts", lambda state: front)
    draws = fc.draw_prompts(object(), 400, preset.prompts_per_problem, preset.group_size,
                            random.Random(0))
    contexts, sizes, group = map(list, zip(*draws))
    assert len(contexts) == 400 * 3
    assert sizes[:3] == [3, 3, 2] and sum(sizes[:3]) == 8  # G rollouts split over m prompts
    assert group[:6] == [0, 0, 0, 1, 1, 1]
    share = Counter(contexts)["rule: a"] / len(contexts)
    assert 0.70 < share < 0.80  # weighted by the instances each covers (3 of 4)
    # without GEPA: the fixed prompt (the seed prompt, or instructed: the true instruction)
    task = tasks.make_task("hidden-rule", n_train=4)
    assert train.fixed_prompt(SimpleNamespace(task=task, instructed=False, prompt=None)) == "rule: ?"
    told = SimpleNamespace(task=task, instructed=True, gepa=None, prompt=None)
    assert train.fixed_prompt(told) == train.deployed_prompt(told) == task.instruction


def test_continual_gepa_follows_the_stream_untold(tmp_path, monkeypatch):
    # a schedule's GEPA is never told of a switch: before each round its D_p becomes the last
    # n_pareto problems of the stream, and rounds fall every T steps whatever the stage boundaries
    preset = replace(train.PRESETS["micro"], gepa_every=2, n_pareto=4, window=8, batch_problems=4)
    base = str(tmp_path / "base")
    pretrain.pretrain(preset, base, "cpu", log=lambda *a: None)
    seen, rounds = [], []
    real_sample = random.Random.sample

    def spy_sample(self, population, k):
        out = real_sample(self, population, k)
        if k == preset.batch_problems and population and isinstance(population[0], tasks.Problem):
            seen.append(list(out))
        return out

    def spy_round(state, evaluate, num_proposals, reflector, rescore=True, **kw):
        rounds.append((len(seen), list(state.pareto), rescore))
        return real_round(state, evaluate, num_proposals, reflector, rescore, **kw)
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
    # evaluate.many (one generate for every context, as make_evaluate uses on CUDA) against one call
    # per context: left-padding to the longest prompt changes nothing in greedy completions
    from rollout import greedy_evaluate
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


# -----------------------------------------------------------------------------
# one whole step, and the update, on a tiny model

SEED, OTHER = "rule: ?", "rule: b"  # the two prompts of the test frontier


def _tiny_model(enc, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=(enc.n_vocab + 63) // 64 * 64, block_size=128, n_layer=1,
                         n_head=2, n_embd=32))


def _two_prompt_state(preset, task, enc):
    """An FST run state whose GEPA (stub evaluate, stub reflector) ends its first round with a
    frontier of two prompts: SEED best on the even D_p instances, OTHER on the odd ones."""
    pareto = {id(p): i for i, p in enumerate(task.pareto)}

    def evaluate(context, problems):  # stub policy: no model, rewards by prompt and instance
        out = []
        for p in problems:
            i = pareto.get(id(p))
            good = context == OTHER if i is None else (context == OTHER) == (i % 2 == 1)
            out.append((float(good), "0", "fb"))
        return out

    model = _tiny_model(enc)
    s = train.RunState(model=model, enc=enc, opt=torch.optim.SGD(model.parameters(), lr=0.1),
                     ref=None, rng=random.Random(0), seed=0, **train.METHODS["fst"],
                     evaluate=evaluate, reflect=lambda prompt, records: OTHER, gepa=None, task=task)
    train.start_fast_weights(s, preset, 48, fc.word_count)
    return s


def test_fst_step_groups_span_frontier_prompts_and_rows_are_rescored_under_their_own(monkeypatch):
    preset = replace(train.PRESETS["micro"], batch_problems=6, group_size=4, prompts_per_problem=2,
                     gepa_every=2, gepa_proposals=1, gepa_minibatch=2, optimizer_steps=2,
                     n_pareto=4)
    enc = tasks.build_tokenizer()
    task = tasks.make_task("hidden-rule", n_train=32, n_pareto=4, n_val=4)
    s = _two_prompt_state(preset, task, enc)
    seen = {}

    def spy(name, module, fn):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            seen.setdefault(name, []).append((a, kw, out))
            return out
        monkeypatch.setattr(module, name, wrapped)
    spy("draw_prompts", fc, fc.draw_prompts)
    spy("sample_rollouts", rollout, rollout.sample_rollouts)
    spy("completion_logprobs", rollout, rollout.completion_logprobs)
    spy("group_advantages", rl, rl.group_advantages)
    row = train.fst_step(s, 0, preset)  # step 0: a GEPA round (no re-score), then the RL update
    assert row["gepa_accepted"] == 1 and row["frontier"] == 2
    assert sorted(p for p, _ in fc.frontier_prompts(s.gepa)) == sorted([SEED, OTHER])
    _, _, draws = seen["draw_prompts"][0]
    problems = seen["sample_rollouts"][0][0][3][::preset.prompts_per_problem]  # one per problem
    contexts, sizes, group = map(list, zip(*draws))
    ctx_row = rollout.expand(contexts, sizes)                        # the prompt each row drew
    prob_row = rollout.expand([problems[i] for i in group], sizes)   # the problem it answers
    group_row = rollout.expand(group, sizes)
    ro = seen["sample_rollouts"][0][2]
    assert len(ro) == preset.batch_problems * preset.group_size == s.rl_rollouts
    assert ro.prompts == [tasks.encode_prompt(enc, c, p) for c, p in zip(ctx_row, prob_row)]
    # one group per problem: its G rows all answer that problem, whatever prompt they used ...
    (rewards, ids), _, adv = seen["group_advantages"][0]
    assert ids.tolist() == group_row == ro.group and rewards.tolist() == ro.rewards
    for g in range(preset.batch_problems):
        rows = [r for r in range(len(ro)) if group_row[r] == g]
        assert len(rows) == preset.group_size and len({id(prob_row[r]) for r in rows}) == 1
    # ... and at least one group holds rollouts of both frontier prompts
    spans = [{ctx_row[r] for r in range(len(ro)) if group_row[r] == g}
             for g in range(preset.batch_problems)]
    assert {SEED, OTHER} in spans
    assert torch.equal(adv, rl.group_advantages(torch.tensor(ro.rewards), torch.tensor(ro.group)))
    # the re-score: the minibatches cover every row once, each under the prompt it was sampled with
    calls = seen["completion_logprobs"]
    assert len(calls) == preset.optimizer_steps
    rescored = [p for (_, prompts, tokens, mask, _), _, _ in calls for p in prompts]
    assert rescored == ro.prompts
    assert torch.equal(torch.cat([c[0][2] for c in calls]), ro.tokens)
    assert row["logp_gap"] < 1e-4  # sampler and trainer agree before any update


def _naive_logp(model, prompt, tokens, mask):
    """Per-row reference of the trainer's re-score: one forward of prompt + completion alone."""
    n = int(mask.sum())
    seq = torch.tensor(prompt + tokens[:n].tolist())[None]
    logits = model(seq)[0, len(prompt) - 1:len(prompt) - 1 + n]  # the positions predicting them
    return torch.log_softmax(logits.float(), -1).gather(1, tokens[:n, None]).squeeze(1)


def test_update_policy_matches_a_per_row_naive_reference(monkeypatch):
    # optimizer_steps x inner_steps optimizer steps, each rollout re-scored under its own prompt,
    # CISPO with the sampler's log-probs as the old policy: against a loop written row by row
    preset = replace(train.PRESETS["micro"], optimizer_steps=2, inner_steps=2, loss_type="cispo",
                     temperature=1.0, grad_clip=1e9)
    enc = tasks.build_tokenizer()
    task = tasks.make_task("hidden-rule", n_train=8)
    model = _tiny_model(enc, seed=1)
    p0, p1 = task.train[:2]
    ro = rollout.sample_rollouts(model, enc, [SEED, OTHER, SEED, OTHER], [p0, p0, p1, p1], 2, 1.0,
                                 seed=3, max_new_tokens=6, group=[0, 0, 1, 1])
    adv = torch.tensor([1.0, -0.5, 0.25, -0.75, 0.5, -1.0, 0.75, -0.25])
    ref = copy.deepcopy(model)
    steps = []
    real_step = rl.guarded_step
    monkeypatch.setattr(rl, "guarded_step",
                        lambda *a, **kw: steps.append(1) or real_step(*a, **kw))
    row = rl.update_policy(model, torch.optim.SGD(model.parameters(), lr=0.5), ro, adv, preset)

    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(preset.inner_steps):
        for rows in ([0, 1, 2, 3], [4, 5, 6, 7]):
            opt.zero_grad()
            terms, n_tok = [], 0
            for r in rows:
                m = ro.mask[r]
                logp = _naive_logp(ref, ro.prompts[r], ro.tokens[r], m)
                weight = torch.exp(logp.detach() - ro.logp[r, :len(logp)]).clamp(max=5.0)
                terms.append(-(weight * adv[r] * logp).sum())
                n_tok += len(logp)
            (sum(terms) / n_tok).backward()
            opt.step()
    assert len(steps) == preset.optimizer_steps * preset.inner_steps
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
    assert not torch.equal(model.wte.weight, _tiny_model(enc, seed=1).wte.weight)  # it did learn
    assert row["reward"] == sum(ro.rewards) / len(ro) and "skipped" not in row
    assert abs(row["ratio_mean"] - 1.0) > 1e-6  # from the 2nd optimizer step on, ratio != 1
