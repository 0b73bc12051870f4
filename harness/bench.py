"""
harness/bench.py: speed of the rollout machinery, measured side by side in one run.

    python -m harness.bench rollout [--prompts 64 --samples 8 --max-new 24 --threads N]
    python -m harness.bench sample  [--batch 512 --vocabs 512,32768 --threads N]

rollout: a tiny-preset-size GPT with random weights, P prompts of 30-60 tokens x G samples, every
  row decodes exactly max_new_tokens (eos_id=-1 is never sampled, so the stop check still runs each
  step). Tokens/s of rollout.generate (prefill once, KV cache, all rows in one batch) against
  rollout.generate_naive (re-runs the whole prefix every step) and, when transformers imports,
  Hugging Face generate on a same-size Llama with random weights (use_cache=True, do_sample=True,
  num_return_sequences=G).
sample: rollout.sample_tokens (torch path: Gumbel-max, no softmax, no sort) against the usual
  sampler (softmax, multinomial), at B rows for each vocabulary, at temperatures 1 and 0.7
  (training samples at 1 and never truncates: top-k / top-p are gone). On CUDA the Triton kernel is
  timed too, with achieved GB/s (bytes = B * V * element size: each logit read once) against the
  card's memory bandwidth (table below or --bandwidth).

Timings are medians over --repeats runs after --warmup runs; results are printed as a table and
written as JSON to runs/bench/<name>.json.
"""

import argparse
import json
import os
import re
import statistics
import time

import torch

from model import GPT, GPTConfig
from rollout import generate, generate_naive, sample_tokens
# one-line errors, as every fastslow command
from harness.cli import (MOST_THREADS, CLIParser, UserError, exit_on_user_error, nonnegative,
                         positive, writable_folder)

# peak memory bandwidth, GB/s, by a substring of torch.cuda.get_device_name()
CARD_GBPS = {"H200": 4800, "H100 SXM": 3350, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350,
             "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "L4": 300,
             "RTX 4090": 1008, "RTX 3090": 936, "A10G": 600, "A10": 600, "V100": 900, "T4": 320}


def timeit(fn, warmup, repeats, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(rows, cols):
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))


RESULTS = "runs/bench/{name}.json"
BLOCK = 256  # the rollout benchmark's model: positions (the tiny preset's)


def save(name, result):
    path = RESULTS.format(name=name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


# -----------------------------------------------------------------------------
# rollout

def hf_generate_fn(cfg, prompts, G, max_new, device):
    """-> a callable running HF generate on a same-size random Llama, or a reason string when
    unavailable."""
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:
        return (f"transformers not importable ({type(e).__name__}); pip install transformers to "
                "add this row")
    transformers.logging.set_verbosity_error()
    hcfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd,
                       num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_head,
                       # gated MLP with ~ the params of our 4x ReLU^2 MLP
                       intermediate_size=(8 * cfg.n_embd) // 3,
                       max_position_embeddings=cfg.block_size, tie_word_embeddings=True,
                       pad_token_id=0, bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(hcfg).to(device).eval()
    Lp = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), Lp, dtype=torch.long)
    att = torch.zeros(len(prompts), Lp, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, Lp - len(p):] = torch.tensor(p)
        att[i, Lp - len(p):] = 1
    ids, att = ids.to(device), att.to(device)

    def run():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0,
                                 top_k=0, top_p=1.0, num_return_sequences=G, max_new_tokens=max_new,
                                 min_new_tokens=max_new, use_cache=True, pad_token_id=0)
        assert out.shape == (len(prompts) * G, Lp + max_new), out.shape
    return run, sum(p.numel() for p in model.parameters())


def bench_rollout(args, device):
    cfg = GPTConfig(vocab_size=512, block_size=BLOCK, n_layer=4, n_head=4, n_embd=128)
    torch.manual_seed(0)
    model = GPT(cfg).to(device).eval()
    g = torch.Generator().manual_seed(1)
    lens = torch.randint(args.min_len, args.max_len + 1, (args.prompts,), generator=g).tolist()
    prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in lens]
    G, N = args.samples, args.max_new
    ntok = len(prompts) * G * N
    kw = dict(num_samples=G, max_new_tokens=N, temperature=1.0, seed=0, eos_id=-1)
    check = generate(model, prompts, **kw)[1]
    assert check.shape == (len(prompts) * G, N) and bool(check.all()), (
        "generate did not run every row to full length")

    rows = []
    t = timeit(lambda: generate(model, prompts, **kw), args.warmup, args.repeats, device)
    rows.append(dict(method="rollout.generate (KV cache, one batch)", seconds=round(t, 4),
                     tok_per_s=round(ntok / t)))
    t_naive = timeit(lambda: generate_naive(model, prompts, **kw), min(args.warmup, 1),
                     args.naive_repeats, device)
    rows.append(dict(method="generate_naive (full recompute)", seconds=round(t_naive, 4),
                     tok_per_s=round(ntok / t_naive)))
    hf = hf_generate_fn(cfg, prompts, G, N, device) if not args.no_hf else "skipped by --no-hf"
    if isinstance(hf, str):
        print(f"Hugging Face row skipped: {hf}")
        hf_params = None
    else:
        run, hf_params = hf
        t_hf = timeit(run, args.warmup, args.repeats, device)
        rows.append(dict(method="HF LlamaForCausalLM.generate", seconds=round(t_hf, 4),
                         tok_per_s=round(ntok / t_hf)))
    for r in rows:
        r["speedup_of_generate"] = round(r["seconds"] / rows[0]["seconds"], 2)
    print(f"rollout: {len(prompts)} prompts ({min(lens)}-{max(lens)} tokens) x {G} samples x {N} "
          f"new tokens = {ntok} tokens, GPT {model.num_params() / 1e6:.2f}M params"
          + (f", HF Llama {hf_params / 1e6:.2f}M params" if hf_params else "")
          + f", device {device}, torch threads {torch.get_num_threads()}")
    print_table(rows, ["method", "seconds", "tok_per_s", "speedup_of_generate"])
    save("rollout", dict(config=vars(args), device=str(device), threads=torch.get_num_threads(),
                         torch=torch.__version__, gpt_params=model.num_params(),
                         hf_params=hf_params, rows=rows))


# -----------------------------------------------------------------------------
# sample

def sample_sort(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """The usual sort-based sampler (HF / many RL codebases): sort, mask, softmax, cumsum,
    multinomial."""
    z = logits.float() / temperature
    if not top_k and top_p >= 1:
        return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(1)
    vals, idx = torch.sort(z, dim=-1, descending=True)
    if top_k:
        vals[:, top_k:] = float("-inf")
    if top_p < 1:
        probs = torch.softmax(vals, -1)
        # drop a token when the mass before it already reaches top_p
        drop = probs.cumsum(-1) - probs > top_p
        vals = vals.masked_fill(drop, float("-inf"))
    j = torch.multinomial(torch.softmax(vals, -1), 1, generator=generator)
    return idx.gather(1, j).squeeze(1)


def bench_sample(args, device):
    B = args.batch
    rows = []
    gbps_peak = args.bandwidth
    if device.type == "cuda" and not gbps_peak:
        name = torch.cuda.get_device_name()
        gbps_peak = next((v for k, v in CARD_GBPS.items() if k in name), None)
    for V in args.vocabs:
        logits = torch.randn(B, V, generator=torch.Generator().manual_seed(V)).mul_(2.0).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        for label, opts in [("T=1", dict(temperature=1.0)), ("T=0.7", dict(temperature=0.7))]:
            t_sort = timeit(lambda: sample_sort(logits, generator=gen, **opts), args.warmup,
                            args.repeats, device)
            t_ours = timeit(lambda: sample_tokens(logits, generator=gen, backend="torch", **opts),
                            args.warmup, args.repeats, device)
            row = dict(V=V, options=label, sort_ms=round(t_sort * 1e3, 3),
                       torch_ms=round(t_ours * 1e3, 3), speedup=round(t_sort / t_ours, 2))
            if device.type == "cuda":
                try:
                    t_tri = timeit(
                        lambda: sample_tokens(logits, generator=gen, backend="triton", **opts),
                        args.warmup, args.repeats, device)
                    gbps = B * V * logits.element_size() / t_tri / 1e9
                    row.update(triton_ms=round(t_tri * 1e3, 3), triton_GBps=round(gbps, 1),
                               pct_of_peak=round(100 * gbps / gbps_peak, 1) if gbps_peak else "?")
                except Exception as e:  # a missing / broken triton must not hide the torch numbers
                    row.update(triton_ms=f"failed: {type(e).__name__}")
            rows.append(row)
    print(f"sample: B={B}, device {device}, torch threads {torch.get_num_threads()}"
          + (f", peak bandwidth {gbps_peak} GB/s" if device.type == "cuda" else ""))
    cols = ["V", "options", "sort_ms", "torch_ms", "speedup"]
    if device.type == "cuda":
        cols += ["triton_ms", "triton_GBps", "pct_of_peak"]
    print_table(rows, cols)
    save("sample", dict(config=vars(args), device=str(device), threads=torch.get_num_threads(),
                        torch=torch.__version__, peak_GBps=gbps_peak, rows=rows))


def build_parser():
    ap = CLIParser(description=__doc__.split("\n\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["rollout", "sample"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=positive(int, MOST_THREADS), default=None,
                    help=f"torch.set_num_threads (default: torch's default; at most "
                         f"{MOST_THREADS:,})")
    ap.add_argument("--warmup", type=nonnegative(int), default=1)
    ap.add_argument("--repeats", type=positive(int), default=5)
    # rollout
    ap.add_argument("--prompts", type=positive(int), default=64)
    ap.add_argument("--samples", type=positive(int), default=8)
    ap.add_argument("--max-new", type=positive(int), default=24)
    ap.add_argument("--min-len", type=positive(int), default=30)
    ap.add_argument("--max-len", type=positive(int), default=60)
    ap.add_argument("--naive-repeats", type=positive(int), default=1,
                    help="the naive loop is slow; time it this many times")
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face row")
    # sample
    ap.add_argument("--batch", type=positive(int), default=512)
    ap.add_argument("--vocabs", default="512,32768")
    ap.add_argument("--bandwidth", type=positive(float), default=None,
                    help="peak GB/s of the card (default: looked up)")
    return ap


@exit_on_user_error
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
    if args.min_len > args.max_len:
        raise UserError(f"--min-len {args.min_len} > --max-len {args.max_len}")
    if args.what == "rollout" and args.max_len + args.max_new > BLOCK:
        raise UserError(f"--max-len {args.max_len} + --max-new {args.max_new} must fit the "
                        f"model's {BLOCK} positions")
    if not all(re.fullmatch(r"[0-9]+", v.strip()) and int(v) > 0  # ASCII digits ('²' is not)
               for v in args.vocabs.split(",")):
        raise UserError(f"--vocabs must be comma-separated integers > 0, got '{args.vocabs}'")
    writable_folder(os.path.dirname(RESULTS))  # before any timing
    args.vocabs = [int(v) for v in args.vocabs.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bench_rollout(args, device) if args.what == "rollout" else bench_sample(args, device)


if __name__ == "__main__":
    main()
