"""
episodes.py: the one record of sampled completions that flows through fastslow, and the one function
that makes it.

    ro = sample_rollouts(model, enc, contexts, problems, num_samples=8, temperature=1.0, seed=0)
    ro.rewards, ro.texts, ro.feedback          # per row: scored by the world's verifier
    ro.tokens, ro.mask, ro.logp                # (R, L) what the sampler emitted, and its log-probs
    ro.prompts, ro.group                       # per row: its prompt, its problem's id

Every consumer reads the same record (like GRPO-Zero's Episode): GEPA's evaluate (one greedy
rollout per problem -> (reward, output, feedback)), the RL step (rewards -> one advantage per
problem, tokens + mask + prompts -> the trainer's re-score, logp -> the sampler's log-probs), and
the accuracy measurements.

Row order is prompt-major, as rollout.generate lays it out: prompt i owns num_samples[i] consecutive
rows. `group[r]` is the id of the problem row r answers (by default the prompt's index): an FST step
puts several prompts of one problem into one group, so one problem may own rows of several prompts.
"""

from dataclasses import dataclass

import torch

import rollout
import tasks


@dataclass
class Rollouts:
    tokens: torch.Tensor    # (R, L) sampled token ids, pad after each row's eos
    mask: torch.Tensor      # (R, L) True on real completion tokens (eos included)
    logp: torch.Tensor      # (R, L) the sampler's log-probs of those tokens (0 where mask is False)
    prompts: list           # R token lists: the prompt each row was sampled from
    contexts: list          # R strings: the context (fast weights) inside that prompt
    group: list             # R ints: the problem each row answers (the advantage baseline's group)
    texts: list             # R decoded completions
    rewards: list           # R floats in [0, 1] from tasks.score
    feedback: list          # R strings: the verifier's textual feedback

    def __len__(self):
        return len(self.texts)

    def results(self):
        """GEPA's view: [(reward, output, feedback)] per row."""
        return list(zip(self.rewards, self.texts, self.feedback))


def expand(items, sizes):
    """One entry per prompt -> one per row (prompt i repeated sizes[i] times)."""
    return [x for x, n in zip(items, sizes) for _ in range(n)]


def sample_rollouts(model, enc, contexts, problems, num_samples=1, temperature=1.0, seed=0,
                    max_new_tokens=12, group=None):
    """contexts[i] + problems[i] is prompt i; num_samples an int or one int per prompt; group[i]
    the id of prompt i's problem (default i). Samples, decodes and scores -> Rollouts."""
    special = tasks.special_ids(enc)
    prompts = [tasks.encode_prompt(enc, c, p) for c, p in zip(contexts, problems)]
    sizes = [num_samples] * len(prompts) if isinstance(num_samples, int) else list(num_samples)
    was_training = model.training
    model.eval()
    tokens, mask, logp = rollout.generate(model, prompts, num_samples, max_new_tokens,
                                          temperature=temperature, seed=seed,
                                          eos_id=special["<|eos|>"], pad_id=special["<|pad|>"])
    model.train(was_training)
    host_tokens, host_mask = tokens.cpu(), mask.cpu()  # one copy to the host, not one per row
    texts = [tasks.decode_completion(enc, row[m].tolist())
             for row, m in zip(host_tokens, host_mask)]
    scored = [tasks.score(p, t) for p, t in zip(expand(problems, sizes), texts)]
    group = group or range(len(prompts))
    return Rollouts(tokens=tokens, mask=mask, logp=logp, prompts=expand(prompts, sizes),
                    contexts=expand(contexts, sizes), group=expand(group, sizes), texts=texts,
                    rewards=[r for r, _ in scored], feedback=[f for _, f in scored])


def greedy_evaluate(model, enc, max_new_tokens=12, batched=False):
    """The policy as GEPA sees it: (context, problems) -> [(reward, output, feedback)], one greedy
    rollout per problem (deterministic, so a prompt's score does not depend on sampling luck).
    batched=True adds evaluate.many(contexts, problems): every (context, problem) pair in one
    generate call, the same greedy completions up to float round-off in the batched matmuls."""
    def evaluate(context, problems):
        return sample_rollouts(model, enc, [context] * len(problems), problems, 1, 0.0, 0,
                               max_new_tokens).results()

    def many(contexts, problems):
        n = len(problems)
        res = sample_rollouts(model, enc, [c for c in contexts for _ in range(n)],
                              list(problems) * len(contexts), 1, 0.0, 0, max_new_tokens).results()
        return [res[i * n:(i + 1) * n] for i in range(len(contexts))]  # context-major rows

    if batched:
        evaluate.many = many
    return evaluate
