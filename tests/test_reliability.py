"""
Runs that survive: checkpoints and resume, determinism, guarded optimizer steps, clear errors on bad
input, an llm reflector whose endpoint is down (the run stops with one line, its log and checkpoint
kept for --resume).

Everything runs on the `micro` preset (a 2-layer, 64-wide model pretrained for 30 steps): the
numbers mean nothing, the plumbing is what is tested. The kill test uses a real subprocess and
SIGKILL, so a run that dies at any instant (even mid-write) must resume from its last checkpoint and
end exactly where an uninterrupted run with the same seed ends. A SIGINT (Ctrl-C) to a real
subprocess must give one line and exit code 130, and the command it prints must finish the run. A
walk takes every flag of every script from its argparse parser and feeds it bad values of its kind
(FLAG_KINDS): each must give one `error:` line, exit code 2 and leave every file as it was.
"""

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import fast_context as fc
import fst
import pretrain
import llm
import reflectors
import tasks
import train
from cli import UserError
from model import GPT, GPTConfig, CheckpointError, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = train.PRESETS["micro"]


@pytest.fixture(scope="module")
def micro_base(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("base"))
    train.pretrain(MICRO, out, "cpu", log=lambda *a: None)
    return os.path.join(out, "model.pt")


def _cli(args, cwd):
    """Run `python train.py ARGS` to the end -> CompletedProcess (stderr captured)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _rows(run_dir):
    """log.jsonl without the wall clock (the only field allowed to differ between identical
    runs)."""
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in f]


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    s.pop("wall_s")
    return s


# -----------------------------------------------------------------------------
# checkpoints, resume, determinism

def test_sigkill_then_resume_matches_uninterrupted_run(micro_base, tmp_path):
    common = ["run", "--preset", "micro", "--method", "fst", "--task", "cipher", "--steps", "16",
              "--ckpt-every", "3", "--init", micro_base, "--seed", "3"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    p = _cli(common + ["--out", a], tmp_path)
    assert p.returncode == 0, p.stderr
    # the same run, killed without warning once a few steps are logged
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + common + ["--out", b],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, t0 = os.path.join(b, "log.jsonl"), time.time()
    while time.time() - t0 < 120:
        if os.path.exists(log) and open(log).read().count("\n") >= 7:
            break
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(b, "summary.json"))  # it really died mid-run
    ck = torch.load(os.path.join(b, "ckpt.pt"), weights_only=True)
    assert 0 < ck["step"] < 16 and ck["step"] % 3 == 0
    # without --resume the folder is refused; with it the run continues from the checkpoint
    p = _cli(common + ["--out", b], tmp_path)
    assert p.returncode == 2 and "--resume" in p.stderr
    p = _cli(common + ["--out", b, "--resume"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert _rows(b) == _rows(a)                       # the same logs, step for step
    assert _summary(b) == _summary(a)
    wa, wb = (load_checkpoint(os.path.join(a, "model.pt"))[0],
              load_checkpoint(os.path.join(b, "model.pt"))[0])
    for (k, x), (_, y) in zip(wa.state_dict().items(), wb.state_dict().items()):
        assert torch.equal(x, y), k
    # a finished run keeps model.pt + summary.json only
    assert not os.path.exists(os.path.join(b, "ckpt.pt"))
    # resuming a finished run does nothing and returns its summary
    p = _cli(common + ["--out", b, "--resume"], tmp_path)
    assert p.returncode == 0 and "finished earlier" in p.stdout + p.stderr
    assert _rows(b) == _rows(a)


def test_context_only_resume_matches(micro_base, tmp_path):
    """The context-only run stops at a rollout budget; its GEPA state must survive a resume too."""
    preset = train.replace(MICRO, ckpt_every=2, context_only_rollouts=300)
    quiet = lambda *a: None
    a = train.run("context", [("hidden-rule", 50)], preset, micro_base, str(tmp_path / "a"), seed=1,
                  log=quiet)
    # an interrupted copy: stop it by raising from the policy after a few GEPA rounds
    calls, real = {"n": 0}, train.make_evaluate

    def flaky_policy(model, enc, p):
        evaluate = real(model, enc, p)
        def wrapped(context, problems):
            calls["n"] += 1
            if calls["n"] == 25:
                raise KeyboardInterrupt
            return evaluate(context, problems)
        return wrapped
    train.make_evaluate = flaky_policy
    try:
        with pytest.raises(KeyboardInterrupt):
            train.run("context", [("hidden-rule", 50)], preset, micro_base, str(tmp_path / "b"),
                      seed=1, log=quiet)
    finally:
        train.make_evaluate = real
    assert (os.path.exists(tmp_path / "b" / "ckpt.pt")
            and not os.path.exists(tmp_path / "b" / "summary.json"))
    b = train.run("context", [("hidden-rule", 50)], preset, micro_base, str(tmp_path / "b"), seed=1,
                  log=quiet, resume=True)
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    assert ({k: v for k, v in b.items() if k != "wall_s"}
            == {k: v for k, v in a.items() if k != "wall_s"})


def test_batches_built_ahead_in_worker_processes_are_the_same():
    # the gpu preset builds pretraining batches in host processes while the device trains
    from dataclasses import replace
    enc = tasks.build_tokenizer()
    preset = replace(MICRO, pretrain_steps=7)
    direct = list(pretrain.batches(enc, preset, 3, 2, "cpu"))
    ahead = list(pretrain.batches(enc, replace(preset, batch_workers=2), 3, 2, "cpu"))
    assert len(direct) == len(ahead) == 5
    for (x, y), (x2, y2) in zip(direct, ahead):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(direct[0][0][:, :8], direct[1][0][:, :8])  # the steps differ


def test_pretraining_resume_matches_uninterrupted(tmp_path):
    preset = train.replace(MICRO, pretrain_steps=12, pretrain_ckpt_every=5)
    quiet = lambda *a: None
    train.pretrain(preset, str(tmp_path / "a"), "cpu", log=quiet)
    real, n = pretrain.make_batch, {"calls": 0}

    def dies_at_step_8(*a, **kw):
        n["calls"] += 1
        if n["calls"] == 9:
            raise KeyboardInterrupt
        return real(*a, **kw)
    pretrain.make_batch = dies_at_step_8
    try:
        with pytest.raises(KeyboardInterrupt):
            train.pretrain(preset, str(tmp_path / "b"), "cpu", log=quiet)
    finally:
        pretrain.make_batch = real
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["step"] == 5
    # an unfinished pretraining is not silently overwritten or resumed
    with pytest.raises(UserError):
        train.pretrain(preset, str(tmp_path / "b"), "cpu", log=quiet)
    train.pretrain(preset, str(tmp_path / "b"), "cpu", log=quiet, resume=True)
    ma, mb = (load_checkpoint(tmp_path / "a" / "model.pt")[0],
              load_checkpoint(tmp_path / "b" / "model.pt")[0])
    for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(x, y), k
    assert not os.path.exists(tmp_path / "b" / "ckpt.pt")


# -----------------------------------------------------------------------------
# guards

def _weights(path):
    return load_checkpoint(path)[0].state_dict()


def test_nan_loss_is_skipped_logged_and_never_reaches_the_weights(micro_base, tmp_path,
                                                                   monkeypatch):
    real = fst.policy_loss
    poisoned = {1, 3}  # policy_loss calls (= steps here, one inner step each) that return NaN

    def policy_loss(*a, **kw):
        loss, m = real(*a, **kw)
        policy_loss.calls += 1
        return (loss * float("nan") if policy_loss.calls - 1 in poisoned else loss), m
    policy_loss.calls = 0
    monkeypatch.setattr(fst, "policy_loss", policy_loss)
    one_step = train.replace(MICRO, optimizer_steps=1)  # one policy_loss call per step
    s = train.run("rl", [("cipher", 5)], one_step, micro_base, str(tmp_path / "r"),
                  log=lambda *a: None)
    rows = _rows(tmp_path / "r")
    assert [r["step"] for r in rows if r.get("skipped")] == sorted(poisoned)
    assert all(rows[i]["skipped"] == "non-finite loss" and rows[i]["grad_norm"] is None
               for i in poisoned)
    assert s["skipped_steps"] == len(poisoned)
    for v in _weights(tmp_path / "r" / "model.pt").values():
        assert torch.isfinite(v).all()

    # every step poisoned (and a high limit): the weights end exactly where they started
    poisoned.update(range(100))
    policy_loss.calls = 0
    train.run("rl", [("cipher", 4)], train.replace(one_step, max_bad_steps=10), micro_base,
              str(tmp_path / "all"), log=lambda *a: None)
    w0, w1 = _weights(micro_base), _weights(tmp_path / "all" / "model.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_nan_gradient_is_skipped(micro_base, tmp_path, monkeypatch):
    """A finite loss whose gradient is NaN (a hook poisons one parameter's gradient) is skipped
    too."""
    real_step = fst.guarded_step

    def poisoned_step(model, opt, loss, clip=1.0):
        h = model.wte.weight.register_hook(lambda g: g * float("nan"))
        try:
            return real_step(model, opt, loss, clip)
        finally:
            h.remove()
    monkeypatch.setattr(fst, "guarded_step", poisoned_step)
    s = train.run("rl", [("cipher", 3)], train.replace(MICRO, max_bad_steps=10), micro_base,
                  str(tmp_path / "g"), log=lambda *a: None)
    assert s["skipped_steps"] == 3
    assert all(r["skipped"] == "non-finite gradient" for r in _rows(tmp_path / "g"))
    w0, w1 = _weights(micro_base), _weights(tmp_path / "g" / "model.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_many_bad_steps_in_a_row_stop_the_run(micro_base, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fst, "policy_loss", lambda *a, **kw: (torch.tensor(float("inf")),
                        {"clip_frac": 0.0, "clip_high_frac": 0.0, "ratio_mean": 1.0}))
    with pytest.raises(UserError) as e:  # library code raises; only main() prints it and exits
        train.run("rl", [("cipher", 20)], train.replace(MICRO, max_bad_steps=3), micro_base,
                  str(tmp_path / "x"), log=lambda *a: None)
    assert "\n" not in str(e.value) and "3 optimizer steps in a row skipped" in str(e.value)
    assert len(_rows(tmp_path / "x")) == 3  # it stopped at the third bad step


def test_bad_reflector_proposals_are_rejected_and_logged(micro_base, tmp_path, monkeypatch):
    answers = iter([RuntimeError("reflection model unreachable"), "", "swap " * 200] * 50)

    class BadReflector:
        def __init__(self, **kw):
            pass

        def __call__(self, prompt, records):
            a = next(answers)
            if isinstance(a, Exception):
                raise a
            return a
    monkeypatch.setattr(reflectors, "make_reflector", lambda *args, **kw: BadReflector())
    s = train.run("fst", [("cipher", 4)], train.replace(MICRO, gepa_proposals=3, gepa_every=2),
                  micro_base, str(tmp_path / "f"), log=lambda *a: None)
    reasons = [x for r in _rows(tmp_path / "f") for x in r.get("gepa_invalid", [])]
    assert any(x.startswith("reflector raised RuntimeError") for x in reasons)
    assert "empty proposal" in reasons
    assert any(x.startswith("too long") for x in reasons)
    assert s["deployed_prompt"] == tasks.SEED_PROMPT  # nothing bad was ever deployed


# -----------------------------------------------------------------------------
# bad input: one line, exit code 2, no existing file touched

def _snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def test_truncated_checkpoint_is_refused_at_any_byte(micro_base, tmp_path):
    data = open(micro_base, "rb").read()
    rng = random.Random(0)
    for cut in [rng.randrange(1, len(data)) for _ in range(6)]:
        p = tmp_path / f"cut{cut}.pt"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(str(p))
        assert "\n" not in str(e.value) and str(p) in str(e.value)


@pytest.fixture(scope="module")
def workdir(micro_base, tmp_path_factory):
    """runs/micro with a base, a finished run, an interrupted one with a truncated checkpoint, and
    bad files."""
    root = tmp_path_factory.mktemp("work")
    os.makedirs(root / "runs" / "micro" / "b0" / "base")
    for f in ("model.pt", "metrics.json"):
        with open(os.path.join(os.path.dirname(micro_base), f), "rb") as src:
            (root / "runs" / "micro" / "b0" / "base" / f).write_bytes(src.read())
    base = str(root / "runs" / "micro" / "b0" / "base" / "model.pt")
    preset = train.replace(MICRO, ckpt_every=1)
    train.run("rl", [("cipher", 2)], preset, base, str(root / "done"), base=base,
              log=lambda *a: None)
    train.run("rl", [("cipher", 2)], preset, base, str(root / "broken"), base=base,
              log=lambda *a: None)
    os.remove(root / "broken" / "summary.json")
    ck = open(root / "done" / "model.pt", "rb").read()
    # an interrupted run, its ckpt truncated
    (root / "broken" / "ckpt.pt").write_bytes(ck[: len(ck) // 3])
    (root / "trunc.pt").write_bytes(ck[: len(ck) // 2])
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")         # a torch file, not ours
    small = GPT(GPTConfig(vocab_size=load_checkpoint(base)[0].cfg.vocab_size, n_layer=1, n_head=1,
                          n_embd=16))
    save_checkpoint(str(root / "other_shape.pt"), small,
                    {"tokenizer": load_checkpoint(base)[1]["tokenizer"]})
    os.makedirs(root / "half_pretrained")
    (root / "half_pretrained" / "ckpt.pt").write_bytes(b"unfinished")
    (root / "notes.txt").write_text("not a checkpoint, not a folder\n")
    return root


BAD = {
    "unknown flag": ["run", "--preset", "micro", "--bogus", "1"],
    "ill-typed flag": ["run", "--preset", "micro", "--steps", "many"],
    "non-positive flag": ["run", "--preset", "micro", "--lr", "0"],
    "bad choice": ["run", "--preset", "micro", "--method", "sgd"],
    "unknown preset": ["--preset", "huge"],
    "zero seeds": ["--seeds", "0"],
    "bad task spec": ["run", "--preset", "micro", "--task", "rule:frobnicate 3", "--out", "new"],
    "bad op argument": ["run", "--preset", "micro", "--task", "rule:rotate 2,add 7",
                        "--out", "new"],
    "bad schedule": ["run", "--preset", "micro", "--schedule", "cipher@x;hidden-rule@5",
                     "--out", "new"],
    "missing checkpoint": ["run", "--preset", "micro", "--init", "nowhere.pt", "--out", "new"],
    "truncated checkpoint": ["run", "--preset", "micro", "--init", "trunc.pt", "--out", "new"],
    "foreign checkpoint": ["run", "--preset", "micro", "--init", "foreign.pt", "--out", "new"],
    "base of another shape": ["run", "--preset", "micro", "--base", "other_shape.pt",
                              "--out", "new"],
    "folder holds a run": ["run", "--preset", "micro", "--method", "rl", "--task", "cipher",
                           "--out", "done"],
    "resume, other settings": ["run", "--preset", "micro", "--method", "rl", "--task", "cipher",
                               "--steps", "2", "--out", "done", "--resume", "--lr", "0.5"],
    "resume, truncated ckpt": ["run", "--preset", "micro", "--method", "rl", "--task", "cipher",
                               "--steps", "2", "--out", "broken", "--resume"],
    "out is a file": ["run", "--preset", "micro", "--out", "notes.txt"],
    "out under a file": ["run", "--preset", "micro", "--out", "notes.txt/run"],
    "init is a folder": ["run", "--preset", "micro", "--init", "runs/micro/b0", "--out", "new"],
    "init is the base's folder": ["run", "--preset", "micro", "--init", "runs/micro/b0/base",
                                  "--out", "new"],
    "not an http url": ["run", "--preset", "micro", "--reflector", "llm", "--llm-url", "notaurl",
                        "--llm-model", "x", "--out", "new"],
    "base exists": ["pretrain", "--preset", "micro"],
    "pretrain out is a file": ["pretrain", "--preset", "micro", "--out", "notes.txt"],
    "unfinished pretraining": ["pretrain", "--preset", "micro", "--out", "half_pretrained"],
    "corrupt pretraining ckpt": ["pretrain", "--preset", "micro", "--out", "half_pretrained",
                                 "--resume"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    before = _snapshot(workdir)
    with pytest.raises(SystemExit) as e:
        train.main(BAD[case])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert _snapshot(workdir) == before  # nothing written, nothing removed
    assert not os.path.exists(workdir / "new")
    assert "delete" not in err[0] or err[0].count(".pt") == 1  # never a folder, one damaged file


@pytest.mark.parametrize("cmd", [["train.py", "run", "--init", "trunc.pt", "--out", "new",
                                  "--preset", "micro"],
                                 ["report.py", "--seeds", "two"],
                                 ["report.py", "--preset", "micro", "--out", "notes.txt"],
                                 ["gpu_check.py", "--out", "notes.txt"],
                                 ["bench.py", "rollout", "--prompts", "-3"]])
def test_command_lines_print_one_line_not_a_traceback(cmd, workdir):
    p = subprocess.run([sys.executable, os.path.join(ROOT, cmd[0])] + cmd[1:], cwd=workdir,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


# -----------------------------------------------------------------------------
# an llm reflector whose endpoint is down: the run stops, what is on disk stays

GOOD = json.dumps({"choices": [{"message": {"role": "assistant",
                                            "content": "```\nrule: add 1\n```"}}]}).encode()


def _terminal(err):
    """The lines a terminal shows for `err` (a progress bar redrawn with \\r and cleared is
    gone)."""
    return [seg.split("\r")[-1] for seg in err.split("\n") if seg.split("\r")[-1].strip()]


@pytest.mark.parametrize("down", ["404", "unreachable"])
def test_endpoint_down_at_the_first_call_stops_the_run_at_once(micro_base, tmp_path, llm_server,
                                                               capsys, monkeypatch, down):
    if down == "404":
        url, requests = llm_server([(404, b'{"error": "model x not found"}')])
    else:  # a port nothing listens on
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url, requests = f"http://127.0.0.1:{sock.getsockname()[1]}/v1", []
    sleeps, real_sleep = [], time.sleep  # the reflector's backoff (1 s, 2 s by default)
    monkeypatch.setattr(llm.time, "sleep", lambda t: (sleeps.append(t), real_sleep(t)))
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        train.main(["run", "--preset", "micro", "--method", "context", "--task", "hidden-rule",
                    "--reflector", "llm", "--llm-url", url, "--llm-model", "x",
                    "--init", micro_base, "--out", "r"])
    elapsed = time.perf_counter() - t0
    assert e.value.code == 2
    lines = _terminal(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0], lines
    assert ("HTTP 404" if down == "404" else "cannot reach") in lines[0]
    statuses = [r["status"] for r in requests]
    assert sleeps == [] and statuses == ([404] if down == "404" else [])  # one request, no retry
    assert elapsed < 60, elapsed  # a micro run's start (1-3 s here, 20x margin for a busy CPU)
    assert _rows(tmp_path / "r") == [] and not os.path.exists(tmp_path / "r" / "summary.json")


@pytest.mark.parametrize("method, stop_step, steps", [("context", 3, 12), ("fst", 6, 8)])
def test_endpoint_failing_for_rounds_stops_the_run_and_resume_continues(
        micro_base, tmp_path, llm_server, method, stop_step, steps):
    """The first call answers well, then HTTP 500 forever: micro has 2 proposals a round, so 3
    rounds' worth = 6 failed calls in a row; context-only runs a round every step, FST every 2."""
    replies = [(200, GOOD), (500, b'{"error": "overloaded"}')]
    url, requests = llm_server(replies)
    preset = train.replace(MICRO, ckpt_every=1, reflector_fail_rounds=3, eval_every=4, kl_every=4)
    llm = dict(url=url, model="x", timeout=5, retries=1, backoff=0.01)
    out = tmp_path / method
    with pytest.raises(fc.ReflectorError) as e:
        train.run(method, [("hidden-rule", steps)], preset, micro_base, str(out),
                  reflector="llm", llm=llm, log=lambda *a: None)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "HTTP 500" in msg and "6 calls in a row" in msg
    assert f"step {stop_step};" in msg
    # each failed call: one try, one retry
    assert [r["status"] for r in requests] == [200] + [500] * 12
    rows = _rows(out)  # every step before the stop is logged and checkpointed
    assert [r["step"] for r in rows] == list(range(stop_step))
    invalid = [x for r in rows for x in r.get("gepa_invalid", [])]
    assert len(invalid) == 5 and all("HTTP 500" in x for x in invalid)
    assert os.path.exists(out / "ckpt.pt") and not os.path.exists(out / "summary.json")
    replies[1] = (200, GOOD)  # the endpoint is fixed: --resume continues from the checkpoint
    s = train.run(method, [("hidden-rule", steps)], preset, micro_base, str(out),
                  reflector="llm", llm=llm, log=lambda *a: None, resume=True)
    assert _rows(out)[:stop_step] == rows and len(_rows(out)) > stop_step
    assert s["steps"] == len(_rows(out)) and os.path.exists(out / "summary.json")


def test_sequential_stops_before_writing_anything(micro_base, tmp_path, llm_server):
    url, _ = llm_server([(500, b"{}")])  # down from the first call: 6 failed calls in GEPA's phase
    with pytest.raises(fc.ReflectorError, match="6 calls in a row"):
        train.run("sequential", [("hidden-rule", 4)], MICRO, micro_base, str(tmp_path / "q"),
                  reflector="llm", llm=dict(url=url, model="x", retries=0, backoff=0.01),
                  log=lambda *a: None)
    assert not os.path.exists(tmp_path / "q")


# -----------------------------------------------------------------------------
# every flag of every script through bad values: the flags come from each script's parser, their
# kinds from this table, so a new flag fails the walk until it is given a kind here

import argparse  # noqa: E402

import bench  # noqa: E402
import cli  # noqa: E402
import gpu_check  # noqa: E402  (imported, it reads no command line)
import phase  # noqa: E402
import report  # noqa: E402
import select_tasks  # noqa: E402

LLM = ["--reflector", "llm", "--llm-url", "http://localhost:9/v1", "--llm-model", "m"]
COMMON = {"--preset": ("text", [["--preset", "huge"], ["--preset", "nan"]]),
          "--device": "choice", "--seeds": "number", "--bases": "number", "--jobs": "number",
          "--threads": "number",
          "--sweep": "switch", "--phase": "switch", "--fresh-bases": "switch"}
# kind: number | folder (written into) | checkpoint (read) | choice | switch | text; a text flag
# carries the argv fragments that must be refused
FLAG_KINDS = {
    "train.py": COMMON,
    "train.py pretrain": dict(COMMON, **{
        "--out": "folder", "--seed": "number", "--steps": "number", "--resume": "switch",
        "--ckpt-every": "number"}),
    "train.py run": dict(COMMON, **{
        "--method": "choice", "--loss": "choice",
        "--reflector": ("text", [["--reflector", v]
                                 for v in ("bogus", "edit:2", "edit:x", "llm:0.5")]),
        "--task": ("text", [["--task", "rule:frobnicate 3"], ["--task", "nan"],
                            ["--task", "-3"]]),
        "--schedule": ("text", [["--schedule", "cipher@x"], ["--schedule", "cipher@-3"],
                                ["--schedule", "cipher@nan"], ["--schedule", ";"]]),
        "--init": "checkpoint", "--base": "checkpoint", "--out": "folder",
        "--seed": "number", "--resume": "switch", "--ckpt-every": "number", "--steps": "number",
        "--lr": "number", "--inner-steps": "number", "--optimizer-steps": "number",
        "--beta": "number",
        "--llm-url": ("text", [LLM + ["--llm-url", v] for v in ("notaurl", "ftp://h/v1", "nan",
                                                              "http://")]),
        "--llm-model": ("text", [LLM + ["--llm-model", ""], ["--llm-model", "m"]]),
        "--llm-timeout": "number", "--gepa-every": "number", "--proposals": "number",
        "--budget": "number"}),
    "report.py": {"--preset": ("text", [["--preset", "huge"]]), "--bases": "number",
                  "--seeds": "number", "--out": "folder", "--device": "choice",
                  "--hit-rates": "switch"},
    "select_tasks.py": {"--preset": ("text", [["--preset", "huge"]]), "--bases": "number",
                        "--screen": "number", "--dial": "switch"},
    "phase.py": {"--preset": ("text", [["--preset", "huge"]]), "--bases": "number",
                 "--seeds": "number", "--out": "folder", "--hit-rates": "switch",
                 "--archive": "folder"},
    "bench.py": {"what": "choice", "--device": "choice", "--threads": "number",
                 "--warmup": "number", "--repeats": "number", "--prompts": "number",
                 "--samples": "number", "--max-new": "number", "--min-len": "number",
                 "--max-len": "number", "--naive-repeats": "number", "--no-hf": "switch",
                 "--batch": "number",
                 "--vocabs": ("text", [["--vocabs", v] for v in ("x", "-3", "nan", "0", "8,")]),
                 "--bandwidth": "number"},
    "gpu_check.py": {"--out": "folder", "--smoke": "switch", "--pretrain-steps": "number",
                     "--fst-steps": "number"},
}


def _parsers():
    """{script (and subcommand): (argparse parser, main(argv), argv before the flag)}. The argv
    before a flag makes an accepted bad value start real work (and fail the walk), never a no-op."""
    train_ap = train.build_parser()
    sub = next(a for a in train_ap._actions if isinstance(a, argparse._SubParsersAction))
    return {"train.py": (train_ap, train.main, []),
            "train.py pretrain": (sub.choices["pretrain"], train.main,
                                  ["pretrain", "--preset", "micro", "--out", "new"]),
            "train.py run": (sub.choices["run"], train.main,
                             ["run", "--preset", "micro", "--out", "new"]),
            "report.py": (report.build_parser(), report.main, ["--preset", "micro"]),
            "select_tasks.py": (select_tasks.build_parser(), select_tasks.main,
                                ["--preset", "micro", "--bases", "1"]),
            "phase.py": (phase.build_parser(), phase.main, ["--preset", "micro", "--bases", "1"]),
            "bench.py": (bench.build_parser(), bench.main,
                         ["sample", "--device", "cpu", "--batch", "2", "--vocabs", "8"]),
            "gpu_check.py": (gpu_check.build_parser(), gpu_check.parse_args, [])}


def _flags(parser):
    """{long option or positional name: argparse action}, help and subcommands left out."""
    return {(a.option_strings[-1] if a.option_strings else a.dest): a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))}


def test_every_flag_has_a_kind_and_the_checked_type_of_its_kind():
    for script, (parser, _, _) in _parsers().items():
        flags = _flags(parser)
        assert set(flags) == set(FLAG_KINDS[script]), script
        for name, action in flags.items():
            kind = FLAG_KINDS[script][name]
            kind = kind[0] if isinstance(kind, tuple) else kind
            want = {"folder": cli.FOLDER, "checkpoint": cli.CHECKPOINT}.get(kind)
            if want is not None:
                assert action.type is want, (script, name)
            if kind == "number":  # cli.positive / cli.nonnegative: finite, bounded
                assert action.type.__qualname__.startswith("_number"), (script, name)
            if kind == "choice":
                assert action.choices, (script, name)


def _bad_argvs(script, name, action, workdir):
    """The bad argv fragments for one flag, by its kind."""
    kind = FLAG_KINDS[script][name]
    if isinstance(kind, tuple):
        return kind[1]
    flag = [] if not action.option_strings else [name]
    values = {"number": ["many", "-3", "nan", "inf"],
              "folder": ["notes.txt", "notes.txt/sub"],              # a file; under a file
              "checkpoint": ["runs/micro/b0", "nowhere.pt", "notes.txt"],  # a folder; missing;
              "choice": ["bogus"]}.get(kind)                                # not a checkpoint
    if kind == "folder" and not os.access("/proc/sys", os.W_OK):
        values.append("/proc/sys/fastslow")  # a place that cannot be written (even as root)
    if kind == "switch":
        return [[f"{name}=1"]]
    return [flag + [v] for v in values]


@pytest.mark.parametrize("script", list(FLAG_KINDS))
def test_every_flag_walked_through_bad_values(script, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    parser, main, before_flag = _parsers()[script]
    before, failures, n = _snapshot(workdir), [], 0
    for name, action in _flags(parser).items():
        for bad in _bad_argvs(script, name, action, workdir):
            argv = (bad + before_flag[1:] if not action.option_strings  # a positional goes first
                    else before_flag + bad)
            n += 1
            with pytest.raises(SystemExit) as e:
                main(argv)
            err = capsys.readouterr().err.strip().splitlines()
            if (e.value.code != 2 or len(err) != 1 or not err[0].startswith("error: ")
                    or _snapshot(workdir) != before or os.path.exists(workdir / "new")):
                failures.append((argv, e.value.code, err))
    assert n >= len(_flags(parser)) and not failures, failures


# -----------------------------------------------------------------------------
# Ctrl-C: one line, exit code 130, and --resume continues

def test_ctrl_c_is_one_line_exit_130_and_resume_finishes(workdir, tmp_path):
    base = str(workdir / "runs" / "micro" / "b0" / "base" / "model.pt")
    out = str(tmp_path / "r")
    cmd = ["run", "--preset", "micro", "--method", "rl", "--task", "cipher", "--steps", "6",
           "--ckpt-every", "2", "--init", base, "--out", out]
    env = dict(os.environ, TQDM_DISABLE="1")  # the progress bar aside, stderr is what Ctrl-C says
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + cmd, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log, t0 = os.path.join(out, "log.jsonl"), time.time()
    while time.time() - t0 < 120 and not (os.path.exists(log) and open(log).read().count("\n")):
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    rows = _rows(out)
    ck = os.path.join(out, "ckpt.pt")
    held = (f"the checkpoint {ck} holds step {torch.load(ck, weights_only=True)['step']}"
            if os.path.exists(ck) else "no checkpoint yet")
    assert lines[0].startswith(f"interrupted after {len(rows)} steps ({held}"), lines[0]
    assert 0 < len(rows) < 6 and not os.path.exists(ck + ".tmp")
    resume = lines[0].split("; continue with: ")[1]
    assert resume.endswith(" --resume") and resume.startswith("python train.py run ")
    # the printed command continues the run to its end
    argv = resume.split()[2:]
    q = subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + argv, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert q.returncode == 0, q.stderr
    assert [r["step"] for r in _rows(out)] == list(range(6))


def test_ctrl_c_outside_a_loop_and_in_the_suite_is_one_line_with_the_command(monkeypatch,
                                                                             capsys):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "run_command", interrupted)
    monkeypatch.setattr(train, "suite", interrupted)
    for argv, resume in ((["run", "--preset", "micro"], "run --preset micro --resume"),
                         (["--preset", "micro", "--jobs", "2"], "--preset micro --jobs 2")):
        with pytest.raises(SystemExit) as e:
            train.main(argv)
        assert e.value.code == 130
        assert capsys.readouterr().err.splitlines() == [
            f"interrupted; continue with: python train.py {resume}"]


def test_ctrl_c_mid_write_keeps_the_old_file_and_leaves_no_half(tmp_path, monkeypatch):
    from model import write_atomic
    path = tmp_path / "ckpt.pt"
    write_atomic(path, {"step": 2})
    real = torch.save

    def half_then_ctrl_c(obj, f):
        real(obj, f)
        with open(f, "r+b") as h:
            h.truncate(10)
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, {"step": 4})
    assert torch.load(path, weights_only=True) == {"step": 2}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(workdir, tmp_path, capsys):
    base = str(workdir / "runs" / "micro" / "b0" / "base" / "model.pt")
    out = str(tmp_path / "fresh")
    train.main(["run", "--preset", "micro", "--method", "rl", "--task", "cipher", "--steps", "1",
                "--init", base, "--out", out, "--resume"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{out}: no checkpoint to resume from, starting from step 0"
    assert len(_rows(out)) == 1
