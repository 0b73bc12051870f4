"""
train.py: the training side of fastslow: pretraining, the one FST loop and its baselines, the suite.

    python train.py                                          # the whole reproduction (see README), then the report
    python train.py pretrain --preset tiny                   # base model -> runs/tiny/base/{model.pt,metrics.json}
    python train.py run --method rl|context|fst --task hidden-rule [--steps N --seed S --out DIR]
    python train.py run --method fst --schedule 'hidden-rule@150;cipher@150'      # task switches, untold
    python train.py run --method rl --task hidden-rule-2 --init runs/tiny/hidden-rule/fst/s0/model.pt
    python train.py run --method fst --task cipher --resume                   # continue an interrupted run

Pretraining is plain supervised next-token training on the world's pretraining distribution
(tasks.pretrain_row): a context (mostly an instruction), problems, and their answers, loss on the
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

Runs survive interruption: every `ckpt_every` steps and at the end, ckpt.pt (weights, optimizer, RNG
states, step, rollouts, GEPA state, log position) is written atomically. `--resume` continues from it;
every random draw comes from a seeded stream that is saved or is a function of the step, so a resumed
run logs exactly what an uninterrupted one would. A non-finite loss or gradient skips the optimizer
step (logged, counted); `max_bad_steps` in a row stop the run. A user error (flag, task spec, schedule,
checkpoint, a folder holding another run) is one line and exit code 2, before any file is written.

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
import reflectors
import rl
import rollout
import tasks
from model import GPT, GPTConfig, CheckpointError, save_checkpoint, load_checkpoint, write_atomic


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
    pretrain_batch: int = 64      # rows per step
    pretrain_lr: float = 1.5e-3
    pretrain_warmup: int = 100
    pretrain_eval_every: int = 100000  # no mid-run eval: it costs wall time the budget lacks
    pack: int = 10                # problems drawn per pretraining row (they share one context) ...
    row_tokens: int = 78          # ... of which a row keeps as many as fit this many tokens (tasks.pretrain_row)
    calibration: float = 0.05     # share of rows whose context is the seed prompt over a random rule
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
    # reliability
    ckpt_every: int = 25          # run checkpoint (ckpt.pt) every N steps and at the end
    pretrain_ckpt_every: int = 200
    max_bad_steps: int = 5        # this many skipped (non-finite) optimizer steps in a row stop the run


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
    return ("cuda" if torch.cuda.is_available() else "cpu") if flag == "auto" else flag


def setup_device(device):
    """Numerics of a CUDA run, set once per process before any work: deterministic kernels (so a resumed
    run logs what an uninterrupted one would; the cuBLAS workspace setting must precede the first matmul),
    TF32 matmuls (10-bit mantissa inputs, fp32 accumulation). CPU runs are deterministic already. -> device"""
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, never crash, where no such kernel exists
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast(device):
    """bf16 autocast for pretraining forwards on CUDA (the matmuls run on tensor cores; the loss and the
    weights stay fp32); a no-op context on CPU, where bf16 is slower than fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda"))


def die(msg):
    """Errors for users: one line, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


# -----------------------------------------------------------------------------
# training checkpoints (written with model.write_atomic) and guarded optimizer steps

def settings_of(preset, **kw):
    """What a checkpoint must match to be resumed, as plain JSON values: the run's own settings and the
    preset's numbers that shape its result (checkpoint cadence and the guard limit do not)."""
    p = {k: v for k, v in asdict(preset).items() if k not in ("ckpt_every", "pretrain_ckpt_every", "max_bad_steps")}
    return json.loads(json.dumps(dict(kw, preset=p)))


def load_state(path, kind, settings):
    """-> the checkpoint dict; one clear line (exit 2) if it is corrupt, foreign or made with other settings."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as e:
        die(f"checkpoint {path} is unreadable or truncated ({type(e).__name__}); delete it to start that run over")
    if not isinstance(ck, dict) or ck.get("format") != kind:
        die(f"{path} is not a {kind} checkpoint; point --out at the run it belongs to")
    if ck.get("settings") != settings:
        old = ck.get("settings") or {}
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        die(f"{path} was made with other settings ({', '.join(diff)}); resume with the same flags or use a new --out")
    return ck


def guarded_step(model, opt, loss, clip=1.0):
    """backward, clip, step, unless the loss or the gradient is non-finite (then the step is skipped
    and the weights and optimizer state are untouched). -> (grad_norm or None, reason or '')."""
    opt.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return None, "non-finite loss"
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    if not math.isfinite(norm):
        opt.zero_grad(set_to_none=True)  # drop the poisoned gradient
        return None, "non-finite gradient"
    opt.step()
    return norm, ""


def check_bad_steps(n_in_a_row, limit, step, reason, ck_path):
    if n_in_a_row >= limit:
        die(f"{n_in_a_row} optimizer steps in a row skipped ({reason}, last at step {step}); the weights are "
            f"still the last good ones (checkpoint {ck_path}): lower the learning rate and start a new run")


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

def pretrain(preset, out_dir, device, seed=0, log=print, resume=False):
    """Train the base model -> metrics dict. Checkpoints out_dir/ckpt.pt every preset.pretrain_ckpt_every
    steps; resume=True continues from it (the data stream is a function of the step, so a resumed run
    sees exactly the batches an uninterrupted one would)."""
    ck_path = os.path.join(out_dir, "ckpt.pt")
    settings = settings_of(preset, seed=seed)
    # check before touching any file
    if os.path.exists(os.path.join(out_dir, "model.pt")):
        die(f"{out_dir} already holds a base model; delete it or pass another --out")
    if os.path.exists(ck_path) and not resume:
        die(f"{out_dir} holds an unfinished pretraining; add --resume to continue it, or delete {ck_path}")
    ck = load_state(ck_path, "fastslow-pretrain-1", settings) if resume and os.path.exists(ck_path) else None
    torch.manual_seed(seed)
    enc = tasks.build_tokenizer(seed=seed)
    vocab = (enc.n_vocab + 63) // 64 * 64  # round up: a friendlier matmul shape, unused rows cost nothing
    cfg = GPTConfig(vocab_size=vocab, block_size=preset.block_size, n_layer=preset.n_layer,
                    n_head=preset.n_head, n_embd=preset.n_embd)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.0,
                            fused=str(device).startswith("cuda"))  # one kernel for all parameters on CUDA
    start, tokens, wall0, skipped, bad_run = 0, 0, 0.0, 0, 0
    if ck is not None:  # resume: weights, optimizer, counters
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"])
        start, tokens, wall0, skipped, bad_run = ck["step"], ck["tokens"], ck["wall_s"], ck["skipped"], ck["bad_run"]
        log(f"resuming pretraining at step {start}")
    os.makedirs(out_dir, exist_ok=True)
    exclude = tasks.UNSEEN_RULES
    t0 = time.time() - wall0

    def checkpoint(step):
        write_atomic(ck_path, {"format": "fastslow-pretrain-1", "settings": settings, "step": step, "model": model.state_dict(),
                             "opt": opt.state_dict(), "tokens": tokens, "wall_s": time.time() - t0,
                             "skipped": skipped, "bad_run": bad_run})

    model.train()
    pbar = tqdm(range(start, preset.pretrain_steps), desc="pretrain", initial=start, total=preset.pretrain_steps)
    for step in pbar:
        lr = preset.pretrain_lr * min(1.0, (step + 1) / preset.pretrain_warmup)  # warmup, then cosine to 10%
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / preset.pretrain_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = random.Random(seed * 1_000_003 + step)
        x, y = make_batch(enc, [tasks.pretrain_row(rng, enc, preset.row_tokens, exclude, preset.calibration, preset.pack)
                                for _ in range(preset.pretrain_batch)], device)
        with autocast(device):
            logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
        _, reason = guarded_step(model, opt, loss)  # a non-finite loss or gradient never reaches the weights
        skipped, bad_run = skipped + bool(reason), (bad_run + 1 if reason else 0)
        if reason:
            log(f"pretrain step {step}: {reason}, update skipped ({skipped} so far)")
            check_bad_steps(bad_run, preset.max_bad_steps, step, reason, ck_path)
        tokens += x.numel()
        if step % 20 == 0:
            pbar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
        if (step + 1) % preset.pretrain_eval_every == 0 and step + 1 < preset.pretrain_steps:
            m = eval_base(model, enc, device, exclude)
            log(f"step {step + 1} loss {loss.item():.3f} general_acc {m['general_acc']:.3f} "
                f"by_len {m['acc_by_chain_len']} by_op {m['acc_by_op']}")
        if (step + 1) % preset.pretrain_ckpt_every == 0 or step + 1 == preset.pretrain_steps:
            checkpoint(step + 1)
    m = eval_base(model, enc, device, exclude)
    m.update(params=model.num_params(), tokens=tokens, steps=preset.pretrain_steps, wall_s=time.time() - t0,
             preset=asdict(preset), seed=seed, skipped_steps=skipped)
    save_checkpoint(os.path.join(out_dir, "model.pt"), model, {"tokenizer": tasks.tokenizer_state(enc), "metrics": m})
    write_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(m, indent=2))
    os.remove(ck_path)  # model.pt marks the base as finished
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


def holds_run(out_dir):
    return any(os.path.exists(os.path.join(out_dir, f)) for f in ("log.jsonl", "ckpt.pt", "summary.json", "model.pt"))


def run(method, schedule, preset, init, out_dir, seed=0, reflector="edit", base=None, device="auto", log=print,
        resume=False, llm=None):
    """One training run from checkpoint `init`; writes out_dir/log.jsonl, summary.json and model.pt.
    `base` (default: init) is the model KL(pi_theta || pi_base) is measured against. Checkpoints
    out_dir/ckpt.pt every preset.ckpt_every steps; resume=True continues from it, or returns the summary
    of a run that already finished. -> summary dict."""
    assert method in ("rl", "context", "fst")
    settings = settings_of(preset, method=method, schedule=[[t, n] for t, n in schedule], seed=seed, init=init,
                           base=base or init, reflector=reflector)
    ck_path, summary_path = os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, "summary.json")
    # --- check everything before touching any file
    if resume and os.path.exists(summary_path) and not os.path.exists(ck_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("settings") != settings:
            die(f"{out_dir} holds a finished run with other settings; delete that folder or write elsewhere (--out)")
        log(f"{out_dir}: finished earlier, nothing to resume")
        return summary
    if not resume and holds_run(out_dir):
        die(f"{out_dir} already holds a run; add --resume to continue it, or pass a new --out")
    ck = load_state(ck_path, "fastslow-run-1", settings) if resume and os.path.exists(ck_path) else None
    if resume and ck is None and holds_run(out_dir):  # killed before its first checkpoint: start over
        log(f"{out_dir}: no checkpoint to resume from, starting from step 0")
    model, enc = load_base(init, pick_device(device))
    device = model.wte.weight.device
    base_model, base_enc = load_base(base, device) if base and base != init else (copy.deepcopy(model), enc)
    if tasks.tokenizer_state(base_enc) != tasks.tokenizer_state(enc) or base_model.cfg != model.cfg:
        die(f"{init} and the base {base} differ in tokenizer or model shape; KL needs the base this run started from")
    base_model.eval()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    special = tasks.special_ids(enc)
    stages = [(tasks.make_task(spec, n_pareto=preset.n_pareto, n_val=preset.n_val), n) for spec, n in schedule]
    total_steps = sum(n for _, n in stages)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=(0.9, 0.99), weight_decay=0.0,
                            fused=device.type == "cuda")
    ref = copy.deepcopy(model).eval() if preset.beta > 0 else None     # KL-penalty reference: the initial weights
    policy = make_policy(model, enc, preset)
    count_tokens = lambda text: len(enc.encode_ordinary(text))
    reflect = reflectors.make_reflector(reflector, preset.context_tokens, count_tokens,
                                        **(llm or {}))
    stage_at = [k for k, (_, n) in enumerate(stages) for _ in range(n)]  # step -> index of its stage
    start, rl_rollouts, wall0, skipped, bad_run, done, rows = 0, 0, 0.0, 0, 0, False, []
    if ck is not None:  # resume: weights, optimizer, RNG streams, counters, GEPA state, the log so far
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"])
        rng.setstate((ck["rng"][0], tuple(ck["rng"][1]), ck["rng"][2]))
        torch.set_rng_state(ck["torch_rng"])
        start, rl_rollouts, wall0, skipped, bad_run, done = (ck[k] for k in
                                                             ("step", "rl_rollouts", "wall_s", "skipped", "bad_run", "done"))
        with open(os.path.join(out_dir, "log.jsonl")) as f:
            rows = [json.loads(line) for line in f.read().splitlines()[:ck["log_rows"]]]  # drop rows after the checkpoint
        log(f"{out_dir}: resuming at step {start}")
    task = stages[stage_at[max(start - 1, 0)]][0]
    gepa = None
    if method != "rl" and ck is not None:
        gepa = fc.load_state_dict(ck["gepa"], task.pareto, task.train, count_tokens)
    elif method != "rl":
        gepa = fc.init_state(task.seed_prompt, task.pareto, task.train, policy, seed=seed,
                             minibatch_size=preset.minibatch, max_context_tokens=preset.context_tokens,
                             count_tokens=count_tokens)
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(os.path.join(out_dir, "log.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))  # as of the checkpoint
    t0 = time.time() - wall0
    best_val = max([r["val_acc"] for r in rows if "val_acc" in r], default=-1.0)

    def checkpoint(next_step, done):
        write_atomic(ck_path, {"format": "fastslow-run-1", "settings": settings, "step": next_step, "done": done,
                             "model": model.state_dict(), "opt": opt.state_dict(),
                             "rng": list(rng.getstate()), "torch_rng": torch.get_rng_state(),
                             "rl_rollouts": rl_rollouts, "wall_s": time.time() - t0, "skipped": skipped,
                             "bad_run": bad_run, "gepa": fc.state_dict(gepa) if gepa is not None else None,
                             "log_rows": len(rows)})

    logf = open(os.path.join(out_dir, "log.jsonl"), "a")
    pbar = tqdm(range(start, total_steps if not done else start), desc=f"{method} {stages[0][0].name}", leave=False)
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
            if r["invalid"]:  # empty, over-budget or failed proposals: rejected, and logged here
                row["gepa_invalid"] = r["invalid"]
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
                grad_norm, reason = guarded_step(model, opt, loss)  # a non-finite loss or gradient never reaches the weights
                if reason:
                    break
            skipped, bad_run = skipped + bool(reason), (bad_run + 1 if reason else 0)
            if reason:
                row["skipped"] = reason
                log(f"step {step}: {reason}, update skipped ({skipped} so far)")
            row.update(reward=float(rewards.mean()), loss=loss.item() if torch.isfinite(loss) else None,  # JSON has no NaN
                       clip_frac=metrics["clip_frac"],
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
        if method != "context" and reason:
            check_bad_steps(bad_run, preset.max_bad_steps, step, reason, ck_path)
        if last or (step + 1) % preset.ckpt_every == 0:
            checkpoint(step + 1, last)
        if last:
            break  # the context-only baseline stops at its rollout budget
    logf.close()
    final = [r for r in rows if "val_acc" in r][-1]
    summary = {"method": method, "schedule": [[t.spec, n] for t, n in stages], "final_val_acc": final["val_acc"],
               "final_val_greedy": final["val_greedy"], "best_val_acc": best_val, "steps": rows[-1]["step"] + 1,
               "rollouts": rows[-1]["rollouts"], "wall_s": time.time() - t0, "seed": seed, "init": init,
               "deployed_prompt": final["prompt"], "reflector": reflector, "skipped_steps": skipped,
               "config": asdict(preset), "settings": settings}
    save_checkpoint(os.path.join(out_dir, "model.pt"), model,
                    {"tokenizer": tasks.tokenizer_state(enc), "deployed_prompt": final["prompt"], "summary": summary})
    write_atomic(summary_path, json.dumps(summary, indent=2))  # summary.json marks the run as finished
    os.remove(ck_path)
    return summary


# -----------------------------------------------------------------------------
# the reproduction suite: every run the report needs, then the report

SUITE_TASKS = ["hidden-rule", "cipher", "long-lists"]
PLASTICITY_TASK = "hidden-rule-2"            # fresh RL on a second hidden rule, from three inits
CONTINUAL = ["hidden-rule", "cipher", "hidden-rule-2"]  # three stages, task-agnostic seed prompt


def suite(preset, root, seeds=1, device="auto", log=print):
    """Every run the report needs, then the report. Re-running it skips finished stages and resumes an
    interrupted one from its checkpoint. The report's wall time is the sum of the stages' own wall times
    (pretraining included, time before an interruption included); the last log line adds the report's."""
    t0, walls = time.time(), []
    base = os.path.join(root, "base", "model.pt")
    if not os.path.exists(base):
        log("pretraining the base model")
        pretrain(preset, os.path.dirname(base), pick_device(device), log=log, resume=True)
    with open(os.path.join(root, "base", "metrics.json")) as f:
        walls.append(json.load(f)["wall_s"])
    for seed in range(seeds):
        for task in SUITE_TASKS:
            for method in ("rl", "context", "fst"):
                s = run(method, [(task, preset.steps)], preset, base, os.path.join(root, task, method, f"s{seed}"), seed,
                        device=device, log=log, resume=True)
                walls.append(s["wall_s"])
                log(f"{task:12s} {method:8s} seed {seed}: final val {s['final_val_acc']:.3f} best {s['best_val_acc']:.3f} "
                    f"rollouts {s['rollouts']} {s['wall_s']:.0f}s prompt={s['deployed_prompt']!r}")
        for init in ("base", "rl", "fst"):  # C5 plasticity
            path = base if init == "base" else os.path.join(root, SUITE_TASKS[0], init, f"s{seed}", "model.pt")
            s = run("rl", [(PLASTICITY_TASK, preset.steps)], preset, path, os.path.join(root, "plasticity", init, f"s{seed}"),
                    seed, base=base, device=device, log=log, resume=True)
            walls.append(s["wall_s"])
            log(f"plasticity from {init:4s} seed {seed}: final val {s['final_val_acc']:.3f} {s['wall_s']:.0f}s")
        for method in ("rl", "fst"):  # C6 continual
            sched = [(t, preset.steps) for t in CONTINUAL]
            s = run(method, sched, preset, base, os.path.join(root, "continual", method, f"s{seed}"), seed,
                    device=device, log=log, resume=True)
            walls.append(s["wall_s"])
            log(f"continual {method:4s} seed {seed}: final val {s['final_val_acc']:.3f} {s['wall_s']:.0f}s")
    results = ev.write_report(root, preset, seeds, sum(walls), SUITE_TASKS, PLASTICITY_TASK, CONTINUAL,
                              device=pick_device(device))
    log(f"report: {os.path.join(root, 'report.md')} (stages {sum(walls):.0f}s, this invocation {time.time() - t0:.0f}s)")
    return results


# -----------------------------------------------------------------------------
# command line

class CLIParser(argparse.ArgumentParser):
    """argparse whose errors are one line (what was wrong, where to look) with exit code 2, no usage dump."""
    def error(self, message):
        die(f"{message} (see `python {self.prog} --help`)")


def positive(kind):
    """argparse type: a number > 0 of `kind` (int or float), else a clear message."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a{'n integer' if kind is int else ' number'}")
        if not v > 0:
            raise argparse.ArgumentTypeError(f"'{text}' must be > 0")
        return v
    parse.__name__ = kind.__name__
    return parse


def main(argv=None):
    ap = CLIParser(description="fastslow: Fast-Slow Training at small scale. With no command: "
                   "the whole reproduction suite (pretrain if needed, all runs, the report).")
    def common(parser, default):  # the same flags before or after the subcommand
        parser.add_argument("--preset", default=default(None), help="tiny | gpu | micro (default: tiny on CPU, gpu on CUDA)")
        parser.add_argument("--device", default=default("auto"), choices=["auto", "cpu", "cuda"])
        parser.add_argument("--seeds", type=positive(int), default=default(1), help="suite: repeat every run with seeds 0..N-1")
    common(ap, lambda d: d)
    sub = ap.add_subparsers(dest="cmd", parser_class=CLIParser)
    p = sub.add_parser("pretrain", help="train the base model")
    common(p, lambda d: argparse.SUPPRESS)  # SUPPRESS: an absent flag keeps the top-level value
    p.add_argument("--out", default=None, help="output folder (default runs/<preset>/base)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive(int), default=None, help="pretraining steps (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted pretraining from --out/ckpt.pt")
    p.add_argument("--ckpt-every", type=positive(int), default=None, help="checkpoint every N steps")
    r = sub.add_parser("run", help="one run: rl | context | fst on a task or a schedule")
    common(r, lambda d: argparse.SUPPRESS)
    # what to learn
    r.add_argument("--method", default="fst", choices=["rl", "context", "fst"])
    r.add_argument("--task", default="hidden-rule", help="hidden-rule | cipher | long-lists | hidden-rule-2 | 'rule:OP,OP'")
    r.add_argument("--schedule", default=None, help="continual: 'TASK@STEPS;TASK@STEPS;...' (overrides --task)")
    r.add_argument("--init", default=None, help="checkpoint to start from (default runs/<preset>/base/model.pt)")
    r.add_argument("--base", default=None, help="checkpoint KL is measured against (default runs/<preset>/base/model.pt)")
    r.add_argument("--out", default=None, help="output folder (default runs/<preset>/<task>/<method>/s<seed>)")
    r.add_argument("--seed", type=int, default=0)
    # reliability
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    r.add_argument("--ckpt-every", type=positive(int), default=None, help="checkpoint every N steps")
    # slow weights
    r.add_argument("--steps", type=positive(int), default=None, help="RL steps (default: the preset's)")
    r.add_argument("--lr", type=positive(float), default=None)
    r.add_argument("--inner-steps", type=positive(int), default=None, help="optimizer steps per rollout batch")
    r.add_argument("--loss", default=None, choices=list(rl.LOSS_TYPES))
    r.add_argument("--beta", type=float, default=None, help="k3 KL penalty to the initial weights")
    # fast weights
    r.add_argument("--reflector", default="edit", choices=list(reflectors.REFLECTORS))
    r.add_argument("--llm-url", default=None, help="llm: API root, e.g. http://localhost:11434/v1")
    r.add_argument("--llm-model", default=None, help="llm: the model's name on that server")
    r.add_argument("--llm-timeout", type=positive(float), default=30.0, help="llm: seconds per try")
    r.add_argument("--gepa-every", type=positive(int), default=None, help="T: a GEPA round every T RL steps")
    r.add_argument("--proposals", type=positive(int), default=None, help="K: proposals per GEPA round")
    r.add_argument("--budget", type=positive(int), default=None, help="context-only: rollout budget")
    args = ap.parse_args(argv)
    device = setup_device(pick_device(args.device))
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
        over = {"pretrain_steps": args.steps, "pretrain_ckpt_every": args.ckpt_every}
        preset = replace(preset, **{k: v for k, v in over.items() if v is not None})
        m = pretrain(preset, args.out or os.path.join(root, "base"), device, seed=args.seed, resume=args.resume)
        print(json.dumps({k: m[k] for k in ("general_acc", "heldout_chain_acc", "acc_by_op", "acc_by_chain_len",
                                            "params", "tokens", "wall_s")}))
        print(json.dumps(m["tasks"]))
    elif args.cmd == "run":
        over = {"steps": args.steps, "lr": args.lr, "inner_steps": args.inner_steps, "loss_type": args.loss,
                "beta": args.beta, "gepa_every": args.gepa_every, "gepa_proposals": args.proposals,
                "context_budget": args.budget, "ckpt_every": args.ckpt_every}
        preset = replace(preset, **{k: v for k, v in over.items() if v is not None})
        try:
            schedule = parse_schedule(args.schedule or args.task, preset.steps)
            for spec, _ in schedule:
                tasks.make_task(spec)  # validate every spec before any work
        except tasks.SpecError as e:
            die(str(e))
        default_base = os.path.join(root, "base", "model.pt")
        init = args.init or default_base
        base = args.base or (default_base if os.path.exists(default_base) else None)
        tag = "schedule" if args.schedule else args.task.replace(":", "_").replace(" ", "").replace(",", "+")
        out = args.out or os.path.join(root, tag, args.method, f"s{args.seed}")
        llm = None
        if args.reflector == "llm":
            if not (args.llm_url and args.llm_model):
                die("--reflector llm needs --llm-url and --llm-model")
            llm = dict(url=args.llm_url, model=args.llm_model, timeout=args.llm_timeout)
        s = run(args.method, schedule, preset, init, out, args.seed, args.reflector, device=device, base=base,
                resume=args.resume, llm=llm)
        print(json.dumps({k: s[k] for k in ("final_val_acc", "best_val_acc", "final_val_greedy", "steps", "rollouts",
                                            "wall_s", "deployed_prompt", "skipped_steps")}))


if __name__ == "__main__":
    main()
