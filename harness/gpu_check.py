"""
gpu_check.py: one command that proves fastslow's GPU path on the machine it runs on, and measures
it.

    python -m harness.gpu_check --out DIR    # on a CUDA machine (about 4-6 minutes on one H100)
    # on a CPU: tiny sizes, Triton's interpreter, the micro preset
    python -m harness.gpu_check --smoke --out DIR

Stages (each records its numbers and a pass flag; an exception in one is recorded and the rest go
on):
  env          torch / triton / GPU versions, and that the kernels are compiled (not interpreted)
  kernels      the Triton sampler against the exact truncated softmax (chi-square, log-probs),
               Triton and torch given the same noise (same tokens), the fused log-prob kernel
               against float64 (value and gradient)
  model        on the device: KV-cache decoding against a full forward, cached greedy generation
               against the no-cache reference, the sampler's log-probs against the trainer's
               re-score, same seed -> same rollout
  bench        copy bandwidth (the roofline of a kernel that reads each logit once) and the
               sampler's GB/s; decode tokens/s at 128 and 1024 rows against the no-cache loop; a
               gpu-preset pretraining step in fp32/TF32 and bf16 autocast: tokens/s and MFU
  runs         a short gpu-preset pretraining and fst run through the command line (the user's
               path); RL step time from its log
  determinism  the same pretraining twice and the same fst run twice give bit-identical weights and
               logs; an fst run killed with SIGKILL and resumed logs what the uninterrupted one
               logged
  pytest       (GPU only) tests/test_rollout.py, test_model.py, test_rl.py with compiled kernels
The summary is printed as a compact table and written to DIR/gpu_check.json (after every stage, so a
check cut short still leaves what it measured). Exit code 1 when any check failed.

Equivalence checks run with TF32 off (they test the code path, not the precision); the runs use the
settings `train.setup_device` chooses (TF32 matmuls, deterministic kernels, bf16 pretraining).
"""

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback

from harness.cli import FOLDER, CLIParser, exit_on_user_error, positive  # torch, but not triton yet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser():
    ap = CLIParser(prog="python -m harness.gpu_check",
                   description="validate and measure fastslow on a GPU (or a CPU smoke run)")
    ap.add_argument("--out", type=FOLDER, default=os.environ.get("OUT") or "runs/gpu_check",
                    help="folder for the JSON")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the check itself")
    ap.add_argument("--pretrain-steps", type=positive(int), default=400,
                    help="steps of the short gpu-preset pretraining")
    ap.add_argument("--fst-steps", type=positive(int), default=12,
                    help="steps of the short fst run")
    return ap


@exit_on_user_error
def parse_args(argv=None):
    """The flags, checked before any work (one line and exit code 2 when one is wrong)."""
    return build_parser().parse_args(argv)


# imported (by the tests) it reads no command line
ARGS = parse_args(None if __name__ == "__main__" else [])
if ARGS.smoke:
    # must precede the first triton import (in rollout)
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import rollout  # noqa: E402
from world import tasks  # noqa: E402
from harness import bench  # noqa: E402
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


def record(name, fn):
    t0 = time.time()
    try:
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
# kernels

def exact_probs(row, T, k, p):
    """The distribution sample_tokens draws from, in float64: z = logits/T, top-k then top-p, ties
    kept."""
    z = row.double().cpu() * rollout._inv_temp(T)
    V = z.numel()
    keep = torch.ones(V, dtype=torch.bool)
    if 0 < k < V:
        keep &= z >= z.sort(descending=True).values[k - 1]
    if p < 1:
        e = torch.where(keep, (z - z.max()).exp(), torch.zeros_like(z))
        es, order = e.sort(descending=True)
        cum = es.cumsum(0) / es.sum()
        first = int((cum < p).sum())
        keep &= z >= z[order[first]]
    return torch.softmax(z.masked_fill(~keep, -math.inf), 0)


def chi_square_p(counts, probs, n):
    """Goodness of fit: bins with expected count >= 5, the rest lumped into one -> p-value."""
    expected = n * probs
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat / 2))


def check_distribution(V, n, configs):
    row = torch.randn(1, V, generator=torch.Generator().manual_seed(V)) * 2.0
    rows = []
    for i, (T, k, p) in enumerate(configs):
        probs = exact_probs(row[0], T, k, p)
        gen = torch.Generator(DEV).manual_seed(100 + i)
        tok, lp = rollout.sample_tokens(row.to(DEV).expand(n, V), T, k, p, generator=gen,
                                        backend="triton")
        tok, lp = tok.cpu(), lp.cpu()
        counts = torch.bincount(tok, minlength=V).double()
        r = dict(T=T, k=k, p=p, chi2_p=round(chi_square_p(counts, probs, n), 5),
                 outside_kept=int(counts[probs == 0].sum()),
                 max_lp_err=float((lp.double() - probs[tok].log()).abs().max()))
        r["ok"] = r["outside_kept"] == 0 and r["chi2_p"] > 1e-4 and r["max_lp_err"] < 5e-5
        rows.append(r)
    return {"V": V, "draws": n, "rows": rows, "ok": all(r["ok"] for r in rows)}


def check_same_noise(B, V, dtype):
    gen = torch.Generator(DEV).manual_seed(V)
    logits = (torch.randn(B, 3, V, generator=gen, device=DEV) * 3).to(dtype)[:, 1]  # strided rows
    noise = rollout.gumbel_noise((B, V), torch.Generator(DEV).manual_seed(V + 1), DEV)
    rows = []
    for T, k, p in [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.0, 0, 0.8), (1.3, 3, 0.5)]:
        ta, la = rollout._sample_with_noise(logits, noise, T, k, p, backend="torch")
        tb, lb = rollout._sample_with_noise(logits, noise, T, k, p, backend="triton")
        same = ta == tb
        r = dict(T=T, k=k, p=p, mismatches=int((~same).sum()),
                 max_lp_diff=float((la - lb)[same].abs().max()) if bool(same.any()) else None)
        r["ok"] = r["mismatches"] == 0 and r["max_lp_diff"] is not None and r["max_lp_diff"] < 2e-5
        rows.append(r)
    return {"B": B, "V": V, "dtype": str(dtype)[6:], "rows": rows, "ok": all(r["ok"] for r in rows)}


def check_logprobs(B, T, V, temp):
    gen = torch.Generator(DEV).manual_seed(B + T + V)
    base = torch.randn(B, T + 2, V, generator=gen, device=DEV) * 4
    targets = torch.randint(0, V, (B, T), generator=gen, device=DEV)
    w = torch.randn(B, T, generator=gen, device=DEV)
    values, grads = {}, {}
    for backend in ("torch", "triton"):
        leaf = base.clone().requires_grad_(True)
        # strided view
        lp = rollout.token_logprobs(leaf[:, 1:T + 1], targets, temp, backend=backend)
        (lp * w).sum().backward()
        values[backend], grads[backend] = lp.detach(), leaf.grad
    z = base[:, 1:T + 1].double() * rollout._inv_temp(temp)
    ref = torch.log_softmax(z, -1).gather(-1, targets[..., None])[..., 0]
    gref = (w.double()[..., None] * (F.one_hot(targets, V).double() - z.softmax(-1))
            * rollout._inv_temp(temp))
    r = dict(B=B, T=T, V=V, temperature=temp,
             fwd_err_vs_f64=float((values["triton"].double() - ref).abs().max()),
             grad_err_vs_f64=float((grads["triton"][:, 1:T + 1].double() - gref).abs().max()),
             grad_err_vs_torch=float((grads["triton"] - grads["torch"]).abs().max()),
             grad_outside_view=float(grads["triton"][:, [0, T + 1]].abs().max()))
    r["ok"] = (r["fwd_err_vs_f64"] < 1e-4 and r["grad_err_vs_torch"] < 1e-5
               and r["grad_outside_view"] == 0)
    return r


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
    graphed = rollout.generate(small, prompts, graphs=True, **kw)  # a CUDA graph on CUDA
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
    p = train.PRESETS["gpu"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=p.block_size, n_layer=p.n_layer,
                          n_head=p.n_head, n_embd=p.n_embd)).to(DEV).eval()
    out = {"params": model.num_params(), "rows": []}
    new = 24
    for R in ((128, 1024) if DEV == "cuda" else (16,)):
        prompts = random_prompts([40] * (R // 8), 320)
        for graphs in (False, True):  # graphs: fixed-shape decode replayed as a CUDA graph
            run = lambda: rollout.generate(model, prompts, 8, new, 1.0, seed=0, eos_id=-1,
                                           graphs=graphs)
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
    """The gpu preset's pretraining step on real batches, as train.pretrain runs it."""
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
        t = timed(step, iters=20, warmup=3)
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

def cli(args, timeout=300):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
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


WORK = os.path.join(ARGS.out, "work")
PRESET = "micro" if ARGS.smoke else "gpu"


def fst_args(out):
    return ["run", "--preset", PRESET, "--device", DEV, "--method", "fst", "--task", "hidden-rule",
            "--steps", str(ARGS.fst_steps), "--init", os.path.join(WORK, "base", "model.pt"),
            "--out", out]


def check_runs():
    steps = 30 if ARGS.smoke else ARGS.pretrain_steps
    t0 = time.time()
    lines = cli(["pretrain", "--preset", PRESET, "--device", DEV, "--steps", str(steps),
                 "--out", os.path.join(WORK, "base")]).strip().splitlines()
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
    out["fst"] = dict(steps=summary["steps"], final_val_acc=summary["final_val_acc"],
                      rollouts=summary["rollouts"], wall_s=round(summary["wall_s"], 1),
                      process_s=round(time.time() - t0, 1),
                      rl_step_s_median=round(statistics.median(plain), 3) if plain else None,
                      deployed_prompt=summary["deployed_prompt"])
    out["ok"] = math.isfinite(m["general_acc"]) and summary["steps"] == ARGS.fst_steps
    return out


def check_determinism():
    out = {}
    steps = "20" if ARGS.smoke else "100"
    for name in ("p1", "p2"):
        cli(["pretrain", "--preset", PRESET, "--device", DEV, "--steps", steps,
             "--out", os.path.join(WORK, name)])
    out["pretrain_twice_same_weights"] = same_weights(os.path.join(WORK, "p1", "model.pt"),
                                                      os.path.join(WORK, "p2", "model.pt"))
    a, b, c = (os.path.join(WORK, n) for n in ("fst_a", "fst_b", "fst_c"))
    cli(fst_args(b))
    out["fst_twice_same_log"] = without_wall(rows_of(a)) == without_wall(rows_of(b))
    out["fst_twice_same_weights"] = same_weights(os.path.join(a, "model.pt"),
                                                 os.path.join(b, "model.pt"))
    # killed without warning once a checkpoint exists, then resumed
    cmd = [sys.executable, os.path.join(ROOT, "train.py")] + fst_args(c) + ["--ckpt-every", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, t0 = os.path.join(c, "log.jsonl"), time.time()
    while time.time() - t0 < 240 and proc.poll() is None:
        if os.path.exists(log) and open(log).read().count("\n") >= 6:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out["killed_mid_run"] = not os.path.exists(os.path.join(c, "summary.json"))
    cli(fst_args(c) + ["--ckpt-every", "4", "--resume"])
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
    """The repository's own device tests (kernels compiled, generation and the KV cache on the
    device)."""
    files = ["tests/test_rollout.py", "tests/test_model.py", "tests/test_rl.py"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + files,
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-300:]
    return {"files": files, "summary": tail, "ok": p.returncode == 0,
            "failures": [l for l in p.stdout.splitlines() if l.startswith("FAILED")][:10]}


# -----------------------------------------------------------------------------

def main():
    if not ARGS.smoke and not torch.cuda.is_available():  # before any stage: one line
        print("error: needs a CUDA GPU and none is visible; try --smoke", file=sys.stderr)
        return 2
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
    tf32(False)
    big = DEV == "cuda"
    configs = [(1.0, 0, 1.0), (0.7, 50, 1.0), (1.0, 0, 0.9), (1.3, 20, 0.8)]
    # the interpreter runs one program per draw: few draws on a CPU
    record("kernels/distribution_V320",
           lambda: check_distribution(320, 1 << 20 if big else 512,
                                      configs if big else configs[:2]))
    if big:
        record("kernels/distribution_V32768",
               lambda: check_distribution(32768, 1 << 16, configs[:3]))
    record("kernels/same_noise_fp32",
           lambda: check_same_noise(4096 if big else 32, 320, torch.float32))
    record("kernels/same_noise_bf16",
           lambda: check_same_noise(4096 if big else 32, 320, torch.bfloat16))
    if big:
        record("kernels/same_noise_V32768", lambda: check_same_noise(1024, 32768, torch.float32))
    record("kernels/logprobs_V320", lambda: check_logprobs(64 if big else 4, 12, 320, 1.0))
    if big:
        record("kernels/logprobs_V32768_T0.7", lambda: check_logprobs(4, 8, 32768, 0.7))
    record("model", check_model)
    record("bench/bandwidth_sampler", bench_bandwidth)
    record("bench/decode", bench_decode)
    record("bench/pretrain_step", bench_pretrain_step)
    tf32(False)
    record("runs", check_runs)
    record("determinism", check_determinism)
    if not ARGS.smoke:  # on a CPU the README's test command covers these
        record("pytest", check_pytest)
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
