"""
pretrain.py: the base model, and the bookkeeping every training loop of fastslow shares.

    from world.pretrain import pretrain
    # or: python train.py pretrain
    metrics = pretrain(PRESETS["tiny"], "runs/tiny/b0/base", "cpu", seed=0)

Pretraining is plain supervised next-token training on the world's pretraining distribution
(tasks.pretrain_row): a context (mostly an instruction), problems, and their answers, loss on the
answer tokens only, so all capacity goes into *executing rules stated in context*: the "pretrained
LLM" of the paper, a general instruction follower. Greedy exact match is measured with one
teacher-forced forward pass: greedy decoding reproduces the answer exactly iff the argmax at every
answer position (eos included) equals the answer token given the correct prefix.

The bookkeeping (`Ledger`) is shared with train.py's runs: ckpt.pt written atomically every few
steps (weights, optimizer, counters) for --resume, the wall clock across interruptions, and
optimizer steps skipped when the loss or the gradient is non-finite (rl.guarded_step;
`max_bad_steps` in a row stop the work with a UserError). Ctrl-C raises cli.Interrupted, whose text
says how many steps were done and which step the checkpoint holds. A folder has one writer at a time
(`one_writer`: a lock taken before the folder is checked), a run's folder resumes only its own run
(`check_run_folder`; settings.json says whose it is until the first checkpoint does), a resume reads
the log rows its checkpoint was saved after (`saved_rows`), and a full disk is one line. The batch
of a step is a function of (seed, step), so a resumed pretraining sees exactly the batches an
uninterrupted one would, and batches built ahead in host processes (`batch_workers`, the gpu
preset) are the same batches.
`prepare_bases` gives a grid its bases: copied from the committed grid's when the pretraining
settings match (`committed_base`), else pretrained.
"""

import contextlib
import fcntl
import json
import math
import os
import random
import shlex
import shutil
import signal
import sys
import time
from collections import defaultdict
from dataclasses import asdict

import torch
import torch.nn.functional as F
from tqdm import tqdm

from world import tasks
from harness.cli import DISK_FULL, Interrupted, UserError, disk_full, writable_folder
from model import (GPT, GPTConfig, CheckpointError, load_checkpoint, save_checkpoint,
                   setup_device, write_atomic)
from rl import guarded_step
from harness import suite


def autocast(device):
    """bf16 autocast for pretraining forwards on CUDA (the matmuls run on tensor cores; the loss and
    the weights stay fp32); a no-op context on CPU, where bf16 is slower than fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda"))


# -----------------------------------------------------------------------------
# bookkeeping shared by pretraining and runs: checkpoints, the wall clock, guarded optimizer steps

# Preset fields added after runs were archived, with the value that means "as before": a setting
# is recorded only where it differs, so every archived run still matches its own settings.
LATER_FIELDS = {"table_rows": 0.0, "adherence": 1.0, "gepa_pool": 0, "gepa_round_problems": 0,
                "log_frontier": False, "fixed_prompt": "", "probe_entries": False}


def settings_of(preset, **kw):
    """What a checkpoint must match to be resumed, as plain JSON values: the run's own settings and
    the preset's numbers that shape its result (checkpoint cadence and the guard limit do not)."""
    skip = ("ckpt_every", "pretrain_ckpt_every", "max_bad_steps", "batch_workers",
            "reflector_fail_rounds")
    p = {k: v for k, v in asdict(preset).items() if k not in skip
         and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    return json.loads(json.dumps(dict(kw, preset=p)))


RUN_FILES = ("log.jsonl", "ckpt.pt", "summary.json", "model.pt", "settings.json")


def holds_run(out_dir):
    return any(os.path.exists(os.path.join(out_dir, f)) for f in RUN_FILES)


# -----------------------------------------------------------------------------
# one writer per folder, and only its own run resumes it

LOCK = ".lock"  # in the folder: the writer's pid and command; flock'ed while it works


@contextlib.contextmanager
def one_writer(folder):
    """Hold `folder` for this process: an exclusive lock taken before the folder is checked and
    released when the work ends, however it ends (the kernel drops the lock of a killed process).
    A second writer gets one line naming the first (UserError). A folder created here and still
    empty at the end is removed, so a refused command leaves nothing behind."""
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise
        raise UserError(f"{folder} cannot be created ({e.strerror}); pass another folder")
    path = os.path.join(folder, LOCK)
    fd = _take_lock(path, folder)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # before the lock goes: a waiting writer then sees
            os.remove(path)                 # that the file it opened is gone, and starts over
        os.close(fd)
        if created and not os.listdir(folder):
            os.rmdir(folder)


def _take_lock(path, folder):
    """-> the open, locked lock file of `folder` (its text: this process); UserError if another
    process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{folder} is being written by another process ({_holder(path)}); "
                            "wait for it to end, or pass another --out") from None
        try:  # the file we locked must still be the one at `path` (its last holder removes it)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
    os.write(fd, f"pid {os.getpid()}: {command}\n".encode())
    return fd


def _holder(path):
    """The text the lock's holder wrote (pid and command); it may not have written it yet."""
    for _ in range(20):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    return "pid unknown"


def check_run_folder(out_dir, settings, resume):
    """--resume on a folder without a checkpoint: it may hold nothing but the start of this very
    run (killed before its first checkpoint: its settings.json and partial log), which restarts
    from step 0. -> None; UserError saying what the folder holds otherwise."""
    has = {f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))}
    if not resume or "ckpt.pt" in has or finished(out_dir) or not has:
        return
    if "model.pt" in has or "summary.json" in has:
        what = ("a base (model.pt and metrics.json)"
                if os.path.exists(os.path.join(out_dir, "metrics.json")) else
                "a model.pt with no run's checkpoint beside it" if "model.pt" in has else
                "a summary.json with no finished run's files")
        raise UserError(f"{out_dir} holds {what}, not a run to resume; pass a new --out")
    try:
        with open(os.path.join(out_dir, "settings.json")) as f:
            theirs = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"{out_dir} holds a log.jsonl with no record of the run that wrote it "
                        "(killed before its first checkpoint); pass a new --out") from None
    if theirs != settings:
        diff = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
        raise UserError(f"{out_dir} holds the start of another run (killed before its first "
                        f"checkpoint; it differs in {', '.join(diff)}); resume with its flags or "
                        "pass a new --out")


def saved_rows(out_dir, n):
    """The first `n` rows of out_dir/log.jsonl, those the checkpoint was saved after. -> list;
    UserError when the log is missing, shorter, or a row is cut or out of place."""
    path = os.path.join(out_dir, "log.jsonl")
    held = f"but its checkpoint was saved after {n} rows; restore the log, or start the run over " \
           "in a new --out"
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing {held}")
    with open(path) as f:
        lines = f.read().splitlines()[:n]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or row.get("step") != i:
            raise UserError(f"{path}: row {i + 1} is cut or not step {i}, {held}")
        rows.append(row)
    if len(rows) < n:
        raise UserError(f"{path} holds {len(rows)} rows {held}")
    return rows


def finished(out_dir):
    """A run that ended: its summary.json written and its checkpoint gone."""
    return (os.path.exists(os.path.join(out_dir, "summary.json"))
            and not os.path.exists(os.path.join(out_dir, "ckpt.pt")))


def finished_summary(out_dir, settings, resume, log):
    """Check the output folder before any file is touched. -> the summary of a finished run to
    resume, or None (start or continue); UserError when the folder holds another run."""
    summary_path = os.path.join(out_dir, "summary.json")
    if resume and finished(out_dir):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("settings") != settings:
            raise UserError(f"{out_dir} holds a finished run with other settings; resume with "
                            "the same flags or pass a new --out")
        log(f"{out_dir}: finished earlier, nothing to resume")
        return summary
    if not resume and holds_run(out_dir):
        raise UserError(f"{out_dir} already holds a run; add --resume to continue it, or pass a "
                        "new --out")
    check_run_folder(out_dir, settings, resume)
    return None


SHAPE = ("n_layer", "n_head", "n_embd", "block_size")  # what a preset fixes of a model


def fits_preset(cfg, preset, path):
    """A checkpoint a run starts from must have its preset's shape (summary.json records the
    preset's). -> None; UserError otherwise."""
    if any(getattr(cfg, k) != getattr(preset, k) for k in SHAPE):
        raise UserError(f"{path} is a {cfg.n_layer}-layer, {cfg.n_embd}-wide model, the preset "
                        f"{preset.name}'s are {preset.n_layer}-layer, {preset.n_embd}-wide; pass "
                        "the --preset it was made with, or another checkpoint")


def load_state(path, kind, settings):
    """-> the checkpoint dict; UserError (one line) if it is corrupt, foreign or made with
    other settings."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder where a checkpoint file belongs; pass another --out")
    if not os.path.isfile(path):  # a FIFO would block torch.load for ever
        raise UserError(f"{path} is not a regular file; pass another --out")
    try:
        # tensors and plain values only
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} is unreadable or truncated ({type(e).__name__}); "
                        "delete it to start that run over")
    if not isinstance(ck, dict) or ck.get("format") != kind:
        raise UserError(f"{path} is not a {kind} checkpoint; point --out at the run it belongs to")
    if ck.get("settings") != settings:
        old = ck.get("settings") or {}
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise UserError(f"{path} was made with other settings ({', '.join(diff)}); "
                        "resume with the same flags or use a new --out")
    return ck


class Ledger:
    """What a training loop keeps besides its model: the checkpoint file (ckpt.pt, for --resume),
    the wall clock across interruptions, and the count of skipped optimizer steps (the guard)."""

    def __init__(self, out_dir, kind, settings, resume, max_bad_steps):
        self.path, self.kind, self.settings, self.max_bad = (
            os.path.join(out_dir, "ckpt.pt"), kind, settings, max_bad_steps)
        self.saved = (load_state(self.path, kind, settings)
                      if resume and os.path.exists(self.path) else None)
        old = self.saved or {}
        self.skipped, self.bad_run, self.wall0 = (old.get("skipped", 0), old.get("bad_run", 0),
                                                  old.get("wall_s", 0.0))
        # steps done, and the step the checkpoint on disk holds (None: no checkpoint yet)
        self.reached, self.saved_step = old.get("step", 0), old.get("step")
        self.start_clock()

    def start_clock(self):
        self.t0 = time.time() - self.wall0

    def wall(self):
        return time.time() - self.t0

    def count(self, reason, what, log):
        """One optimizer step done (reason == '') or skipped (reason says why)."""
        self.skipped += bool(reason)
        self.bad_run = self.bad_run + 1 if reason else 0
        if reason:
            log(f"{what}: {reason}, update skipped ({self.skipped} so far)")

    cause = "the learning rate"  # what to lower when steps keep being skipped

    def check(self, step, reason):
        if self.bad_run >= self.max_bad:
            held = (f"the checkpoint {self.path} holds step {self.saved_step}"
                    if self.saved_step is not None else "no checkpoint yet")
            raise UserError(f"{self.bad_run} optimizer steps in a row skipped ({reason}, last at "
                            f"step {step}); no bad update reached the weights ({held}): lower "
                            f"{self.cause} and start a new run")

    def save(self, step, **state):
        write_atomic(self.path, dict(format=self.kind, settings=self.settings, step=step,
                                     wall_s=self.wall(), skipped=self.skipped, bad_run=self.bad_run,
                                     **state))
        self.saved_step = step

    def interrupted(self):
        """-> the Interrupted error of a Ctrl-C now: how far the work got, what its checkpoint
        holds."""
        held = (f"the checkpoint {self.path} holds step {self.saved_step}"
                if self.saved_step is not None else "no checkpoint yet, a resume starts at step 0")
        return Interrupted(f"interrupted after {self.reached} steps ({held})")

    def stop_if_disk_full(self, e):
        """A write a full disk refused (OSError `e`) -> raises the one-line UserError naming the
        file and what the checkpoint holds; any other failure returns (the caller re-raises)."""
        if e.errno not in DISK_FULL:
            return
        if e.filename is None:  # a plain append: the log
            e.filename = os.path.join(os.path.dirname(self.path), "log.jsonl")
        held = (f"the checkpoint {self.path} holds step {self.saved_step}"
                if self.saved_step is not None else "no checkpoint yet")
        raise disk_full(e, f"{held}: free some space, then rerun with --resume") from None

    def claim(self):
        """settings.json: whose folder this is, until the first checkpoint says it (a run killed
        before it restarts only if the settings match: check_run_folder)."""
        write_atomic(os.path.join(os.path.dirname(self.path), "settings.json"),
                     json.dumps(self.settings))

    def finish(self):
        os.remove(self.path)  # model.pt / summary.json now mark the work as finished
        claim = os.path.join(os.path.dirname(self.path), "settings.json")
        if os.path.exists(claim):
            os.remove(claim)


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
        m["tasks"][name] = {"seed_prompt_acc": sum(seed_ok) / len(seed_ok),
                            "instruction_acc": sum(rule_ok) / len(rule_ok)}
    model.train()
    return m


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
        try:
            return pretrain_from(ledger, preset, out_dir, device, seed, log)
        except KeyboardInterrupt:
            pass  # leave the handler first: the loop's frames go and its progress bar closes
        except OSError as e:  # a full disk: one line
            ledger.stop_if_disk_full(e)
            raise
        raise ledger.interrupted()


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
            m = eval_base(model, enc, device, tasks.UNSEEN_RULES)
            log(f"step {step + 1} loss {loss.item():.3f} general_acc {m['general_acc']:.3f} "
                f"by_len {m['acc_by_chain_len']} by_op {m['acc_by_op']}")
        if (step + 1) % preset.pretrain_ckpt_every == 0 or step + 1 == preset.pretrain_steps:
            ledger.save(step + 1, model=model.state_dict(), opt=opt.state_dict(), tokens=tokens)
    m = eval_base(model, enc, device, tasks.UNSEEN_RULES)
    m.update(params=model.num_params(), tokens=tokens, steps=preset.pretrain_steps,
             wall_s=ledger.wall(), preset=asdict(preset), seed=seed, skipped_steps=ledger.skipped)
    save_checkpoint(os.path.join(out_dir, "model.pt"), model,
                    {"tokenizer": tasks.tokenizer_state(enc), "metrics": m})
    write_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(m, indent=2))
    ledger.finish()
    return m


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
    folder = os.path.dirname(suite.base_path(suite.committed_root(preset.name), b))
    try:
        with open(os.path.join(folder, "metrics.json")) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    want = settings_of(preset)["preset"]  # the preset as plain JSON values
    same = m.get("seed") == b and all(m.get("preset", {}).get(k) == want[k] for k in BASE_FIELDS)
    return folder if same and os.path.exists(os.path.join(folder, "model.pt")) else None


def prepare_bases(preset, root, bases, device, log=print, fresh_bases=False):
    """Bases 0..bases-1 under root, one per pretraining seed: a missing one is copied from the
    committed grid's (committed_base), else (or with fresh_bases) pretrained here. -> each base's
    pretraining wall time."""
    walls = []
    for b in range(bases):
        out = os.path.dirname(suite.base_path(root, b))
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
