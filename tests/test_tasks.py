"""
tests/test_tasks.py: checks tasks.py, the small world: rule text <-> rule round-trips for every op
and parameter, op semantics on hand-made lists, the verifier's reward and feedback, one-line
SpecErrors for bad specs, the named and custom tasks (splits, answers, seed prompts, determinism),
the pretraining distribution's exclusions (held-out chain types, task rules), and the BPE tokenizer
wrapped in tiktoken (round-trips, single-token digits, determinism, state, specials, byte fallback;
the `enc` fixture of tests/conftest.py). Packed pretraining rows and the carriability dial:
tests/test_pretrain_rows.py.

Run: python -m pytest -q tests/test_tasks.py   (about a second on CPU)
"""

import hashlib
import os
import random
import subprocess
import sys

import pytest

import eval as ev
from harness import select_tasks
from world import tasks
from world.tasks import (NAMED_TASKS, OPS, PARAM_RANGE, MAX_MAP, HELDOUT_TYPES, UNSEEN_RULES,
                         SEED_PROMPT, LIST_LEN, Op, Problem, SpecError, apply_rule, parse_rule,
                         rule_text, chain_type, score, make_task)


# -----------------------------------------------------------------------------
# rules: text round-trips and op semantics

def all_single_ops():
    ops = [Op("reverse"), Op("sort"), Op("swap")]
    for name, (lo, hi) in PARAM_RANGE.items():
        ops += [Op(name, k) for k in range(lo, hi + 1)]
    ops += [Op("map", ((3, 7),)), Op("map", ((0, 9), (9, 0))), Op("map", ((2, 7), (5, 1), (8, 3)))]
    return ops


def test_every_op_and_parameter_is_covered():
    ops = all_single_ops()
    assert {op.name for op in ops} == set(OPS)
    assert {op.arg for op in ops if op.name == "rotate"} == {1, 2}
    assert {op.arg for op in ops if op.name == "add"} == {1, 2, 3}
    assert {len(op.arg) for op in ops if op.name == "map"} == set(range(1, MAX_MAP + 1))


@pytest.mark.parametrize("op", all_single_ops(), ids=lambda op: op.text())
def test_single_op_text_round_trip(op):
    rule = (op,)
    assert parse_rule(rule_text(rule)) == rule
    assert parse_rule("  " + rule_text(rule) + "  ") == rule  # surrounding whitespace is tolerated


def test_chain_text_round_trip_and_comma_form():
    rng = random.Random(0)
    for _ in range(300):
        rule = tasks.random_rule(rng)
        assert parse_rule(rule_text(rule)) == rule
        assert parse_rule(",".join(op.text() for op in rule)) == rule
    expected = (Op("rotate", 2), Op("add", 3))
    assert parse_rule("rotate 2,add 3") == expected
    assert parse_rule("rotate 2 , add 3") == expected
    assert parse_rule("rotate 2 then add 3") == expected
    assert rule_text(expected) == "rotate 2 then add 3"
    assert chain_type(expected) == ("rotate", "add")


def test_map_table_is_canonicalized():
    # entries are stored sorted by source, so two spellings of the same table are the same rule
    assert parse_rule("map 8>3 2>7 5>1") == parse_rule("map 2>7 5>1 8>3")
    assert rule_text(parse_rule("map 8>3 2>7")) == "map 2>7 8>3"


def op(text):
    (o,) = parse_rule(text)
    return o


def test_op_semantics_by_hand():
    xs = [3, 8, 1, 5]
    assert op("reverse").apply(xs) == [5, 1, 8, 3]
    assert op("sort").apply(xs) == [1, 3, 5, 8]
    assert op("sort").apply([2, 2, 0, 9, 0]) == [0, 0, 2, 2, 9]
    assert op("swap").apply([1, 2, 3, 4]) == [2, 1, 4, 3]
    # odd length: the last element stays
    assert op("swap").apply([1, 2, 3, 4, 5]) == [2, 1, 4, 3, 5]
    assert op("rotate 1").apply([1, 2, 3, 4, 5]) == [2, 3, 4, 5, 1]  # LEFT rotation
    assert op("rotate 2").apply([1, 2, 3, 4, 5]) == [3, 4, 5, 1, 2]
    assert op("rotate 2").apply([1, 2]) == [1, 2]  # k wraps modulo the length
    assert op("rotate 1").apply([]) == []
    assert op("add 3").apply([0, 6, 7, 9]) == [3, 9, 0, 2]  # mod 10
    assert op("add 3").apply([7, 8, 9]) == [0, 1, 2]
    assert op("map 2>7 5>1").apply([2, 5, 3, 2, 9]) == [7, 1, 3, 7, 9]  # unlisted digits unchanged
    assert op("map 1>2 2>3").apply([1, 2]) == [2, 3]  # a table, applied once (not chained 1>2>3)
    assert xs == [3, 8, 1, 5]  # inputs are not mutated


def test_chains_apply_left_to_right():
    xs = [3, 8, 1, 5]
    assert apply_rule(parse_rule("add 3 then reverse"), xs) == [8, 4, 1, 6]
    assert apply_rule(parse_rule("add 3 then sort"), xs) == [1, 4, 6, 8]
    assert apply_rule(parse_rule("sort then add 3"), xs) == [4, 6, 8, 1]
    assert apply_rule(parse_rule("rotate 1, sort"), [5, 0, 9]) == [0, 5, 9]
    assert apply_rule(parse_rule("sort, rotate 1"), [5, 0, 9]) == [5, 9, 0]
    assert apply_rule(parse_rule("rotate 2,add 3"), [1, 2, 3, 4]) == [6, 7, 4, 5]
    assert apply_rule(parse_rule("swap then sort then add 1"), [9, 1, 4]) == [2, 5, 0]
    assert apply_rule((), xs) == xs
    assert isinstance(apply_rule((Op("reverse"),), (1, 2)), list)


# -----------------------------------------------------------------------------
# verifier

P = Problem((3, 8, 1, 5), (8, 6, 4, 1))


def test_score_exact_match():
    r, fb = score(P, " 8 6 4 1")
    assert r == 1.0 and "expected: 8 6 4 1" in fb
    assert score(P, "8 6 4 1\n")[0] == 1.0  # surrounding whitespace does not matter


def test_score_one_wrong_position():
    r, fb = score(P, " 8 6 0 1")
    assert r == pytest.approx(0.75)
    assert "positions 3;" in fb  # the 1-based position of the error
    assert "expected: 8 6 4 1" in fb
    r, fb = score(P, " 0 6 4 1")
    assert r == pytest.approx(0.75) and "positions 1;" in fb
    r, fb = score(P, " 8 0 4 0")
    assert r == pytest.approx(0.5) and "2, 4" in fb


def test_score_wrong_length():
    r, fb = score(P, " 8 6 4")  # a prefix: 3 right of max(4, 3)
    assert r == pytest.approx(0.75)
    assert "length" in fb and "expected: 8 6 4 1" in fb
    r, fb = score(P, " 8 6 4 1 1 1 1 1")  # too long: 4 right of max(4, 8)
    assert r == pytest.approx(0.5)
    assert "length 8" in fb and "expected 4" in fb


@pytest.mark.parametrize("completion", ["", "   ", "\n", "hello", "8641", "8,6,4,1", " 8 6 x 1",
                                        " 8 6 -4 1", " 10 6 4 1"])
def test_score_garbage_is_zero(completion):
    r, fb = score(P, completion)
    assert r == 0.0
    assert "expected: 8 6 4 1" in fb and "\n" not in fb


def test_score_reward_is_in_unit_interval():
    rng = random.Random(1)
    for _ in range(500):
        rule = tasks.random_rule(rng)
        p = tasks.make_problem(rule, rng, *LIST_LEN)
        guess = [rng.randrange(10) for _ in range(rng.randint(0, 7))]
        r, fb = score(p, tasks.digits_text(guess))
        assert 0.0 <= r <= 1.0
        assert (r == 1.0) == (guess == list(p.answer))
        assert f"expected: {tasks.digits_text(p.answer)}" in fb


# -----------------------------------------------------------------------------
# spec errors: one line that names the valid ops

def check_spec_error(fn, arg, lists_ops=True):
    with pytest.raises(SpecError) as ei:
        fn(arg)
    msg = str(ei.value)
    assert msg and "\n" not in msg
    if lists_ops:
        assert "reverse" in msg and "map" in msg, msg
    return msg


@pytest.mark.parametrize("text", [
    "flip", "reverse then flip", "Reverse",                     # unknown op
    "add 0", "add 10", "add", "add x", "add -1", "add 3 4",     # bad add parameter
    "rotate 5", "rotate 0", "rotate",                           # bad rotate parameter
    "map 3>x", "map 3-7", "map 10>2", "map",                    # bad map entries
    "map 3>1 3>2",                                              # duplicate map source
    "map 1>2 3>4 5>6 7>8 9>0 0>1 2>3",                                      # too many map entries
    "reverse 2", "sort 1",                                      # parameter to a parameterless op
    "", "   ", "add 3,,sort", "add 3,", ",sort", "add 3 then  then sort",  # empty chain / empty op
])
def test_bad_rules_raise_one_line_spec_error(text):
    check_spec_error(parse_rule, text)


@pytest.mark.parametrize("spec", ["rule:", "rule:add 3,,sort", "rule:add 0", "rule:map 3>x",
                                  "rule:jump", "nope", "hidden_rule"])
def test_bad_task_specs_raise_one_line_spec_error(spec):
    check_spec_error(make_task, spec)


def test_unknown_task_message_lists_task_names():
    msg = check_spec_error(make_task, "nope")
    assert "hidden-rule" in msg and "rule:" in msg


def test_more_than_three_ops():
    # NOTE: this message names the 1..3 limit but, unlike the others, not the valid ops (see report)
    msg = check_spec_error(parse_rule, "add 1, sort, swap, reverse", lists_ops=False)
    assert "3" in msg
    check_spec_error(make_task, "rule:add 1 then sort then swap then reverse", lists_ops=False)
    assert len(parse_rule("add 1, sort, swap")) == 3


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


# -----------------------------------------------------------------------------
# tasks

def inputs_of(split):
    return {p.inputs for p in split}


@pytest.mark.parametrize("name", list(NAMED_TASKS))
def test_named_task_builds(name):
    t = make_task(name, n_train=256)
    d = NAMED_TASKS[name]
    lens = d.lens
    assert t.name == name and t.rule == parse_rule(d.rule) and t.list_len == lens
    assert (len(t.train), len(t.pareto), len(t.val)) == (256, 16, 256)
    for p in t.train + t.pareto + t.val:
        assert list(p.answer) == apply_rule(t.rule, list(p.inputs))
        assert p.marker == d.marker and p.exact_only == d.exact_only
        assert lens[0] <= len(p.inputs) <= lens[1]
        assert all(0 <= x <= 9 for x in p.inputs)
    # disjoint inputs across splits (the space is large enough at this size)
    tr, pa, va = inputs_of(t.train), inputs_of(t.pareto), inputs_of(t.val)
    assert not tr & va and not tr & pa and not pa & va
    assert t.instruction == "rule: " + rule_text(t.rule)


@pytest.mark.parametrize("name", list(NAMED_TASKS))
def test_val_is_held_out_at_default_size(name):
    # 3-digit lists have 1000 inputs, so a 2048-problem train split repeats some; never a val input
    t = make_task(name)
    assert len(t.train) == 2048 and len(t.val) == 256
    tr, pa, va = inputs_of(t.train), inputs_of(t.pareto), inputs_of(t.val)
    assert not tr & va and not pa & va and len(va) == 256


def test_tiny_space_still_fills_splits():
    # lists of length 3 only have 1000 inputs: a big train split must repeat some
    # rather than loop forever
    t = make_task("rule:sort", n_train=1500, n_pareto=4, n_val=4)
    assert len(t.train) == 1500


def test_make_task_is_deterministic_and_seeded():
    a, b = (make_task("hidden-rule", seed=3, n_train=64),
            make_task("hidden-rule", seed=3, n_train=64))
    assert (a.train, a.pareto, a.val) == (b.train, b.pareto, b.val)
    c = make_task("hidden-rule", seed=4, n_train=64)
    assert c.val != a.val
    # val is drawn first, so it does not depend on n_train
    assert make_task("cipher", n_train=32).val == make_task("cipher", n_train=128).val


@pytest.mark.parametrize("name", ["hidden-rule", "cipher", "hidden-rule-2", "sparse"])
def test_hidden_tasks_use_the_task_agnostic_seed_prompt(name):
    t = make_task(name, n_train=8)
    assert t.seed_prompt == SEED_PROMPT
    assert rule_text(t.rule) not in t.seed_prompt
    for o in t.rule:
        assert o.text() not in t.seed_prompt and o.name not in t.seed_prompt


def test_long_chain_states_its_rule():
    t = make_task("long-chain", n_train=64)
    assert (t.seed_prompt == "rule: " + rule_text(t.rule)
            == "rule: " + NAMED_TASKS["long-chain"].rule)
    assert len(t.rule) == 3


def _answers(task):
    """(marker, inputs) -> answer over every split: what the task asks for each
    (seed prompt, input)."""
    return {(p.marker, p.inputs): p.answer for p in task.train + task.pareto + task.val}


@pytest.mark.parametrize("names", [
    ["hidden-rule", "hidden-rule-2"],             # the plasticity probe
    ["hidden-rule", "cipher", "hidden-rule-2"]])  # the continual schedule
def test_tasks_that_follow_each_other_never_conflict(names):
    # one model meets these tasks in turn under the same seed prompt: no (prompt, input) may ask for
    # two different answers, or C5/C6 would measure a contradiction instead of plasticity
    ts = [make_task(n) for n in names]
    assert len({t.seed_prompt for t in ts}) == 1
    for i, a in enumerate(ts):
        for b in ts[i + 1:]:
            qa, qb = _answers(a), _answers(b)
            shared = set(qa) & set(qb)
            assert all(qa[k] == qb[k] for k in shared), (a.name, b.name)
            assert not shared  # in fact: their input markers differ
            # and without the markers they would conflict: the property is not an accident
            # of the draw
            bare = {i_: ans for (_, i_), ans in qa.items()}
            assert any(bare.get(i_) not in (None, ans) for (_, i_), ans in qb.items())


def test_markers_reach_the_prompt_and_pretraining_draws_them_all():
    t = make_task("cipher", n_train=8)
    assert tasks.prompt_text("rule: ?", t.val[0]).split("\n")[1].startswith("xs: ")
    rng = random.Random(0)
    seen = {p.marker for _ in range(200) for p in tasks.pretrain_example(rng, n_problems=2)[1]}
    assert seen == set(tasks.MARKERS)


def test_the_exploration_task_rewards_exact_answers_only():
    t = make_task("sparse", n_train=8)
    p = t.val[0]
    near = list(p.answer)
    near[-1] = (near[-1] + 1) % 10  # every position right but the last
    assert all(q.exact_only for q in t.train + t.pareto + t.val)
    assert score(p, " " + " ".join(map(str, near)))[0] == 0.0
    assert score(p, tasks.answer_text(p))[0] == 1.0


def test_exact_only_reward_is_binary_with_the_same_feedback():
    p = Problem((3, 8, 1, 5), (8, 6, 4, 1))
    q = Problem((3, 8, 1, 5), (8, 6, 4, 1), exact_only=True)
    assert score(p, " 8 6 4 0")[0] == 0.75 and score(q, " 8 6 4 0")[0] == 0.0
    assert score(p, " 8 6 4 0")[1] == score(q, " 8 6 4 0")[1]
    assert score(q, " 8 6 4 1")[0] == 1.0


def test_selection_criteria_and_disguised_single_ops():
    disguise = select_tasks.in_disguise
    assert disguise(parse_rule("rotate 2 then reverse")) == 3  # = swap on 3 and 4 digits
    assert disguise(parse_rule("add 1 then add 2")) == 3       # = add 3
    assert disguise(parse_rule("map 1>2")) == 3                # a map is a single op
    for name, d in NAMED_TASKS.items():
        if d.kind not in ("fact", "dial"):  # the cipher and its dial levels are one map
            assert select_tasks.in_disguise(parse_rule(d.rule)) is None, name
    assert select_tasks.passes("zero", 0.0, 0.5) and not select_tasks.passes("zero", 0.004, 0.5)
    assert select_tasks.passes("hidden", 0.02, 0.8) and not select_tasks.passes("hidden", 0.02, 0.5)


def test_custom_rule_task():
    t = make_task("rule:rotate 2,add 3", n_train=64)
    assert t.rule == (Op("rotate", 2), Op("add", 3))
    assert t.seed_prompt == SEED_PROMPT and t.spec == "rule:rotate 2,add 3"
    assert list(t.val[0].answer) == [(x + 3) % 10
                                     for x in (t.val[0].inputs[2:] + t.val[0].inputs[:2])]
    for p in t.train:
        assert list(p.answer) == apply_rule(t.rule, list(p.inputs))


# -----------------------------------------------------------------------------
# pretraining distribution and eval sets

def test_only_the_cipher_table_is_unseen():
    assert UNSEEN_RULES == {tasks.signature(parse_rule(NAMED_TASKS["cipher"].rule))}
    # hidden rules are ordinary trained rules: the pretraining distribution can draw them
    assert tasks.signature(parse_rule(NAMED_TASKS["hidden-rule"].rule)) not in UNSEEN_RULES
    # equivalent rules under other names are excluded too (same function = same signature)
    # cipher, table reordered
    assert tasks.signature(parse_rule("map 8>3 2>7 5>1")) in UNSEEN_RULES
    # a different function
    assert tasks.signature(parse_rule("add 1 then add 3 then add 3")) not in UNSEEN_RULES



def test_pretraining_never_shows_heldout_types_or_task_rules():
    rng = random.Random(0)
    names_seen, lens_seen = set(), set()
    for _ in range(4000):
        rule = tasks.random_rule(rng, UNSEEN_RULES)
        names = chain_type(rule)
        names_seen |= set(names)
        lens_seen.add(len(names))
        assert 1 <= len(names) <= 3
        assert tasks.signature(rule) not in UNSEEN_RULES
        assert not any(names[i:i + 2] in HELDOUT_TYPES for i in range(len(names) - 1)), names
        assert all(a != b for a, b in zip(names, names[1:]))  # no op twice in a row
        assert "map" not in names or len(names) == 1           # map stays alone
        assert parse_rule(rule_text(rule)) == rule
    assert names_seen == set(OPS) and lens_seen == {1, 2, 3}
    # the hidden rule is an ordinary pretraining rule (the task hides which rule applies,
    # not the rule)
    rng = random.Random(0)
    assert any(rule_text(tasks.random_rule(rng, UNSEEN_RULES)) == NAMED_TASKS["hidden-rule"].rule
               for _ in range(20000))
    # an excluded function never comes up, though it does without the exclusion
    # (the check is not vacuous)
    sort = {tasks.signature(parse_rule("sort"))}
    assert not any(tasks.signature(tasks.random_rule(rng, sort)) in sort for _ in range(3000))
    assert any(tasks.signature(tasks.random_rule(rng)) in sort for _ in range(3000))


def test_pretrain_example_contexts():
    rng = random.Random(0)
    kinds = set()
    for _ in range(300):
        ctx, ps = tasks.pretrain_example(rng, UNSEEN_RULES, n_problems=2)
        assert len(ps) == 2 and all(LIST_LEN[0] <= len(p.inputs) <= LIST_LEN[1] for p in ps)
        lines = ctx.split("\n")
        kinds.add(tuple(line.split(":")[0] for line in lines))
        if lines[0].startswith("rule: "):
            rule = parse_rule(lines[0][len("rule: "):])
            assert all(list(p.answer) == apply_rule(rule, list(p.inputs)) for p in ps)
    assert kinds == {("rule",), ("demo",), ("rule", "demo")}


def test_heldout_eval_set_only_heldout_types():
    items = ev.heldout_eval_set()
    assert len(items) == 128
    assert {chain_type(rule) for _, _, rule in items} == HELDOUT_TYPES
    for ctx, p, rule in items:
        assert ctx == tasks.instruction(rule)
        assert list(p.answer) == apply_rule(rule, list(p.inputs))


def test_general_eval_set_items_carry_their_own_instruction():
    items = ev.general_eval_set(n=200, exclude=UNSEEN_RULES)
    assert len(items) == 200
    # many different rules, not one shared instruction
    assert len({ctx for ctx, _, _ in items}) > 50
    for ctx, p, rule in items:
        assert ctx == tasks.instruction(rule) and parse_rule(ctx[len("rule: "):]) == rule
        assert list(p.answer) == apply_rule(rule, list(p.inputs))
        assert tasks.signature(rule) not in UNSEEN_RULES
        assert not any(chain_type(rule)[i:i + 2] in HELDOUT_TYPES for i in range(len(rule) - 1))
    assert ev.general_eval_set(n=20) == ev.general_eval_set(n=20)  # fixed seed


# -----------------------------------------------------------------------------
# tokenizer

def test_round_trip_on_world_text(enc):
    rng = random.Random(5)
    n_tokens = n_chars = 0
    for _ in range(300):
        ctx, (p,) = tasks.pretrain_example(rng)
        text = tasks.prompt_text(ctx, p) + tasks.answer_text(p)
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == text
        n_tokens, n_chars = n_tokens + len(ids), n_chars + len(text)
    assert n_tokens < 0.6 * n_chars  # the merges compress the world's text
    for name in NAMED_TASKS:
        t = make_task(name, n_train=4)
        for ctx in (t.seed_prompt, t.instruction):
            assert (enc.decode(enc.encode_ordinary(tasks.prompt_text(ctx, t.val[0])))
                    == tasks.prompt_text(ctx, t.val[0]))


def test_digits_are_single_tokens(enc):
    for d in range(10):
        assert len(enc.encode_ordinary(f" {d}")) == 1
        assert len(enc.encode_ordinary(str(d))) == 1
    ids = enc.encode_ordinary(" 1 2 3 4 5 6 7 8 9 0")
    assert len(ids) == 10 and len(set(ids)) == 10
    assert len(enc.encode_ordinary(" 12345")) == 5  # never merged across digits
    for word in (" reverse", " sort", " swap", " rotate", " add", " map", " then"):
        assert len(enc.encode_ordinary(word)) == 1, word


def test_tokenizer_is_deterministic(enc):
    again = tasks.build_tokenizer()
    assert tasks.tokenizer_state(again) == tasks.tokenizer_state(enc)
    assert again.n_vocab == enc.n_vocab
    assert (tasks.tokenizer_state(tasks.build_tokenizer(vocab_size=280))
            != tasks.tokenizer_state(enc))


def test_tokenizer_is_deterministic_across_processes(enc):
    # a fresh interpreter with another hash seed (set/dict-order accidents) builds the same merges
    code = ("import hashlib; from world import tasks; "
            "print(hashlib.sha256(repr(tasks.tokenizer_state("
            "tasks.build_tokenizer())).encode()).hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert out == hashlib.sha256(repr(tasks.tokenizer_state(enc)).encode()).hexdigest()


def test_tokenizer_state_round_trip(enc):
    state = tasks.tokenizer_state(enc)
    assert all(isinstance(b, bytes) for b in state["ranks"])  # plain data, no pickled objects
    assert state["ranks"][:256] == [bytes([i]) for i in range(256)]
    enc2 = tasks.tokenizer_from_state(state)
    assert tasks.tokenizer_state(enc2) == state
    assert tasks.special_ids(enc2) == tasks.special_ids(enc)
    rng = random.Random(6)
    for _ in range(100):
        ctx, (p,) = tasks.pretrain_example(rng)
        assert tasks.encode_prompt(enc2, ctx, p) == tasks.encode_prompt(enc, ctx, p)
        assert tasks.encode_answer(enc2, p) == tasks.encode_answer(enc, p)


def test_special_tokens_and_decode_completion(enc):
    ids = tasks.special_ids(enc)
    assert set(ids) == {"<|bos|>", "<|eos|>", "<|pad|>"}
    assert len(set(ids.values())) == 3 and max(ids.values()) == enc.n_vocab - 1
    p = Problem((3, 8, 1, 5), (8, 6, 4, 1))
    prompt = tasks.encode_prompt(enc, SEED_PROMPT, p)
    assert prompt[0] == ids["<|bos|>"] and ids["<|bos|>"] not in prompt[1:]
    assert enc.decode(prompt[1:]) == "rule: ?\nin: 3 8 1 5\nout:"
    ans = tasks.encode_answer(enc, p)
    assert ans[-1] == ids["<|eos|>"] and len(ans) == 5
    assert tasks.decode_completion(enc, ans) == " 8 6 4 1"
    assert score(p, tasks.decode_completion(enc, ans))[0] == 1.0
    junk = enc.encode_ordinary(" 7 7")
    assert tasks.decode_completion(enc, ans + junk) == " 8 6 4 1"            # stops at <|eos|>
    # or any special
    assert tasks.decode_completion(enc, ans[:2] + [ids["<|pad|>"]] + junk) == " 8 6"
    assert tasks.decode_completion(enc, [ids["<|eos|>"]] + junk) == ""
    assert tasks.decode_completion(enc, junk + [ids["<|bos|>"]] + junk) == " 7 7"
    assert tasks.decode_completion(enc, junk) == " 7 7"                     # no eos: everything
    # special-token text in ordinary input is not turned into a special token
    assert ids["<|eos|>"] not in enc.encode_ordinary("<|eos|>")


def test_byte_fallback_for_unseen_characters(enc):
    for s in ["Héllo, WÖRLD! 世界 🚀 ~`^$€", "ZZZ 123 ### @@",
              "rule: ?? ünknown op ñ -> ∑"]:
        ids = enc.encode_ordinary(s)
        assert all(0 <= i < enc.n_vocab for i in ids)
        assert enc.decode(ids) == s
    assert len(enc.encode_ordinary("🚀")) == 4  # an unseen 4-byte character: one token per byte


def test_signature_tells_ops_apart():
    # the function-level exclusion is only as good as its probe lists: every single op must differ
    singles = [(tasks.Op(n, a),) for n in tasks.CHAIN_OPS
               for a in (range(PARAM_RANGE[n][0], PARAM_RANGE[n][1] + 1) if n in PARAM_RANGE
                         else [None])]
    sigs = {tasks.signature(r) for r in singles}
    assert len(sigs) == len(singles)
    # and excluding the task rules keeps every op in the pretraining distribution
    rng = random.Random(1)
    seen = {tasks.chain_type(tasks.random_rule(rng, UNSEEN_RULES)) for _ in range(2000)}
    assert {(o,) for o in OPS} <= seen


def test_hidden_rule_is_not_a_single_op_in_disguise():
    # a hidden rule that equals a known op on some trained length hands RL (and the seed prompt) a
    # shortcut: `swap then rotate 2` is `reverse` on 3- and 4-digit lists.
    # 300 random lists per length.
    singles = [(Op(n, a),) for n in tasks.CHAIN_OPS
               for a in (range(PARAM_RANGE[n][0], PARAM_RANGE[n][1] + 1) if n in PARAM_RANGE
                         else [None])] + [()]
    rule = parse_rule(NAMED_TASKS["hidden-rule"].rule)
    rng = random.Random(0)
    for L in range(LIST_LEN[0], LIST_LEN[1] + 1):
        xs_all = [[rng.randrange(10) for _ in range(L)] for _ in range(300)]
        for s in singles:
            assert any(apply_rule(rule, xs) != apply_rule(s, xs)
                       for xs in xs_all), (L, rule_text(s))
    # the check can fail: the previous rule is caught
    old = parse_rule("swap then rotate 2")
    short = [[rng.randrange(10) for _ in range(L)] for L in (3, 4) for _ in range(100)]
    assert all(apply_rule(old, xs) == apply_rule((Op("reverse"),), xs) for xs in short)
