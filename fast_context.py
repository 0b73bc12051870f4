"""
fast_context.py: the fast weights. A GEPA-style reflective prompt optimizer over a *population* of
contexts, always evaluated with the current policy. It never updates weights (no torch, no model),
and it does not know which reflector writes the proposals (they live in reflectors.py).

    from fast_context import init_state, run_round, frontier_prompts, best_prompt, optimize
    from world.reflectors import make_reflector
    reflect = make_reflector("edit", max_tokens=48, count_tokens=word_count)
    state = init_state(task.seed_prompt, task.pareto, task.train, evaluate)  # seed scored on D_p
    run_round(state, evaluate, num_proposals=4, reflector=reflect)  # FST: every T RL steps
    set_data(state, new_pareto, new_train)   # a schedule: GEPA's data moved with the stream
    frontier_prompts(state)   # [(prompt, count)]: draw per RL problem with weight = count
    optimize(state, evaluate, reflect, max_rollouts=2000)          # context-only baseline

Contracts (plain callables, so this file knows nothing about models or tasks objects):
  evaluate(context, problems) -> [(reward, output, feedback)]: one rollout of the CURRENT model per
      problem with `context` as the prompt, scored by tasks.score. One problem = one rollout.
  evaluate.many(contexts, problems) -> [[(reward, output, feedback)] per context]: optional. When
      the callable has it, a round's re-score of the frontier runs as one call (on a GPU, one
      generate for every candidate instead of one per candidate: decoding is launch-bound). It must
      give what evaluate gives context by context.
  reflector(current_prompt, records) -> str: a new prompt. records = [{"inputs": "in: 3 8 1 5",
      "outputs": "<model output>", "feedback": "wrong at positions 2; expected: 6 1 4 8"}], strings
      only (make_records builds them). A reflector that raises any Exception, or returns an empty /
      too long / unchanged / duplicate prompt, is a rejected proposal: logged in state.events and
      in the round summary's "invalid" list, never a crash. The one exception: ReflectorError
      (a reflector that cannot work at all, e.g. an endpoint that is down) goes through, so the
      caller can stop the run instead of spending its budget on proposals that cannot come.

The algorithm (GEPA, Agrawal et al. 2025, in its default configuration, without merge):
  1. Score the seed prompt on the Pareto set D_p. For every instance of D_p keep the best score
     any candidate reached there and every candidate reaching it: that instance's front.
  2. An iteration draws a parent among the non-dominated candidates, with probability proportional
     to the number of instance fronts it is on.
  3. It runs the parent on the next minibatch of b train problems; if every reward is perfect there
     is nothing to learn, and the iteration is skipped.
  4. Otherwise the reflector reads the minibatch records and proposes a child prompt, which runs on
     the same minibatch. The child is accepted only on a strict gain of the reward sum over the
     parent's; an accepted child is scored on D_p and joins the pool and the fronts.
Cost: 2b rollouts per iteration (+|D_p| if accepted, only b if skipped or invalid).

Design choices and why:
- Rounds (FST): scores measured under older weights go stale, so run_round first re-scores the
  frontier candidates with the current policy (|frontier| x |D_p|) and rebuilds the fronts from
  candidates scored this round only; older off-frontier candidates stay in the pool as history but
  no longer compete. rescore=False skips this for a round right after init_state (same weights,
  nothing stale). With run_round(pool=P) the whole pool is re-scored instead (the seed and the
  P - 1 best others, pool_members): a prompt that lost under older weights can win again, which a
  frontier-only re-score never allows. run_round(pareto=...) gives the round its own D_p (the
  paper scores candidates on the problems of the next T RL batches); a new D_p is always re-scored.
- Dominance: y is dominated if another candidate's set of instance fronts strictly contains y's
  (pruned one at a time, weakest mean first, as GEPA iterates). GEPA's own rule also drops y when
  its fronts are covered jointly by several others, or by a twin; keeping those = more prompt
  diversity.
- Acceptance: child sum > parent sum + 1e-9 (float round-off is no gain). A proposal equal to a
  candidate already scored this round is rejected before any child rollout.
- optimize() checks the budget at the top of each iteration (like GEPA), so it overshoots
  max_rollouts by at most one iteration: 2b + |D_p| - 1 rollouts.
- best_prompt(): best mean on D_p among frontier candidates; ties: fewest tokens, then earliest.
- Minibatches: one shuffle per epoch, padded to a multiple of b with that epoch's first ids.
- count_tokens: whitespace words by default (word_count); a run passes tasks.token_counter(enc),
  its tokenizer's tokens.
"""

import copy
import random
from collections import namedtuple
from dataclasses import dataclass, field

from world.tasks import problem_text

SCORE_TOL = 1e-9  # scores this close are equal: float round-off is no gain


class ReflectorError(Exception):
    """A reflector that cannot work at all (its endpoint is unreachable, refuses the request, or
    failed every call for rounds): not a rejected proposal but a reason to stop. One line."""


def word_count(text):
    return len(text.split())


# -----------------------------------------------------------------------------
# state

@dataclass
class GEPAState:
    # D_p: Problems every accepted candidate is scored on
    pareto: list
    train: list                                      # Problems the minibatches are drawn from
    candidates: list = field(default_factory=list)   # prompt texts; index 0 is the seed
    parents: list = field(default_factory=list)      # parents[k] = [parent index] ([] for the seed)
    # scores[k][v] = reward of candidate k on pareto[v]
    scores: list = field(default_factory=list)
    score_round: list = field(default_factory=list)  # round in which scores[k] was measured
    # front_score[v] = best score on instance v (this round)
    front_score: list = field(default_factory=list)
    # front_sets[v] = set of candidates reaching it (ties kept)
    front_sets: list = field(default_factory=list)
    # policy version: +1 per run_round that re-scores
    round: int = 0
    iteration: int = 0                               # gepa_iteration calls so far
    minibatch_size: int = 3
    order: list = field(default_factory=list)        # this epoch's shuffled train ids
    pos: int = 0                                     # next position in `order`
    epoch: int = 0
    rollouts: int = 0                                # exact number of problems evaluated so far
    max_context_tokens: int = 48
    count_tokens: object = word_count                # text -> int
    rng: random.Random = field(default_factory=random.Random)
    # dicts: accepted / rejected / skipped / invalid / rescore
    events: list = field(default_factory=list)


def _evaluate(state, evaluate, context, problems, results=None):
    """Run the policy on `problems` with `context` (or take its `results`, already run); count the
    rollouts; -> (rewards, records)."""
    results = list(evaluate(context, problems) if results is None else results)
    if len(results) != len(problems):
        raise ValueError(f"evaluate returned {len(results)} results for {len(problems)} problems")
    state.rollouts += len(problems)
    rewards = [float(r) for r, _, _ in results]
    return rewards, make_records(problems, results)


def make_records(problems, results):
    """Problems and their evaluate() results -> the reflector's records (strings only)."""
    return [{"inputs": problem_text(p), "outputs": str(o), "feedback": str(f)}
            for p, (_, o, f) in zip(problems, results)]


def rebuild_frontier(state):
    """Per-instance fronts over the candidates scored in the current round (stale ones don't
    compete)."""
    live = [k for k in range(len(state.candidates)) if state.score_round[k] == state.round]
    state.front_score, state.front_sets = [], []
    for v in range(len(state.pareto)):
        best = max(state.scores[k][v] for k in live)
        state.front_score.append(best)
        state.front_sets.append({k for k in live if state.scores[k][v] >= best - SCORE_TOL})


def add_candidate(state, evaluate, prompt, parents):
    """Score `prompt` on D_p (|D_p| rollouts), append it to the pool, update the fronts -> its
    index."""
    rewards, _ = _evaluate(state, evaluate, prompt, state.pareto)
    state.candidates.append(prompt)
    state.parents.append(list(parents))
    state.scores.append(rewards)
    state.score_round.append(state.round)
    rebuild_frontier(state)
    return len(state.candidates) - 1


def init_state(seed_prompt, pareto, train, evaluate, seed=0, minibatch_size=3,
               max_context_tokens=48, count_tokens=None):
    """A fresh pool holding the seed prompt, scored on D_p with the current policy (|D_p|
    rollouts)."""
    if not pareto or not train or minibatch_size < 1:
        raise ValueError(f"need non-empty pareto and train sets and minibatch_size >= 1 "
                         f"(got {minibatch_size})")
    state = GEPAState(pareto=list(pareto), train=list(train), minibatch_size=minibatch_size,
                      max_context_tokens=max_context_tokens,
                      count_tokens=count_tokens or word_count, rng=random.Random(seed))
    add_candidate(state, evaluate, seed_prompt, [])
    return state


def start(seed_prompt, pareto, train, evaluate, reflector, seed, minibatch_size, max_tokens,
          count_tokens, saved=None, first_budget=None):
    """GEPA at a run's start -> GEPAState: from `saved` (state_dict) on the given data, or fresh:
    the seed prompt scored on D_p with the current weights, then, with first_budget (the sequential
    control), GEPA on the frozen weights to that many rollouts before any RL."""
    if saved is not None:
        return load_state_dict(saved, pareto, train, count_tokens)
    state = init_state(seed_prompt, pareto, train, evaluate, seed=seed,
                       minibatch_size=minibatch_size, max_context_tokens=max_tokens,
                       count_tokens=count_tokens)
    if first_budget:
        optimize(state, evaluate, reflector, first_budget)
    return state


def set_data(state, pareto, train):
    """New data for GEPA (a schedule's window moved): D_p and the minibatch pool are replaced and
    the next minibatch starts a fresh epoch over the new pool. The fronts keep their old scores
    until the next round's re-score (run_round with rescore=True)."""
    state.pareto, state.train = list(pareto), list(train)
    state.order, state.pos = [], 0


def slide_data(state, window, n_pareto):
    """Schedules: before a round, D_p becomes the stream's last n_pareto problems and the
    minibatches come from the rest of the `window` (None: no schedule). Nobody tells GEPA about a
    task switch: its data simply moves with the stream. -> True if it moved (re-score the
    frontier)."""
    if window is None or len(window) <= n_pareto:
        return False
    set_data(state, window[-n_pareto:], window[:-n_pareto])
    return True


def _mean(xs):
    return sum(xs) / len(xs)


def nondominated(state):
    """Candidates on at least one instance front, minus the dominated ones (sorted indices)."""
    fronts = {}  # candidate -> set of instances whose front it is on
    for v, s in enumerate(state.front_sets):
        for k in s:
            fronts.setdefault(k, set()).add(v)
    # GEPA visits the weakest first
    alive = sorted(fronts, key=lambda k: (_mean(state.scores[k]), k))
    removed = True
    while removed:  # remove one dominated candidate at a time until none is left
        removed = False
        for y in alive:
            if any(fronts[y] < fronts[z] for z in alive if z != y):  # `<` on sets: strict subset
                alive.remove(y)
                removed = True
                break
    return sorted(alive)


def front_counts(state):
    """{candidate: number of instance fronts it is on} for the non-dominated candidates."""
    return {k: sum(k in s for s in state.front_sets) for k in nondominated(state)}


def select_parent(state):
    counts = front_counts(state)
    return state.rng.choices(list(counts), weights=list(counts.values()))[0]


def next_minibatch(state):
    b = state.minibatch_size
    if state.pos + b > len(state.order):  # new epoch: reshuffle, pad to a multiple of b
        order = list(range(len(state.train)))
        state.rng.shuffle(order)
        order += [order[i % len(order)] for i in range((-len(order)) % b)]
        state.order, state.pos, state.epoch = order, 0, state.epoch + 1
    ids = state.order[state.pos:state.pos + b]
    state.pos += b
    return [state.train[i] for i in ids]


# -----------------------------------------------------------------------------
# one iteration, rounds, the budget loop

def _log(state, event, kind, reason="", proposal=None):
    event.update(kind=kind, reason=reason, rollouts=state.rollouts)
    if proposal is not None:
        event["proposal"] = proposal if len(proposal) <= 120 else proposal[:117] + "..."
    state.events.append(event)
    return event


def _proposal_problem(state, parent, text):
    """Why a proposal is invalid, or '' if it may be evaluated."""
    if not isinstance(text, str):
        return f"reflector returned {type(text).__name__}, not str"
    if not text:
        return "empty proposal"
    n = state.count_tokens(text)
    if n > state.max_context_tokens:
        return f"too long: {n} tokens > {state.max_context_tokens}"
    if text == state.candidates[parent]:
        return "unchanged: identical to the parent"
    for k, c in enumerate(state.candidates):
        if c == text and state.score_round[k] == state.round:
            return f"duplicate of candidate {k}"
    return ""


def gepa_iteration(state, evaluate, reflector):
    """One reflective mutation (select, minibatch, reflect, accept). Returns the logged event
    dict."""
    parent = select_parent(state)
    batch = next_minibatch(state)
    event = {"iter": state.iteration, "round": state.round, "parent": parent, "child": None}
    state.iteration += 1
    rewards, records = _evaluate(state, evaluate, state.candidates[parent], batch)  # b rollouts
    event["parent_sum"] = sum(rewards)
    if all(r >= 1.0 for r in rewards):  # nothing to learn from a perfect minibatch
        return _log(state, event, "skipped", "parent perfect on the minibatch")
    try:
        text = reflector(state.candidates[parent], records)
    except ReflectorError:  # it cannot work at all: the caller stops the run
        raise
    except Exception as e:  # a broken reflector costs a proposal, never the run
        return _log(state, event, "invalid", f"reflector raised {type(e).__name__}: {e}")
    text = text.strip() if isinstance(text, str) else text
    problem = _proposal_problem(state, parent, text)
    if problem:
        return _log(state, event, "invalid", problem, text if isinstance(text, str) else None)
    child_rewards, _ = _evaluate(state, evaluate, text, batch)  # b rollouts, same minibatch
    event["child_sum"] = sum(child_rewards)
    if event["child_sum"] <= event["parent_sum"] + SCORE_TOL:
        return _log(state, event, "rejected", "no strict gain on the minibatch", text)
    event["child"] = add_candidate(state, evaluate, text, [parent])  # |D_p| rollouts
    event["child_mean"] = _mean(state.scores[event["child"]])
    return _log(state, event, "accepted", "", text)


def pool_members(state, max_pool):
    """The candidates a whole-pool re-score keeps: the seed and the max_pool - 1 others with the
    best mean at their last scoring (ties: the newer). The rest leave the pool for good."""
    others = sorted(range(1, len(state.candidates)),
                    key=lambda k: (-_mean(state.scores[k]), -k))[:max_pool - 1]
    return sorted([0] + others)


def rescore_frontier(state, evaluate, which=None):
    """New weights: re-score every candidate on some instance front on D_p (or the candidates
    `which`, e.g. the whole pool), then rebuild the fronts from them."""
    on_front = sorted(set().union(*state.front_sets)) if which is None else list(which)
    state.round += 1
    contexts = [state.candidates[k] for k in on_front]
    many = getattr(evaluate, "many", None)  # optional: every context in one call (one generate)
    results = (many(contexts, state.pareto) if many is not None
               else [None] * len(on_front))
    for k, context, res in zip(on_front, contexts, results):
        state.scores[k], _ = _evaluate(state, evaluate, context, state.pareto, res)
        state.score_round[k] = state.round
    rebuild_frontier(state)
    return _log(state, {"round": state.round, "rescored": on_front}, "rescore")


def run_round(state, evaluate, num_proposals, reflector, rescore=True, pool=0, pareto=None):
    """One FST round: re-score the frontier with the current policy, then num_proposals iterations
    (a skipped or invalid iteration counts as a proposal). Returns a summary dict.
    pool > 0: re-score the whole pool instead (at most `pool` candidates, pool_members), so a
    prompt that lost on earlier weights can come back. `pareto`: this round's D_p (e.g. problems of
    the next RL batches, as the paper's round scores candidates); a new D_p is always re-scored."""
    start = state.rollouts
    if pareto is not None:
        state.pareto = list(pareto)
    if pool or pareto is not None:
        rescore_frontier(state, evaluate, pool_members(state, pool or len(state.candidates)))
    elif rescore:
        rescore_frontier(state, evaluate)
    events = [gepa_iteration(state, evaluate, reflector) for _ in range(num_proposals)]
    best = best_candidate(state)
    return {"round": state.round, "proposals": num_proposals,
            "accepted": sum(e["kind"] == "accepted" for e in events),
            # rejected unevaluated
            "invalid": [e["reason"] for e in events if e["kind"] == "invalid"],
            "rollouts": state.rollouts - start, "frontier": len(nondominated(state)),
            "best_mean": _mean(state.scores[best]), "best_prompt": state.candidates[best]}


def optimize(state, evaluate, reflector, max_rollouts):
    """Context-only baseline: iterate until state.rollouts >= max_rollouts (the check is at the top
    of each iteration, so the last one may overshoot by at most 2b + |D_p| rollouts)."""
    while state.rollouts < max_rollouts:
        gepa_iteration(state, evaluate, reflector)
    return state


def frontier_prompts(state):
    """[(prompt, count)]: non-dominated frontier prompts and how many instance fronts each is on."""
    return [(state.candidates[k], c) for k, c in front_counts(state).items()]


# one prompt drawn for a problem: the context, its share of the G rollouts, the problem's index
Draw = namedtuple("Draw", "context rollouts problem")


def draw_prompts(state, n_problems, m, group_size, rng):
    """FST: m frontier prompts per problem, drawn (with replacement) with weight = the D_p
    instances each covers; the problem's group_size rollouts are split among them. -> [Draw]"""
    front = frontier_prompts(state)
    split = [group_size // m + (j < group_size % m) for j in range(m)]
    return [Draw(ctx, split[j], i) for i in range(n_problems)
            for j, ctx in enumerate(rng.choices([p for p, _ in front],
                                                weights=[c for _, c in front], k=m))]


def best_candidate(state):
    on_front = set().union(*state.front_sets)
    return min(on_front, key=lambda k: (-_mean(state.scores[k]),
                                        state.count_tokens(state.candidates[k]), k))


def best_prompt(state):
    """Frontier candidate with the best mean on D_p (ties: fewest tokens, then earliest)."""
    return state.candidates[best_candidate(state)]


def state_dict(state):
    """Plain python (lists, str, numbers) for checkpoints; the Problems are not stored."""
    keys = ("candidates", "parents", "scores", "score_round", "round", "iteration",
            "minibatch_size", "order", "pos", "epoch", "rollouts", "max_context_tokens", "events")
    d = {k: copy.deepcopy(getattr(state, k)) for k in keys}  # a snapshot, not live references
    version, internal, gauss = state.rng.getstate()
    return {**d, "rng": [version, list(internal), gauss]}


def load_state_dict(d, pareto, train, count_tokens=None):
    """Inverse of state_dict, given the same Problems (task.pareto, task.train); fronts are
    recomputed."""
    state = GEPAState(pareto=list(pareto), train=list(train),
                      count_tokens=count_tokens or word_count)
    for k, v in d.items():
        if k != "rng":
            setattr(state, k, v)
    state.rng.setstate((d["rng"][0], tuple(d["rng"][1]), d["rng"][2]))
    rebuild_frontier(state)
    return state
