"""
tests/test_model.py: checks model.py on tiny float32 GPTs: the KV cache (prefill + token-by-token
decode, chunked prefill) reproduces a full forward; a left-padded batch with explicit positions and
key_mask gives each prompt's own logits and no NaN, including after cache.repeat_rows; checkpoints
round-trip config, weights and the `extra` dict, and every unusable file raises a one-line
CheckpointError; positions beyond block_size raise a clear ValueError.

Run: python -m pytest -q tests/test_model.py   (a few seconds on CPU)
"""

import pickle

import pytest
import torch

from world import tasks
from model import GPT, GPTConfig, CheckpointError, save_checkpoint, load_checkpoint

# tiny tensors: a second thread only waits on the shared cores (as in test_rl.py)
torch.set_num_threads(1)

TOL = 1e-4  # float32 throughout
CFG = dict(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=32)
PAD = 63


def make_model(seed=0, **over):
    """A tiny GPT whose weights are scaled up from the init so logits are O(1): a masking or cache
    bug then moves them far beyond TOL (at the 0.02 init every logit is < 1 and differences
    shrink)."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**{**CFG, **over})).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)
    return m


def maxdiff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def model():
    return make_model()


def test_float32_and_shapes(model):
    idx = torch.randint(0, CFG["vocab_size"], (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(idx)
    assert logits.shape == (3, 7, CFG["vocab_size"]) and logits.dtype == torch.float32
    assert logits.abs().max() > 1.0  # the scaled weights give logits large enough to be sensitive
    assert torch.isfinite(logits).all()


# -----------------------------------------------------------------------------
# KV cache

def test_cache_prefill_then_decode_matches_full_forward(model):
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, CFG["vocab_size"], (2, 30), generator=g)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, 40)
        outs = [model(idx[:, :12], cache=cache)]  # prefill a chunk
        assert cache.pos == 12
        for t in range(12, 30):                     # then one token at a time
            outs.append(model(idx[:, t:t + 1], cache=cache))
        assert cache.pos == 30
        inc = torch.cat(outs, dim=1)
        # negative control: decoding a token without its cache is not the same thing
        alone = model(idx[:, 20:21])
    assert inc.shape == full.shape
    assert maxdiff(inc, full) <= TOL
    assert maxdiff(alone[:, 0], full[:, 20]) > 1e-2


@pytest.mark.parametrize("split", [1, 9, 17])
def test_chunked_prefill_matches_full_forward(model, split):
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, CFG["vocab_size"], (2, 25), generator=g)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, 25)  # exactly as long as the sequence
        a = model(idx[:, :split], cache=cache)
        b = model(idx[:, split:], cache=cache)
    assert cache.pos == 25
    assert maxdiff(torch.cat([a, b], dim=1), full) <= TOL


def test_new_cache_layout(model):
    cache = model.new_cache(3, 10)
    assert cache.pos == 0 and len(cache.k) == len(cache.v) == CFG["n_layer"]
    assert cache.k[0].shape == (3, CFG["n_head"], 10, CFG["n_embd"] // CFG["n_head"])
    assert cache.k[0].dtype == torch.float32
    cache.repeat_rows(2)
    assert cache.k[1].shape[0] == cache.v[1].shape[0] == 6


# -----------------------------------------------------------------------------
# left padding: positions + key_mask

def left_pad(prompts):
    """-> idx (B, T), positions (B, T), key_mask (B, T) for left-padded prompts."""
    T = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), T), PAD, dtype=torch.long)
    pos = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.bool)
    for i, p in enumerate(prompts):
        n = len(p)
        idx[i, T - n:] = torch.tensor(p)
        pos[i, T - n:] = torch.arange(n)
        mask[i, T - n:] = True
    return idx, pos, mask


def random_prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, PAD, (n,), generator=g).tolist() for n in lengths]


def test_left_padded_batch_matches_each_prompt_alone(model):
    prompts = random_prompts([5, 12, 1, 9], seed=3)
    idx, pos, mask = left_pad(prompts)
    T = idx.shape[1]
    with torch.no_grad():
        batch = model(idx, positions=pos, key_mask=mask)
        unmasked = model(idx, positions=pos)  # negative control: pads attended
        assert not torch.isnan(batch).any() and torch.isfinite(batch).all()
        for i, p in enumerate(prompts):
            alone = model(torch.tensor([p]))[0]
            assert maxdiff(batch[i, T - len(p):], alone) <= TOL, i
            if len(p) < T:
                assert maxdiff(unmasked[i, T - len(p):], alone) > 1e-2


def test_left_padded_cache_decode_matches_each_prompt_alone(model):
    prompts = random_prompts([4, 10, 7], seed=4)
    idx, pos, mask = left_pad(prompts)
    B, T = idx.shape
    steps = 6
    g = torch.Generator().manual_seed(5)
    new = torch.randint(0, PAD, (B, steps), generator=g)
    lens = torch.tensor([len(p) for p in prompts])
    with torch.no_grad():
        cache = model.new_cache(B, T + steps)
        key_mask = torch.zeros(B, T + steps, dtype=torch.bool)
        key_mask[:, :T] = mask
        key_mask[:, T:] = True  # the caller keeps the mask as long as the cache
        outs = [model(idx, positions=pos, cache=cache, key_mask=key_mask)[:, -1:]]
        for s in range(steps):
            outs.append(model(new[:, s:s + 1], positions=(lens + s)[:, None], cache=cache,
                              key_mask=key_mask))
        # (B, 1 + steps, V): logits after the prompt and after each new token
        inc = torch.cat(outs, dim=1)
        assert not torch.isnan(inc).any()
        for i, p in enumerate(prompts):
            alone = model(torch.cat([torch.tensor(p), new[i]])[None])[0, len(p) - 1:]
            assert maxdiff(inc[i], alone) <= TOL, i


def test_repeat_rows_matches_batch_built_with_repeated_rows(model):
    prompts = random_prompts([6, 11], seed=6)
    n, steps = 3, 5
    idx, pos, mask = left_pad(prompts)
    B, T = idx.shape
    lens = torch.tensor([len(p) for p in prompts]).repeat_interleave(n)
    g = torch.Generator().manual_seed(7)
    # a different continuation for every row
    new = torch.randint(0, PAD, (B * n, steps), generator=g)

    def km(m):
        k = torch.ones(m.shape[0], T + steps, dtype=torch.bool)
        k[:, :T] = m
        return k

    def decode(cache, key_mask):
        outs = []
        for s in range(steps):
            outs.append(model(new[:, s:s + 1], positions=(lens + s)[:, None], cache=cache,
                              key_mask=key_mask))
        return torch.cat(outs, dim=1)

    with torch.no_grad():
        # prefill B rows once, then repeat each row n times
        cache = model.new_cache(B, T + steps)
        first = model(idx, positions=pos, cache=cache, key_mask=km(mask))
        cache.repeat_rows(n)
        assert cache.k[0].shape[0] == B * n and cache.pos == T
        got = decode(cache, km(mask).repeat_interleave(n, dim=0))
        # reference: a batch of B*n rows built with the prompts repeated, prefilled as such
        ref_cache = model.new_cache(B * n, T + steps)
        ref_key_mask = km(mask.repeat_interleave(n, dim=0))
        ref_first = model(idx.repeat_interleave(n, dim=0),
                          positions=pos.repeat_interleave(n, dim=0),
                          cache=ref_cache, key_mask=ref_key_mask)
        ref = decode(ref_cache, ref_key_mask)
        assert not torch.isnan(got).any()
        assert maxdiff(first.repeat_interleave(n, dim=0), ref_first) <= TOL
        assert maxdiff(got, ref) <= TOL
        # and each row equals its prompt + continuation run alone
        for r in range(B * n):
            p = prompts[r // n]
            alone = model(torch.cat([torch.tensor(p), new[r]])[None])[0, len(p):]
            assert maxdiff(got[r], alone) <= TOL, r
        # rows of one group got different continuations, so their logits differ (the check is not
        # vacuous)
        assert maxdiff(got[0], got[1]) > 1e-2


def test_all_pad_row_and_full_mask_have_no_nan(model):
    # a row that is all padding still yields finite logits (each pad query sees at least itself)
    idx = torch.tensor([[PAD, PAD, PAD], [1, 2, 3]])
    mask = torch.tensor([[False, False, False], [True, True, True]])
    pos = torch.tensor([[0, 0, 0], [0, 1, 2]])
    with torch.no_grad():
        out = model(idx, positions=pos, key_mask=mask)
        assert torch.isfinite(out).all()
        assert maxdiff(out[1], model(idx[1:])[0]) <= TOL


# -----------------------------------------------------------------------------
# block_size

def test_positions_beyond_block_size_raise(model):
    bs = CFG["block_size"]
    with torch.no_grad():
        # exactly block_size is fine
        assert model(torch.zeros(1, bs, dtype=torch.long)).shape[1] == bs
        with pytest.raises(ValueError, match="block_size") as ei:
            model(torch.zeros(1, bs + 1, dtype=torch.long))
        assert str(ei.value).count("\n") == 0 and str(bs) in str(ei.value)
        with pytest.raises(ValueError, match="block_size"):
            model(torch.zeros(1, 2, dtype=torch.long), positions=torch.tensor([[0, bs]]))
        # through the cache: the pointer runs past block_size while decoding
        cache = model.new_cache(1, bs + 4)
        model(torch.zeros(1, bs - 1, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)  # position bs-1: fine
        with pytest.raises(ValueError, match="block_size"):
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)  # position bs
        assert cache.pos == bs  # a rejected call does not advance the cache


# -----------------------------------------------------------------------------
# checkpoints

def one_line_checkpoint_error(path):
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert msg and "\n" not in msg
    return msg


def test_checkpoint_round_trip(tmp_path):
    m = make_model(seed=8, n_layer=3)
    enc = tasks.build_tokenizer()
    extra = {"tokenizer": tasks.tokenizer_state(enc), "step": 17, "metrics": {"loss": 0.25}}
    path = tmp_path / "model.pt"
    save_checkpoint(path, m, extra)
    # atomic write leaves no temp file
    assert path.exists() and not (tmp_path / "model.pt.tmp").exists()
    m2, extra2 = load_checkpoint(path)
    assert isinstance(m2, GPT) and m2.cfg == m.cfg
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    idx = torch.randint(0, CFG["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(m.eval()(idx), m2.eval()(idx))
    assert extra2["step"] == 17 and extra2["metrics"] == {"loss": 0.25}
    assert extra2["tokenizer"] == extra["tokenizer"]
    enc2 = tasks.tokenizer_from_state(extra2["tokenizer"])
    text = "rule: rotate 2 then add 7\nin: 1 2 3\nout: 0 1 9"
    assert enc2.encode_ordinary(text) == enc.encode_ordinary(text)
    assert tasks.special_ids(enc2) == tasks.special_ids(enc)


def test_checkpoint_without_extra_and_overwrite(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, make_model(seed=1))
    # str paths work too; the second save replaces the first
    save_checkpoint(str(path), make_model(seed=2))
    m, extra = load_checkpoint(str(path))
    assert extra == {}
    ref = make_model(seed=2)
    assert all(torch.equal(a, b)
               for a, b in zip(m.state_dict().values(), ref.state_dict().values()))


def test_missing_checkpoint(tmp_path):
    msg = one_line_checkpoint_error(tmp_path / "nope.pt")
    assert "nope.pt" in msg and "not found" in msg


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n\x00\x01", "random"])
def test_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "random":
        g = torch.Generator().manual_seed(0)
        content = bytes(torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8).tolist())
    path.write_bytes(content)
    assert "bad.pt" in one_line_checkpoint_error(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.pt"
    save_checkpoint(path, make_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    one_line_checkpoint_error(path)


@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2, 3],
                                 {"format": "other", "config": {}, "state_dict": {}}])
def test_foreign_torch_file(tmp_path, obj):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    assert "not a fastslow checkpoint" in one_line_checkpoint_error(path)


def test_foreign_pickle_file(tmp_path):
    path = tmp_path / "foreign.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    one_line_checkpoint_error(path)


@pytest.mark.parametrize("edit", [{"n_embd": 48}, {"n_layer": 3}, {"n_layer": 1},
                                  {"vocab_size": 65}, {"bogus": 1}])
def test_checkpoint_not_matching_the_model(tmp_path, edit):
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_model())
    ck = torch.load(path, weights_only=False)
    ck["config"].update(edit)
    torch.save(ck, path)
    assert "does not match" in one_line_checkpoint_error(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_setup_device_enforces_deterministic_kernels_on_cuda_and_leaves_the_cpu_alone(
        monkeypatch):
    """On CUDA: TF32 matmuls, deterministic kernels enforced (strict: no warn_only, so SDPA's
    backward takes its deterministic path whatever the shapes), cuDNN attention off, the cuBLAS
    workspace set. On the CPU: nothing changes. (torch's setters are recorded, not called, and every
    flag is restored after the test.)"""
    import os
    import model
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, warn_only=False:
                        calls.append(("deterministic", mode, warn_only)))
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp",
                        lambda on: calls.append(("cudnn_sdp", on)))
    flags = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cudnn, "benchmark")]
    for obj, name in flags:  # restored at teardown
        monkeypatch.setattr(obj, name, False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert model.setup_device("cpu") == "cpu"
    assert calls == [] and not any(getattr(obj, name) for obj, name in flags)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert model.setup_device("cuda") == "cuda"
    assert calls == [("deterministic", True, False), ("cudnn_sdp", False)]
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
