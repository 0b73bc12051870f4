"""
reflectors.py: the reflection step of the fast channel. A reflector reads what happened on a
minibatch and writes a new context, behind one interface, so the optimizer (fast_context.py) never
knows which one runs:

    reflector(current_prompt, records) -> str    # records: [{"inputs", "outputs", "feedback"}]

    reflect = reflectors.make_reflector("edit", max_tokens=48, count_tokens=word_count)
    reflect("rule: ?", [{"inputs": "in: 3 8 1 5", "outputs": " 3 8 1 5",
                         "feedback": "wrong at positions 1, 2, 3, 4; expected: 4 9 2 6"}])
    # -> 'rule: add 1'
    reflectors.first_hit_rate(reflect, task, evaluate)  # share of first proposals = the hidden rule

Four reflectors, in graded strength (make_reflector builds them by name):
  oracle  OracleReflector: brute-forces the world's op library (every chain of 1-3 ops, ~10^3, plus
          a map table read off aligned digits) against the expected answers. An upper bound.
  edit    EditReflector, the default: one local edit of the current rule per call, read off the
          failures, with at most max_hypotheses candidate rules checked per call.
  demo    DemoReflector: curates demonstrations; knows nothing of the op library.
  llm     LLMReflector: GEPA's reflection meta-prompt, sent to any OpenAI-compatible chat endpoint.
          It lives in llm.py, the one reflector that talks to the outside world.
and the strength dial over any of them: `NAME:P` (NoisyReflector) makes a proposal wrong with
probability P (one detail changed, its length kept); strength = 1 - P.

Design choices and why:
- `edit` is the default because an oracle that searches the grammar with the world's executor
  writes the exact hidden rule from 3 examples: after one round FST is RL under the true
  instruction, and a comparison measures "being told the rule". The paper's reflection LM is no
  oracle: it reads the model's outputs and improves the prompt step by step. So does `edit`, in
  miniature. It never lists the grammar; from `rule: ?` it can only write a 1-op rule, so a 2-op
  rule takes two accepted rounds or more, and a 3-entry cipher table three.
- How `edit` reads a failure: it lines up what the context accounts for (the rule's prefix applied
  to the input or, at the rule's end, the model's own output) with what the rest of the rule must
  produce (the expected answer, the rule's suffix undone), and looks for signs of one op between
  them: every digit off by k -> `add k`; the same digits shifted by k, order aside -> `add k`
  (weaker); the same digits reordered -> the order op that does it (sorted, reversed, rotated, pairs
  swapped), else every order op (weak); a digit always replaced by one digit -> a map entry;
  nothing left to do -> remove that op. Where the sign sits is the edit: after the model's output or
  the rule an op is appended, before the rule prepended, at an op that op is replaced or
  re-parameterised; in a map rule one entry is added, retargeted or dropped. Candidates are ranked
  by votes; at most max_hypotheses are checked against the expected answers (tasks.apply_rule).
  The first that fits every example wins, else the best fit if it beats the current rule; else
  (also when the rule already fits and the model slipped) the failures become a demonstration line.
  Deterministic. Its limit: a hill climber. Where a single op imitates a chain of two order ops
  (`swap` = `rotate 2 then reverse` on 3-4 digits) it can settle on the imitation for good.
- `llm` speaks HTTP through urllib (no SDK), with timeouts and retries on transport errors and
  5xx/429 (exponential backoff; a timeout is not retried: a hung server hangs again). Any failure
  raises: the optimizer turns a raise into a rejected proposal logged as invalid, so a flaky server
  costs proposals, never a run. Some failures stop the run instead (fast_context.ReflectorError,
  which the optimizer lets through): an endpoint that cannot be reached, times out or answers 4xx
  (429 aside) before it has ever answered, at once and without retries (a wrong URL, model name or
  key does not heal); `fail_limit` failed calls in a row (train.py passes
  Preset.reflector_fail_rounds x gepa_proposals: that many rounds' proposals) or calls failing in a
  row for 4 x the timeout, so a dead server does not eat the whole budget in retries and leave the
  seed prompt deployed; and a model that never writes a ``` fence (a reply without one from a model
  that has written one is a rejected proposal: its endpoint is alive).
- first_hit_rate is a pure measurement: the records the optimizer would hand over from the seed
  prompt (a random minibatch of task.train, the caller's evaluate), one proposal each, no training.
"""

import functools
import json
import random
import re
from collections import Counter

from fast_context import make_records, word_count
from world.llm import LLMReflector
from world import tasks
from world.tasks import (CHAIN_OPS, MAX_MAP, PARAM_RANGE, Op, Problem, SpecError, apply_rule,
                         demo_context, digits_text, instruction, parse_digits, parse_rule,
                         rule_text)

# -----------------------------------------------------------------------------
# reading records and contexts

_IN_RE = re.compile(r"^\s*[a-z]+:\s*([0-9 ]+)")  # any input marker
_EXPECTED_RE = re.compile(r"expected:\s*([0-9 ]+)")


def parse_attempts(records):
    """records -> [(inputs, expected, output, failed)], deduplicated by inputs; output = the model's
    digits or None. Unparseable records are skipped; no parseable record, or one input with two
    different expected answers, raises ValueError."""
    out, seen = [], {}
    for r in records:
        m_in = _IN_RE.search(str(r.get("inputs", "")))
        m_exp = _EXPECTED_RE.search(str(r.get("feedback", "")))
        xs = parse_digits(m_in.group(1)) if m_in else None
        ys = parse_digits(m_exp.group(1)) if m_exp else None
        if xs is None or ys is None:
            continue
        xs, ys = tuple(xs), tuple(ys)
        if xs in seen:
            if seen[xs] != ys:
                raise ValueError(f"contradictory feedback: in {digits_text(xs)} expected both "
                                 f"{digits_text(seen[xs])} and {digits_text(ys)}")
            continue
        seen[xs] = ys
        output = parse_digits(str(r.get("outputs", "")))
        failed = not str(r.get("feedback", "")).startswith("correct")
        out.append((xs, ys, tuple(output) if output else None, failed))
    if not out:
        raise ValueError("no record has parseable inputs ('in: ...') and feedback "
                         "('expected: ...')")
    return out


def parse_records(records):
    """records -> [(inputs, expected, failed)] (see parse_attempts)."""
    return [(xs, ys, failed) for xs, ys, _, failed in parse_attempts(records)]


def parse_demos(text):
    """'demo: 3 1 2 -> 5 4 6 ; ...' lines -> [(inputs, outputs)] (malformed demos skipped)."""
    out = []
    for line in text.splitlines():
        if line.strip().startswith("demo:"):
            for part in line.strip()[len("demo:"):].split(";"):
                a, _, b = part.partition("->")
                xs, ys = parse_digits(a), parse_digits(b)
                if xs and ys:
                    out.append((tuple(xs), tuple(ys)))
    return out


def parse_context_rule(text):
    """The rule stated by a `rule: ...` line of a context, or None ('rule: ?' and junk -> None)."""
    for line in text.splitlines():
        if line.strip().startswith("rule:"):
            try:
                return parse_rule(line.strip()[len("rule:"):])
            except SpecError:
                return None
    return None


def fit_demos(head, pairs, max_demos, max_tokens, count_tokens=word_count):
    """`head` (or nothing) + one demo line with as many of `pairs` (priority order, unique inputs)
    as fit both max_demos and max_tokens. Returns None if not even one demo fits."""
    chosen, seen = [], set()
    for xs, ys in pairs:
        if xs in seen or len(chosen) >= max_demos:
            continue
        line = demo_context([Problem(x, y) for x, y in chosen + [(xs, ys)]])
        if count_tokens(f"{head}\n{line}" if head else line) <= max_tokens:
            chosen.append((xs, ys))
            seen.add(xs)
    if not chosen:
        return None
    line = demo_context([Problem(x, y) for x, y in chosen])
    return f"{head}\n{line}" if head else line


def consistent(rule, examples):
    return all(apply_rule(rule, list(xs)) == list(ys) for xs, ys in examples)


class _Reflector:
    def __init__(self, max_demos, max_tokens=48, count_tokens=None):
        self.max_demos, self.max_tokens = max_demos, max_tokens
        self.count_tokens = count_tokens or word_count


# -----------------------------------------------------------------------------
# oracle: searches the whole op library (an upper bound)

@functools.lru_cache(maxsize=None)
def library_chains(max_ops=3):
    """Every chain of 1..max_ops library ops with no op name twice in a row (map excluded: it stays
    alone), shortest first, then in library order. Built once (~10^3 chains for 3 ops)."""
    ops = []
    for name in CHAIN_OPS:
        lo, hi = PARAM_RANGE.get(name, (None, None))
        ops += [Op(name, k) for k in range(lo, hi + 1)] if lo is not None else [Op(name)]
    chains, level = [], [()]
    for _ in range(max_ops):
        level = [c + (o,) for c in level for o in ops if not c or o.name != c[-1].name]
        chains += level
    return tuple(chains)


def infer_map(examples, base=()):
    """The `map` rule consistent with every (inputs, expected) pair, starting from the table `base`
    (merged): changed digits give entries, unchanged digits must stay out. None on a conflict, a
    length change, an empty table or more than MAX_MAP entries."""
    table, unchanged = dict(base), set()
    for xs, ys in examples:
        if len(xs) != len(ys):
            return None
        for a, b in zip(xs, ys):
            if a == b:
                unchanged.add(a)
            elif table.setdefault(a, b) != b:
                return None
    if unchanged & set(table) or not 1 <= len(table) <= MAX_MAP:
        return None
    return (Op("map", tuple(sorted(table.items()))),)


def consistent_rules(examples, current=None):
    """All library rules mapping every example right, shortest first: 1-op chains, then the map rule
    (merged with `current`'s table when `current` is a compatible map), then 2- and 3-op chains."""
    if any(len(xs) != len(ys) for xs, ys in examples):
        return []  # every op keeps the length
    chains = [c for c in library_chains() if consistent(c, examples)]
    base = current[0].arg if current and len(current) == 1 and current[0].name == "map" else ()
    m = (infer_map(examples, base) if base else None) or infer_map(examples)  # merged, else own
    n1 = sum(len(c) == 1 for c in chains)
    return chains[:n1] + ([m] if m else []) + chains[n1:]


class OracleReflector(_Reflector):
    """Feedback -> a consistent `rule: ...`, found by searching the whole op library.

    Preferences: the shortest consistent rule (library order among equals). If the current prompt
    already states a consistent rule, the next consistent rule after it (cyclically), so repeated
    proposals explore equivalent phrasings; if it is the only one, the same rule plus
    demonstrations of the failed examples. No rule fits: demonstrations. Contradictory or
    unparseable feedback: ValueError.
    """

    def __init__(self, max_demos=2, max_tokens=48, count_tokens=None):
        super().__init__(max_demos, max_tokens, count_tokens)

    def __call__(self, current_prompt, records):
        recs = parse_records(records)
        examples = [(xs, ys) for xs, ys, _ in recs]
        failed = [(xs, ys) for xs, ys, f in recs if f] or examples
        current = parse_context_rule(current_prompt)
        rules = consistent_rules(examples, current)
        texts = [rule_text(r) for r in rules]
        if not rules:  # nothing in the library fits: show the examples instead
            out = fit_demos(None, failed + examples, self.max_demos, self.max_tokens,
                            self.count_tokens)
            if out is None:
                raise ValueError("no rule fits and no demonstration fits the token budget")
            return out
        if current is None or not consistent(current, examples):
            return instruction(rules[0])
        cur = rule_text(current)
        others = [t for t in texts if t != cur]
        if others:  # explore: the next consistent rule after the current one
            nxt = texts[(texts.index(cur) + 1) % len(texts)] if cur in texts else others[0]
            return "rule: " + nxt
        head = instruction(current)  # the only consistent rule: vary it with the failed examples
        out = fit_demos(head, failed + parse_demos(current_prompt), self.max_demos,
                        self.max_tokens, self.count_tokens)
        return out or head  # nothing fits: unchanged, which the optimizer rejects and logs


# -----------------------------------------------------------------------------
# demo: curates demonstrations

class DemoReflector(_Reflector):
    """Curates demonstrations from feedback, knowing nothing of the op library: the failed examples
    first, then demos already in the current prompt, then the passed examples; at most max_demos
    and max_tokens. The output is a demonstration-only context (`demo: a -> b ; ...`)."""

    def __init__(self, max_demos=3, max_tokens=48, count_tokens=None):
        super().__init__(max_demos, max_tokens, count_tokens)

    def __call__(self, current_prompt, records):
        recs = parse_records(records)
        failed = [(x, y) for x, y, f in recs if f]
        passed = [(x, y) for x, y, f in recs if not f]
        pairs = failed + parse_demos(current_prompt) + passed
        out = fit_demos(None, pairs, self.max_demos, self.max_tokens, self.count_tokens)
        if out is None:
            raise ValueError(f"no demonstration fits {self.max_tokens} tokens")
        return out


# -----------------------------------------------------------------------------
# edit: one local edit of the current rule per call, read off the failures

ORDER_OPS = [Op("sort"), Op("reverse"), Op("swap")] + [
    Op("rotate", k) for k in range(PARAM_RANGE["rotate"][0], PARAM_RANGE["rotate"][1] + 1)]
ADD_STEPS = range(PARAM_RANGE["add"][0], PARAM_RANGE["add"][1] + 1)


def signs(src, dst):
    """Signs, read off one example, of a single op turning list `src` into list `dst`:
    [(op, weight)], weight 2 where the op explains the example exactly, 1 for a partial sign."""
    src, dst = list(src), list(dst)
    if len(src) != len(dst) or src == dst:
        return []
    found = []
    offsets = {(b - a) % 10 for a, b in zip(src, dst)}
    for k in ADD_STEPS:
        if offsets == {k}:  # every digit off by k
            found.append((Op("add", k), 2))
        elif Counter((a + k) % 10 for a in src) == Counter(dst):  # the same, order aside
            found.append((Op("add", k), 1))
    if Counter(src) == Counter(dst):  # the same digits in another order
        exact = [(op, 2) for op in ORDER_OPS if op.apply(src) == dst]
        found += exact or [(op, 1) for op in ORDER_OPS]
    changed = {(a, b) for a, b in zip(src, dst) if a != b}
    kept = {a for a, b in zip(src, dst) if a == b}
    for a, b in sorted(changed):  # digit a always became b here
        if a not in kept and all(b2 == b for a2, b2 in changed if a2 == a):
            found.append((Op("map", ((a, b),)), 1))
    return found


def undo(rule, ys):
    """The list that `rule` maps onto ys, or None if an op of `rule` forgets (sort, map)."""
    ys = list(ys)
    for op in reversed(rule):
        if op.name in ("reverse", "swap"):  # their own inverses
            ys = op.apply(ys)
        elif op.name == "rotate":  # rotate right
            k = len(ys) - op.arg % len(ys)
            ys = ys[k:] + ys[:k]
        elif op.name == "add":
            ys = [(y - op.arg) % 10 for y in ys]
        else:
            return None
    return ys


def with_entry(op, entry):
    """Map op `op` with `entry` (a one-entry map op) added or retargeted; None if too big."""
    table = dict(op.arg)
    table.update(entry.arg)
    return Op("map", tuple(sorted(table.items()))) if len(table) <= MAX_MAP else None


def local_edits(rule, attempts):
    """Rules one edit away from `rule` that the failed attempts [(inputs, expected, output, _)]
    point to, most voted first (ties: in the order found)."""
    votes = {}

    def vote(new, weight):
        if new and new != rule and all(a.name != b.name for a, b in zip(new, new[1:])):
            votes[new] = votes.get(new, 0) + weight

    n, has_map = len(rule), any(op.name == "map" for op in rule)
    for xs, ys, output, _ in attempts:
        for i in range(n):  # at op i: remove, replace or re-parameterise it
            left, right = apply_rule(rule[:i], list(xs)), undo(rule[i + 1:], ys)
            if right is None:
                continue
            if left == right and n > 1:  # nothing left for op i to do
                vote(rule[:i] + rule[i + 1:], 2)
            for op, w in signs(left, right):
                if op.name == "map" and rule[i].name == "map":
                    op = with_entry(rule[i], op)
                elif op.name == "map" and n > 1:
                    continue  # map stays alone
                if op is not None:
                    vote(rule[:i] + (op,) + rule[i + 1:], w)
            if rule[i].name == "map" and len(rule[i].arg) > 1:  # entries a kept digit contradicts
                for a, b in rule[i].arg:
                    if any(x == a == y for x, y in zip(left, right)):
                        rest = tuple(e for e in rule[i].arg if e[0] != a)
                        vote(rule[:i] + (Op("map", rest),) + rule[i + 1:], 1)
        if has_map or n >= 3:
            continue
        for i in range(n + 1):  # before op i (i == n: at the end): insert one op
            right = undo(rule[i:], ys)
            if right is None:
                continue
            sources = [apply_rule(rule[:i], list(xs))]
            if i == n and output is not None and list(output) != sources[0]:
                sources.append(list(output))  # what the model did: right but for a final step?
            for src in sources:
                for op, w in signs(src, right):
                    if op.name != "map" or n == 0:
                        vote(rule[:i] + (op,) + rule[i:], w)
    return sorted(votes, key=lambda r: -votes[r])  # a stable sort keeps the order found


def fit(rule, examples):
    """How close `rule` gets to the expected answers, in [0, 1] (1 = every example exact): per
    example, the share of positions right plus the share of digits right in any order, over 2."""
    total = 0.0
    for xs, ys in examples:
        got = apply_rule(rule, list(xs))
        if len(got) == len(ys):
            pos = sum(a == b for a, b in zip(got, ys))
            bag = sum((Counter(got) & Counter(ys)).values())
            total += (pos + bag) / (2 * len(ys))
    return total / len(examples)


# -----------------------------------------------------------------------------
# edit on a partial table (`rule: map 2>7 +`): entries added, retargeted, dropped or swapped

def table_votes(stated, attempts):
    """Entries (a, b), a != b, that the failures point to: in an expected answer digit a became b
    where the model's output has another digit, and a's stated target (if any) is not b.
    -> Counter."""
    votes = Counter()
    for xs, ys, out, _ in attempts:
        for i, (x, y) in enumerate(zip(xs, ys)):
            if (out is None or i >= len(out) or out[i] != y) and x != y and stated.get(x) != y:
                votes[(x, y)] += 1
    return votes


def table_fit(stated, attempts):
    """How much of the expected answers a partial table gets right, in [0, 1], if the model keeps
    what it got right where the table is silent (it may have learned it) and leaves a digit it got
    wrong there unchanged (an unstated digit's default): a stated digit takes its target."""
    right = total = 0
    for xs, ys, out, _ in attempts:
        own = out if out is not None and len(out) == len(xs) else xs
        right += sum(stated[x] == y if x in stated else (o == y or x == y)
                     for x, o, y in zip(xs, own, ys))
        total += len(ys)
    return right / max(total, 1)


def table_edits(stated, attempts, fits):
    """Tables one edit away from `stated` ({source: target}), most voted first: a failing entry
    added or retargeted; where an addition does not fit the budget (`fits`), swapped in for a
    stated entry (the ones the examples show least first: the model may have learned them); a
    stated entry the expected answers contradict dropped."""
    votes, seen = table_votes(stated, attempts), Counter(x for xs, _, _, _ in attempts for x in xs)
    out = []
    for (a, b), _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
        new = {**stated, a: b}
        if fits(new):
            out.append(new)
            continue
        for c in sorted((c for c in stated if c != a), key=lambda c: (seen[c], c)):
            out.append({**{k: v for k, v in stated.items() if k != c}, a: b})
    for a in sorted(stated):  # an expected answer keeps a stated source unchanged
        if any(x == a == y for xs, ys, _, _ in attempts for x, y in zip(xs, ys)):
            out.append({k: v for k, v in stated.items() if k != a})
    return out


def partial_table(stated):
    return Op("map", tuple(sorted(stated.items())), partial=True)


class EditReflector(_Reflector):
    """One local edit of the current context's rule per call, chosen from the failures (see the
    file's docstring); at most max_hypotheses candidate rules checked per call. After a call,
    `checked` holds how many it checked, and `total_checked` sums over calls."""

    def __init__(self, max_hypotheses=8, max_demos=2, max_tokens=48, count_tokens=None):
        super().__init__(max_demos, max_tokens, count_tokens)
        self.max_hypotheses, self.checked, self.total_checked = max_hypotheses, 0, 0

    def __call__(self, current_prompt, records):
        attempts = parse_attempts(records)
        examples = [(xs, ys) for xs, ys, _, _ in attempts]
        failed = [a for a in attempts if a[3]] or attempts
        rule = parse_context_rule(current_prompt) or ()
        if len(rule) == 1 and rule[0].partial:  # a partial table: its own edits (table_edits)
            return self.edit_table(dict(rule[0].arg), attempts)
        self.checked, best, best_fit = 0, None, fit(rule, examples)
        if best_fit < 1.0:  # the rule itself is wrong somewhere: look for one edit that helps
            fits = lambda r: self.count_tokens(instruction(r)) <= self.max_tokens
            for new in [r for r in local_edits(rule, failed) if fits(r)][:self.max_hypotheses]:
                self.checked += 1
                f = fit(new, examples)
                if f > best_fit + 1e-9:
                    best, best_fit = new, f
                if f >= 1.0:
                    break
        self.total_checked += self.checked
        demos = [line.strip() for line in current_prompt.splitlines()
                 if line.strip().startswith("demo:")]
        if best is not None:  # the new rule, and the current demonstrations if they still fit
            text = "\n".join([instruction(best)] + demos)
            return text if self.count_tokens(text) <= self.max_tokens else instruction(best)
        # the rule fits (the model slipped) or no edit helps: show the failures instead
        pairs = [(xs, ys) for xs, ys, _, _ in failed] + parse_demos(current_prompt)
        head = instruction(rule) if rule else None
        out = fit_demos(head, pairs, self.max_demos, self.max_tokens, self.count_tokens)
        if out is None:
            raise ValueError(f"no edit helps and no demonstration fits {self.max_tokens} tokens")
        return out


    def edit_table(self, stated, attempts):
        """One edit of a partial table: the best by table_fit of at most max_hypotheses
        table_edits, if it beats the current table."""
        fits = lambda t: self.count_tokens(instruction((partial_table(t),))) <= self.max_tokens
        self.checked, best, best_fit = 0, None, table_fit(stated, attempts)
        for new in table_edits(stated, attempts, fits)[:self.max_hypotheses]:
            self.checked += 1
            f = table_fit(new, attempts)
            if f > best_fit + 1e-9:
                best, best_fit = new, f
        self.total_checked += self.checked
        if best is None:
            raise ValueError("no edit of the table helps")
        return instruction((partial_table(best),))


# -----------------------------------------------------------------------------
# the strength dial: a proposal made wrong with probability p

def corrupt(text, rng):
    """One wrong detail in a proposal, its length in tokens kept: in its rule one op re-targeted
    (a map entry's output digit, another parameter, another parameterless op), or without a rule
    one digit of a demonstration's answer changed."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        rule = parse_context_rule(line)
        if rule:
            j = rng.randrange(len(rule))
            op = rule[j]
            if op.name == "map":
                e = rng.randrange(len(op.arg))
                a, b = op.arg[e]
                new = rng.choice([d for d in range(10) if d not in (a, b)])
                op = Op("map", op.arg[:e] + ((a, new),) + op.arg[e + 1:])
            elif op.name in PARAM_RANGE:
                lo, hi = PARAM_RANGE[op.name]
                op = Op(op.name, rng.choice([k for k in range(lo, hi + 1) if k != op.arg]))
            else:
                op = Op(rng.choice([n for n in ("reverse", "sort", "swap") if n != op.name]))
            lines[i] = instruction(rule[:j] + (op,) + rule[j + 1:])
            return "\n".join(lines)
    for i, line in enumerate(lines):  # no rule: a demonstration's answer, one digit off
        if "->" in line:
            k = max(m.start() for m in re.finditer(r"\d", line))
            lines[i] = line[:k] + str((int(line[k]) + rng.randrange(1, 10)) % 10) + line[k + 1:]
            return "\n".join(lines)
    return text


class NoisyReflector:
    """`inner`'s proposal, made wrong (corrupt) with probability p: a reflection LM that misreads
    now and then. strength = 1 - p. Whether a call errs is a pure function of (seed, prompt,
    records), so a resumed run makes the same mistakes as an uninterrupted one."""

    def __init__(self, inner, p, seed=0):
        self.inner, self.p, self.seed = inner, p, seed

    def __call__(self, current_prompt, records):
        text = self.inner(current_prompt, records)
        rng = random.Random(f"{self.seed}\n{current_prompt}\n{json.dumps(records, sort_keys=True)}")
        return corrupt(text, rng) if rng.random() < self.p else text


# -----------------------------------------------------------------------------
# by name, and the first-proposal hit rate

REFLECTORS = ("oracle", "edit", "demo", "llm")


def parse_reflector(spec):
    """'edit' -> ('edit', 0.0); 'edit:0.5' -> ('edit', 0.5): NAME[:P], P the probability that a
    proposal is made wrong (the strength dial). ValueError for anything else."""
    name, colon, p = spec.partition(":")
    try:
        rate = float(p) if p else -1.0 if colon else 0.0  # 'edit:' is no level of the dial
    except ValueError:
        rate = -1.0
    if name not in REFLECTORS or not 0.0 <= rate <= 1.0 or (p and name == "llm"):
        raise ValueError(f"unknown reflector '{spec}'; choose one of {', '.join(REFLECTORS)}, "
                         "optionally NAME:P with P in [0, 1] the share of wrong proposals")
    return name, rate


def make_reflector(spec, max_tokens=48, count_tokens=None, seed=0, max_hypotheses=8,
                   demos_with_rule=2, demos_alone=3, **llm_options):
    """A reflector by name: oracle | edit | demo | llm, or NAME:P (wrong with probability P, see
    NoisyReflector; `seed` seeds its mistakes). max_hypotheses (edit), demos_with_rule (oracle,
    edit) and demos_alone (demo) are the preset's limits. llm_options (url, model, timeout,
    retries, backoff, temperature, fail_limit) are LLMReflector's and only allowed with 'llm'."""
    name, p = parse_reflector(spec)
    if p > 0:
        inner = make_reflector(name, max_tokens, count_tokens, 0, max_hypotheses, demos_with_rule,
                               demos_alone, **llm_options)
        return NoisyReflector(inner, p, seed)
    if name == "llm":
        return LLMReflector(max_tokens=max_tokens, count_tokens=count_tokens, **llm_options)
    if llm_options:
        raise ValueError(f"options {sorted(llm_options)} are for the llm reflector, not '{name}'")
    size = dict(max_tokens=max_tokens, count_tokens=count_tokens)
    if name == "edit":
        return EditReflector(max_hypotheses, demos_with_rule, **size)
    if name == "oracle":
        return OracleReflector(demos_with_rule, **size)
    return DemoReflector(demos_alone, **size)
