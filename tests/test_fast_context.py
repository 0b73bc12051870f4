"""
tests/test_fast_context.py: the GEPA-style optimizer on hand-built score tables (frontier,
dominance, parent sampling, acceptance, exact rollout accounting, stale re-scoring across rounds,
invalid proposals, checkpoint round trip). The reflectors, and searches with them end to end, are
tested in tests/test_reflectors.py.

Run: python -m pytest -q tests/test_fast_context.py   (about a second on CPU)
"""

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import tasks as T  # noqa: E402
from fast_context import (GEPAState, add_candidate, best_prompt, frontier_prompts,  # noqa: E402
                          gepa_iteration, init_state, load_state_dict, nondominated, optimize,
                          rebuild_frontier, run_round, select_parent, state_dict)


# -----------------------------------------------------------------------------
# helpers: problems, a fake policy backed by a score function, fixed reflectors

def problems(n, offset=0):
    """n distinct Problems (inputs = the 3 digits of offset+i, answer = the same)."""
    out = []
    for i in range(offset, offset + n):
        xs = tuple(int(c) for c in f"{i:03d}")
        out.append(T.Problem(xs, xs))
    return out


class FakeEval:
    """evaluate(context, problems) backed by fn(context, problem) -> reward; counts every
    problem."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, context, probs):
        self.calls += len(probs)
        out = []
        for p in probs:
            r = self.fn(context, p)
            fb = "correct" if r >= 1 else "wrong at positions 1"
            out.append((r, "0 0 0", f"{fb}; expected: {T.digits_text(p.answer)}"))
        return out


def table_eval(table, default=0.0):
    """table: {context: reward or [reward per problem index]} over problems(…) numbered by the
    first digits; contexts not in the table score `default`."""
    def fn(context, p):
        v = table.get(context, default)
        return v[int("".join(map(str, p.inputs))) % len(v)] if isinstance(v, list) else v
    return FakeEval(fn)


def fixed(text):
    return lambda prompt, records: text


def hand_state(score_rows, seed=0):
    """A GEPAState with hand-set scores (all current), candidates named c0, c1, ..."""
    n = len(score_rows[0])
    st = GEPAState(pareto=problems(n), train=problems(n),
                   candidates=[f"c{k}" for k in range(len(score_rows))],
                   parents=[[]] + [[0]] * (len(score_rows) - 1),
                   scores=[list(r) for r in score_rows],
                   score_round=[0] * len(score_rows), rng=random.Random(seed))
    rebuild_frontier(st)
    return st


# -----------------------------------------------------------------------------
# frontier, dominance, parent sampling

def test_frontier_ties_and_dominance():
    st = hand_state([[1, 0, 0, 0],      # c0: only on front 0, where c1 also is -> dominated by c1
                     [1, 1, 0, 0],      # c1
                     [0, 0.5, 1, 1],    # c2 and c3 tie everywhere they matter: both kept
                     [0, 0, 1, 1]])
    assert st.front_score == [1, 1, 1, 1]
    assert st.front_sets == [{0, 1}, {1}, {2, 3}, {2, 3}]
    assert nondominated(st) == [1, 2, 3]
    assert sorted(frontier_prompts(st)) == [("c1", 2), ("c2", 2), ("c3", 2)]
    # best mean on D_p: c2 (0.625)
    assert best_prompt(st) == "c2"


def test_dominance_is_iterated_and_keeps_joint_coverage():
    # c0 ⊂ c1 ⊂ c2 (a chain): only c2 survives;
    # c3, c4, c5 cover each other only jointly: all kept
    st = hand_state([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                     [0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 1, 1]])
    assert nondominated(st) == [2, 3, 4, 5]
    assert dict(frontier_prompts(st)) == {"c2": 3, "c3": 2, "c4": 2, "c5": 2}


def test_parent_sampling_follows_front_counts():
    st = hand_state([[1, 0, 0, 0, 0, 0],    # c0 on 1 front
                     [0, 1, 1, 0, 0, 0],    # c1 on 2 fronts
                     [0, 0, 0, 1, 1, 1],    # c2 on 3 fronts
                     [0, 0, 0, 0, 0, 1]])   # c3 on 1 front, inside c2's: dominated, never drawn
    n = 6000
    draws = [select_parent(st) for _ in range(n)]
    freq = [draws.count(k) / n for k in range(4)]
    for k, want in enumerate([1 / 6, 2 / 6, 3 / 6, 0.0]):
        assert abs(freq[k] - want) < 0.03, (k, freq)


# -----------------------------------------------------------------------------
# one iteration: skip, acceptance, budget, invalid proposals

def test_skip_when_parent_perfect():
    ev = FakeEval(lambda c, p: 1.0)
    st = init_state("seed", problems(5), problems(9, 100), ev, minibatch_size=3)
    assert st.rollouts == 5 == ev.calls
    called = []
    e = gepa_iteration(st, ev, lambda prompt, recs: called.append(1) or "x")
    assert e["kind"] == "skipped" and not called
    assert st.rollouts == 5 + 3 == ev.calls


def test_strict_improvement_acceptance_and_budget():
    ev = table_eval({"seed": 0.5, "equal": 0.5, "better": 0.8})
    st = init_state("seed", problems(5), problems(9, 100), ev, minibatch_size=3)
    e = gepa_iteration(st, ev, fixed("equal"))
    assert e["kind"] == "rejected" and len(st.candidates) == 1
    assert st.rollouts == 5 + 2 * 3 == ev.calls
    seen_records = []
    e = gepa_iteration(st, ev, lambda prompt, recs: seen_records.extend(recs) or "better")
    assert e["kind"] == "accepted" and e["child"] == 1
    assert st.rollouts == 5 + 2 * 3 + 2 * 3 + 5 == ev.calls
    assert st.candidates == ["seed", "better"] and st.parents == [[], [0]]
    assert st.scores[1] == [0.8] * 5 and st.score_round == [0, 0]
    assert st.front_sets == [{1}] * 5 and best_prompt(st) == "better"
    r = seen_records[0]
    assert set(r) == {"inputs", "outputs", "feedback"} and r["inputs"].startswith("in: ")
    assert "expected: " in r["feedback"]


def test_optimize_budget_accounting_is_exact():
    rng = random.Random(0)
    ev = FakeEval(lambda c, p: 1.0 if (c == "best" and p.inputs[-1] % 2)
                  else (0.6 if c.startswith("p") else 0.3))

    def reflector(prompt, recs):  # a mix of outcomes: accepts, rejects, invalid proposals, crashes
        u = rng.random()
        if u < 0.15:
            raise RuntimeError("boom")
        return "" if u < 0.3 else rng.choice(["p1", "p2", "p3", "best", "q"])

    b, n_p, budget = 3, 6, 200
    st = init_state("seed", problems(n_p), problems(20, 100), ev, seed=1, minibatch_size=b)
    optimize(st, ev, reflector, max_rollouts=budget)
    assert budget <= st.rollouts < budget + 2 * b + n_p
    cost = {"skipped": b, "invalid": b, "rejected": 2 * b, "accepted": 2 * b + n_p}
    assert st.rollouts == ev.calls == n_p + sum(cost[e["kind"]] for e in st.events)
    kinds = {e["kind"] for e in st.events}
    assert {"invalid", "accepted"} <= kinds
    assert st.events[-1]["rollouts"] == st.rollouts


def test_invalid_proposals_are_rejected_and_logged():
    ev = table_eval({"seed": 0.2, "other": 0.5})
    st = init_state("seed", problems(4), problems(9, 100), ev, minibatch_size=3,
                    max_context_tokens=10)
    assert gepa_iteration(st, ev, fixed("other"))["kind"] == "accepted"

    def boom(prompt, recs):
        raise KeyError("bad reflector")

    cases = [(fixed(""), "empty"), (fixed("   \n"), "empty"), (fixed("w " * 11), "too long"),
             (boom, "reflector raised KeyError"), (fixed(None), "not str")]
    for reflector, reason in cases:
        before = st.rollouts
        e = gepa_iteration(st, ev, reflector)
        assert e["kind"] == "invalid" and reason in e["reason"], e
        assert st.rollouts == before + 3  # only the parent's minibatch was spent
    # the frontier now holds only "other" (the parent): proposing it again is "unchanged"
    e = gepa_iteration(st, ev, lambda prompt, recs: prompt)
    assert e["kind"] == "invalid" and "unchanged" in e["reason"]
    assert len(st.candidates) == 2 and st.events[-1] is e
    assert sum(e["kind"] == "invalid" for e in st.events) == len(cases) + 1


def test_duplicate_of_current_candidate_is_rejected():
    st = hand_state([[1, 0], [0, 1]])
    ev = FakeEval(lambda c, p: 0.0)
    # the other one
    e = gepa_iteration(st, ev, lambda prompt, recs: "c1" if prompt == "c0" else "c0")
    assert e["kind"] == "invalid" and "duplicate of candidate" in e["reason"]


# -----------------------------------------------------------------------------
# rounds: stale scores are re-measured with the current policy

def test_run_round_rescores_frontier_with_new_policy():
    version = {"v": 0}
    old = {"seed": [1, 1, 0, 0], "x": [1, 1, 1, 1], "y": [0, 0, 0, 0]}
    new = {"seed": [1, 1, 1, 1], "x": [0, 0, 0, 0], "y": [1, 1, 1, 1]}

    def fn(context, p):
        return (new if version["v"] else old)[context][int("".join(map(str, p.inputs))) % 4]

    ev = FakeEval(fn)
    st = init_state("seed", problems(4), problems(9, 100), ev)
    add_candidate(st, ev, "x", [0])
    add_candidate(st, ev, "y", [0])
    assert st.rollouts == 12 == ev.calls
    assert st.front_sets == [{0, 1}, {0, 1}, {1}, {1}] and nondominated(st) == [1]  # y on no front
    version["v"] = 1  # the RL step changed the weights
    summary = run_round(st, ev, num_proposals=0, reflector=fixed("z"))
    # seed and x re-scored
    assert summary["rollouts"] == 2 * 4 and st.rollouts == 12 + 8 == ev.calls
    assert st.round == 1 and st.score_round == [1, 1, 0]
    assert st.scores[0] == [1, 1, 1, 1] and st.scores[1] == [0, 0, 0, 0]
    assert st.scores[2] == [0, 0, 0, 0]  # y: stale, untouched, not competing
    assert st.front_sets == [{0}] * 4 and frontier_prompts(st) == [("seed", 4)]
    assert best_prompt(st) == "seed" and st.events[-1]["kind"] == "rescore"
    # a round with proposals: every proposal is one iteration, skipped ones included (seed is
    # perfect)
    n_events = len(st.events)
    summary = run_round(st, ev, num_proposals=3, reflector=fixed("z"))
    assert summary["rollouts"] == 4 + 3 * 3 and summary["round"] == 2
    assert [e["kind"] for e in st.events[n_events:]] == ["rescore", "skipped", "skipped", "skipped"]
    # rescore=False: same weights as the previous measurement, no re-scoring
    before = st.rollouts
    run_round(st, ev, num_proposals=0, reflector=fixed("z"), rescore=False)
    assert st.rollouts == before and st.round == 2


def test_rescore_through_evaluate_many_is_one_call_with_the_same_result():
    table = {"seed": [1, 1, 0, 0], "x": [0, 0, 1, 1], "y": [1, 0, 1, 0]}
    plain, batched = table_eval(table), table_eval(table)
    calls = []

    def many(contexts, probs):  # what a one-generate evaluate returns: one list per context
        calls.append(list(contexts))
        return [batched(c, probs) for c in contexts]

    batched.many = many
    states = []
    for ev in (plain, batched):
        st = init_state("seed", problems(4), problems(9, 100), ev)
        add_candidate(st, ev, "x", [0])
        add_candidate(st, ev, "y", [0])
        run_round(st, ev, num_proposals=2, reflector=fixed("z"))
        states.append(state_dict(st))
    assert calls == [["seed", "x", "y"]]  # the whole frontier in one call, in index order
    assert states[0] == states[1] and plain.calls == batched.calls


def test_state_dict_round_trip_resumes_identically():
    ev = table_eval({"seed": [0, 0.5, 1], "a": [1, 0, 0.5], "b": [0.5, 1, 0]})
    refl = lambda prompt, recs: {"seed": "a", "a": "b", "b": "seed"}[prompt]  # noqa: E731
    st = init_state("seed", problems(6), problems(10, 100), ev, seed=3)
    for _ in range(3):
        gepa_iteration(st, ev, refl)
    d = json.loads(json.dumps(state_dict(st)))  # plain data only
    st2 = load_state_dict(d, st.pareto, st.train)
    for _ in range(4):
        e1, e2 = gepa_iteration(st, ev, refl), gepa_iteration(st2, ev, refl)
        assert e1 == e2
    assert (st.candidates == st2.candidates and st.front_sets == st2.front_sets
            and st.rollouts == st2.rollouts)
