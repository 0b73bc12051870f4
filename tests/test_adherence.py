"""The adherence world and its experiment: partial tables in pretraining, the table task, edit's
table moves (the swap), the whole-pool GEPA round, sequential-1's budget, the internalization probe
and the adherence measurement."""
import random
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest

import eval as ev
import fast_context as fc
from harness import adherence as A
from world import reflectors as R
from world import tasks as T


def test_partial_map_parses_prints_and_applies_what_it_states():
    (op,) = T.parse_rule("map 2>7 5>1 +")
    assert op.partial and op.arg == ((2, 7), (5, 1)) and op.text() == "map 2>7 5>1 +"
    assert T.parse_rule("map +")[0] == T.Op("map", (), True)
    assert op.apply([2, 5, 8]) == [7, 1, 8]
    assert T.parse_rule("map 2>7")[0] != T.parse_rule("map 2>7 +")[0]
    with pytest.raises(T.SpecError):
        T.parse_rule("map")  # a complete table states at least one entry


def test_table_rows_follow_stated_entries_at_the_adherence_rate():
    rng, followed, near, rows = random.Random(0), [], [], 0
    for _ in range(3000):
        ctx, ps = T.table_row(rng, adherence=0.6, draw=4)
        (op,) = T.parse_rule(ctx[len("rule: "):])
        stated = dict(op.arg)
        for p in ps:
            for x, y in zip(p.inputs, p.answer):
                if x in stated and op.partial:
                    followed.append(y == stated[x])
                elif x in stated:  # a complete table is always followed
                    assert y == stated[x]
                elif y != x:  # an unstated entry: the NEAR prior
                    near.append((y - x) % 10 in T.NEAR)
        rows += op.partial
    assert abs(sum(followed) / len(followed) - 0.6) < 0.02 and all(near) and rows > 1500


def test_pretraining_rows_have_no_tables_unless_asked(enc):
    rng = random.Random(1)
    assert not any(T.pretrain_row(rng, enc, 78, calibration=0.05)[0].endswith("+")
                   for _ in range(300))
    rng = random.Random(1)
    assert sum(T.pretrain_row(rng, enc, 78, table=0.5)[0].startswith("rule: map")
               for _ in range(300)) > 120


def test_table_task_hides_more_than_its_budget_carries(enc):
    task = T.make_task("table6")
    assert task.seed_prompt == "rule: map +" and len(task.rule[0].arg) == 6
    count = lambda t: len(enc.encode_ordinary(t))
    prompts = A.in_budget_prompts(task, count)
    assert len(prompts) == 1 + 6 + 15 and max(map(count, prompts)) == task.max_context_tokens
    assert count("rule: map 0>4 1>8 2>9 +") > task.max_context_tokens  # a third entry never fits
    assert len(A.far_entries(task)) == 4


def records(rows):
    """[(inputs, model output, expected)] -> reflector records."""
    return [{"inputs": "in: " + T.digits_text(x), "outputs": " " + T.digits_text(o),
             "feedback": ("correct" if o == y else "wrong at positions 1") + "; expected: "
             + T.digits_text(y)} for x, o, y in rows]


def test_edit_adds_a_failing_entry_then_swaps_one_the_model_gets_right(enc):
    count = lambda t: len(enc.encode_ordinary(t))
    edit = R.make_reflector("edit", max_tokens=11, count_tokens=count)
    # stated 0>4 and 1>8 come out right; 2 should become 9 and the model leaves it
    recs = records([((0, 2, 3), (4, 2, 3), (4, 9, 3)), ((1, 2), (8, 2), (8, 9))])
    assert edit("rule: map 0>4 +", recs) == "rule: map 0>4 2>9 +"  # room: an entry added
    swapped = edit("rule: map 0>4 1>8 +", recs)  # no room: a stated entry swapped out
    assert swapped in ("rule: map 1>8 2>9 +", "rule: map 0>4 2>9 +") and count(swapped) <= 11
    # a stated entry the model gets wrong is not the one dropped: dropping it loses its positions
    recs = records([((0, 2, 3), (0, 2, 3), (4, 9, 3)), ((1, 2), (8, 2), (8, 9))])
    assert edit("rule: map 0>4 1>8 +", recs) == "rule: map 0>4 2>9 +"


def test_edit_retargets_and_drops_table_entries(enc):
    edit = R.make_reflector("edit", max_tokens=11, count_tokens=lambda t: len(enc.encode_ordinary(t)))
    assert edit("rule: map 0>5 +", records([((0, 3), (5, 3), (4, 3))])) == "rule: map 0>4 +"
    assert edit("rule: map 0>4 3>1 +", records([((3, 0), (1, 4), (3, 4))])) == "rule: map 0>4 +"


def test_whole_pool_rescore_brings_back_a_prompt_that_lost_earlier():
    weights = {"a": 1.0, "b": 0.0}  # what each prompt scores under the current "weights"
    evaluate = lambda ctx, ps: [(weights.get(ctx, 0.5), "", "") for _ in ps]
    ps = [T.Problem((1,), (1,))] * 4
    for pool, back in ((0, False), (10, True)):
        weights.update(a=1.0, b=0.0)
        s = fc.init_state("seed", ps, ps, evaluate)
        for prompt in ("a", "b"):
            fc.add_candidate(s, evaluate, prompt, [0])
        assert fc.best_prompt(s) == "a" and 2 not in fc.nondominated(s)
        weights.update(a=0.0, b=1.0)  # new weights: b now wins
        before = s.rollouts
        fc.run_round(s, evaluate, 0, reflector=None, pool=pool)
        assert (fc.best_prompt(s) == "b") == back
        assert s.rollouts - before == (3 if back else 1) * 4  # whole pool vs frontier only


def test_pool_members_keep_the_seed_and_the_best():
    s = SimpleNamespace(candidates=list("sabcd"), scores=[[0], [3], [1], [2], [0]])
    assert fc.pool_members(s, 3) == [0, 1, 3]


def test_a_round_can_score_on_its_own_problems():
    ps, new = [T.Problem((1,), (1,))] * 4, [T.Problem((2,), (2,))] * 3
    evaluate = lambda ctx, problems: [(1.0, "", "")] * len(problems)
    s = fc.init_state("seed", ps, ps, evaluate)
    fc.run_round(s, evaluate, 0, reflector=None, pareto=new)
    assert s.pareto == new and len(s.scores[0]) == 3 and s.rollouts == 4 + 3


def test_entry_probe_on_a_model_that_knows_one_entry():
    task = T.make_task("table6")
    knows = lambda xs: [4 if x == 0 else x for x in xs]  # only 0>4, nothing else changes
    outs = [" " + T.digits_text(knows(p.inputs)) for p in task.val]
    acc = ev.entry_accuracy(task.val, outs, task.rule[0].arg)
    assert acc["0>4"] == 1.0 and all(v == 0.0 for k, v in acc.items() if k != "0>4")
    assert ev.entry_accuracy(task.val, ["junk"] * len(task.val), task.rule[0].arg)["0>4"] == 0.0


def test_adherence_measured_on_a_stub_that_follows_with_known_probability(monkeypatch):
    task, rng = T.make_task("table6"), random.Random(0)

    def stub(model, enc, contexts, problems, samples, temperature, seed, max_new_tokens):
        (a, b), = T.parse_rule(contexts[0][len("rule: "):])[0].arg
        texts = [" " + T.digits_text([b if x == a and rng.random() < 0.7 else x for x in p.inputs])
                 for p in problems for _ in range(samples)]
        return SimpleNamespace(texts=texts)
    monkeypatch.setattr(A.rollout, "sample_rollouts", stub)
    adh = A.adherence(None, None, task, samples=8)
    assert all(abs(v - 0.7) < 0.08 for v in adh.values()), adh


def test_sequential_1_spends_what_fsts_round_0_spends(micro_base, tmp_path):
    import train
    preset = replace(train.PRESETS["micro"], steps=4, gepa_every=2, gepa_pool=4,
                     gepa_round_problems=6, log_frontier=True, probe_entries=True)
    logs = {}
    for m in ("fst", "sequential-1", "sequential"):
        train.run(m, [("table6", 4)], preset, micro_base, str(tmp_path / m), log=lambda *a: None)
        with open(tmp_path / m / "log.jsonl") as f:
            logs[m] = [__import__("json").loads(line) for line in f]
    rl = preset.batch_problems * preset.group_size  # RL rollouts per step
    gepa = {m: [r["rollouts"] - rl * (r["step"] + 1) for r in rows] for m, rows in logs.items()}
    assert gepa["sequential"][0] >= preset.context_only_rollouts  # the old control: 10x more
    assert gepa["fst"][0] == gepa["sequential-1"][0] > 0  # the same round 0
    assert len(set(gepa["sequential-1"])) == 1 and gepa["fst"][2] > gepa["fst"][0]
    assert all("front" in logs[m][0] for m in logs) and "front" in logs["fst"][2]
    assert set(logs["fst"][0]["entries"]) == {f"{a}>{b}" for a, b in T.TABLE6}
    c7 = logs["fst"][-1]["c7"]  # C7's 2x2 table, written at the end
    assert set(c7) == {"base", "weights"} and all(0 <= c7[w][p] <= 1 for w in c7 for p in c7[w])
    assert logs["fst"][-1]["val_seed_greedy"] == c7["weights"]["seed"]


def test_instructed_can_fix_any_prompt(micro_base, tmp_path):
    import train
    preset = replace(train.PRESETS["micro"], steps=2, fixed_prompt="rule: map 0>4 1>8 +")
    s = train.run("instructed", [("table6", 2)], preset, micro_base, str(tmp_path / "i"),
                  log=lambda *a: None)
    assert s["deployed_prompt"] == "rule: map 0>4 1>8 +"
    assert s["settings"]["preset"]["fixed_prompt"] == "rule: map 0>4 1>8 +"
    # a field at its old default is left out of the settings, so archived runs still match
    from world.pretrain import settings_of
    assert "fixed_prompt" not in settings_of(train.PRESETS["tiny"])["preset"]


def test_far_targets_at_first_occurrences_leave_out_what_the_prefix_shows(monkeypatch):
    """A base that copies a target it has seen earlier in the answer: the amended criterion counts
    only positions whose source has not appeared before, so it sees what RL samples on its own."""
    import torch
    task = T.make_task("table6")
    table = dict(task.rule[0].arg)
    digit = list(range(10))  # stand-in token ids: digit d is token d
    L = max(len(p.inputs) for p in task.val)
    logp = torch.full((len(task.val), L, 10), 1e-4).log()
    for i, p in enumerate(task.val):
        for j, x in enumerate(p.inputs):
            if x in table and x in p.inputs[:j]:  # a repeat: the prefix shows the target
                logp[i, j, table[x]] = torch.tensor(0.5).log()
    monkeypatch.setattr(A, "teacher_forced", lambda model, enc, task: (logp, digit))
    _, every, first = A.silent_stats(None, None, task)
    assert all(abs(v - 1e-4) < 1e-9 for v in first.values()), first
    assert all(every[k] > 1e-3 for k in A.far_entries(task)), every  # repeats exist in val
    f = A.far_first(every, first, A.far_entries(task))
    assert f["far_first_pass"] and abs(f["far_prob_first"] - 1e-4) < 1e-9
    assert list(A.positions(SimpleNamespace(val=[SimpleNamespace(inputs=[3, 1, 3])]))) == [
        (0, 0, 3, True), (0, 1, 1, True), (0, 2, 3, False)]
    m = {"pass": dict(general=True, far=False, far_first=True)}
    assert A.eligible(m) and not A.eligible({"pass": dict(general=True, far=False)})
    assert not A.eligible({"pass": dict(general=False, far=True, far_first=True)})


def test_the_report_tests_eligible_bases_only_and_labels_by_the_one_rule():
    """Synthetic replicates: FST beats every control by 0.2 on 6 bases, one of which fails a
    criterion. The primary rows use the 5 eligible bases and pass; the sensitivity rows (without
    b0) have 4 and say 'n < 5'; every other row is exploratory."""
    from harness import adherence_report as AR
    from harness.adherence import ARMS

    def rows(acc):
        c7 = {"base": {"seed": 0.1, "deployed": 0.2}, "weights": {"seed": acc, "deployed": acc}}
        return [{"step": s, "val_acc": acc} for s in (0, 10)] + [{"step": 10, "c7": c7}]
    runs = {arm: {} for arm in ARMS}
    for b in range(6):
        for s in range(2):
            noise = 0.01 * ((b * 7 + s * 3) % 5)
            for arm in ARMS:
                runs[arm][(b, s)] = rows((0.9 if arm == "fst" else 0.7) + noise)
    ok = {"pass": dict(general=True, far=False, far_first=True)}
    crit = {b: ok for b in range(5)}
    crit[5] = {"pass": dict(general=False, far=False, far_first=True)}
    out = AR.primary_family(AR.level_rows(runs, crit, primary=True))
    prim = [r for r in out if r.get("primary")]
    assert len(prim) == 3 and all(r["bases"] == 5 and r["label"] == "reproduced" for r in prim)
    assert "0 of them pass" in prim[0]["note"]
    sens = [r for r in out if r["measure"].startswith(AR.SENSITIVITY)]
    assert len(sens) == 3 and all(r["bases"] == 4 and r["label"] == "n < 5" for r in sens)
    assert all(r["label"] == "exploratory" for r in out if r not in prim and r not in sens)
    ctl = AR.primary_family(AR.level_rows(runs, crit, primary=False))
    assert all(r["label"] == "exploratory" and r["bases"] == 6 for r in ctl)


def test_each_arms_own_accuracy_is_the_mean_over_its_replicates():
    """Two bases x two seeds: the arm table's mean and final val acc are the plain means over the
    replicates, n and bases counted; an arm with no finished run has no entry."""
    from harness import adherence_report as AR
    runs = {"fst": {(0, 0): [{"val_acc": 0.2}, {"val_acc": 0.6}], (0, 1): [{"val_acc": 0.4},
                                                                         {"val_acc": 1.0}],
                    (1, 0): [{"val_acc": 0.0}, {"step": 3}, {"val_acc": 0.2}]},
            "rl": {}}
    t = AR.arm_table(runs)
    assert set(t) == {"fst"}
    m, f = t["fst"]["mean val acc"], t["fst"]["final val acc"]
    assert m["mean"] == pytest.approx((0.4 + 0.7 + 0.1) / 3) and m["n"] == 3 and m["bases"] == 2
    assert f["mean"] == pytest.approx((0.6 + 1.0 + 0.2) / 3)
    assert f["values"] == {"b0s0": 0.6, "b0s1": 1.0, "b1s0": 0.2}
    assert f["ci95"][0] <= f["mean"] <= f["ci95"][1]


def test_who_reaches_0_9_first_on_steps_and_on_rollouts():
    """FST at step 10 against sequential-1 at step 20: +1 on steps; the sequential's GEPA
    rollouts before RL make it later still on rollouts. Never reached by either: 0; reached by
    the other only: -1."""
    from harness import adherence_report as AR

    def rows(accs, start=0):  # an eval every 10 steps, 100 rollouts a step after `start`
        return [{"step": 10 * i, "rollouts": start + 1000 * i, "val_acc": a}
                for i, a in enumerate(accs)]
    runs = {"fst": {(0, 0): rows([0.5, 0.95, 1.0]), (1, 0): rows([0.5, 0.6, 0.7]),
                    (2, 0): rows([0.5, 0.6, 0.7])},
            "sequential-1": {(0, 0): rows([0.5, 0.8, 0.9], start=600),
                             (1, 0): rows([0.5, 0.6, 0.8]), (2, 0): rows([0.5, 0.92, 0.95])}}
    assert AR.reach_scores(runs, "sequential-1", "step") == {(0, 0): 1.0, (1, 0): 0.0, (2, 0): -1.0}
    assert AR.reach_scores(runs, "sequential-1", "rollouts") == {(0, 0): 1.0, (1, 0): 0.0,
                                                                 (2, 0): -1.0}
    runs["fst"][(0, 0)] = rows([0.5, 0.6, 0.95])  # a tie on steps (both at step 20) ...
    assert AR.reach_scores(runs, "sequential-1", "step")[(0, 0)] == 0.0
    assert AR.reach_scores(runs, "sequential-1", "rollouts")[(0, 0)] == 1.0  # ... not on rollouts
    del runs["fst"][(0, 0)][1]["rollouts"]  # a log without rollouts: that axis is left out
    assert (0, 0) not in AR.reach_scores(runs, "sequential-1", "rollouts")


def test_the_runs_chain_takes_the_first_ready_run(tmp_path, monkeypatch):
    """The primary family's arms of every replicate first, then the rest; each part seed-major
    over the bases; a base not yet measured is skipped, so a later seed of a measured base runs
    meanwhile; a finished run is never offered again."""
    import json
    import os
    from harness import adherence as A
    root = str(tmp_path)
    for level, b in (("adh", 0), ("adh-ctl", 0)):
        d = A.base_dir(root, level, b)
        os.makedirs(d)
        with open(os.path.join(d, "criteria.json"), "w") as f:
            json.dump({"best_prompt": "rule: map 1>8 9>8 +",
                       "pass": {"general": True, "far": False, "far_first": True}}, f)
    monkeypatch.setattr(A, "RESERVES", [])
    todo = A.ready_jobs(root, seeds=2)
    keys = [(level, f.split(os.sep)[-4], f.split(os.sep)[-1]) for level, f, _ in todo]
    arms = [f.split(os.sep)[-2] for _, f, _ in todo]
    n = len(A.PRIMARY_ARMS)  # the primary family's arms of every replicate first
    assert arms == list(A.PRIMARY_ARMS) * 4 + [a for a in A.ARMS if a not in A.PRIMARY_ARMS] * 4
    assert keys[:n] == [("adh", "b0", "s0")] * n
    assert keys[n] == ("adh-ctl", "b0", "s0")
    assert keys[2 * n] == ("adh", "b0", "s1")  # adh b1 is not measured yet
    assert keys[4 * n] == ("adh", "b0", "s0") and len(todo) == 4 * len(A.ARMS)
    first = todo[0][1]
    os.makedirs(first)
    open(os.path.join(first, "summary.json"), "w").close()
    assert A.ready_jobs(root, seeds=2)[0][1] != first
    ran = []
    monkeypatch.setattr(A, "run_job", lambda level, folder, kw: (
        ran.append(folder), os.makedirs(folder, exist_ok=True),
        open(os.path.join(folder, "summary.json"), "w").close(),
        {"final_val_acc": 0.0, "wall_s": 0.0})[-1])
    monkeypatch.setattr(A, "BASE_ORDER", [("adh", 0), ("adh-ctl", 0)])
    A.pipeline(root, "runs", seeds=2, wait_s=0, log=lambda m: None)
    assert len(ran) == 4 * len(A.ARMS) - 1 and len(set(ran)) == len(ran)


def test_two_chains_never_run_the_same_run(tmp_path, monkeypatch):
    """A run whose folder another process holds (its lock) is passed over, the next ready one
    runs; the held one runs once it is free, and the bases chain joins the runs when its bases
    are done."""
    import contextlib
    import json
    import os
    import types
    from harness import adherence as A
    from harness import runs
    root = str(tmp_path)
    d = A.base_dir(root, "adh", 0)
    os.makedirs(d)
    with open(os.path.join(d, "criteria.json"), "w") as f:
        json.dump({"best_prompt": "rule: map 1>8 +", "pass": {"far_first": True}}, f)
    monkeypatch.setattr(A, "RESERVES", [])
    monkeypatch.setattr(A, "BASE_ORDER", [("adh", 0)])
    todo = A.ready_jobs(root, seeds=1)
    held = todo[0][1]
    other = contextlib.ExitStack()
    other.enter_context(runs.one_writer(held))  # as another chain would, while it runs

    def run_job(level, folder, kw):  # the real lock, as train.run takes it
        with runs.one_writer(folder):
            ran.append(folder)
            open(os.path.join(folder, "summary.json"), "w").close()
        return {"final_val_acc": 0.0, "wall_s": 0.0}

    ran, slept, prepared = [], [], []
    monkeypatch.setattr(A, "prepare_base", lambda root, level, b, log: prepared.append((level, b)))
    monkeypatch.setattr(A, "run_job", run_job)
    # the chain's wait (only its own: the lock's holder lookup keeps the real sleep)
    monkeypatch.setattr(A, "time", types.SimpleNamespace(
        sleep=lambda s: (slept.append(s), other.close())))
    A.pipeline(root, "bases", seeds=1, wait_s=0, log=lambda m: None)
    assert ran == [f for _, f, _ in todo[1:]] + [held]  # the held run last, after one wait
    assert len(slept) == 1 and prepared == [("adh", 0)]


def test_the_t_distribution_matches_known_values():
    """Student's t CDF against tabled values (scipy.stats.t.cdf), and the one-sided test."""
    from harness.adherence_report import student_cdf, t_test
    for t, df, want in ((2.0, 4, 0.9419417382), (-1.0, 9, 0.1717181981), (2.776, 4, 0.975),
                        (0.0, 7, 0.5)):
        assert abs(student_cdf(t, df) - want) < 1e-4, (t, df)
    assert t_test([0.1, 0.2, 0.15, 0.3, 0.05]) < 0.05 < t_test([0.1, -0.2, 0.15, -0.1, 0.0])
    assert t_test([0.3]) is None


def test_reserve_bases_replace_those_that_miss_a_criterion(tmp_path, monkeypatch):
    """A level short of TARGET bases that meet every criterion gets its next reserve base, decided
    on the bases' criteria alone; a base that misses gets no runs; a criteria.json measured before
    the amendment is amended when read."""
    import json
    import os
    from harness import adherence as A
    root = str(tmp_path)

    def put(level, b, ok=True, amended=True):
        d = A.base_dir(root, level, b)
        os.makedirs(d, exist_ok=True)
        p = {"general": ok, "far": False}
        if amended:
            p["far_first"] = True
        with open(os.path.join(d, "criteria.json"), "w") as f:
            json.dump({"best_prompt": "rule: map +", "pass": p}, f)
    monkeypatch.setattr(A, "BASE_ORDER", [("adh", 0), ("adh", 1)])
    monkeypatch.setattr(A, "RESERVES", [("adh", 5), ("adh", 6)])
    monkeypatch.setattr(A, "TARGET", {"adh": 2, "adh-ctl": 0})
    put("adh", 0)
    assert A.planned_bases(root) == [("adh", 0), ("adh", 1)]  # b1 not measured yet: no decision
    put("adh", 1, ok=False)
    assert A.planned_bases(root) == [("adh", 0), ("adh", 1), ("adh", 5)]
    assert {f.split(os.sep)[-4] for _, f, _ in A.ready_jobs(root, 1)} == {"b0"}
    put("adh", 5, amended=False)
    monkeypatch.setattr(A, "amend", lambda path, m: dict(m, **{"pass": dict(m["pass"],
                                                                            far_first=True)}))
    assert A.planned_bases(root) == [("adh", 0), ("adh", 1), ("adh", 5)]  # 2 eligible: enough
    with open(os.path.join(A.base_dir(root, "adh", 5), "criteria.json")) as f:
        assert json.load(f)["pass"]["far_first"] is True  # amended on disk when read
    assert {f.split(os.sep)[-4] for _, f, _ in A.ready_jobs(root, 1)} == {"b0", "b5"}


def test_source_target_matrix_averages_each_source_over_its_positions(monkeypatch):
    """Rows are sources, columns targets: a base that puts 0.5 on source + 1 everywhere reads 0.5
    there, and the same at first occurrences only."""
    import torch
    task = T.make_task("table6")
    L = max(len(p.inputs) for p in task.val)
    logp = torch.full((len(task.val), L, 10), 0.05).log()
    for i, p in enumerate(task.val):
        for j, x in enumerate(p.inputs):
            logp[i, j, (x + 1) % 10] = torch.tensor(0.5).log()
    monkeypatch.setattr(A, "teacher_forced", lambda model, enc, task: (logp, list(range(10))))
    for first_only in (False, True):
        M = A.source_target_matrix(None, None, task, first_only=first_only)
        seen = {x for p in task.val for x in p.inputs}
        for a in seen:
            assert abs(float(M[a, (a + 1) % 10]) - 0.5) < 1e-6
            assert abs(float(M[a, a]) - 0.05) < 1e-6
