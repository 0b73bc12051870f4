"""
train.py: pretraining of the base model (and, below it, the FST loop and its baselines).

    python train.py pretrain --preset tiny        # base model -> runs/tiny/base/{model.pt,metrics.json}

Pretraining is plain supervised next-token training on the world's pretraining distribution
(tasks.pretrain_example): a context (mostly an instruction), a problem, and the answer. The loss is
on the answer tokens only, so all capacity goes into *executing rules stated in context*: this is
the "pretrained LLM" of the paper, a general instruction follower.

Greedy exact-match accuracy is measured with one teacher-forced forward pass: greedy decoding
reproduces the answer exactly iff the argmax at every answer position (eos included) equals the
answer token given the correct prefix, so the two are the same number, at a fraction of the cost.
"""

import argparse
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
    pretrain_steps: int = 3000
    pretrain_batch: int = 128
    pretrain_lr: float = 2e-3
    pretrain_warmup: int = 100
    pretrain_eval_every: int = 500
    threads: int = 2


PRESETS = {
    "tiny": Preset("tiny"),
    "gpu": Preset("gpu", n_layer=6, n_head=6, n_embd=384, pretrain_steps=8000, pretrain_batch=256,
                  pretrain_lr=1e-3, pretrain_warmup=200, threads=8),
    "micro": Preset("micro", n_layer=2, n_head=2, n_embd=64, pretrain_steps=60, pretrain_batch=32,
                    pretrain_eval_every=30),
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
    """examples: list of (context, Problem) -> x (B, T), y (B, T) with -1 outside the answers."""
    pad = enc.encode_single_token("<|pad|>")
    seqs, starts = [], []
    for ctx, p in examples:
        prompt = tasks.encode_prompt(enc, ctx, p)
        seqs.append(prompt + tasks.encode_answer(enc, p))
        starts.append(len(prompt))
    T = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), T), pad, dtype=torch.long)
    y = torch.full((len(seqs), T), -1, dtype=torch.long)
    for i, (s, a) in enumerate(zip(seqs, starts)):
        x[i, :len(s) - 1] = torch.tensor(s[:-1])
        y[i, a - 1:len(s) - 1] = torch.tensor(s[a:])  # predict answer tokens (and eos) only
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
        x, y = make_batch(enc, [tasks.pretrain_example(rng, exclude) for _ in range(preset.pretrain_batch)], device)
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
# command line

def main(argv=None):
    ap = argparse.ArgumentParser(description="fastslow: Fast-Slow Training at small scale")
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("pretrain", help="train the base model")
    # where and what
    p.add_argument("--preset", default=None, help="tiny | gpu | micro (default: tiny on CPU, gpu on CUDA)")
    p.add_argument("--out", default=None, help="output folder (default runs/<preset>/base)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    # overrides
    p.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the preset's)")
    args = ap.parse_args(argv)
    if args.cmd is None:
        ap.print_help()
        return
    device = pick_device(args.device)
    name = args.preset or ("gpu" if device == "cuda" else "tiny")
    if name not in PRESETS:
        die(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    torch.set_num_threads(preset.threads if device == "cpu" else torch.get_num_threads())
    if args.cmd == "pretrain":
        if args.steps:
            preset = replace(preset, pretrain_steps=args.steps)
        out = args.out or os.path.join("runs", name, "base")
        m = pretrain(preset, out, device, seed=args.seed)
        print(json.dumps({k: m[k] for k in ("general_acc", "heldout_chain_acc", "acc_by_op", "acc_by_chain_len",
                                            "params", "tokens", "wall_s")}))
        print(json.dumps(m["tasks"]))


if __name__ == "__main__":
    main()
