"""
gpu_check.py: one command that proves fastslow's GPU path on the machine it runs on, and measures
it.

    python -m harness.gpu_check --out DIR    # on a CUDA machine (about 4 minutes on one H100)
    # on a CPU: tiny sizes, Triton's interpreter, the micro preset (about a minute)
    python -m harness.gpu_check --smoke --out DIR

Stages (each records its numbers and a pass flag; an exception in one is recorded and the rest go
on):
  env          torch / triton / GPU versions, and that the kernels are compiled (not interpreted)
  pytest       (GPU only) tests/test_rollout.py, the one test file that runs on CUDA (compiled
               kernels against torch and float64, generation, the KV cache, CUDA graphs); the other
               test files are CPU-only and the README's test command runs them
  kernels      the Triton sampler against the exact softmax (chi-square, log-probs),
               Triton and torch given the same noise (same tokens), the fused log-prob kernel
               against float64 (value and gradient)
  model        on the device: KV-cache decoding against a full forward, cached greedy generation
               against the no-cache reference, the sampler's log-probs against the trainer's
               re-score, same seed -> same rollout
  bench        copy bandwidth (the roofline of a kernel that reads each logit once) and the
               sampler's GB/s; decode tokens/s at 128 and 1024 rows against the no-cache loop; a
               gpu-preset pretraining step in fp32/TF32 and bf16 autocast: tokens/s and MFU
  runs         a short gpu-preset pretraining and fst run through the command line (the user's
               path); RL step time and the sampler/trainer log-prob gap from its log
  numerics     under the runs' own settings (model.setup_device: TF32, deterministic kernels
               enforced): the sampler/trainer log-prob gap on the base at the RL shape with TF32 on
               and off (CISPO's first importance ratio is exp of it); forward + backward twice at
               shapes that would pick SDPA's non-deterministic backward without strict mode
               (bitwise-equal gradients, no op without a deterministic kernel); the CUDA-graph
               decode at the RL shape (same tokens, its time against the default decode)
  determinism  the same pretraining twice and the same fst run twice give bit-identical weights and
               logs; an fst run killed with SIGKILL and resumed logs what the uninterrupted one
               logged
The summary is printed as a compact table and written to OUT/gpu_check.json (after every stage, so a
check cut short still leaves what it measured); the models and runs go to --work (a fresh temporary
folder by default), never into --out, so the folder that comes back from a remote GPU machine holds
the JSON alone. One time budget (--budget-s) bounds the whole check: every subprocess gets at most the time
left, and a stage that would start with too little left is recorded as skipped. Exit code 1 when
any check failed.

Equivalence checks run with TF32 off (they test the code path, not the precision); the runs use the
settings `model.setup_device` chooses (TF32 matmuls, deterministic kernels, bf16 pretraining).
"""

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

from harness.cli import FOLDER, CLIParser, UserError, exit_on_user_error, positive  # not triton yet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser():
    ap = CLIParser(prog="python -m harness.gpu_check",
                   description="validate and measure fastslow on a GPU (or a CPU smoke run)")
    ap.add_argument("--out", type=FOLDER, default=os.environ.get("OUT") or "runs/gpu_check",
                    help="folder for the JSON (nothing else is written there)")
    ap.add_argument("--work", type=FOLDER, default=None,
                    help="folder for the check's models and runs (default: a fresh temporary "
                         "folder, never inside --out)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the check itself")
    ap.add_argument("--pretrain-steps", type=positive(int), default=None,
                    help="steps of the short pretraining (default 400; --smoke 8)")
    ap.add_argument("--fst-steps", type=positive(int), default=None,
                    help="steps of the short fst run (default 12; --smoke 4)")
    ap.add_argument("--budget-s", type=positive(int), default=360,
                    help="seconds the whole check may take: every subprocess gets the time left")
    return ap


@exit_on_user_error
def parse_args(argv=None):
    """The flags, checked before any work (one line and exit code 2 when one is wrong)."""
    args = build_parser().parse_args(argv)
    if args.work and os.path.realpath(args.work).startswith(os.path.realpath(args.out) + os.sep):
        raise UserError(f"--work {args.work} is inside --out {args.out}: the models would crowd "
                        "out the JSON; pass a folder outside it")
    return args


# imported (by the tests) it reads no command line
ARGS = parse_args(None if __name__ == "__main__" else [])
T0 = time.time()
PRETRAIN_STEPS = ARGS.pretrain_steps or (8 if ARGS.smoke else 400)
FST_STEPS = ARGS.fst_steps or (4 if ARGS.smoke else 12)
if ARGS.smoke:
    # must precede the first triton import (in rollout)
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import model as gpt  # noqa: E402
import rollout  # noqa: E402
from world import tasks  # noqa: E402
from harness import bench, cuda_graphs  # noqa: E402
from harness import kernel_checks  # noqa: E402
import rl  # noqa: E402
from world import pretrain  # noqa: E402
import train  # noqa: E402
from model import GPT, GPTConfig, load_checkpoint  # noqa: E402

DEV = "cpu" if ARGS.smoke else "cuda"
RESULTS = {}
# dense bf16 / tf32 tensor-core peaks (FLOP/s) by a substring of the device name
PEAK_FLOPS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12)}


def save():
    os.makedirs(ARGS.out, exist_ok=True)
    with open(os.path.join(ARGS.out, "gpu_check.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)


def left():
    """Seconds left of the check's budget."""
    return ARGS.budget_s - (time.time() - T0)


def record(name, fn, needs=5):
    """Run one stage -> its result dict (recorded and saved); skipped when less than `needs`
    seconds of the budget are left."""
    t0 = time.time()
    try:
        if left() < needs:
            raise TimeoutError(f"skipped: {left():.0f} s of the budget left, the stage needs "
                               f"about {needs} s")
        r = fn()
    except Exception as e:  # one broken check must not hide the others
        r = {"ok": False, "error": f"{type(e).__name__}: {e}",
             "trace": traceback.format_exc()[-2000:]}
    r["seconds"] = round(time.time() - t0, 1)
    RESULTS[name] = r
    save()
    brief = {k: v for k, v in r.items() if k not in ("trace", "seconds")}
    print(f"[{'ok  ' if r.get('ok', True) else 'FAIL'}] {name} ({r['seconds']}s) "
          f"{json.dumps(brief)[:900]}", flush=True)
    return r


def timed(fn, iters=10, warmup=2):
    """Median seconds per call over `iters` calls, after `warmup` calls (bench.py's timer)."""
    return bench.timeit(fn, warmup, iters, torch.device(DEV))


def tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


# -----------------------------------------------------------------------------
# model, KV cache and generation on the device

def random_model(vocab=320, n_layer=2, n_head=2, n_embd=64, seed=0, gain=2.0):
    """Random weights scaled up so logits are spread out (near-ties would make greedy comparisons
    flaky)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=128, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, gain / p.shape[-1] ** 0.5)
    return model.to(DEV).eval()


def random_prompts(lengths, vocab, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def check_model():
    out = {}
    model = random_model()
    idx = torch.randint(0, 320, (4, 40), generator=torch.Generator().manual_seed(1)).to(DEV)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(4, 40)
        steps = ([model(idx[:, :20], cache=cache)]
                 + [model(idx[:, t:t + 1], cache=cache) for t in range(20, 40)])
    out["kv_cache_vs_full_max_err"] = float((torch.cat(steps, 1) - full).abs().max())
    prompts = random_prompts([5, 9, 3, 12, 30, 1], 320)
    a = rollout.generate(model, prompts, num_samples=2, max_new_tokens=16, temperature=0)[0]
    b = rollout.generate_naive(model, prompts, num_samples=2, max_new_tokens=16, temperature=0)[0]
    out["greedy_cached_eq_naive"] = bool(torch.equal(a, b))
    cpu = rollout.generate(random_model().cpu(), prompts, num_samples=2, max_new_tokens=16,
                           temperature=0)[0]
    out["greedy_device_eq_cpu_frac"] = float((a.cpu() == cpu).float().mean())
    small = random_model(vocab=16, gain=1.0, seed=3)
    prompts = random_prompts([3, 8, 5, 12, 6], 16, seed=2)
    kw = dict(num_samples=4, max_new_tokens=20, temperature=0.7, seed=7, eos_id=0, pad_id=15)
    tok, mask, lp = rollout.generate(small, prompts, **kw)
    rescored = rollout.completion_logprobs(small, prompts, tok, mask, temperature=0.7)
    out["sampler_vs_trainer_logprob_max_err"] = float((rescored.detach() - lp).abs().max())
    again = rollout.generate(small, prompts, **kw)
    out["same_seed_same_rollout"] = all(torch.equal(x, y) for x, y in zip(again, (tok, mask, lp)))
    graphed = cuda_graphs.generate(small, prompts, **kw)  # a CUDA graph on CUDA
    out["graphs_same_tokens"] = bool(torch.equal(graphed[0], tok) and torch.equal(graphed[1], mask))
    out["graphs_logprob_max_err"] = float((graphed[2] - lp).abs().max())
    out["rows_stopped_at_eos"] = int(((tok == 0) & mask).any(1).sum())
    out["ok"] = (out["kv_cache_vs_full_max_err"] < 1e-3 and out["greedy_cached_eq_naive"]
                 and out["greedy_device_eq_cpu_frac"] >= 0.99
                 and out["sampler_vs_trainer_logprob_max_err"] < 1e-4
                 and out["same_seed_same_rollout"]
                 and out["rows_stopped_at_eos"] > 0
                 and out["graphs_same_tokens"] and out["graphs_logprob_max_err"] < 1e-4)
    return out


# -----------------------------------------------------------------------------
# bench

def bench_bandwidth():
    n = (1 << 28) if DEV == "cuda" else (1 << 22)
    src = torch.randn(n, device=DEV)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src))
    copy_gbps = 2 * n * 4 / t / 1e9  # read + write
    del src, dst
    rows = []
    shapes = [(8192, 32768), (131072, 320)] if DEV == "cuda" else [(64, 320)]
    for B, V in shapes:
        logits = torch.randn(B, V, device=DEV)
        gen = torch.Generator(DEV).manual_seed(0)
        for backend in ("triton", "torch"):
            if backend == "triton" and DEV == "cpu":
                continue  # the interpreter's speed means nothing
            t = timed(lambda: rollout.sample_tokens(logits, 1.0, generator=gen, backend=backend))
            gbps = B * V * 4 / t / 1e9  # each logit read once
            rows.append(dict(backend=backend, B=B, V=V, ms=round(t * 1e3, 3), GBps=round(gbps, 1),
                             pct_of_copy=round(100 * gbps / copy_gbps, 1)))
        del logits
    return {"copy_GBps": round(copy_gbps, 1), "sampler": rows, "ok": True}


def bench_decode():
    p = train.PRESETS["gpu" if DEV == "cuda" else "micro"]  # on a CPU: the check's logic only
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=p.block_size, n_layer=p.n_layer,
                          n_head=p.n_head, n_embd=p.n_embd)).to(DEV).eval()
    out = {"params": model.num_params(), "rows": []}
    new = 24
    for R in ((128, 1024) if DEV == "cuda" else (16,)):
        prompts = random_prompts([40] * (R // 8), 320)
        for graphs in (False, True):  # graphs: fixed-shape decode replayed as a CUDA graph
            gen = cuda_graphs.generate if graphs else rollout.generate
            run = lambda: gen(model, prompts, 8, new, 1.0, seed=0, eos_id=-1)
            t = timed(run, iters=5, warmup=1)
            out["rows"].append(dict(rows=R, graphs=graphs, tokens_per_s=round(R * new / t),
                                    ms_per_token_step=round(t / new * 1e3, 2)))
    R = out["rows"][0]["rows"]
    prompts = random_prompts([40] * (R // 8), 320)
    t = timed(lambda: rollout.generate_naive(model, prompts, 8, new, 1.0, seed=0, eos_id=-1),
              iters=1, warmup=1)
    out["naive_tokens_per_s"] = round(R * new / t)
    out["cached_over_naive"] = round(out["rows"][0]["tokens_per_s"] / out["naive_tokens_per_s"], 1)
    out["ok"] = True
    return out


def bench_pretrain_step():
    """The gpu preset's pretraining step on real batches, as world.pretrain.pretrain runs it."""
    import random
    p = train.PRESETS["gpu"] if DEV == "cuda" else train.PRESETS["micro"]
    enc = tasks.build_tokenizer(seed=0)
    rng = random.Random(0)
    t0 = time.perf_counter()
    row = lambda: tasks.pretrain_row(rng, enc, p.row_tokens, tasks.UNSEEN_RULES, p.calibration,
                                     p.pack)
    batches = [pretrain.make_batch(enc, [row() for _ in range(p.pretrain_batch)], DEV)
               for _ in range(8)]
    make_batch_ms = (time.perf_counter() - t0) / 8 * 1e3
    cfg = GPTConfig(vocab_size=(enc.n_vocab + 63) // 64 * 64, block_size=p.block_size,
                    n_layer=p.n_layer, n_head=p.n_head, n_embd=p.n_embd)
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    peaks = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    out = {"batch_shape": list(batches[0][0].shape), "make_batch_ms": round(make_batch_ms, 1),
           "modes": {}}
    for mode in ("tf32", "bf16"):
        torch.manual_seed(0)
        model = GPT(cfg).to(DEV)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), fused=DEV == "cuda")
        tf32(DEV == "cuda")
        i = [0]

        def step():
            x, y = batches[i[0] % len(batches)]
            i[0] += 1
            with torch.autocast("cuda", dtype=torch.bfloat16,
                                enabled=mode == "bf16" and DEV == "cuda"):
                logits = model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                   ignore_index=-1)
            rl.guarded_step(model, opt, loss)
        t = timed(step, iters=20 if DEV == "cuda" else 3, warmup=3 if DEV == "cuda" else 1)
        tokens = sum(x.numel() for x, _ in batches) / len(batches)
        # the tied head is counted below
        n_matmul = model.num_params() - cfg.vocab_size * cfg.n_embd
        T = batches[0][0].shape[1]
        flops_per_token = (6 * (n_matmul + cfg.vocab_size * cfg.n_embd)
                           + 12 * cfg.n_layer * cfg.n_embd * T)
        r = dict(ms_per_step=round(t * 1e3, 2), tokens_per_s=round(tokens / t),
                 tflops=round(flops_per_token * tokens / t / 1e12, 2))
        if peaks:
            r["mfu_vs_bf16_peak"] = round(flops_per_token * tokens / t / peaks[0], 4)
        out["modes"][mode] = r
    out["params"] = model.num_params()
    out["ok"] = True
    return out


# -----------------------------------------------------------------------------
# runs through the command line, and determinism

def cli(args):
    """train.py with these arguments in a subprocess, given at most the budget's time left ->
    its stdout; RuntimeError with its stderr's tail when it fails."""
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=ROOT,
                       capture_output=True, text=True, timeout=max(1.0, left()))
    if p.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args)} exited {p.returncode}: "
                           f"{p.stderr.strip()[-800:]}")
    return p.stdout


def rows_of(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_wall(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def same_weights(a, b):
    wa, wb = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    return all(torch.equal(wa[k], wb[k]) for k in wa)


WORK = ARGS.work  # main: a fresh temporary folder when not given (never inside ARGS.out)
PRESET = "micro" if ARGS.smoke else "gpu"
THREADS = ["--threads", "1"] if ARGS.smoke else []  # a CPU smoke runs processes side by side


def fst_args(out):
    return ["run", "--preset", PRESET, "--device", DEV, "--method", "fst", "--task", "hidden-rule",
            "--steps", str(FST_STEPS), "--init", os.path.join(WORK, "base", "model.pt"),
            "--out", out] + THREADS


def check_runs():
    steps = PRETRAIN_STEPS
    t0 = time.time()
    lines = cli(["pretrain", "--preset", PRESET, "--device", DEV, "--steps", str(steps),
                 "--out", os.path.join(WORK, "base")] + THREADS).strip().splitlines()
    m = json.loads(lines[-2])
    out = {"pretrain": dict(steps=steps, general_acc=round(m["general_acc"], 3), params=m["params"],
                            tokens_per_s=round(m["tokens"] / m["wall_s"]),
                            wall_s=round(m["wall_s"], 1), process_s=round(time.time() - t0, 1),
                            acc_by_op=m["acc_by_op"])}
    t0 = time.time()
    summary = json.loads(cli(fst_args(os.path.join(WORK, "fst_a"))).strip().splitlines()[-1])
    rows = rows_of(os.path.join(WORK, "fst_a"))
    walls = [0.0] + [r["wall_s"] for r in rows]
    plain = [walls[i + 1] - walls[i] for i, r in enumerate(rows)
             if "val_acc" not in r and "frontier" not in r]
    gaps = [r["logp_gap"] for r in rows if r.get("logp_gap") is not None]
    out["fst"] = dict(steps=summary["steps"], final_val_acc=summary["final_val_acc"],
                      rollouts=summary["rollouts"], wall_s=round(summary["wall_s"], 1),
                      process_s=round(time.time() - t0, 1),
                      rl_step_s_median=round(statistics.median(plain), 3) if plain else None,
                      # sampler vs trainer before any update, mean |diff| per token, each step
                      logp_gap_mean=statistics.mean(gaps) if gaps else None,
                      logp_gap_max=max(gaps) if gaps else None,
                      deployed_prompt=summary["deployed_prompt"])
    out["ok"] = math.isfinite(m["general_acc"]) and summary["steps"] == FST_STEPS
    return out


def repeat_backward(model, p):
    """Two backward passes of the same batch give bitwise-equal gradients, at shapes whose SDPA
    backward is non-deterministic unless determinism is enforced. -> [{rows, tokens, same_grads}]"""
    # (rows, tokens): pretraining's rows; over 128 tokens; an RL chunk; a small chunk
    shapes = [(p.pretrain_batch, p.row_tokens - 1), (4, 200), (p.batch_problems * p.group_size
                                                               // p.optimizer_steps, 30), (3, 9)]
    torch.manual_seed(0)
    net = GPT(model.cfg).to(DEV)
    rows = []
    for B, T in shapes:
        x = torch.randint(0, model.cfg.vocab_size, (B, T), device=DEV)
        grads = []
        for _ in range(2):
            net.zero_grad(set_to_none=True)
            with pretrain.autocast(DEV):  # bf16 on CUDA, as pretraining runs
                loss = net(x).float().logsumexp(-1).mean()
            loss.backward()
            grads.append([q.grad.clone() for q in net.parameters()])
        rows.append(dict(rows=B, tokens=T, same_grads=all(torch.equal(a, b)
                                                          for a, b in zip(*grads))))
    return rows


def graph_decode(model, prompts, kw):
    """The CUDA-graph decode (harness/cuda_graphs.py) under the runs' settings at the RL shape:
    the same tokens as rollout.generate, and both timed. -> fields"""
    kw = dict(kw, eos_id=-1)  # every step decodes: the graph's steady state
    a = rollout.generate(model, prompts, **kw)
    b = cuda_graphs.generate(model, prompts, **kw)
    out = {"graphs_same_tokens": bool(torch.equal(a[0], b[0]))}
    for g in (False, True):
        gen = cuda_graphs.generate if g else rollout.generate
        t = timed(lambda: gen(model, prompts, **kw), iters=5, warmup=1)
        out[f"rl_shape_generate_ms_graphs_{g}"] = round(t * 1e3, 2)
        # twice the tokens: the per-step cost, and what a call pays once (prefill, and with
        # graphs the capture), which a graph kept across calls would no longer pay
        t2 = timed(lambda: gen(model, prompts, **dict(kw, max_new_tokens=2 * kw["max_new_tokens"])),
                   iters=5, warmup=1)
        step = (t2 - t) / kw["max_new_tokens"]
        out[f"ms_per_step_graphs_{g}"] = round(step * 1e3, 3)
        out[f"ms_per_call_graphs_{g}"] = round((t - step * kw["max_new_tokens"]) * 1e3, 2)
    return out


def check_numerics():
    """The runs' numerics (model.setup_device, as every entry point sets them): the log-prob gap
    between the sampler and the trainer under TF32 and without it; bitwise-repeatable gradients at
    shapes whose SDPA backward is non-deterministic unless determinism is enforced; the CUDA-graph
    decode at the RL shape under these settings."""
    gpt.setup_device(DEV)
    out = {"tf32": torch.backends.cuda.matmul.allow_tf32,
           "deterministic": torch.are_deterministic_algorithms_enabled(),
           "warn_only": torch.is_deterministic_algorithms_warn_only_enabled()}
    p = train.PRESETS[PRESET]
    model, enc = pretrain.load_base(os.path.join(WORK, "base", "model.pt"), DEV)
    model.eval()
    task = tasks.make_task("cipher", n_train=p.n_train, n_pareto=p.n_pareto, n_val=p.n_val)
    problems = task.train[:p.batch_problems]
    prompts = [tasks.encode_prompt(enc, task.seed_prompt, q) for q in problems]
    special = tasks.special_ids(enc)
    kw = dict(num_samples=p.group_size, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
              seed=3, eos_id=special["<|eos|>"], pad_id=special["<|pad|>"])
    for mode in ("tf32", "fp32"):  # the gap CISPO's first ratio sees: exp(gap) - 1
        tf32(mode == "tf32" and DEV == "cuda")
        tok, mask, lp = rollout.generate(model, prompts, **kw)
        with torch.no_grad():
            re = rollout.completion_logprobs(model, prompts, tok, mask, p.temperature)
        gap = (re - lp).abs()[mask]
        out[f"logp_gap_{mode}"] = dict(mean=float(gap.mean()), max=float(gap.max()),
                                       tokens=int(mask.sum()))
    tf32(DEV == "cuda")
    out["repeat_backward"] = rows = repeat_backward(model, p)
    out.update(graph_decode(model, prompts, kw))
    out["ok"] = ((DEV == "cpu" or (out["deterministic"] and not out["warn_only"]))
                 and out["graphs_same_tokens"]
                 and all(r["same_grads"] for r in rows)
                 # a measurement under TF32 (a sanity bound only); a check without it
                 and out["logp_gap_tf32"]["max"] < 5e-2 and out["logp_gap_fp32"]["max"] < 1e-3)
    return out


def start(args, name):
    """train.py with these arguments, started in the background (output to WORK/<name>.txt)."""
    f = open(os.path.join(WORK, f"{name}.txt"), "w")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=ROOT,
                            stdout=f, stderr=subprocess.STDOUT)


def finish(proc, name):
    """Wait for a started train.py (at most the budget's time left); RuntimeError if it failed."""
    if proc.wait(timeout=max(1.0, left())) != 0:
        with open(os.path.join(WORK, f"{name}.txt")) as f:
            raise RuntimeError(f"{name} exited {proc.returncode}: {f.read().strip()[-800:]}")


def check_determinism():
    """Four processes at once, as --jobs runs share a device: the same pretraining twice, the fst
    run of `runs` again, and that run killed with SIGKILL once it has a checkpoint, then resumed."""
    out = {}
    steps = "4" if ARGS.smoke else "100"
    a, b, c = (os.path.join(WORK, n) for n in ("fst_a", "fst_b", "fst_c"))
    every, kill_at = ("2", 3) if ARGS.smoke else ("4", 6)  # kill after the first checkpoint
    procs = {name: start(["pretrain", "--preset", PRESET, "--device", DEV, "--steps", steps,
                          "--out", os.path.join(WORK, name)] + THREADS, name)
             for name in ("p1", "p2")}
    procs["fst_b"] = start(fst_args(b), "fst_b")
    killed = start(fst_args(c) + ["--ckpt-every", every], "fst_c")
    log = os.path.join(c, "log.jsonl")
    while left() > 0 and killed.poll() is None:
        if os.path.exists(log) and open(log).read().count("\n") >= kill_at:
            break
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    out["killed_mid_run"] = not os.path.exists(os.path.join(c, "summary.json"))
    procs["fst_c"] = start(fst_args(c) + ["--ckpt-every", every, "--resume"], "fst_c_resumed")
    for name, proc in procs.items():
        finish(proc, name if name != "fst_c" else "fst_c_resumed")
    out["pretrain_twice_same_weights"] = same_weights(os.path.join(WORK, "p1", "model.pt"),
                                                      os.path.join(WORK, "p2", "model.pt"))
    out["fst_twice_same_log"] = without_wall(rows_of(a)) == without_wall(rows_of(b))
    out["fst_twice_same_weights"] = same_weights(os.path.join(a, "model.pt"),
                                                 os.path.join(b, "model.pt"))
    out["resumed_same_log"] = without_wall(rows_of(a)) == without_wall(rows_of(c))
    out["resumed_same_weights"] = same_weights(os.path.join(a, "model.pt"),
                                               os.path.join(c, "model.pt"))
    if not out["fst_twice_same_log"]:
        ra, rb = without_wall(rows_of(a)), without_wall(rows_of(b))
        first = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), None)
        out["first_differing_row"] = {"a": ra[first], "b": rb[first]} if first is not None else None
    out["ok"] = all(v for k, v in out.items() if isinstance(v, bool))
    return out


def check_pytest():
    """The repository's one test file that runs on CUDA (kernels compiled, generation and the KV
    cache on the device); every other test file is CPU-only."""
    files = ["tests/test_rollout.py"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
                       + files, cwd=ROOT, capture_output=True, text=True,
                       timeout=max(1.0, min(150.0, left() - 200)))
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-300:]
    return {"files": files, "summary": tail, "ok": p.returncode == 0,
            "failures": [l for l in p.stdout.splitlines() if l.startswith("FAILED")][:10]}


# -----------------------------------------------------------------------------

def main():
    global WORK
    if not ARGS.smoke and not torch.cuda.is_available():  # before any stage: one line
        print("error: needs a CUDA GPU and none is visible; try --smoke", file=sys.stderr)
        return 2
    WORK = WORK or tempfile.mkdtemp(prefix="fastslow_gpu_check_")
    os.makedirs(WORK, exist_ok=True)
    import rollout as r
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": DEV,
           "has_triton": r.HAS_TRITON, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
           "smoke": ARGS.smoke}
    if DEV == "cuda":
        import triton
        env.update(triton=triton.__version__, gpu=torch.cuda.get_device_name())
    env["ok"] = r.HAS_TRITON and (ARGS.smoke or (torch.cuda.is_available()
                                                   and os.environ.get("TRITON_INTERPRET") != "1"))
    record("env", lambda: env)
    if not env["ok"] and not ARGS.smoke:
        print("error: needs a CUDA GPU and compiled Triton (TRITON_INTERPRET unset); try --smoke",
              file=sys.stderr)
        return 2
    print(f"work folder: {WORK}", flush=True)
    if not ARGS.smoke:  # first: the most direct test of the compiled kernels
        record("pytest", check_pytest, needs=60)
    tf32(False)
    kernel_checks.record_all(record, DEV)
    record("model", check_model)
    record("bench/bandwidth_sampler", bench_bandwidth)
    record("bench/decode", bench_decode)
    record("bench/pretrain_step", bench_pretrain_step)
    tf32(False)
    record("runs", check_runs, needs=60)
    record("numerics", check_numerics, needs=15)  # from here on: the runs' settings
    record("determinism", check_determinism, needs=60)
    bad = [k for k, v in RESULTS.items() if isinstance(v, dict) and v.get("ok") is False]
    RESULTS["all_ok"] = not bad
    save()
    print(f"\n{'stage':32s} {'ok':4s} seconds")
    for k, v in RESULTS.items():
        if isinstance(v, dict):
            print(f"{k:32s} {'yes' if v.get('ok', True) else 'NO':4s} {v.get('seconds', '')}")
    print("ALL OK" if not bad else f"FAILED: {', '.join(bad)}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
