"""
train.py: the training side of fastslow: pretraining, the one FST loop and its baselines, the suite.

    python train.py                                          # the whole reproduction (see README), then the report
    python train.py pretrain --preset tiny                   # base model -> runs/tiny/base/{model.pt,metrics.json}
    python train.py run --method rl|context|fst --task hidden-rule [--steps N --seed S --out DIR]
    python train.py run --method fst --schedule 'hidden-rule@150;cipher@150'      # task switches, untold
    python train.py run --method rl --task hidden-rule-2 --init runs/tiny/hidden-rule/fst/s0/model.pt

Pretraining is plain supervised next-token training on the world's pretraining distribution
(tasks.pretrain_example): a context (mostly an instruction), problems, and their answers, loss on the
answer tokens only, so all capacity goes into *executing rules stated in context*: the "pretrained
LLM" of the paper, a general instruction follower. Greedy exact match is measured with one
teacher-forced forward pass: greedy decoding reproduces the answer exactly iff the argmax at every
answer position (eos included) equals the answer token given the correct prefix.

The run loop (`run`) is one `for step` loop shared by the three methods:
  rl       the seed prompt only; every step: G rollouts per problem, group advantages, one update
  context  GEPA on frozen weights; a step is one GEPA round of K proposals, until a rollout budget
  fst      both: a GEPA round every T steps with the current weights; each problem's G rollouts are
           split over m prompts drawn from the frontier (weighted by the instances each covers); ONE
           advantage baseline per problem across all of them; each rollout is trained conditioned on
           the prompt it actually used. Evaluation deploys the frontier prompt with the best D_p mean.
Every run logs one JSON line per step (log.jsonl), a summary.json and its final model.pt. `rollouts`
counts every generated rollout, GEPA's evaluations included (evaluation on val is not counted).

Presets are dataclass instances in PRESETS: every number a run depends on is there.
"""

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, asdict, replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

import eval as ev
import fast_context as fc
import rl
import rollout
import tasks
from model import GPT, GPTConfig, CheckpointError, save_checkpoint, load_checkpoint


# -----------------------------------------------------------------------------
# presets: every number a run depends on, in one place

@dataclass
class Preset:
    name: str
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    # pretraining
    pretrain_steps: int = 2200
    pretrain_batch: int = 64      # sequences per step (x pack problems each)
    pretrain_lr: float = 3e-3
    pretrain_warmup: int = 100
    pretrain_eval_every: int = 100000  # no mid-run eval: it costs wall time the budget lacks
    pack: int = 3                 # problems per pretraining sequence (they share one context)
    threads: int = 2
    # RL (slow weights)
    steps: int = 150              # RL steps per run (per stage for schedules)
    batch_problems: int = 16      # problems per RL step
    group_size: int = 8           # rollouts per problem (G)
    lr: float = 2e-4
    temperature: float = 1.0
    max_new_tokens: int = 12
    inner_steps: int = 1
    loss_type: str = "cispo"
    adv_scale: str = "group"
    beta: float = 0.0             # optional k3 KL penalty to the initial weights (0: measured, not optimized)
    eval_every: int = 5
    eval_samples: int = 4         # mean@4 on the val split
    # GEPA (fast weights)
    gepa_every: int = 6           # T: a GEPA round every T RL steps
    gepa_proposals: int = 4       # K proposals per round
    prompts_per_problem: int = 2  # m frontier prompts share each problem's G rollouts
    minibatch: int = 3
    context_tokens: int = 48      # token budget of a context
    context_budget: int = 600     # rollouts for the context-only baseline
    n_val: int = 64               # val problems per task
    n_pareto: int = 16            # |D_p|, GEPA's Pareto set


PRESETS = {
    "tiny": Preset("tiny"),
    "gpu": Preset("gpu", n_layer=6, n_head=6, n_embd=384, pretrain_steps=8000, pretrain_batch=256,
                  pretrain_lr=1e-3, pretrain_warmup=200, threads=8),
    # micro: the end-to-end smoke test's preset (seconds, not minutes; its numbers mean nothing)
    "micro": Preset("micro", n_layer=2, n_head=2, n_embd=64, pretrain_steps=30, pretrain_batch=16,
                    pretrain_eval_every=1000, steps=4, batch_problems=4, group_size=4, eval_every=2,
                    gepa_every=2, gepa_proposals=2, context_budget=60, n_val=8, n_pareto=4, max_new_tokens=8),
}


def pick_device(flag):
    if flag != "auto":
        return flag
    return "cuda" if torch.cuda.is_available() else "cpu"


def die(msg):
    """Errors for users: one line, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


# -----------------------------------------------------------------------------
# batches: contexts + problems -> padded token tensors with an answer-only loss mask

def make_batch(enc, examples, device):
    """examples: list of (context, [Problem, ...]) -> x (B, T), y (B, T) with -1 outside the answers.

    Several problems may share one context (packing): each is appended as `\nin: ..\nout:` + answer +
    <|eos|>, so the context's tokens are paid once for several answers. A single problem gives exactly
    the sequence the downstream tasks use.
    """
    pad = enc.encode_single_token("<|pad|>")
    seqs, targets = [], []
    for ctx, probs in examples:
        probs = probs if isinstance(probs, (list, tuple)) and not isinstance(probs, tasks.Problem) else [probs]
        seq = tasks.encode_prompt(enc, ctx, probs[0])
        tgt = [-1] * len(seq)
        for i, p in enumerate(probs):
            if i:
                more = enc.encode_ordinary(f"\nin: {tasks.digits_text(p.inputs)}\nout:")
                seq += more
                tgt += [-1] * len(more)
            ans = tasks.encode_answer(enc, p)
            seq += ans
            tgt += ans
        seqs.append(seq)
        targets.append(tgt[1:])  # position t predicts token t + 1
    T = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), T), pad, dtype=torch.long)
    y = torch.full((len(seqs), T), -1, dtype=torch.long)
    for i, (s, t) in enumerate(zip(seqs, targets)):
        x[i, :len(s) - 1] = torch.tensor(s[:-1])
        y[i, :len(t)] = torch.tensor(t)
    return x.to(device), y.to(device)


@torch.no_grad()
def greedy_exact(model, enc, examples, device, batch=256):
    """Per-example greedy exact match (teacher-forced argmax check, see the docstring at the top)."""
    out = []
    for i in range(0, len(examples), batch):
        x, y = make_batch(enc, examples[i:i + batch], device)
        pred = model(x).argmax(-1)  # (B, T)
        ok = ((pred == y) | (y < 0)).all(dim=1)
        out.extend(ok.tolist())
    return out


def eval_base(model, enc, device, exclude):
    """general_acc, per-op and per-chain-length accuracy, held-out chain accuracy, tasks with/without rule."""
    model.eval()
    general = tasks.general_eval_set(exclude=exclude)
    ok = greedy_exact(model, enc, [(c, p) for c, p, _ in general], device)
    by_op, by_len = defaultdict(list), defaultdict(list)
    for (c, p, rule), o in zip(general, ok):
        by_len[len(rule)].append(o)
        if len(rule) == 1:
            by_op[rule[0].name].append(o)
    held = tasks.heldout_eval_set()
    held_ok = greedy_exact(model, enc, [(c, p) for c, p, _ in held], device)
    m = {"general_acc": sum(ok) / len(ok),
         "acc_by_op": {k: sum(v) / len(v) for k, v in sorted(by_op.items())},
         "acc_by_chain_len": {str(k): sum(v) / len(v) for k, v in sorted(by_len.items())},
         "heldout_chain_acc": sum(held_ok) / len(held_ok),
         "tasks": {}}
    for name in tasks.NAMED_TASKS:
        t = tasks.make_task(name)
        seed_ok = greedy_exact(model, enc, [(t.seed_prompt, p) for p in t.val], device)
        rule_ok = greedy_exact(model, enc, [(t.instruction, p) for p in t.val], device)
        m["tasks"][name] = {"seed_prompt_acc": sum(seed_ok) / len(seed_ok), "instruction_acc": sum(rule_ok) / len(rule_ok)}
    model.train()
    return m


# -----------------------------------------------------------------------------
# pretraining

def pretrain(preset, out_dir, device, seed=0, log=print):
    """Train the base model; resumes from out_dir/ckpt.pt if a run was killed. -> metrics dict."""
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    enc = tasks.build_tokenizer(seed=seed)
    vocab = (enc.n_vocab + 63) // 64 * 64  # round up: a friendlier matmul shape, unused rows cost nothing
    cfg = GPTConfig(vocab_size=vocab, block_size=preset.block_size, n_layer=preset.n_layer,
                    n_head=preset.n_head, n_embd=preset.n_embd)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.0)
    start, tokens, wall0 = 0, 0, 0.0
    ck_path = os.path.join(out_dir, "ckpt.pt")
    if os.path.exists(ck_path):  # resume: weights, optimizer, step; the data stream is a function of the step
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"])
        start, tokens, wall0 = ck["step"], ck["tokens"], ck["wall_s"]
        log(f"resuming pretraining at step {start}")
    exclude = tasks.TASK_RULES
    t0 = time.time() - wall0
    model.train()
    pbar = tqdm(range(start, preset.pretrain_steps), desc="pretrain", initial=start, total=preset.pretrain_steps)
    for step in pbar:
        lr = preset.pretrain_lr * min(1.0, (step + 1) / preset.pretrain_warmup)  # warmup, then cosine to 10%
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / preset.pretrain_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = random.Random(seed * 1_000_003 + step)
        x, y = make_batch(enc, [tasks.pretrain_example(rng, exclude, preset.pack) for _ in range(preset.pretrain_batch)], device)
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += x.numel()
        if step % 20 == 0:
            pbar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
        if (step + 1) % preset.pretrain_eval_every == 0 and step + 1 < preset.pretrain_steps:
            m = eval_base(model, enc, device, exclude)
            log(f"step {step + 1} loss {loss.item():.3f} general_acc {m['general_acc']:.3f} "
                f"by_len {m['acc_by_chain_len']} by_op {m['acc_by_op']}")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                        "tokens": tokens, "wall_s": time.time() - t0}, ck_path)
    m = eval_base(model, enc, device, exclude)
    m.update(params=model.num_params(), tokens=tokens, steps=preset.pretrain_steps, wall_s=time.time() - t0,
             preset=asdict(preset), seed=seed)
    save_checkpoint(os.path.join(out_dir, "model.pt"), model, {"tokenizer": tasks.tokenizer_state(enc), "metrics": m})
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(m, f, indent=2)
    if os.path.exists(ck_path):
        os.remove(ck_path)
    return m


def load_base(path, device):
    """-> (model, tokenizer) from a checkpoint; one-line error if unusable."""
    try:
        model, extra = load_checkpoint(path, device)
    except CheckpointError as e:
        die(str(e))
    if "tokenizer" not in extra:
        die(f"{path} has no tokenizer inside; re-create it with `python train.py pretrain`")
    return model, tasks.tokenizer_from_state(extra["tokenizer"])


# -----------------------------------------------------------------------------
# the FST loop and its baselines: one loop, three methods
#   rl       seed prompt only, weights trained            (no GEPA rounds)
#   context  GEPA on the frozen weights                   (no weight updates; a step = one GEPA round)
#   fst      both: a GEPA round every T steps, RL groups drawn over the frontier prompts

def parse_schedule(spec, steps):
    """'A@N;B@N' -> [(task_spec, N), ...]; a plain task spec runs `steps` steps."""
    stages = []
    for part in spec.split(";"):
        name, _, n = part.strip().rpartition("@") if "@" in part else (part.strip(), "", str(steps))
        if not name or not n.isdigit() or int(n) < 1:
            raise tasks.SpecError(f"bad schedule stage '{part}': write TASK@STEPS, stages separated by ';'")
        stages.append((name, int(n)))
    return stages


def make_policy(model, enc, preset):
    """The policy as GEPA sees it: (context, problems) -> [(reward, output, feedback)], one greedy rollout
    each (deterministic, so a prompt's score does not depend on sampling luck)."""
    def evaluate(context, problems):
        _, _, _, texts, _ = ev.sample_answers(model, enc, [context] * len(problems), problems, 1, 0.0,
                                              0, preset.max_new_tokens)
        return ev.score_texts(problems, texts, 1)
    return evaluate


def run(method, schedule, preset, init, out_dir, seed=0, reflector="rule", base=None, device="auto", log=print):
    """One training run from checkpoint `init`; writes out_dir/log.jsonl, summary.json and model.pt.
    `base` (default: init) is the model KL(pi_theta || pi_base) is measured against. -> summary dict."""
    assert method in ("rl", "context", "fst")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    model, enc = load_base(init, pick_device(device))
    device = model.wte.weight.device
    special = tasks.special_ids(enc)
    stages = [(tasks.make_task(spec, n_pareto=preset.n_pareto, n_val=preset.n_val), n) for spec, n in schedule]
    total_steps = sum(n for _, n in stages)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ref = copy.deepcopy(model).eval() if preset.beta > 0 else None     # KL-penalty reference: the initial weights
    base_model = load_base(base, device)[0].eval() if base and base != init else copy.deepcopy(model).eval()
    policy = make_policy(model, enc, preset)
    count_tokens = lambda text: len(enc.encode_ordinary(text))
    make_reflector = {"rule": fc.RuleReflector, "demo": fc.DemoReflector}[reflector]
    reflect = make_reflector(max_tokens=preset.context_tokens, count_tokens=count_tokens)
    stage_at = [k for k, (_, n) in enumerate(stages) for _ in range(n)]  # step -> index of its stage
    task = stages[0][0]
    gepa = None
    if method != "rl":
        gepa = fc.init_state(task.seed_prompt, task.pareto, task.train, policy, seed=seed,
                             minibatch_size=preset.minibatch, max_context_tokens=preset.context_tokens,
                             count_tokens=count_tokens)
    rl_rollouts, t0, best_val, rows = 0, time.time(), -1.0, []
    logf = open(os.path.join(out_dir, "log.jsonl"), "w")
    pbar = tqdm(range(total_steps), desc=f"{method} {stages[0][0].name}", leave=False)
    for step in pbar:
        row = {"step": step}
        # --- the data stream moves to the next stage: nobody tells the learner, only its data changes
        fresh = False  # frontier scores already measured with the current weights this step
        if step > 0 and stage_at[step] != stage_at[step - 1]:
            task = stages[stage_at[step]][0]
            if gepa is not None:  # GEPA's data now comes from the new stream: re-score the frontier on it
                gepa.pareto, gepa.train, gepa.order, gepa.pos = list(task.pareto), list(task.train), [], 0
                fc.rescore_frontier(gepa, policy)
                fresh = True
        row["task"] = task.name
        # --- fast weights: a GEPA round with the current policy
        if gepa is not None and (method == "context" or step % preset.gepa_every == 0):
            model.eval()
            r = fc.run_round(gepa, policy, preset.gepa_proposals, reflect, rescore=step > 0 and method == "fst" and not fresh)
            row.update(gepa_accepted=r["accepted"], frontier=r["frontier"], prompt=r["best_prompt"])
        # --- slow weights: one RL step on fresh rollouts
        if method != "context":
            model.train()
            problems = rng.sample(task.train, preset.batch_problems)
            if gepa is None:
                contexts, sizes = [task.seed_prompt] * len(problems), [preset.group_size] * len(problems)
                owner = list(range(len(problems)))
            else:  # m frontier prompts per problem, weighted by the instances each covers; G split among them
                front = fc.frontier_prompts(gepa)
                m = preset.prompts_per_problem
                split = [preset.group_size // m + (j < preset.group_size % m) for j in range(m)]
                contexts, sizes, owner = [], [], []
                for i in range(len(problems)):
                    for j, ctx in enumerate(rng.choices([p for p, _ in front], weights=[c for _, c in front], k=m)):
                        contexts.append(ctx); sizes.append(split[j]); owner.append(i)
            probs = [problems[i] for i in owner]
            prompts = [tasks.encode_prompt(enc, c, p) for c, p in zip(contexts, probs)]
            model.eval()  # sampling: no dropout anyway, but keep train/eval symmetric
            tokens, mask, samp_logp = rollout.generate(model, prompts, sizes, preset.max_new_tokens,
                                                       preset.temperature, seed=seed * 100_003 + step,
                                                       eos_id=special["<|eos|>"], pad_id=special["<|pad|>"])
            model.train()
            row_prompts = rollout.expand_prompts(prompts, sizes)
            row_problem = [o for o, n in zip(owner, sizes) for _ in range(n)]
            texts = ev.completion_texts(enc, tokens, mask)
            rewards = torch.tensor([tasks.score(problems[o], t)[0] for o, t in zip(row_problem, texts)])
            # one advantage baseline per problem, across all its rollouts whatever prompt they used
            adv = rl.group_advantages(rewards, torch.tensor(row_problem), scale=preset.adv_scale).to(device)
            rl_rollouts += len(texts)
            num_tokens = mask.sum()  # the whole optimizer step's token count, computed once
            old_logp = None
            for _ in range(preset.inner_steps):
                logp = rollout.completion_logprobs(model, row_prompts, tokens, mask, preset.temperature)  # (R, L)
                if old_logp is None:
                    old_logp = logp.detach()  # fresh rollouts: ratio exactly 1 on the first inner step
                loss, metrics = rl.policy_loss(logp, old_logp, adv, mask, preset.loss_type, num_tokens=num_tokens)
                if ref is not None:
                    ref_logp = rollout.completion_logprobs(ref, row_prompts, tokens, mask, preset.temperature).detach()
                    loss = loss + preset.beta * rl.masked_mean(rl.kl_k3(logp, ref_logp, mask), mask)
                if not torch.isfinite(loss):  # never let a bad batch corrupt the weights
                    row["skipped"] = "non-finite loss"
                    log(f"step {step}: non-finite loss, update skipped")
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
                opt.step()
            row.update(reward=float(rewards.mean()), loss=loss.item(), clip_frac=metrics["clip_frac"],
                       entropy=float(-(samp_logp * mask).sum() / mask.sum()), grad_norm=grad_norm,
                       zero_std=rl.zero_std_fraction(rewards, torch.tensor(row_problem)),
                       logp_gap=float(((old_logp - samp_logp.to(device)).abs() * mask).sum() / mask.sum()))
        # --- evaluation on the val split with the deployed prompt
        deployed = fc.best_prompt(gepa) if gepa is not None else task.seed_prompt
        row["rollouts"] = rl_rollouts + (gepa.rollouts if gepa is not None else 0)
        last = step == total_steps - 1 or (method == "context" and gepa.rollouts >= preset.context_budget)
        if step % preset.eval_every == 0 or last:
            acc, greedy = ev.task_accuracy(model, enc, deployed, task.val, preset.eval_samples, preset.temperature,
                                           seed=step, max_new_tokens=preset.max_new_tokens)
            kl = ev.kl_to_base(model, base_model, enc, deployed, task.val[:32], 2, preset.temperature, seed=step,
                               max_new_tokens=preset.max_new_tokens)
            row.update(val_acc=acc, val_greedy=greedy, kl=kl, prompt=deployed)
            best_val = max(best_val, acc)
            pbar.set_postfix(val=f"{acc:.2f}", rollouts=row["rollouts"])
        row["wall_s"] = time.time() - t0
        rows.append(row)
        logf.write(json.dumps(row) + "\n"); logf.flush()
        if last:
            break  # the context-only baseline stops at its rollout budget
    logf.close()
    final = [r for r in rows if "val_acc" in r][-1]
    summary = {"method": method, "schedule": [[t.spec, n] for t, n in stages], "final_val_acc": final["val_acc"],
               "final_val_greedy": final["val_greedy"], "best_val_acc": best_val, "steps": rows[-1]["step"] + 1,
               "rollouts": rows[-1]["rollouts"], "wall_s": time.time() - t0, "seed": seed, "init": init,
               "deployed_prompt": final["prompt"], "reflector": reflector, "config": asdict(preset)}
    save_checkpoint(os.path.join(out_dir, "model.pt"), model,
                    {"tokenizer": tasks.tokenizer_state(enc), "deployed_prompt": final["prompt"], "summary": summary})
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary



# -----------------------------------------------------------------------------
# the reproduction suite: every run the report needs, then the report

SUITE_TASKS = ["hidden-rule", "cipher", "long-lists"]
PLASTICITY_TASK = "hidden-rule-2"            # fresh RL on a second hidden rule, from three inits
CONTINUAL = ["hidden-rule", "cipher", "hidden-rule-2"]  # three stages, task-agnostic seed prompt


def suite(preset, root, seeds=1, device="auto", log=print):
    t0 = time.time()
    base = os.path.join(root, "base", "model.pt")
    if not os.path.exists(base):
        log("pretraining the base model")
        pretrain(preset, os.path.dirname(base), pick_device(device), log=log)
    for seed in range(seeds):
        for task in SUITE_TASKS:
            for method in ("rl", "context", "fst"):
                s = run(method, [(task, preset.steps)], preset, base, os.path.join(root, task, method, f"s{seed}"), seed,
                        device=device, log=log)
                log(f"{task:12s} {method:8s} seed {seed}: final val {s['final_val_acc']:.3f} best {s['best_val_acc']:.3f} "
                    f"rollouts {s['rollouts']} {s['wall_s']:.0f}s prompt={s['deployed_prompt']!r}")
        for init in ("base", "rl", "fst"):  # C5 plasticity
            path = base if init == "base" else os.path.join(root, SUITE_TASKS[0], init, f"s{seed}", "model.pt")
            s = run("rl", [(PLASTICITY_TASK, preset.steps)], preset, path, os.path.join(root, "plasticity", init, f"s{seed}"),
                    seed, base=base, device=device, log=log)
            log(f"plasticity from {init:4s} seed {seed}: final val {s['final_val_acc']:.3f} {s['wall_s']:.0f}s")
        for method in ("rl", "fst"):  # C6 continual
            sched = [(t, preset.steps) for t in CONTINUAL]
            s = run(method, sched, preset, base, os.path.join(root, "continual", method, f"s{seed}"), seed,
                    device=device, log=log)
            log(f"continual {method:4s} seed {seed}: final val {s['final_val_acc']:.3f} {s['wall_s']:.0f}s")
    results = ev.write_report(root, preset, seeds, time.time() - t0, SUITE_TASKS, PLASTICITY_TASK, CONTINUAL)
    log(f"report: {os.path.join(root, 'report.md')} ({time.time() - t0:.0f}s)")
    return results


# -----------------------------------------------------------------------------
# command line

def main(argv=None):
    ap = argparse.ArgumentParser(description="fastslow: Fast-Slow Training at small scale. With no command: "
                                 "the whole reproduction suite (pretrain if needed, all runs, the report).")
    def common(parser, default):  # the same flags before or after the subcommand
        parser.add_argument("--preset", default=default(None), help="tiny | gpu | micro (default: tiny on CPU, gpu on CUDA)")
        parser.add_argument("--device", default=default("auto"), help="auto | cpu | cuda")
        parser.add_argument("--seeds", type=int, default=default(1), help="suite: repeat every run with seeds 0..N-1")
    common(ap, lambda d: d)
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("pretrain", help="train the base model")
    common(p, lambda d: argparse.SUPPRESS)  # SUPPRESS: an absent flag keeps the top-level value
    p.add_argument("--out", default=None, help="output folder (default runs/<preset>/base)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the preset's)")
    r = sub.add_parser("run", help="one run: rl | context | fst on a task or a schedule")
    common(r, lambda d: argparse.SUPPRESS)
    # what to learn
    r.add_argument("--method", default="fst", choices=["rl", "context", "fst"])
    r.add_argument("--task", default="hidden-rule", help="hidden-rule | cipher | long-lists | hidden-rule-2 | 'rule:OP,OP'")
    r.add_argument("--schedule", default=None, help="continual: 'TASK@STEPS;TASK@STEPS;...' (overrides --task)")
    r.add_argument("--init", default=None, help="checkpoint to start from (default runs/<preset>/base/model.pt)")
    r.add_argument("--out", default=None, help="output folder (default runs/<preset>/<task>/<method>/s<seed>)")
    r.add_argument("--seed", type=int, default=0)
    # slow weights
    r.add_argument("--steps", type=int, default=None, help="RL steps (default: the preset's)")
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--inner-steps", type=int, default=None, help="optimizer steps per rollout batch")
    r.add_argument("--loss", default=None, choices=list(rl.LOSS_TYPES))
    r.add_argument("--beta", type=float, default=None, help="k3 KL penalty to the initial weights")
    # fast weights
    r.add_argument("--reflector", default="rule", choices=["rule", "demo"])
    r.add_argument("--gepa-every", type=int, default=None, help="T: a GEPA round every T RL steps")
    r.add_argument("--proposals", type=int, default=None, help="K: proposals per GEPA round")
    r.add_argument("--budget", type=int, default=None, help="context-only: rollout budget")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    name = args.preset or ("gpu" if device == "cuda" else "tiny")
    if name not in PRESETS:
        die(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    if device == "cuda" and not torch.cuda.is_available():
        die("--device cuda but no CUDA device is visible; use --device cpu")
    preset = PRESETS[name]
    torch.set_num_threads(preset.threads if device == "cpu" else torch.get_num_threads())
    root = os.path.join("runs", name)
    if args.cmd is None:
        suite(preset, root, seeds=args.seeds, device=device)
    elif args.cmd == "pretrain":
        if args.steps:
            preset = replace(preset, pretrain_steps=args.steps)
        m = pretrain(preset, args.out or os.path.join(root, "base"), device, seed=args.seed)
        print(json.dumps({k: m[k] for k in ("general_acc", "heldout_chain_acc", "acc_by_op", "acc_by_chain_len",
                                            "params", "tokens", "wall_s")}))
        print(json.dumps(m["tasks"]))
    elif args.cmd == "run":
        over = {"steps": args.steps, "lr": args.lr, "inner_steps": args.inner_steps, "loss_type": args.loss,
                "beta": args.beta, "gepa_every": args.gepa_every, "gepa_proposals": args.proposals,
                "context_budget": args.budget}
        preset = replace(preset, **{k: v for k, v in over.items() if v is not None})
        try:
            schedule = parse_schedule(args.schedule or args.task, preset.steps)
            for spec, _ in schedule:
                tasks.make_task(spec)  # validate every spec before any work
        except tasks.SpecError as e:
            die(str(e))
        init = args.init or os.path.join(root, "base", "model.pt")
        tag = "schedule" if args.schedule else args.task.replace(":", "_").replace(" ", "").replace(",", "+")
        out = args.out or os.path.join(root, tag, args.method, f"s{args.seed}")
        s = run(args.method, schedule, preset, init, out, args.seed, args.reflector, device=device,
                base=os.path.join(root, "base", "model.pt") if os.path.exists(os.path.join(root, "base", "model.pt")) else None)
        print(json.dumps({k: s[k] for k in ("final_val_acc", "best_val_acc", "final_val_greedy", "steps", "rollouts",
                                            "wall_s", "deployed_prompt")}))


if __name__ == "__main__":
    main()
