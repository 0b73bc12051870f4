"""
world/tasks.py: the small world the reproduction runs in, its verifier, its tasks and its tokenizer.

A model trained from scratch cannot read English, so the project defines a world where a *context*
can carry task information the way an instruction does for an LLM:

  problem     in: 3 8 1 5     (the input's label is one of MARKERS: pretraining draws it, a task
                               keeps one)
  rule        a chain of 1 to 3 ops over digit lists, e.g. `add 3 then reverse` -> 8 4 1 6
  context     an instruction (`rule: add 3 then reverse`), or demonstrations
              (`demo: 3 1 2 -> 5 4 6 ; 7 0 1 -> 0 3 4`), or both on separate lines
  sequence    <|bos|>{context}\\nin: 3 8 1 5\\nout: 8 4 1 6<|eos|>

Ops (small on purpose: a sub-1M model must learn them on a 2-core CPU in minutes):
  reverse | sort | swap (adjacent pairs) | rotate k (left, k=1..2) | add k (mod 10, k=1..3) |
  map a>b c>d (a substitution table of 1..3 entries; other digits unchanged)
`map` appears alone in the pretraining distribution (a 10-entry in-context lookup was not learnable
here in 20 CPU-minutes, a 1-3 entry one is), the other ops chain freely (no op twice in a row).

The pretraining distribution covers every chain *type* the downstream tasks use; a few 2-op types
(HELDOUT_TYPES) are never shown, to measure compositional generalization. Downstream tasks hide
the rule behind a task-agnostic seed prompt (`rule: ?`), except `long-chain`, whose seed prompt
states its 3-op rule, which the base follows only partly. Hidden rules are ordinary
trained rules (the task hides which one applies); only the cipher's table (UNSEEN_RULES) is kept
out of pretraining, as a niche fact.

The verifier gives a reward in [0, 1] (fraction of positions right, exact match = 1) and a feedback
string that says what went wrong and contains the expected answer, as GEPA's evaluators do.

The tokenizer is a real `tiktoken.Encoding` whose merges come from a byte-level BPE (bpe.py)
trained on the world's own text (deterministic; nothing is downloaded). Digits are always single
tokens (the pre-tokenizer splits them), op words become single tokens after a few merges.
"""

import random
import re
from collections import Counter
from dataclasses import dataclass

# tokenizer_state / tokenizer_from_state are re-exported: checkpoints store the world's tokenizer
from world.bpe import (SPECIALS, tokenizer_from_ranks, tokenizer_from_state,  # noqa: F401
                       tokenizer_state, train_bpe)

# -----------------------------------------------------------------------------
# ops and rules

OPS = ["reverse", "sort", "swap", "rotate", "add", "map"]
PARAM_RANGE = {"rotate": (1, 2), "add": (1, 3)}  # inclusive ranges of the integer parameter
MAX_MAP = 3                                       # at most 3 entries in a pretraining table
TABLE_MAX = 6         # a table a context states (or a task hides) has at most 6 entries
PARTIAL = "+"         # a map ending in `+` states part of its table: more entries exist
VALID_OPS_TEXT = ("reverse, sort, swap, rotate K (K=1..2), add K (K=1..3), "
                  "map A>B [C>D ...] [+] (1-6 pairs of digits; a final + means more exist)")


class SpecError(ValueError):
    """A rule or task spec that cannot be parsed (the message is one line for the user)."""


@dataclass(frozen=True)
class Op:
    name: str
    arg: object = None  # int for rotate/add, tuple of (a, b) pairs for map, None otherwise
    partial: bool = False  # map only: the table stated is part of a larger one (`map 2>7 +`)

    def text(self):
        if self.name in PARAM_RANGE:
            return f"{self.name} {self.arg}"
        if self.name == "map":
            return " ".join(["map"] + [f"{a}>{b}" for a, b in self.arg]
                            + [PARTIAL] * self.partial)
        return self.name

    def apply(self, xs):
        n = self.name
        if n == "reverse":
            return xs[::-1]
        if n == "sort":
            return sorted(xs)
        if n == "swap":  # 1 2 3 4 5 -> 2 1 4 3 5
            out = list(xs)
            for i in range(0, len(xs) - 1, 2):
                out[i], out[i + 1] = xs[i + 1], xs[i]
            return out
        if n == "rotate":  # left rotation by k
            k = self.arg % len(xs) if xs else 0
            return xs[k:] + xs[:k]
        if n == "add":
            return [(x + self.arg) % 10 for x in xs]
        if n == "map":  # a partial table applies what it states
            table = dict(self.arg)
            return [table.get(x, x) for x in xs]
        raise AssertionError(n)


Rule = tuple  # a rule is a tuple of Ops, applied left to right


def apply_rule(rule, xs):
    for op in rule:
        xs = op.apply(xs)
    return list(xs)


def rule_text(rule):
    return " then ".join(op.text() for op in rule)


def chain_type(rule):
    return tuple(op.name for op in rule)


def parse_op(text):
    words = text.strip().split()
    if not words:
        raise SpecError(f"empty op; valid ops: {VALID_OPS_TEXT}")
    name, args = words[0], words[1:]
    if name not in OPS:
        raise SpecError(f"unknown op '{name}'; valid ops: {VALID_OPS_TEXT}")
    if name in PARAM_RANGE:
        lo, hi = PARAM_RANGE[name]
        if len(args) != 1 or not re.fullmatch(r"[0-9]", args[0]) or not lo <= int(args[0]) <= hi:
            raise SpecError(f"'{text.strip()}': {name} takes one integer in {lo}..{hi}; "
                            f"valid ops: {VALID_OPS_TEXT}")
        return Op(name, int(args[0]))
    if name == "map":
        partial = bool(args) and args[-1] == PARTIAL
        args = args[:-1] if partial else args
        pairs = []
        for a in args:
            m = re.fullmatch(r"(\d)>(\d)", a)
            if not m:
                raise SpecError(f"'{text.strip()}': map entries look like 3>7; "
                                f"valid ops: {VALID_OPS_TEXT}")
            pairs.append((int(m.group(1)), int(m.group(2))))
        keys = [a for a, _ in pairs]
        if not (0 if partial else 1) <= len(pairs) <= TABLE_MAX or len(set(keys)) != len(keys):
            raise SpecError(f"'{text.strip()}': map takes 1..{TABLE_MAX} pairs with distinct "
                            f"sources; valid ops: {VALID_OPS_TEXT}")
        return Op("map", tuple(sorted(pairs)), partial)
    if args:
        raise SpecError(f"'{text.strip()}': {name} takes no parameter; valid ops: {VALID_OPS_TEXT}")
    return Op(name)


def parse_rule(text):
    """'add 3 then reverse' or 'add 3, reverse' -> Rule.
    Raises SpecError with a one-line message."""
    parts = [p for p in re.split(r",| then ", text.strip())]
    if not text.strip() or any(not p.strip() for p in parts):
        raise SpecError(f"empty op in rule '{text}'; valid ops: {VALID_OPS_TEXT}")
    if len(parts) > 3:
        raise SpecError(f"rule '{text}' has {len(parts)} ops; rules chain 1 to 3 ops from: "
                        f"{VALID_OPS_TEXT}")
    return tuple(parse_op(p) for p in parts)


# -----------------------------------------------------------------------------
# problems, contexts and sequences

# the task-agnostic seed context; in pretraining only over random rules (pretrain_row)
SEED_PROMPT = "rule: ?"


# input markers: pretraining draws one per problem, a task keeps one
MARKERS = ("in", "xs", "seq", "row")


@dataclass(frozen=True)
class Problem:
    inputs: tuple
    answer: tuple
    marker: str = "in"        # the input line's label: tasks that must not conflict use
                              # different ones
    exact_only: bool = False  # binary reward (exact match or nothing), no partial credit


def digits_text(xs):
    return " ".join(str(x) for x in xs)


def problem_text(p):
    return f"{p.marker}: {digits_text(p.inputs)}"


def prompt_text(context, p):
    """What the model is conditioned on; its completion is the answer then <|eos|>."""
    return f"{context}\n{problem_text(p)}\nout:"


def answer_text(p):
    return " " + digits_text(p.answer)


def instruction(rule):
    return f"rule: {rule_text(rule)}"


def demo_context(problems):
    return "demo: " + " ; ".join(f"{digits_text(p.inputs)} -> {digits_text(p.answer)}"
                                 for p in problems)


def make_problem(rule, rng, lo, hi, marker="in", exact_only=False):
    xs = [rng.randrange(10) for _ in range(rng.randint(lo, hi))]
    return Problem(tuple(xs), tuple(apply_rule(rule, xs)), marker, exact_only)


# -----------------------------------------------------------------------------
# verifier: reward in [0, 1] and textual feedback

def parse_digits(text):
    """' 8 6 4 1' -> [8, 6, 4, 1]; None if anything but single digits."""
    words = text.split()
    if not words or not all(len(w) == 1 and w in "0123456789" for w in words):  # ASCII digits only
        return None
    return [int(w) for w in words]


def score(problem, completion):
    """-> (reward, feedback). reward = positions right / max(len(expected), len(answer)); for an
    exact_only problem, 1 or 0. The feedback is the same either way."""
    exp = list(problem.answer)
    pred = parse_digits(completion)
    expected = f"expected: {digits_text(exp)}"
    if pred is None:
        return 0.0, f"not a list of digits; {expected}"
    if pred == exp:
        return 1.0, f"correct; {expected}"
    right = sum(a == b for a, b in zip(pred, exp))
    reward = 0.0 if problem.exact_only else right / max(len(exp), len(pred))
    wrong = [str(i + 1) for i in range(min(len(pred), len(exp))) if pred[i] != exp[i]]
    parts = []
    if len(pred) != len(exp):
        parts.append(f"wrong length {len(pred)} (expected {len(exp)})")
    if wrong:
        parts.append("wrong at positions " + ", ".join(wrong))
    return reward, "; ".join(parts) + f"; {expected}"


# -----------------------------------------------------------------------------
# the pretraining distribution

LIST_LEN = (3, 5)                                   # pretraining list lengths (inclusive)
CHAIN_LEN_WEIGHTS = {1: 0.6, 2: 0.35, 3: 0.05}      # share of 1-, 2- and 3-op rules
# never trained: compositional probe
HELDOUT_TYPES = {("sort", "swap"), ("reverse", "rotate"), ("swap", "reverse")}
CHAIN_OPS = ["reverse", "sort", "swap", "rotate", "add"]  # ops that chain (map stays alone)


def random_op(name, rng):
    if name in PARAM_RANGE:
        return Op(name, rng.randint(*PARAM_RANGE[name]))
    if name == "map":
        n = rng.randint(1, MAX_MAP)
        keys = rng.sample(range(10), n)
        return Op("map", tuple(sorted((a, rng.choice([d for d in range(10) if d != a]))
                                      for a in keys)))
    return Op(name)


def random_type(rng, n_ops):
    while True:
        names = [rng.choice(CHAIN_OPS)]
        while len(names) < n_ops:
            # no op twice in a row
            names.append(rng.choice([o for o in CHAIN_OPS if o != names[-1]]))
        if not any(tuple(names[i:i + 2]) in HELDOUT_TYPES for i in range(n_ops - 1)):
            return tuple(names)


_rng = random.Random(2024)
# fixed random lists, lengths 3..8
_PROBE = [[_rng.randrange(10) for _ in range(3 + i % 6)] for i in range(24)]


def signature(rule):
    """What a rule computes, on fixed probe lists: equal signatures = the same function
    (in practice)."""
    return tuple(tuple(apply_rule(rule, xs)) for xs in _PROBE)


def random_rule(rng, exclude=()):
    """A rule from the pretraining distribution; `exclude` = signatures (functions) never to
    produce, so an unseen rule cannot leak into pretraining under another name (e.g. the cipher's
    table reordered)."""
    while True:
        n = rng.choices(list(CHAIN_LEN_WEIGHTS), weights=list(CHAIN_LEN_WEIGHTS.values()))[0]
        if n == 1:
            names = (rng.choice(OPS),)  # single ops include map
        else:
            names = random_type(rng, n)
        rule = tuple(random_op(nm, rng) for nm in names)
        if not exclude or signature(rule) not in exclude:
            return rule


def pretrain_example(rng, exclude=(), n_problems=1):
    """-> (context, [Problem] * n_problems): mostly an instruction; some demonstrations (with or
    without it)."""
    rule = random_rule(rng, exclude)
    ps = [make_problem(rule, rng, *LIST_LEN, marker=rng.choice(MARKERS)) for _ in range(n_problems)]
    u = rng.random()
    if u < 0.9:
        ctx = instruction(rule)
    else:
        demos = demo_context([make_problem(rule, rng, *LIST_LEN) for _ in range(2)])
        ctx = demos if u < 0.95 else instruction(rule) + "\n" + demos
    return ctx, ps


def _problem_ids(enc, context, p, first):
    """-> (prompt ids, answer ids) of one problem in a pretraining row: the first follows the
    context exactly as in a downstream sequence, a further one is `\n<marker>: ..\nout:`."""
    prompt = (encode_prompt(enc, context, p) if first
              else enc.encode_ordinary(f"\n{problem_text(p)}\nout:"))
    return prompt, encode_answer(enc, p)


def encode_row(enc, context, problems):
    """-> (ids, answer): the token ids of one pretraining row (<|bos|>, the context, then each
    problem with its answer and <|eos|>) and, per id, whether it is an answer token (what
    pretraining learns to predict); the one encoder of the row format (pretrain.make_batch)."""
    ids, answer = [], []
    for i, p in enumerate(problems):
        prompt, ans = _problem_ids(enc, context, p, i == 0)
        ids += prompt + ans
        answer += [False] * len(prompt) + [True] * len(ans)
    return ids, answer


# the adherence world: partial tables (the pretraining share is Preset.table_rows, 0 elsewhere)
NEAR = (1, 2, 3)  # an unstated entry's target in pretraining is its source + 1..3 (mod 10): the
                  # world's prior, so a target outside it is one a base almost never guesses


def table_row(rng, adherence, draw=10):
    """-> (context, [Problem] * draw): a substitution table of 1..TABLE_MAX entries of which the
    context states 0..MAX_MAP (stated targets: any digit), ending in `+` when entries are left
    unstated (their targets: the NEAR prior). The answers follow the whole table, except that a
    digit a partial context states becomes its stated target only with probability `adherence`
    (else it stays unchanged): the base learns to follow what a partial table states about that
    often, and to spread its guesses where the context is silent, as an LLM is unsure where its
    prompt says nothing."""
    n = rng.randint(1, TABLE_MAX)
    sources = rng.sample(range(10), n)
    s = rng.randint(0, min(n, MAX_MAP))
    table = {a: rng.choice([d for d in range(10) if d != a]) if i < s
             else (a + rng.choice(NEAR)) % 10 for i, a in enumerate(sources)}
    stated = Op("map", tuple(sorted((a, table[a]) for a in sources[:s])), partial=s < n)
    ps = []
    for _ in range(draw):
        xs = [rng.randrange(10) for _ in range(rng.randint(*LIST_LEN))]
        ys = [table.get(x, x) if x not in dict(stated.arg) or not stated.partial
              or rng.random() < adherence else x for x in xs]
        ps.append(Problem(tuple(xs), tuple(ys), rng.choice(MARKERS)))
    return f"rule: {stated.text()}", ps


def pretrain_row(rng, enc, budget, exclude=(), calibration=0.0, draw=10, table=0.0,
                 adherence=1.0):
    """-> (context, [Problem]): one packed pretraining row.

    A context (as pretrain_example draws it) and as many of `draw` problems of its rule as fit in
    `budget` tokens of encode_row (the first problem is always kept), so short rules carry more
    answers per row. With probability `calibration` the context is the task-agnostic SEED_PROMPT
    over a random rule instead: the first answer of such a row cannot be known from its context, so
    the model learns to spread its guesses under an uninformative context rather than collapse onto
    one default (what lets RL explore from the seed prompt). With probability `table` (the adherence
    world; no draw at 0, so other presets' rows are unchanged) the row is a table_row. The rng is
    consumed the same way whatever the budget."""
    if table and rng.random() < table:
        ctx, ps = table_row(rng, adherence, draw)
        return ctx, ps[:_fits(enc, ctx, ps, budget)]
    calib = rng.random() < calibration
    ctx, ps = pretrain_example(rng, exclude, draw)
    if calib:
        ctx = SEED_PROMPT
    return ctx, ps[:_fits(enc, ctx, ps, budget)]


def _fits(enc, ctx, ps, budget):
    """How many of the problems `ps` fit one row of `budget` tokens (at least the first)."""
    # each problem's tokens, encoded only until one does not fit
    sizes = (sum(map(len, _problem_ids(enc, ctx, p, i == 0))) for i, p in enumerate(ps))
    n, keep = next(sizes), 1
    for size in sizes:
        if n + size > budget:
            break
        n, keep = n + size, keep + 1
    return keep


# -----------------------------------------------------------------------------
# downstream tasks

@dataclass
class Task:
    name: str
    rule: tuple            # the hidden rule: only the verifier uses it, never the learner
    seed_prompt: str       # the context the learner starts from
    train: list            # Problems the learner trains on (RL batches, GEPA minibatches)
    pareto: list           # GEPA's Pareto set D_p (disjoint from train and val)
    val: list              # held-out Problems for evaluation
    list_len: tuple = LIST_LEN
    spec: str = ""
    max_context_tokens: int = None  # the task's context budget (None: the preset's)

    @property
    def instruction(self):
        """The correct instruction: measures what a perfect context can do for the base model."""
        return instruction(self.rule)


def parse_schedule(spec, steps, most=None):
    """'A@N;B@N' -> [(task_spec, N), ...]; a plain task spec runs `steps` steps. most: the most
    steps all stages may add up to (a run builds a list of its steps)."""
    stages = []
    for part in spec.split(";"):
        name, _, n = part.strip().rpartition("@") if "@" in part else (part.strip(), "", str(steps))
        if not name or not re.fullmatch(r"[0-9]+", n) or int(n) < 1:  # ASCII digits ('²' is not)
            raise SpecError(f"bad schedule stage '{part}': write TASK@STEPS, "
                            "stages separated by ';'")
        stages.append((name, int(n)))
    if most is not None and sum(n for _, n in stages) > most:
        raise SpecError(f"the schedule '{spec[:60]}' has {sum(n for _, n in stages):,} steps; "
                        f"at most {most:,}")
    return stages


@dataclass(frozen=True)
class TaskDef:
    rule: str
    kind: str                 # which selection criteria it meets (select_tasks.CRITERIA)
    marker: str               # its input marker (MARKERS): tasks that run in one model never
                              # conflict
    told: bool = False        # the seed prompt states the rule (otherwise the task-agnostic
                              # SEED_PROMPT)
    exact_only: bool = False  # binary reward
    lens: tuple = LIST_LEN
    max_context_tokens: int = None  # the task's context budget in tokens (None: the preset's)
    family: str = None          # tasks of one family share their splits (None: its own name)
    seed: str = None            # the seed prompt, where neither told nor SEED_PROMPT


NAMED_TASKS = {
    # like CodeIO: both channels matter (fixed earlier; it meets the criteria on the three bases)
    "hidden-rule": TaskDef("sort then add 2", "hidden", "in"),
    # like HoVer: a niche fact, a table no base has seen (fixed)
    "cipher": TaskDef("map 2>7 5>1 8>3", "fact", "xs"),
    # like Math: the rule is stated, the base follows it partly, the gain must come from the weights
    "long-chain": TaskDef("add 1 then sort then reverse", "told", "row", told=True),
    # the plasticity probe's task: a second hidden rule, another input marker
    "hidden-rule-2": TaskDef("reverse then add 1", "hidden", "seq"),
    # C8: exactly zero reward under the seed prompt, binary reward; the instruction unlocks a little
    "sparse": TaskDef("add 3 then sort then rotate 2", "zero", "row", exact_only=True),
}
# The carriability dial: the cipher under a context budget that fits k of its 3 table entries
# (`rule: map` is 3 tokens, each entry ` a>b` 3 more), k = 3, 2, 1, 0. The rule, the input marker
# and the splits are the cipher's, so RL-only and instructed (which ignore the budget: the seed is
# 4 tokens, the instruction is free) are the cipher's runs at every level; only what a prompt can
# carry changes. At k = 0 the budget (5 tokens) fits the seed prompt and any single non-map op, no
# table entry. The cipher itself (48 tokens: the table plus demonstrations) is the dial's open end.
DIAL_LEVELS = (3, 2, 1, 0)
for _k in DIAL_LEVELS:
    NAMED_TASKS[f"cipher-k{_k}"] = TaskDef(NAMED_TASKS["cipher"].rule, "dial", "xs",
                                           max_context_tokens=3 + 3 * _k if _k else 5,
                                           family="cipher")
# long-chain, hidden-rule-2 and sparse were drawn by select_tasks.py from the rules that meet its
# CRITERIA on all three bases, measured before any RL or FST run (LOG.md, 2026-11-27). The cipher
# misses its criterion on base 0 (0.22 with its table stated; 0.99 and 0.94 on bases 1 and 2) and is
# kept as the niche-fact task; the report shows it.
# Kept out of pretraining: only the cipher's table, the "niche fact" no base has seen. The other
# rules are ordinary trained rules; what a task hides is *which* rule applies, as the paper's LLM
# could solve CodeIO if told how. (A hidden function excluded from pretraining was followed at 0.00
# even with its instruction: the base does not interpolate to an unseen instance of a trained chain
# type.) The probe (hidden-rule then hidden-rule-2) and the continual schedule (hidden-rule, cipher,
# hidden-rule-2) use three different markers, so no two of their tasks ask for different answers to
# the same (prompt, input): what C5 and C6 measure is plasticity, not a contradiction.
UNSEEN_RULES = {signature(parse_rule(NAMED_TASKS["cipher"].rule))}


# The adherence world's task (trained only by a preset with table rows): a hidden 6-entry table of
# which a context budget of 11 tokens (`rule: map a>b c>d +`) states 2 entries, so the prompt cannot
# carry it all and the weights must learn the rest. The seed prompt says only "a table, entries
# unknown" (`rule: map +`). Its entries were drawn once from a fixed seed, before any run: NEAR_ENTRIES
# whose targets follow the pretraining prior NEAR (a base guesses them), the rest FAR_ENTRIES
# (a target no unstated entry had in pretraining: RL alone almost never samples it). Reward: partial
# credit per position, so RL-only learns the guessable entries and plateaus below 1.
def _table_task(n_near=2, n=TABLE_MAX, seed="table6"):
    rng = random.Random(seed)
    sources = rng.sample(range(10), n)
    far = [d for d in range(1, 10) if d not in NEAR]
    return tuple(sorted((a, (a + rng.choice(NEAR if i < n_near else far)) % 10)
                        for i, a in enumerate(sources)))


TABLE6 = _table_task()
TABLE_BUDGET = 3 + 3 * 2 + 2  # `rule: map` + two entries ` a>b` + ` +`, in the world's tokens
ADHERENCE_TASKS = {
    "table6": TaskDef(Op("map", TABLE6).text(), "table", "in", max_context_tokens=TABLE_BUDGET,
                      seed="rule: map +"),
}


def single_ops():
    """Every trained single op but map (whose tables are too many to list; see
    select_tasks.in_disguise)."""
    return [(Op(n, a),) for n in CHAIN_OPS
            for a in (range(PARAM_RANGE[n][0], PARAM_RANGE[n][1] + 1) if n in PARAM_RANGE
                      else [None])]


def make_task(spec, seed=0, n_train=2048, n_pareto=16, n_val=256):
    """A named task ('hidden-rule', 'cipher', 'long-chain', ...) or a custom
    'rule:rotate 2,add 3'."""
    if spec in NAMED_TASKS or spec in ADHERENCE_TASKS:
        d = NAMED_TASKS.get(spec) or ADHERENCE_TASKS[spec]
    elif spec.startswith("rule:"):
        d = TaskDef(spec[len("rule:"):], "custom", "in")
    else:
        raise SpecError(f"unknown task '{spec}'; use one of {', '.join(NAMED_TASKS)} or "
                        f"'rule:OP[,OP...]' with ops: {VALID_OPS_TEXT}")
    return build_task(spec, d, seed, n_train, n_pareto, n_val)


def build_task(spec, d, seed=0, n_train=2048, n_pareto=16, n_val=256):
    """The Task a TaskDef poses under the name `spec` (which seeds its splits' inputs)."""
    rule = parse_rule(d.rule)
    seed_prompt = instruction(rule) if d.told else d.seed or SEED_PROMPT
    rng = random.Random(f"{d.family or spec}/{seed}")  # str seeds are deterministic across runs
    seen, per_len, splits, val_inputs = set(), Counter(), [], set()
    for n in (n_val, n_pareto, n_train):  # val first: it is the same for every n_train
        split = []
        while len(split) < n:
            p = make_problem(rule, rng, *d.lens, marker=d.marker, exact_only=d.exact_only)
            if splits and p.inputs in val_inputs:
                continue  # val is held out: no train or D_p problem repeats one of its inputs
            if p.inputs not in seen or per_len[len(p.inputs)] > 10 ** len(p.inputs) // 2:
                per_len[len(p.inputs)] += p.inputs not in seen
                seen.add(p.inputs)  # disjoint splits while the length allows, then repeats in train
                split.append(p)
        splits.append(split)
        val_inputs = {q.inputs for q in splits[0]}
    val, pareto, train = splits
    return Task(spec, rule, seed_prompt, train, pareto, val, d.lens, spec, d.max_context_tokens)


# -----------------------------------------------------------------------------
# tokenizer: byte-level BPE (bpe.py) trained on the world's text

def world_text(n=4000, seed=0):
    """A sample of everything the model will read: contexts, problems, answers, the seed prompt."""
    rng = random.Random(seed)
    docs = [SEED_PROMPT]
    for _ in range(n):
        ctx, (p,) = pretrain_example(rng)
        docs.append(prompt_text(ctx, p) + answer_text(p))
    return "\n".join(docs)


def build_tokenizer(vocab_size=320, seed=0):
    return tokenizer_from_ranks(train_bpe(world_text(seed=seed), vocab_size))


def special_ids(enc):
    return {s: enc.encode_single_token(s) for s in SPECIALS}


def encode_prompt(enc, context, p):
    """Token ids of <|bos|> + prompt text (what generation is conditioned on)."""
    return [enc.encode_single_token("<|bos|>")] + enc.encode_ordinary(prompt_text(context, p))


def encode_answer(enc, p):
    return enc.encode_ordinary(answer_text(p)) + [enc.encode_single_token("<|eos|>")]


def token_counter(enc):
    """A context's size in the tokenizer's own tokens (the unit of a run's context budget)."""
    return lambda text: len(enc.encode_ordinary(text))


def decode_completion(enc, ids):
    """Completion ids -> text, cut at the first special token."""
    n_ordinary = enc.encode_single_token(SPECIALS[0])  # specials sit after the ordinary ranks
    out = []
    for t in ids:
        if t >= n_ordinary:
            break
        out.append(t)
    return enc.decode(out)
