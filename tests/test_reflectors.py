"""
tests/test_reflectors.py: every reflector on feedback strings made by tasks.score.
  oracle  recovers rules in one call, explores, merges map tables, falls back to demonstrations;
  demo    curates demonstrations within the budget;
  edit    one local edit per call (2-op rules take two calls, a map table grows entry by entry),
          a bounded number of hypotheses, reads the model's outputs, low first-hit rate;
  llm     against a local OpenAI-compatible server: request format, a good answer, HTTP 500,
          a timeout, garbage; a failing server inside the optimizer is a logged invalid proposal;
          an endpoint down or refusing at the first call, or failing fail_limit calls in a row,
          raises ReflectorError, which the optimizer lets through (the run stops).
Plus end-to-end searches with a fake policy that executes stated rules.

Run: python -m pytest -q tests/test_reflectors.py   (a few seconds on CPU)
"""

import json
import os
import random
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fast_context as fc  # noqa: E402
from harness import hit_rates  # noqa: E402
from world import reflectors as R  # noqa: E402
from world import tasks as T  # noqa: E402
from world.llm import LLMReflector  # noqa: E402
from world.reflectors import (DemoReflector, EditReflector, OracleReflector,  # noqa: E402
                             parse_demos)

# -----------------------------------------------------------------------------
# helpers: records as the optimizer builds them, fake policies


def records_for(rule, inputs, output="0 0 0"):
    """Records of `rule` on `inputs`; output: a fixed string or a function inputs -> digits."""
    recs = []
    for xs in inputs:
        p = T.Problem(tuple(xs), tuple(T.apply_rule(rule, list(xs))))
        out = output if isinstance(output, str) else " " + T.digits_text(output(list(xs)))
        _, fb = T.score(p, out)
        recs.append({"inputs": T.problem_text(p), "outputs": out, "feedback": fb})
    return recs


def follows(prompt):
    """The output of a model that executes the prompt's rule exactly (nothing when it has none)."""
    rule = R.parse_context_rule(prompt) or ()
    return lambda xs: T.apply_rule(rule, xs)


def random_inputs(rng, n, lo=5, hi=6, must_contain=()):
    while True:
        xs = [[rng.randrange(10) for _ in range(rng.randint(lo, hi))] for _ in range(n)]
        if all(any(d in x for x in xs) for d in must_contain):
            return xs


def maps_right(rule, inputs, proposal_rule):
    return all(T.apply_rule(proposal_rule, list(xs)) == T.apply_rule(rule, list(xs))
               for xs in inputs)


def proposed_rule(text):
    assert text.startswith("rule: "), text
    return T.parse_rule(text.splitlines()[0][len("rule:"):])


def policy_evaluate(default=lambda xs: xs, calls=None):
    """evaluate() of a model that executes a stated rule, else answers default(inputs)."""
    def evaluate(context, probs):
        rule = R.parse_context_rule(context)
        out = []
        for p in probs:
            xs = list(p.inputs)
            o = " " + T.digits_text(T.apply_rule(rule, xs) if rule else default(xs))
            reward, feedback = T.score(p, o)
            out.append((reward, o, feedback))
        if calls is not None:
            calls[0] += len(probs)
        return out
    return evaluate


# -----------------------------------------------------------------------------
# oracle: recovers hidden rules from feedback strings made by tasks.score

ADDS = [f"add {k}" for k in range(T.PARAM_RANGE["add"][0], T.PARAM_RANGE["add"][1] + 1)]
ROTATES = [f"rotate {k}" for k in range(T.PARAM_RANGE["rotate"][0], T.PARAM_RANGE["rotate"][1] + 1)]
SINGLE = ["reverse", "sort", "swap"] + ROTATES + ADDS  # every op of the library
MAPS = ["map 2>7 5>1 8>3", "map 4>0", "map 1>2 2>3", "map 0>9 9>0"]
CHAINS = ["rotate 2 then add 3", "swap then rotate 1", "add 3 then reverse", "sort then add 2",
          "reverse then swap", "rotate 1 then sort", "swap then add 2 then rotate 1",
          "add 3 then reverse then swap", "rotate 1 then swap then add 1",
          "sort then swap then add 2", "reverse then rotate 2 then swap"]


@pytest.mark.parametrize("text", SINGLE + MAPS + CHAINS)
def test_oracle_recovers_rule(text):
    rule = T.parse_rule(text)
    rng = random.Random(text)
    keys = [a for a, _ in rule[0].arg] if rule[0].name == "map" else []
    inputs = random_inputs(rng, 4, must_contain=keys)
    out = OracleReflector()(T.SEED_PROMPT, records_for(rule, inputs))
    got = proposed_rule(out)
    assert maps_right(rule, inputs, got), (text, out)
    assert maps_right(rule, random_inputs(rng, 30), got), (text, out)  # 4 examples suffice here
    assert len(got) <= len(rule)  # shortest consistent chain first


def test_oracle_explores_when_current_rule_is_consistent():
    rule = T.parse_rule("rotate 2 then add 3")
    inputs = random_inputs(random.Random(1), 3)
    recs = records_for(rule, inputs)
    refl, prompt, seen = OracleReflector(), "rule: rotate 2 then add 3", []
    for _ in range(3):
        prompt = refl(prompt, recs)
        seen.append(prompt)
        assert maps_right(rule, inputs, proposed_rule(prompt))
    assert seen[0] != "rule: rotate 2 then add 3" and len(set(seen)) >= 2


def test_oracle_adds_demos_when_current_rule_is_the_only_one():
    rule = T.parse_rule("map 2>7 5>1 8>3")
    inputs = [[2, 5, 8, 0, 1], [8, 8, 2, 3, 4], [6, 9, 5, 2, 0]]
    recs = records_for(rule, inputs)
    out = OracleReflector()("rule: map 2>7 5>1 8>3", recs)
    head, demo = out.split("\n")
    assert head == "rule: map 2>7 5>1 8>3" and demo.startswith("demo: ")
    demos = parse_demos(out)
    assert 1 <= len(demos) <= 2 and len(out.split()) <= 48
    for xs, ys in demos:
        assert list(xs) in inputs and list(ys) == T.apply_rule(rule, list(xs))


def test_oracle_merges_map_tables_across_calls():
    rule = T.parse_rule("map 2>7 5>1 8>3")
    refl = OracleReflector()
    first = refl(T.SEED_PROMPT, records_for(rule, [[2, 0, 5, 3, 4], [5, 5, 1, 2, 9],
                                                   [6, 2, 0, 0, 4]]))
    assert first == "rule: map 2>7 5>1"
    second = refl(first, records_for(rule, [[8, 0, 3, 4, 6], [1, 8, 8, 9, 0], [3, 3, 8, 6, 1]]))
    assert second == "rule: map 2>7 5>1 8>3"
    # a compatible current table is kept even where these examples say nothing (no 2 in them) ...
    no_two = records_for(rule, [[8, 0, 3, 4, 6], [5, 8, 1, 1, 0]])
    assert refl("rule: map 2>9", no_two) == "rule: map 2>9 5>1 8>3"
    # ... an incompatible one (2>9 against a 2 -> 7 example) is dropped: the examples' table wins
    with_two = records_for(rule, [[2, 8, 0, 3], [5, 8, 1, 1, 0]])
    assert refl("rule: map 2>9", with_two) == "rule: map 2>7 5>1 8>3"
    # a merged table over 3 entries is not a map rule: fall back to the examples' own table
    fourth = refl("rule: map 2>7 5>1 8>3",
                  records_for(T.parse_rule("map 4>0"), [[4, 1, 3], [4, 4, 9, 6]]))
    assert fourth == "rule: map 4>0"


def test_oracle_falls_back_to_demos_and_fails_cleanly():
    refl = OracleReflector()
    # no library rule fits: demonstrations of the examples (failed first)
    recs = [{"inputs": "in: 1 2 3 4", "outputs": "0",
             "feedback": "wrong length 1 (expected 4); expected: 9 0 0 1"},
            {"inputs": "in: 5 6 7 8", "outputs": "0",
             "feedback": "wrong at positions 1; expected: 3 3 3 3"}]
    out = refl(T.SEED_PROMPT, recs)
    assert parse_demos(out) == [((1, 2, 3, 4), (9, 0, 0, 1)), ((5, 6, 7, 8), (3, 3, 3, 3))]
    # a digit that changes in one example and stays in another: no map table, so demonstrations
    recs2 = [{"inputs": "in: 2 0 0", "outputs": "0",
              "feedback": "wrong at positions 1; expected: 7 0 0"},
             {"inputs": "in: 2 3 3", "outputs": "0",
              "feedback": "wrong at positions 1; expected: 2 3 3"}]
    assert refl(T.SEED_PROMPT, recs2).startswith("demo: ")
    # contradictory feedback: a clean ValueError, which the optimizer logs as an invalid proposal
    bad = recs + [{"inputs": "in: 1 2 3 4", "outputs": "0", "feedback": "wrong; expected: 4 3 2 1"}]
    for r in (refl, DemoReflector(), EditReflector()):
        with pytest.raises(ValueError, match="contradictory"):
            r(T.SEED_PROMPT, bad)
        with pytest.raises(ValueError):
            r(T.SEED_PROMPT, [{"inputs": "???", "outputs": "", "feedback": "no answer here"}])
    evaluate = policy_evaluate()
    st = fc.init_state("seed", [T.Problem((1, 2), (2, 1))], [T.Problem((3, 4), (4, 3))], evaluate)
    e = fc.gepa_iteration(st, evaluate, lambda prompt, records: refl(prompt, bad))
    assert e["kind"] == "invalid" and "contradictory" in e["reason"]


def test_oracle_is_fast():
    rule = T.parse_rule("add 3 then reverse then swap")
    recs = records_for(rule, random_inputs(random.Random(0), 3))
    refl = OracleReflector()
    refl(T.SEED_PROMPT, recs)  # builds the chain list once
    t0 = time.perf_counter()
    for _ in range(10):
        refl(T.SEED_PROMPT, recs)
    assert (time.perf_counter() - t0) / 10 < 0.05


# -----------------------------------------------------------------------------
# demo

def test_demo_reflector_curates_failed_examples_within_budget():
    rule = T.parse_rule("swap then add 1")
    inputs = [[1, 2, 3, 4, 5], [9, 9, 0, 1, 2], [3, 1, 4, 1, 5]]
    recs = records_for(rule, inputs)
    p_ok = T.Problem((7, 7, 7), tuple(T.apply_rule(rule, [7, 7, 7])))
    recs.insert(0, {"inputs": T.problem_text(p_ok), "outputs": "8 8 8",
                    "feedback": T.score(p_ok, " 8 8 8")[1]})
    current = "demo: 0 0 0 0 -> 1 1 1 1"
    out = DemoReflector(max_demos=4, max_tokens=48)(current, recs)
    demos = parse_demos(out)
    assert out.startswith("demo: ") and len(out.split()) <= 48
    for xs in inputs:  # every failed example made it in, first
        assert (tuple(xs), tuple(T.apply_rule(rule, xs))) in demos[:3]
    for xs, ys in demos:
        assert list(ys) == T.apply_rule(rule, list(xs))
    # a tight budget keeps the failed ones first and drops the rest
    small = DemoReflector(max_demos=5, max_tokens=26)(current, recs)
    assert len(small.split()) <= 26 and parse_demos(small) == demos[:2]
    with pytest.raises(ValueError):
        DemoReflector(max_tokens=5)(current, recs)


# -----------------------------------------------------------------------------
# edit: one local edit per call

def test_edit_reaches_a_two_op_rule_in_two_calls_not_one():
    rule = T.parse_rule("sort then add 2")
    inputs = [[9, 1, 5, 8], [3, 8, 0, 2, 7], [6, 9, 4]]  # 8s and 9s: the add wraps, order matters
    refl = EditReflector()
    # call 1: the seed prompt, and a model that ignores it (outputs the inputs unchanged)
    first = refl(T.SEED_PROMPT, records_for(rule, inputs, lambda xs: xs))
    assert first == "rule: add 2"  # one op only: the digits are the inputs' shifted by 2
    # call 2: the first edit is the current prompt, and the model executes it
    second = refl(first, records_for(rule, inputs, follows(first)))
    assert second == "rule: sort then add 2"  # `add 2 then sort` would fail on the wrapped 8s, 9s
    assert 1 <= refl.checked <= refl.max_hypotheses


@pytest.mark.parametrize("current, hidden, want", [
    ("rule: add 3", "add 2", "rule: add 2"),                                # re-parameterise
    ("rule: rotate 1", "rotate 2", "rule: rotate 2"),
    ("rule: reverse", "swap", "rule: swap"),                                # replace
    ("rule: sort", "sort then add 2", "rule: sort then add 2"),             # append
    ("rule: sort then add 2 then reverse", "sort then add 2", "rule: sort then add 2"),  # remove
    ("rule: swap then add 1", "swap then add 3", "rule: swap then add 3"),
    ("rule: map 2>7", "map 2>7 5>1", "rule: map 2>7 5>1"),                  # a map entry added
    ("rule: map 2>9 5>1", "map 2>7 5>1", "rule: map 2>7 5>1"),              # ... retargeted
    ("rule: map 2>7 4>0", "map 2>7", "rule: map 2>7"),                      # ... dropped
])
def test_edit_makes_one_local_edit(current, hidden, want):
    inputs = [[2, 5, 8, 0, 1, 4], [9, 2, 4, 3, 7], [6, 8, 5, 2]]
    out = EditReflector()(current, records_for(T.parse_rule(hidden), inputs, follows(current)))
    assert out == want


def test_edit_grows_a_cipher_table_one_entry_per_call():
    cipher = T.parse_rule("map 2>7 5>1 8>3")
    inputs = [[2, 5, 0, 1], [8, 2, 3, 3, 4], [5, 9, 9, 8]]
    refl, prompt, seen = EditReflector(), T.SEED_PROMPT, []
    for _ in range(3):
        prompt = refl(prompt, records_for(cipher, inputs, follows(prompt)))
        seen.append(len(proposed_rule(prompt)[0].arg))
    assert seen == [1, 2, 3] and prompt == "rule: map 2>7 5>1 8>3"
    # once the rule fits, only the model's slips are left: the rule stays, demonstrations follow
    out = refl(prompt, records_for(cipher, inputs, lambda xs: xs))
    assert out.startswith(prompt + "\ndemo: ") and len(out.split()) <= 48
    assert all(list(ys) == T.apply_rule(cipher, list(xs)) for xs, ys in parse_demos(out))


def test_edit_reads_the_model_outputs():
    # the model sorts by default; the expected answers are its output rotated by 1. With one
    # hypothesis allowed, the one checked is the one its outputs point to.
    rule = T.parse_rule("sort then rotate 1")
    inputs = [[3, 1, 4, 1, 5], [9, 2, 6, 5], [3, 5, 8, 9, 7]]
    blind = EditReflector(max_hypotheses=1)(T.SEED_PROMPT, records_for(rule, inputs, "0"))
    seeing = EditReflector(max_hypotheses=1)(T.SEED_PROMPT, records_for(rule, inputs, sorted))
    assert seeing == "rule: rotate 1" and blind != seeing


def test_edit_checks_at_most_max_hypotheses(monkeypatch):
    fits, real_fit = [0], R.fit

    def counting_fit(rule, examples):  # every rule checked against the expected answers
        fits[0] += 1
        return real_fit(rule, examples)
    monkeypatch.setattr(R, "fit", counting_fit)
    rng = random.Random(0)
    for k in (1, 3, 8):
        refl = EditReflector(max_hypotheses=k)
        most = 0
        for _ in range(40):
            hidden = T.random_rule(rng)
            current = rng.choice([T.SEED_PROMPT, T.instruction(T.random_rule(rng))])
            fits[0] = 0
            try:
                refl(current, records_for(hidden, random_inputs(rng, 3, 3, 5), follows(current)))
            except ValueError:
                pass
            assert refl.checked <= k and fits[0] <= k + 1  # + 1: the current rule itself
            most = max(most, refl.checked)
        assert most == k  # the bound is reached, so it is what limits the search
    assert refl.total_checked >= 40


def fake_evaluate(kind):
    """A model that ignores its context: it echoes the inputs, or sorts them."""
    return policy_evaluate(default=(lambda xs: xs) if kind == "echo" else sorted)


@pytest.mark.parametrize("kind", ["echo", "sort"])
def test_first_hit_rate_edit_is_low_and_oracle_is_higher(kind):
    rates = {}
    for name in ("hidden-rule", "cipher"):
        task = T.make_task(name, n_train=256)
        for refl in ("edit", "oracle"):
            rates[name, refl] = hit_rates.first_hit_rate(R.make_reflector(refl), task, fake_evaluate(kind),
                                                 trials=50)
    assert rates["hidden-rule", "edit"] <= 0.3 and rates["cipher", "edit"] <= 0.3, rates
    assert rates["hidden-rule", "oracle"] > rates["hidden-rule", "edit"] + 0.5, rates


def test_first_hit_rate_counts_exact_rules_only():
    task = T.make_task("rule:add 3,reverse", n_train=64)
    evaluate = fake_evaluate("echo")
    assert hit_rates.first_hit_rate(lambda p, r: "rule: add 3, reverse", task, evaluate, trials=5) == 1.0
    assert hit_rates.first_hit_rate(lambda p, r: "rule: reverse then add 3", task, evaluate, 5) == 0.0

    def boom(prompt, records):
        raise RuntimeError("no reply")
    assert hit_rates.first_hit_rate(boom, task, evaluate, trials=5) == 0.0
    # a told task (the seed prompt states the rule): nothing hidden, no hit rate
    told = T.make_task("long-chain", n_train=64)
    assert hit_rates.first_hit_rate(lambda p, r: p, told, evaluate, trials=5) is None


def test_make_reflector_by_name():
    assert isinstance(R.make_reflector("oracle", 30, len), OracleReflector)
    assert isinstance(R.make_reflector("edit"), EditReflector)
    assert isinstance(R.make_reflector("demo"), DemoReflector)
    llm = R.make_reflector("llm", 30, None, url="http://127.0.0.1:1/v1/", model="m", timeout=2)
    assert llm.url == "http://127.0.0.1:1/v1" and llm.timeout == 2 and llm.max_tokens == 30
    with pytest.raises(ValueError, match="unknown reflector"):
        R.make_reflector("rule")
    with pytest.raises(ValueError, match="llm"):
        R.make_reflector("edit", url="http://x")


# -----------------------------------------------------------------------------
# end to end: a fake policy that follows stated rules; optimize() finds the hidden one

@pytest.mark.parametrize("name, spec, budget", [
    ("oracle", "rule:rotate 2,add 3", 40), ("edit", "rule:rotate 2,add 3", 120),
    ("edit", "hidden-rule", 120), ("edit", "cipher", 120)])
def test_optimize_finds_hidden_rule_end_to_end(name, spec, budget):
    task = T.make_task(spec, n_train=64, n_pareto=8, n_val=32)
    calls = [0]
    evaluate = policy_evaluate(default=lambda xs: xs[::-1], calls=calls)  # otherwise it reverses
    st = fc.init_state(task.seed_prompt, task.pareto, task.train, evaluate, seed=0)
    fc.optimize(st, evaluate, R.make_reflector(name), max_rollouts=budget)
    assert st.rollouts == calls[0] and st.rollouts < budget + 2 * 3 + 8
    best = fc.best_prompt(st)
    got = proposed_rule(best)
    assert all(T.apply_rule(got, list(p.inputs)) == list(p.answer) for p in task.val), best
    accepted = sum(e["kind"] == "accepted" for e in st.events)
    assert fc.frontier_prompts(st)[0][1] == 8 and accepted >= (1 if name == "oracle" else 2)


# -----------------------------------------------------------------------------
# llm: a local OpenAI-compatible server


# the server is conftest.llm_server


def completion(content):
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                            "content": content}}]}).encode()


def cipher_records():
    return records_for(T.parse_rule("map 2>7 5>1 8>3"), [[2, 5, 0, 1], [8, 3, 3]], "2 5 0 1")


def test_llm_good_answer_and_request_format(llm_server, monkeypatch):
    answer = "The digits 2, 5, 8 are replaced.\n```text\nrule: map 2>7 5>1 8>3\n```\nDone."
    url, requests = llm_server([(200, completion(answer), 0)])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    refl = LLMReflector(url, "tiny-model", timeout=5, max_tokens=30)
    assert refl("rule: ?\ndemo: 1 -> 1", cipher_records()) == "rule: map 2>7 5>1 8>3"
    (req,) = requests
    assert req["ok"] and req["body"]["model"] == "tiny-model" and req["auth"] == "Bearer sk-test"
    prompt = req["body"]["messages"][-1]["content"]
    assert "rule: ?\ndemo: 1 -> 1" in prompt and "```" in prompt
    assert prompt.count("## Inputs") == prompt.count("## Generated Outputs") == 2
    assert prompt.count("## Feedback") == 2 and "in: 8 3 3" in prompt
    assert "expected: 3 3 3" in prompt
    assert T.VALID_OPS_TEXT in prompt and "rule: OP then OP" in prompt and "demo: " in prompt
    # no key in the environment: no Authorization header; a fence on one line works too
    monkeypatch.delenv("OPENAI_API_KEY")
    url, requests = llm_server([(200, completion("```rule: add 2```"), 0)])
    assert LLMReflector(url, "m")(T.SEED_PROMPT, cipher_records()) == "rule: add 2"
    assert requests[0]["auth"] is None


def test_llm_http_500_is_retried_then_raises(llm_server):
    url, requests = llm_server([(500, b'{"error": "overloaded"}', 0)])
    refl = LLMReflector(url, "m", timeout=5, retries=2, backoff=0.001)
    with pytest.raises(RuntimeError, match="HTTP 500"):
        refl(T.SEED_PROMPT, cipher_records())
    assert refl.attempts == 3 == len(requests)
    # a 500 then a good answer: the retry succeeds
    url, requests = llm_server([(500, b"{}", 0), (200, completion("```\nrule: sort\n```"), 0)])
    refl = LLMReflector(url, "m", retries=2, backoff=0.001)
    assert refl(T.SEED_PROMPT, cipher_records()) == "rule: sort" and refl.attempts == 2


def test_llm_timeout_raises_and_is_not_retried(llm_server):
    url, requests = llm_server([(200, completion("```rule: sort```"), 1.0)])
    refl = LLMReflector(url, "m", timeout=0.1, retries=1, backoff=0.001)
    refl.answered = True  # it answered before: a timeout now is one failed call, not retried
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="no reply"):
        refl(T.SEED_PROMPT, cipher_records())
    assert refl.attempts == 1 and time.perf_counter() - t0 < 0.9


@pytest.mark.parametrize("payload, match", [
    (b"<html>502 Bad Gateway</html>", "not a chat completion"),
    (b'{"choices": []}', "not a chat completion"),
    (completion("I think the rule is add 2."), "fenced"),
    (completion("```\n\n```"), "fenced"),
    (json.dumps({"choices": [{"message": {"content": None, "refusal": "I can't"}}]}).encode(),
     "refused"),
    (completion("```\n" + "swap " * 60 + "\n```"), "too long"),
])
def test_llm_garbage_raises_without_retrying(llm_server, payload, match):
    url, requests = llm_server([(200, payload, 0)])
    refl = LLMReflector(url, "m", retries=2, backoff=0.001)
    with pytest.raises(ValueError, match=match):
        refl(T.SEED_PROMPT, cipher_records())
    assert refl.attempts == 1


def test_failing_llm_is_a_rejected_proposal_not_a_crash(llm_server):
    task = T.make_task("cipher", n_train=16, n_pareto=4, n_val=4)
    evaluate = policy_evaluate()
    url, _ = llm_server([(500, b"{}", 0)])
    broken = LLMReflector(url, "m", retries=1, backoff=0.001)
    unreachable = LLMReflector("http://127.0.0.1:9/v1", "m", timeout=1, retries=0)
    unreachable.answered = True  # it answered before: a later outage costs a proposal only
    st = fc.init_state(task.seed_prompt, task.pareto, task.train, evaluate)
    summary = fc.run_round(st, evaluate, num_proposals=2, reflector=broken, rescore=False)
    assert summary["accepted"] == 0 and len(summary["invalid"]) == 2
    assert all(r.startswith("reflector raised RuntimeError: HTTP 500") for r in summary["invalid"])
    e = fc.gepa_iteration(st, evaluate, unreachable)
    assert e["kind"] == "invalid" and "no reply" in e["reason"]
    assert st.candidates == [task.seed_prompt]  # nothing was ever added


# -----------------------------------------------------------------------------
# the strength dial: NAME:P, a proposal wrong with probability P

def test_hit_rate_falls_as_strength_falls():
    task = T.make_task("hidden-rule", n_train=256)
    rates = [hit_rates.first_hit_rate(R.make_reflector(f"oracle:{p}", seed=1), task, fake_evaluate("echo"),
                              trials=60) for p in (0.0, 0.5, 1.0)]
    assert rates[0] > 0.9 and rates[2] == 0.0, rates
    assert rates[0] - 0.3 > rates[1] > rates[2] + 0.2, rates  # about half wrong at P = 0.5


def test_noisy_reflector_is_a_function_of_its_inputs():
    rng = random.Random(0)
    recs = records_for(T.parse_rule("map 2>7 5>1"), random_inputs(rng, 3, 3, 5))
    a, b = R.make_reflector("edit:0.5", seed=3), R.make_reflector("edit:0.5", seed=3)
    outs = [a("rule: ?", recs) for _ in range(3)] + [b("rule: ?", recs)]
    assert len(set(outs)) == 1  # the same call, the same answer: a resumed run errs alike
    wrong = [R.make_reflector("edit:1.0", seed=s)("rule: ?", recs) for s in range(5)]
    right = R.make_reflector("edit")("rule: ?", recs)
    assert all(w != right for w in wrong)


@pytest.mark.parametrize("text", ["rule: map 2>7 5>1 8>3", "rule: add 2 then sort",
                                  "rule: reverse then rotate 1", "demo: 3 1 2 -> 5 4 6"])
def test_corrupt_changes_one_detail_and_keeps_the_length(text):
    enc = T.build_tokenizer()
    for seed in range(20):
        out = R.corrupt(text, random.Random(seed))
        assert out != text and len(enc.encode_ordinary(out)) == len(enc.encode_ordinary(text))
        assert sum(a != b for a, b in zip(out.split(), text.split())) == 1


def test_parse_reflector():
    assert R.parse_reflector("edit") == ("edit", 0.0)
    assert R.parse_reflector("demo:0.25") == ("demo", 0.25)
    for bad in ("edit:1.5", "edit:x", "edit:-0.1", "nope", "llm:0.5"):
        with pytest.raises(ValueError):
            R.parse_reflector(bad)


def test_edit_keeps_to_a_small_budget():
    # the cipher under a budget that fits one table entry: edit never proposes a longer rule
    enc = T.build_tokenizer()
    count = lambda t: len(enc.encode_ordinary(t))
    rule, rng = T.parse_rule("map 2>7 5>1 8>3"), random.Random(0)
    refl = R.make_reflector("edit", max_tokens=6, count_tokens=count)
    for _ in range(20):
        recs = records_for(rule, random_inputs(rng, 3, 3, 5), output=lambda xs: xs)
        try:
            out = refl("rule: map 2>7", recs)
        except ValueError:
            continue  # nothing fits: a rejected proposal
        assert count(out) <= 6, out

def _closed_port():
    """A local port nothing listens on (bound, then released)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("down", ["404", "unreachable"])
def test_llm_down_at_the_first_call_raises_reflector_error_at_once(llm_server, down):
    if down == "404":
        url, requests = llm_server([(404, b'{"error": "model not found"}', 0)])
    else:
        url, requests = f"http://127.0.0.1:{_closed_port()}/v1", []
    refl = LLMReflector(url, "m", timeout=5, retries=3, backoff=0.5)  # retries would wait 3.5 s
    t0 = time.perf_counter()
    with pytest.raises(fc.ReflectorError) as e:
        refl(T.SEED_PROMPT, cipher_records())
    assert time.perf_counter() - t0 < 0.4 and refl.attempts == 1  # no retry, no backoff
    assert "\n" not in str(e.value) and url in str(e.value)
    assert ("HTTP 404" if down == "404" else "cannot reach") in str(e.value)
    assert len(requests) == (1 if down == "404" else 0)


def test_llm_that_answered_once_fails_transiently_until_fail_limit(llm_server):
    good = (200, completion("```\nrule: sort\n```"), 0)
    url, requests = llm_server([good, (404, b"{}", 0), (500, b"{}", 0), good, (500, b"{}", 0)])
    refl = LLMReflector(url, "m", timeout=5, retries=0, backoff=0.001, fail_limit=3)
    assert refl(T.SEED_PROMPT, cipher_records()) == "rule: sort" and refl.answered
    for code in ("HTTP 404", "HTTP 500"):  # after a good answer, even a 4xx is one failed call
        with pytest.raises(RuntimeError, match=code):
            refl(T.SEED_PROMPT, cipher_records())
    assert refl.failures == 2
    assert refl(T.SEED_PROMPT, cipher_records()) == "rule: sort" and refl.failures == 0
    for _ in (1, 2):  # the streak starts over after a success
        with pytest.raises(RuntimeError, match="HTTP 500"):
            refl(T.SEED_PROMPT, cipher_records())
    with pytest.raises(fc.ReflectorError) as e:  # the third in a row stops
        refl(T.SEED_PROMPT, cipher_records())
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "HTTP 500" in msg and "3 calls in a row" in msg
    assert len(requests) == 7 and not isinstance(e.value.__cause__, fc.ReflectorError)


def test_optimizer_lets_a_reflector_error_through(llm_server):
    task = T.make_task("cipher", n_train=16, n_pareto=4, n_val=4)
    evaluate = policy_evaluate()
    url, _ = llm_server([(401, b'{"error": "bad key"}', 0)])
    st = fc.init_state(task.seed_prompt, task.pareto, task.train, evaluate)
    with pytest.raises(fc.ReflectorError, match="HTTP 401"):
        fc.run_round(st, evaluate, num_proposals=2, reflector=LLMReflector(url, "m"),
                     rescore=False)
    with pytest.raises(fc.ReflectorError, match="HTTP 401"):
        fc.optimize(st, evaluate, LLMReflector(url, "m"), max_rollouts=100)
