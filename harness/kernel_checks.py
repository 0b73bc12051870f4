"""
harness/kernel_checks.py: gpu_check's kernel stage. rollout.py's Triton sampler against the exact
softmax (chi-square and log-probs), the Triton and torch samplers given the same noise (the same
tokens), and the fused log-prob kernel against float64 (value and gradient), on device `dev`.
"""

import torch
import torch.nn.functional as F

import rollout


def exact_probs(row, T):
    """The distribution sample_tokens draws from, in float64: softmax(z), z = logits * fp32(1/T)."""
    return torch.softmax(row.double().cpu() * rollout._inv_temp(T), 0)


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


def check_distribution(V, n, temperatures, dev):
    row = torch.randn(1, V, generator=torch.Generator().manual_seed(V)) * 2.0
    rows = []
    for i, T in enumerate(temperatures):
        probs = exact_probs(row[0], T)
        gen = torch.Generator(dev).manual_seed(100 + i)
        tok, lp = rollout.sample_tokens(row.to(dev).expand(n, V), T, generator=gen,
                                        backend="triton")
        tok, lp = tok.cpu(), lp.cpu()
        counts = torch.bincount(tok, minlength=V).double()
        r = dict(T=T, chi2_p=round(chi_square_p(counts, probs, n), 5),
                 max_lp_err=float((lp.double() - probs[tok].log()).abs().max()))
        r["ok"] = r["chi2_p"] > 1e-4 and r["max_lp_err"] < 5e-5
        rows.append(r)
    return {"V": V, "draws": n, "rows": rows, "ok": all(r["ok"] for r in rows)}


def check_same_noise(B, V, dtype, dev):
    gen = torch.Generator(dev).manual_seed(V)
    logits = (torch.randn(B, 3, V, generator=gen, device=dev) * 3).to(dtype)[:, 1]  # strided rows
    noise = rollout.gumbel_noise((B, V), torch.Generator(dev).manual_seed(V + 1), dev)
    rows = []
    for T in (1.0, 0.7, 1.3):
        ta, la = rollout._sample_with_noise(logits, noise, T, backend="torch")
        tb, lb = rollout._sample_with_noise(logits, noise, T, backend="triton")
        same = ta == tb
        r = dict(T=T, mismatches=int((~same).sum()),
                 max_lp_diff=float((la - lb)[same].abs().max()) if bool(same.any()) else None)
        r["ok"] = r["mismatches"] == 0 and r["max_lp_diff"] is not None and r["max_lp_diff"] < 2e-5
        rows.append(r)
    return {"B": B, "V": V, "dtype": str(dtype)[6:], "rows": rows, "ok": all(r["ok"] for r in rows)}


def check_logprobs(B, T, V, temp, dev):
    gen = torch.Generator(dev).manual_seed(B + T + V)
    base = torch.randn(B, T + 2, V, generator=gen, device=dev) * 4
    targets = torch.randint(0, V, (B, T), generator=gen, device=dev)
    w = torch.randn(B, T, generator=gen, device=dev)
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


def record_all(record, dev):
    """Every check above, sized for the device, each recorded as a stage (gpu_check.record)."""
    big = dev == "cuda"
    configs = [1.0, 0.7, 1.3, 0.5]  # temperatures
    # the interpreter runs one program per draw: few draws on a CPU
    record("kernels/distribution_V320",
           lambda: check_distribution(320, 1 << 20 if big else 128,
                                      configs if big else configs[:1], dev))
    if big:
        record("kernels/distribution_V32768",
               lambda: check_distribution(32768, 1 << 16, configs[:3], dev))
    record("kernels/same_noise_fp32",
           lambda: check_same_noise(4096 if big else 8, 320, torch.float32, dev))
    record("kernels/same_noise_bf16",
           lambda: check_same_noise(4096 if big else 8, 320, torch.bfloat16, dev))
    if big:
        record("kernels/same_noise_V32768",
               lambda: check_same_noise(1024, 32768, torch.float32, dev))
    record("kernels/logprobs_V320", lambda: check_logprobs(64 if big else 4, 12, 320, 1.0, dev))
    if big:
        record("kernels/logprobs_V32768_T0.7", lambda: check_logprobs(4, 8, 32768, 0.7, dev))
