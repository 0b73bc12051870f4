"""
model.py: a small GPT written from scratch, with a KV cache and self-contained checkpoints.

    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=512))
    logits = model(idx)                          # (B, T) -> (B, T, V)

Architecture (nanoGPT / nanochat lineage, pared down):
  token embedding (tied with the output head) -> n_layer x [RMSNorm -> causal self-attention with
  RoPE -> residual, RMSNorm -> MLP (ReLU^2) -> residual] -> RMSNorm -> logits.
No biases, no dropout, no learned positions: RoPE makes attention depend on relative position only,
which is what lets the rollout code left-pad prompts of different lengths and still get the same
logits as an unpadded forward (it passes each token's position explicitly).

The KV cache is a plain pair of tensors per layer plus a fill pointer. Generation code (rollout.py)
prefills it once per prompt, repeats its rows for the samples of a group and decodes one token per
step. Nothing here knows about tasks, tokens' meaning or RL.

Checkpoints hold the config, the weights, and an opaque `extra` dict (the tokenizer's ranks go
there), so one file is enough to rebuild the model and its vocabulary.
"""

import errno
import math
import os
import shutil
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 512
    block_size: int = 256   # longest sequence (prompt + completion) the RoPE table covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not one of ours (one-line message)."""


def rms_norm(x):
    # no learned gain: fewer parameters, same quality at this size
    return F.rms_norm(x, (x.size(-1),))


def rope_tables(seq_len, head_dim, base=10000.0):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))  # (D/2,)
    freqs = torch.outer(torch.arange(seq_len).float(), inv_freq)                 # (T, D/2)
    return freqs.cos(), freqs.sin()


def apply_rope(x, cos, sin):
    # x: (B, H, T, D); cos/sin: (B, 1, T, D/2), already gathered at each token's position
    x1, x2 = x[..., ::2], x[..., 1::2]
    # rotate each (even, odd) pair
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class KVCache:
    """Keys and values of every layer for B rows and up to max_len positions, filled left to right.

    All rows share the fill pointer `pos`; rows whose prompt is shorter are left-padded and those
    pad slots are excluded through `key_mask` (B, max_len), which the caller maintains.
    """

    def __init__(self, n_layer, B, n_head, max_len, head_dim, device, dtype):
        self.k = [torch.zeros(B, n_head, max_len, head_dim, device=device, dtype=dtype)
                  for _ in range(n_layer)]
        self.v = [torch.zeros(B, n_head, max_len, head_dim, device=device, dtype=dtype)
                  for _ in range(n_layer)]
        self.pos = 0

    def repeat_rows(self, n):
        """Each row becomes n consecutive rows (prefill once, then sample n continuations)."""
        self.k = [k.repeat_interleave(n, dim=0) for k in self.k]
        self.v = [v.repeat_interleave(n, dim=0) for v in self.v]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, layer, cache, attn_mask):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, H, T, D)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # write this chunk into the cache, attend over everything written so far
        if cache is not None:
            p = cache.pos
            cache.k[layer][:, :, p:p + T] = k
            cache.v[layer][:, :, p:p + T] = v
            k, v = cache.k[layer][:, :, :p + T], cache.v[layer][:, :, :p + T]
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.proj(F.relu(self.fc(x)).square())  # ReLU^2, as in nanochat


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, layer, cache, attn_mask):
        x = x + self.attn(rms_norm(x), cos, sin, layer, cache, attn_mask)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        cos, sin = rope_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for b in self.blocks:  # scale residual projections down with depth (GPT-2 init)
            for p in (b.attn.proj.weight, b.mlp.proj.weight):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, B, max_len, device=None, dtype=None):
        c = self.cfg
        w = self.wte.weight
        return KVCache(c.n_layer, B, c.n_head, max_len, c.n_embd // c.n_head, device or w.device,
                       dtype or w.dtype)

    def forward(self, idx, positions=None, cache=None, key_mask=None):
        """idx (B, T) -> logits (B, T, V).

        positions (B, T): each token's RoPE position (default 0..T-1, shifted by cache.pos).
        cache: a KVCache to read from and append to (its pointer advances by T).
        key_mask (B, Tk) bool: which key slots may be attended (Tk = cache.pos + T with a cache,
        else T); None means every slot is valid, and attention is plain causal.
        """
        B, T = idx.shape
        p0 = cache.pos if cache is not None else 0
        if positions is None:
            positions = torch.arange(p0, p0 + T, device=idx.device).expand(B, T)
        # bounds: decode steps check the cache's slot pointer (a python int, so no host sync on GPU;
        # a slot index is never below its token's position), everything else checks the positions
        # themselves
        if (p0 + T > self.cfg.block_size) if (cache is not None and T == 1) else \
                (positions.max() >= self.cfg.block_size or positions.min() < 0):
            raise ValueError(f"positions must lie in [0, block_size={self.cfg.block_size}), got "
                             f"[{int(positions.min())}, {int(positions.max())}]")
        if cache is not None and p0 + T > cache.k[0].shape[2]:
            raise ValueError(f"KV cache holds {cache.k[0].shape[2]} positions; writing {T} at {p0} "
                             "overflows it")
        # (B, 1, T, D/2)
        cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)
        attn_mask = None
        if key_mask is not None or (cache is not None and p0 > 0):
            Tk = p0 + T
            q_slot = torch.arange(p0, p0 + T, device=idx.device)
            # (T, Tk) causal by slot
            attn_mask = torch.arange(Tk, device=idx.device)[None, :] <= q_slot[:, None]
            attn_mask = attn_mask[None, None]                                   # (1, 1, T, Tk)
            if key_mask is not None:
                attn_mask = attn_mask & key_mask[:, None, None, :Tk]            # (B, 1, T, Tk)
                # a pad query still sees itself, so no row is all -inf (NaN)
                diag = torch.arange(Tk, device=idx.device)[None, :] == q_slot[:, None]
                attn_mask = attn_mask | diag
        x = self.wte(idx)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, i, cache, attn_mask)
        if cache is not None:
            cache.pos += T
        return F.linear(rms_norm(x), self.wte.weight)  # (B, T, V), head tied to the embedding


# -----------------------------------------------------------------------------
# numerics of a device: every entry point that can run on CUDA calls setup_device first

# cuBLAS reads its workspace setting once, at its first matmul: set before anything can run one
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pick_device(flag):
    """--device auto|cpu|cuda -> the device: CUDA when there is one, for auto."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if flag == "auto" else flag


def setup_device(device):
    """One set of numerics per device, the same for every entry point (train.main, suite, run,
    pretrain, the --jobs workers, the report): on CUDA, TF32 matmuls (10-bit mantissa inputs, fp32
    accumulation) and deterministic kernels enforced whatever the shapes, so a repeated or resumed
    run logs what the first one did. Strict mode (no warn_only) makes SDPA's flash and
    memory-efficient backward passes take their deterministic paths (warn_only keeps the fast
    non-deterministic ones and only warns) and raises on any op that has no deterministic kernel,
    instead of drifting silently; cuDNN attention, which has none, is switched off. The CPU is
    deterministic already and is left exactly as it is. Idempotent. -> device"""
    if str(device).startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


# -----------------------------------------------------------------------------
# checkpoints

def write_atomic(path, data):
    """Text, or anything torch.save takes, written to a temp file and then renamed over `path`: a
    run killed at any moment leaves the old file or the new one, never half of one."""
    tmp = str(path) + ".tmp"
    try:
        if isinstance(data, str):
            with open(tmp, "w") as f:
                f.write(data)
        else:
            torch.save(data, tmp)
    except BaseException as e:  # Ctrl-C mid-write too: `path` is untouched and no half file stays
        # a full disk, as an OSError naming `path` (torch's writer says only "unexpected pos")
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC or (
            isinstance(e, RuntimeError) and shutil.disk_usage(os.path.dirname(tmp) or ".").free
            < 1 << 20)
        if os.path.exists(tmp):
            os.remove(tmp)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    os.replace(tmp, path)


def save_checkpoint(path, model, extra=None):
    """Write config + weights + an opaque `extra` dict (tokenizer ranks, metrics, step...),
    atomically."""
    write_atomic(path, {"format": "fastslow-gpt-1", "config": asdict(model.cfg),
                        "state_dict": model.state_dict(), "extra": extra or {}})


def read_checkpoint(path, fmt, device="cpu", fix="delete it and re-create it"):
    """-> the dict a fastslow checkpoint file holds, checked for its format tag `fmt` (torch.load
    with weights_only: no pickled code runs). CheckpointError (one line naming the file, and `fix`)
    if it is missing, a folder, not a regular file, unreadable or of another kind. model.pt
    (load_checkpoint) and a run's ckpt.pt (harness/runs.py) are both read here."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path} (run `python train.py pretrain` first "
                              "or pass a valid path)")
    if os.path.isdir(path):  # torch.load would say IsADirectoryError; the folder is not damaged
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; pass the .pt file "
                              "inside it (e.g. model.pt)")
    if not os.path.isfile(path):  # a FIFO or a device: torch.load could wait on it for ever
        raise CheckpointError(f"{path} is not a regular file; pass a .pt file")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(e).__name__}); "
                              f"{fix}")
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        raise CheckpointError(f"{path} is not a fastslow checkpoint of kind {fmt}; {fix}")
    return ck


def load_checkpoint(path, device="cpu"):
    """-> (model, extra). Raises CheckpointError with one clear line when the file is unusable."""
    ck = read_checkpoint(path, "fastslow-gpt-1", device)
    try:
        model = GPT(GPTConfig(**ck["config"]))
        model.load_state_dict(ck["state_dict"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} does not match the model code "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    return model.to(device), ck.get("extra", {})
