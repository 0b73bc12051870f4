"""
world/pretrain.py: the base model, the paper's pretrained LLM.

    from world.pretrain import pretrain
    # or: python train.py pretrain
    metrics = pretrain(PRESETS["tiny"], "runs/tiny/b0/base", "cpu", seed=0)

Pretraining is plain supervised next-token training on the world's pretraining distribution
(tasks.pretrain_row): a context (mostly an instruction), problems, and their answers, loss on the
answer tokens only, so all capacity goes into *executing rules stated in context*: the "pretrained
LLM" of the paper, a general instruction follower. Greedy exact match is measured with one
teacher-forced forward pass: greedy decoding reproduces the answer exactly iff the argmax at every
answer position (eos included) equals the answer token given the correct prefix.

The bookkeeping is harness/runs.py's, shared with train.py's runs: one writer per folder, ckpt.pt
written atomically every few steps (weights, optimizer, counters) for --resume, the wall clock
across interruptions, optimizer steps skipped when the loss or the gradient is non-finite
(rl.guarded_step; `max_bad_steps` in a row stop the work with a UserError), Ctrl-C and a full disk
as one line. The batch of a step is a function of (seed, step), so a resumed pretraining sees
exactly the batches an uninterrupted one would, and batches built ahead in host processes
(`batch_workers`, the gpu preset) are the same batches. `prepare_bases` gives a grid its bases:
copied from the committed grid's when the pretraining settings match (`committed_base`), else
pretrained.
"""

import copy
import json
import math
import os
import random
import shutil
import signal
from collections import defaultdict
from dataclasses import asdict

import torch
import torch.nn.functional as F
from tqdm import tqdm

import eval as ev
from harness.cli import UserError, writable_folder
from harness.runs import (Ledger, base_path, committed_root, fits_preset, holds_run, interruptible,
                          one_writer, settings_of)
from model import (GPT, GPTConfig, CheckpointError, load_checkpoint, save_checkpoint,
                   setup_device, write_atomic)
from rl import guarded_step
from world import tasks


def autocast(device):
    """bf16 autocast for pretraining forwards on CUDA (the matmuls run on tensor cores; the loss and
    the weights stay fp32); a no-op context on CPU, where bf16 is slower than fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda"))


# -----------------------------------------------------------------------------
# batches: contexts + problems -> padded token tensors with an answer-only loss mask

def make_batch(enc, examples, device):
    """examples: list of (context, [Problem, ...]) -> x (B, T), y (B, T) with -1 outside the
    answers.

    Several problems may share one context (packing): each is appended as `\n<marker>: ..\nout:` +
    answer + <|eos|>, so the context's tokens are paid once for several answers. A single problem
    gives exactly the sequence the downstream tasks use.
    """
    pad = enc.encode_single_token("<|pad|>")
    seqs, targets = [], []
    for ctx, probs in examples:
        probs = (probs if isinstance(probs, (list, tuple)) and not isinstance(probs, tasks.Problem)
                 else [probs])
        seq, answer = tasks.encode_row(enc, ctx, probs)
        seqs.append(seq)
        # position t predicts token t + 1; only answer tokens are targets
        targets.append([tok if a else -1 for tok, a in zip(seq, answer)][1:])
    T = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), T), pad, dtype=torch.long)
    y = torch.full((len(seqs), T), -1, dtype=torch.long)
    for i, (s, t) in enumerate(zip(seqs, targets)):
        x[i, :len(s) - 1] = torch.tensor(s[:-1])
        y[i, :len(t)] = torch.tensor(t)
    return x.to(device), y.to(device)


@torch.no_grad()
def greedy_exact(model, enc, examples, device, batch=256):
    """Per-example greedy exact match (teacher-forced argmax check, see the docstring at
    the top)."""
    out = []
    for i in range(0, len(examples), batch):
        x, y = make_batch(enc, examples[i:i + batch], device)
        pred = model(x).argmax(-1)  # (B, T)
        ok = ((pred == y) | (y < 0)).all(dim=1)
        out.extend(ok.tolist())
    return out


def eval_base(model, enc, device, exclude):
    """general_acc, per-op and per-chain-length accuracy, held-out chain accuracy, tasks
    with/without rule."""
    model.eval()
    general = ev.general_eval_set(exclude=exclude)
    ok = greedy_exact(model, enc, [(c, p) for c, p, _ in general], device)
    by_op, by_len = defaultdict(list), defaultdict(list)
    for (c, p, rule), o in zip(general, ok):
        by_len[len(rule)].append(o)
        if len(rule) == 1:
            by_op[rule[0].name].append(o)
    held = ev.heldout_eval_set()
    held_ok = greedy_exact(model, enc, [(c, p) for c, p, _ in held], device)
    metrics = {"general_acc": sum(ok) / len(ok),
               "acc_by_op": {k: sum(v) / len(v) for k, v in sorted(by_op.items())},
               "acc_by_chain_len": {str(k): sum(v) / len(v) for k, v in sorted(by_len.items())},
               "heldout_chain_acc": sum(held_ok) / len(held_ok),
               "tasks": {}}
    for name in tasks.NAMED_TASKS:
        t = tasks.make_task(name)
        seed_ok = greedy_exact(model, enc, [(t.seed_prompt, p) for p in t.val], device)
        rule_ok = greedy_exact(model, enc, [(t.instruction, p) for p in t.val], device)
        metrics["tasks"][name] = {"seed_prompt_acc": sum(seed_ok) / len(seed_ok),
                                  "instruction_acc": sum(rule_ok) / len(rule_ok)}
    model.train()
    return metrics


# -----------------------------------------------------------------------------
# pretraining

def base_config(enc, preset):
    # round up: a friendlier matmul shape, unused rows cost nothing
    vocab = (enc.n_vocab + 63) // 64 * 64
    return GPTConfig(vocab_size=vocab, block_size=preset.block_size, n_layer=preset.n_layer,
                     n_head=preset.n_head, n_embd=preset.n_embd)


def pretrain_lr(preset, step):
    # warmup, then cosine to 10%
    lr = preset.pretrain_lr * min(1.0, (step + 1) / preset.pretrain_warmup)
    lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / preset.pretrain_steps))
    return lr


def pretrain_batch(enc, preset, seed, step, device):
    """The batch of one step, a function of (seed, step): a resumed run sees what an
    uninterrupted one would."""
    rng = random.Random(seed * preset.data_seed_stride + step)
    examples = [tasks.pretrain_row(rng, enc, preset.row_tokens, tasks.UNSEEN_RULES,
                                   preset.calibration, preset.pack, preset.table_rows,
                                   preset.adherence)
                for _ in range(preset.pretrain_batch)]
    return make_batch(enc, examples, device)


_worker_enc = {}


def _host_batch(tokenizer, preset, seed, step):
    """pretrain_batch on the host, in a worker process (the tokenizer is rebuilt once per
    worker)."""
    if "enc" not in _worker_enc:
        _worker_enc["enc"] = tasks.tokenizer_from_state(tokenizer)
    return pretrain_batch(_worker_enc["enc"], preset, seed, step, "cpu")


def batches(enc, preset, seed, start, device):
    """Yield the batches of steps start, start+1, ... With preset.batch_workers > 0 they are built
    ahead in that many host processes while the device trains (on a GPU the host's Python is the
    bottleneck: ~40 ms per batch against a ~6 ms step); the batches are the same either way."""
    steps = range(start, preset.pretrain_steps)
    if preset.batch_workers == 0:
        for step in steps:
            yield pretrain_batch(enc, preset, seed, step, device)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    state, todo, ahead = tasks.tokenizer_state(enc), iter(steps), deque()
    # the workers ignore Ctrl-C: the training process stops them (no traceback from each)
    with ProcessPoolExecutor(preset.batch_workers, mp_context=mp.get_context("spawn"),
                             initializer=signal.signal,
                             initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        while True:
            while len(ahead) < 2 * preset.batch_workers:  # keep every worker busy, two batches deep
                step = next(todo, None)
                if step is None:
                    break
                ahead.append(pool.submit(_host_batch, state, preset, seed, step))
            if not ahead:
                return
            x, y = ahead.popleft().result()
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def pretrain(preset, out_dir, device, seed=0, log=print, resume=False):
    """Train the base model -> metrics dict. Checkpoints out_dir/ckpt.pt every
    preset.pretrain_ckpt_every steps; resume=True continues from it."""
    device = setup_device(device)  # the device's numerics, however pretrain is reached
    writable_folder(out_dir)
    with one_writer(out_dir):  # taken before the folder is checked, released however it ends
        if os.path.exists(os.path.join(out_dir, "model.pt")):  # check before touching any file
            raise UserError(f"{out_dir} already holds a base model; pass another --out")
        if os.path.exists(os.path.join(out_dir, "ckpt.pt")) and not resume:
            raise UserError(f"{out_dir} holds an unfinished pretraining; add --resume to continue "
                            "it, or pass another --out")
        if not os.path.exists(os.path.join(out_dir, "ckpt.pt")) and holds_run(out_dir):
            raise UserError(f"{out_dir} holds a run's files, not a pretraining; pass another --out")
        ledger = Ledger(out_dir, "fastslow-pretrain-1", settings_of(preset, seed=seed), resume,
                        preset.max_bad_steps)
        return interruptible(ledger, pretrain_from, ledger, preset, out_dir, device, seed, log)


def pretrain_from(ledger, preset, out_dir, device, seed, log):
    """The body of `pretrain` once its folder is checked: the model, the loop, the base's metrics.
    -> metrics dict."""
    torch.manual_seed(seed)
    enc = tasks.build_tokenizer(seed=seed)
    model = GPT(base_config(enc, preset)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.pretrain_lr, betas=preset.pretrain_betas,
                            weight_decay=0.0,
                            fused=str(device).startswith("cuda"))  # one kernel on CUDA
    start, tokens = 0, 0
    if ledger.saved is not None:  # resume: weights, optimizer, counters
        model.load_state_dict(ledger.saved["model"])
        opt.load_state_dict(ledger.saved["opt"])
        start, tokens = ledger.saved["step"], ledger.saved["tokens"]
        log(f"resuming pretraining at step {start}")
    os.makedirs(out_dir, exist_ok=True)
    ledger.start_clock()
    model.train()
    pbar = tqdm(range(start, preset.pretrain_steps), desc="pretrain", initial=start,
                total=preset.pretrain_steps)
    for step, (x, y) in zip(pbar, batches(enc, preset, seed, start, device)):
        for group in opt.param_groups:
            group["lr"] = pretrain_lr(preset, step)
        with autocast(device):
            logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                               ignore_index=-1)
        # non-finite: never reaches the weights
        _, reason = guarded_step(model, opt, loss, preset.grad_clip)
        ledger.count(reason, f"pretrain step {step}", log)
        ledger.check(step, reason)
        ledger.reached = step + 1
        tokens += x.numel()
        if step % 20 == 0:
            pbar.set_postfix(loss=f"{loss.item():.3f}",
                             tok_s=f"{tokens / max(ledger.wall(), 1e-9):.0f}")
        if (step + 1) % preset.pretrain_eval_every == 0 and step + 1 < preset.pretrain_steps:
            metrics = eval_base(model, enc, device, tasks.UNSEEN_RULES)
            log(f"step {step + 1} loss {loss.item():.3f} general_acc {metrics['general_acc']:.3f} "
                f"by_len {metrics['acc_by_chain_len']} by_op {metrics['acc_by_op']}")
        if (step + 1) % preset.pretrain_ckpt_every == 0 or step + 1 == preset.pretrain_steps:
            ledger.save(step + 1, model=model.state_dict(), opt=opt.state_dict(), tokens=tokens)
    metrics = eval_base(model, enc, device, tasks.UNSEEN_RULES)
    metrics.update(params=model.num_params(), tokens=tokens, steps=preset.pretrain_steps,
                   wall_s=ledger.wall(), preset=asdict(preset), seed=seed,
                   skipped_steps=ledger.skipped)
    save_checkpoint(os.path.join(out_dir, "model.pt"), model,
                    {"tokenizer": tasks.tokenizer_state(enc), "metrics": metrics})
    write_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2))
    ledger.finish()
    return metrics


def load_start(init, base, device, preset):
    """A run's starting weights `init` and the base KL is measured against (`base`; init when
    None) -> (model, tokenizer, base model); UserError when init does not fit the preset or the
    base differs from it in tokenizer or shape."""
    model, enc = load_base(init, device)
    fits_preset(model.cfg, preset, init)
    base_model, base_enc = (load_base(base, model.wte.weight.device)
                            if base and base != init else (copy.deepcopy(model), enc))
    if tasks.tokenizer_state(base_enc) != tasks.tokenizer_state(enc) or base_model.cfg != model.cfg:
        raise UserError(f"{init} and the base {base} differ in tokenizer or model shape; KL needs "
                        "the base this run started from")
    return model, enc, base_model


def load_base(path, device):
    """-> (model, tokenizer) from a checkpoint; CheckpointError (one line) if unusable."""
    model, extra = load_checkpoint(path, device)
    if "tokenizer" not in extra:
        raise CheckpointError(f"{path} has no tokenizer inside; re-create it with "
                              "`python train.py pretrain`")
    return model, tasks.tokenizer_from_state(extra["tokenizer"])


# What a base depends on: a committed base stands in for pretraining only if these agree
BASE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "pretrain_steps", "pretrain_batch",
               "pretrain_lr", "pretrain_warmup", "pretrain_betas", "pack", "row_tokens",
               "calibration")


def committed_base(preset, b):
    """The committed grid's base b (results/<preset>/runs/b<b>/base), if it was pretrained with
    seed b and the preset's BASE_FIELDS, else None. Runs from it are comparable with the committed
    grid's; pretraining here gives the same tensors on the CPU the grid's bases came from, and
    another base on other CPUs (general acc 0.906 against 0.867 for base 0 on a faster one)."""
    folder = os.path.dirname(base_path(committed_root(preset.name), b))
    try:
        with open(os.path.join(folder, "metrics.json")) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    want = settings_of(preset)["preset"]  # the preset as plain JSON values
    same = (metrics.get("seed") == b
            and all(metrics.get("preset", {}).get(k) == want[k] for k in BASE_FIELDS))
    return folder if same and os.path.exists(os.path.join(folder, "model.pt")) else None


def prepare_bases(preset, root, bases, device, log=print, fresh_bases=False):
    """Bases 0..bases-1 under root, one per pretraining seed: a missing one is copied from the
    committed grid's (committed_base), else (or with fresh_bases) pretrained here. -> each base's
    pretraining wall time."""
    walls = []
    for b in range(bases):
        out = os.path.dirname(base_path(root, b))
        if not os.path.exists(os.path.join(out, "model.pt")):
            cached = None if fresh_bases else committed_base(preset, b)
            if cached:
                shutil.copytree(cached, out, dirs_exist_ok=True)
                log(f"base {b}: the committed grid's ({os.path.relpath(cached)}), so the runs are "
                    f"comparable with the grid's; --fresh-bases pretrains one here")
            else:
                log(f"pretraining base {b}")
                pretrain(preset, out, device, seed=b, log=log, resume=True)
        walls.append(base_wall(out))
    return walls


def base_wall(folder):
    """A base's pretraining wall time, from its metrics.json; UserError if that is missing."""
    try:
        with open(os.path.join(folder, "metrics.json")) as f:
            return float(json.load(f)["wall_s"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{folder} holds model.pt but no readable metrics.json "
                        f"({type(e).__name__}): not a finished base; move the folder aside and "
                        "rerun to pretrain it") from None
