"""
Runs that survive: checkpoints and resume, determinism, guarded optimizer steps (NaN or infinite
losses and gradients skipped, logged and kept out of the weights; too many in a row stop the run),
bad reflector proposals rejected, an llm reflector whose endpoint is down (the run stops with one
line, its log and checkpoint kept for --resume).

Everything runs on the `micro` preset (a 2-layer, 64-wide model pretrained for 30 steps: the
`micro_base` fixture of tests/conftest.py): the numbers mean nothing, the plumbing is what is
tested. The kill test uses a real subprocess and SIGKILL, so a run that dies at any instant (even
mid-write) must resume from its last checkpoint and end exactly where an uninterrupted run with the
same seed ends. Bad input, the walk of every flag through bad values and Ctrl-C are in
tests/test_errors.py.

Run: python -m pytest -q tests/test_reliability.py   (a few minutes on CPU)
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

import fast_context as fc
import rl
import rollout
from world import pretrain
from world import llm
from world import reflectors
from world import tasks
import train
from harness.cli import UserError
from model import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = train.PRESETS["micro"]


def _cli(args, cwd):
    """Run `python train.py ARGS` to the end -> CompletedProcess (stderr captured)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    s.pop("wall_s")
    return s


# -----------------------------------------------------------------------------
# checkpoints, resume, determinism

def test_sigkill_then_resume_matches_uninterrupted_run(micro_base, tmp_path, log_rows):
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
    assert log_rows(b) == log_rows(a)                       # the same logs, step for step
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
    assert log_rows(b) == log_rows(a)


def test_context_only_resume_matches(micro_base, tmp_path, log_rows):
    """The context-only run stops at a rollout budget; its GEPA state must survive a resume too."""
    preset = replace(MICRO, ckpt_every=2, context_only_rollouts=300)
    quiet = lambda *a: None
    a = train.run("context", [("hidden-rule", 50)], preset, micro_base, str(tmp_path / "a"), seed=1,
                  log=quiet)
    # an interrupted copy: stop it by raising from the policy after a few GEPA rounds
    calls, real = {"n": 0}, rollout.greedy_evaluate

    def flaky_policy(*a, **kw):
        evaluate = real(*a, **kw)
        def wrapped(context, problems):
            calls["n"] += 1
            if calls["n"] == 25:
                raise KeyboardInterrupt
            return evaluate(context, problems)
        return wrapped
    rollout.greedy_evaluate = flaky_policy
    try:
        with pytest.raises(KeyboardInterrupt):
            train.run("context", [("hidden-rule", 50)], preset, micro_base, str(tmp_path / "b"),
                      seed=1, log=quiet)
    finally:
        rollout.greedy_evaluate = real
    assert (os.path.exists(tmp_path / "b" / "ckpt.pt")
            and not os.path.exists(tmp_path / "b" / "summary.json"))
    b = train.run("context", [("hidden-rule", 50)], preset, micro_base, str(tmp_path / "b"), seed=1,
                  log=quiet, resume=True)
    assert log_rows(tmp_path / "b") == log_rows(tmp_path / "a")
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
    preset = replace(MICRO, pretrain_steps=12, pretrain_ckpt_every=5)
    quiet = lambda *a: None
    pretrain.pretrain(preset, str(tmp_path / "a"), "cpu", log=quiet)
    real, n = pretrain.make_batch, {"calls": 0}

    def dies_at_step_8(*a, **kw):
        n["calls"] += 1
        if n["calls"] == 9:
            raise KeyboardInterrupt
        return real(*a, **kw)
    pretrain.make_batch = dies_at_step_8
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain.pretrain(preset, str(tmp_path / "b"), "cpu", log=quiet)
    finally:
        pretrain.make_batch = real
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["step"] == 5
    # an unfinished pretraining is not silently overwritten or resumed
    with pytest.raises(UserError):
        pretrain.pretrain(preset, str(tmp_path / "b"), "cpu", log=quiet)
    pretrain.pretrain(preset, str(tmp_path / "b"), "cpu", log=quiet, resume=True)
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
                                                                   monkeypatch, log_rows):
    real = rl.policy_loss
    poisoned = {1, 3}  # policy_loss calls (= steps here, one inner step each) that return NaN

    def policy_loss(*a, **kw):
        loss, m = real(*a, **kw)
        policy_loss.calls += 1
        return (loss * float("nan") if policy_loss.calls - 1 in poisoned else loss), m
    policy_loss.calls = 0
    monkeypatch.setattr(rl, "policy_loss", policy_loss)
    one_step = replace(MICRO, optimizer_steps=1)  # one policy_loss call per step
    s = train.run("rl", [("cipher", 5)], one_step, micro_base, str(tmp_path / "r"),
                  log=lambda *a: None)
    rows = log_rows(tmp_path / "r")
    assert [r["step"] for r in rows if r.get("skipped")] == sorted(poisoned)
    assert all(rows[i]["skipped"] == "non-finite loss" and rows[i]["grad_norm"] is None
               for i in poisoned)
    assert s["skipped_steps"] == len(poisoned)
    for v in _weights(tmp_path / "r" / "model.pt").values():
        assert torch.isfinite(v).all()

    # every step poisoned (and a high limit): the weights end exactly where they started
    poisoned.update(range(100))
    policy_loss.calls = 0
    train.run("rl", [("cipher", 4)], replace(one_step, max_bad_steps=10), micro_base,
              str(tmp_path / "all"), log=lambda *a: None)
    w0, w1 = _weights(micro_base), _weights(tmp_path / "all" / "model.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_nan_gradient_is_skipped(micro_base, tmp_path, monkeypatch, log_rows):
    """A finite loss whose gradient is NaN (a hook poisons one parameter's gradient) is skipped
    too."""
    real_step = rl.guarded_step

    def poisoned_step(model, opt, loss, clip=1.0):
        h = model.wte.weight.register_hook(lambda g: g * float("nan"))
        try:
            return real_step(model, opt, loss, clip)
        finally:
            h.remove()
    monkeypatch.setattr(rl, "guarded_step", poisoned_step)
    s = train.run("rl", [("cipher", 3)], replace(MICRO, max_bad_steps=10), micro_base,
                  str(tmp_path / "g"), log=lambda *a: None)
    assert s["skipped_steps"] == 3
    assert all(r["skipped"] == "non-finite gradient" for r in log_rows(tmp_path / "g"))
    w0, w1 = _weights(micro_base), _weights(tmp_path / "g" / "model.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_many_bad_steps_in_a_row_stop_the_run(micro_base, tmp_path, monkeypatch, capsys, log_rows):
    monkeypatch.setattr(rl, "policy_loss", lambda *a, **kw: (torch.tensor(float("inf")),
                        {"clip_frac": 0.0, "clip_high_frac": 0.0, "ratio_mean": 1.0}))
    with pytest.raises(UserError) as e:  # library code raises; only main() prints it and exits
        train.run("rl", [("cipher", 20)], replace(MICRO, max_bad_steps=3), micro_base,
                  str(tmp_path / "x"), log=lambda *a: None)
    assert "\n" not in str(e.value) and "3 optimizer steps in a row skipped" in str(e.value)
    assert len(log_rows(tmp_path / "x")) == 3  # it stopped at the third bad step


def test_bad_reflector_proposals_are_rejected_and_logged(micro_base, tmp_path, monkeypatch,
                                                         log_rows):
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
    s = train.run("fst", [("cipher", 4)], replace(MICRO, gepa_proposals=3, gepa_every=2),
                  micro_base, str(tmp_path / "f"), log=lambda *a: None)
    reasons = [x for r in log_rows(tmp_path / "f") for x in r.get("gepa_invalid", [])]
    assert any(x.startswith("reflector raised RuntimeError") for x in reasons)
    assert "empty proposal" in reasons
    assert any(x.startswith("too long") for x in reasons)
    assert s["deployed_prompt"] == tasks.SEED_PROMPT  # nothing bad was ever deployed

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
                                                               capsys, monkeypatch, down, log_rows):
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
    assert log_rows(tmp_path / "r") == [] and not os.path.exists(tmp_path / "r" / "summary.json")


@pytest.mark.parametrize("method, stop_step, steps", [("context", 3, 12), ("fst", 6, 8)])
def test_endpoint_failing_for_rounds_stops_the_run_and_resume_continues(
        micro_base, tmp_path, llm_server, method, stop_step, steps, log_rows):
    """The first call answers well, then HTTP 500 forever: micro has 2 proposals a round, so 3
    rounds' worth = 6 failed calls in a row; context-only runs a round every step, FST every 2."""
    replies = [(200, GOOD), (500, b'{"error": "overloaded"}')]
    url, requests = llm_server(replies)
    preset = replace(MICRO, ckpt_every=1, reflector_fail_rounds=3, eval_every=4, kl_every=4)
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
    rows = log_rows(out)  # every step before the stop is logged and checkpointed
    assert [r["step"] for r in rows] == list(range(stop_step))
    invalid = [x for r in rows for x in r.get("gepa_invalid", [])]
    assert len(invalid) == 5 and all("HTTP 500" in x for x in invalid)
    assert os.path.exists(out / "ckpt.pt") and not os.path.exists(out / "summary.json")
    replies[1] = (200, GOOD)  # the endpoint is fixed: --resume continues from the checkpoint
    s = train.run(method, [("hidden-rule", steps)], preset, micro_base, str(out),
                  reflector="llm", llm=llm, log=lambda *a: None, resume=True)
    assert log_rows(out)[:stop_step] == rows and len(log_rows(out)) > stop_step
    assert s["steps"] == len(log_rows(out)) and os.path.exists(out / "summary.json")


def test_sequential_stops_before_writing_anything(micro_base, tmp_path, llm_server):
    url, _ = llm_server([(500, b"{}")])  # down from the first call: 6 failed calls in GEPA's phase
    with pytest.raises(fc.ReflectorError, match="6 calls in a row"):
        train.run("sequential", [("hidden-rule", 4)], MICRO, micro_base, str(tmp_path / "q"),
                  reflector="llm", llm=dict(url=url, model="x", retries=0, backoff=0.01),
                  log=lambda *a: None)
    assert not os.path.exists(tmp_path / "q")


# -----------------------------------------------------------------------------
# an llm endpoint that hangs, and replies without a fence: the wait is bounded, said, and stated

def test_a_timeout_at_the_first_call_stops_the_run_at_once(micro_base, tmp_path, llm_server,
                                                           capsys, monkeypatch, log_rows):
    url, requests = llm_server([(200, GOOD, 5.0)])  # accepts, then says nothing for 5 s
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        train.main(["run", "--preset", "micro", "--method", "context", "--task", "hidden-rule",
                    "--reflector", "llm", "--llm-url", url, "--llm-model", "x",
                    "--llm-timeout", "0.5", "--init", micro_base, "--out", "r"])
    assert e.value.code == 2 and time.perf_counter() - t0 < 60
    lines = _terminal(capsys.readouterr().err)
    assert len(lines) == 1 and "no reply" in lines[0] and "first request" in lines[0], lines
    assert len(requests) == 1  # no retry: a refused endpoint is treated the same
    assert log_rows(tmp_path / "r") == []


def test_the_wait_for_a_failing_endpoint_is_bounded_and_stated(llm_server):
    url, requests = llm_server([(200, GOOD), (200, GOOD, 3.0)])  # one answer, then it hangs
    refl = llm.LLMReflector(url, "x", timeout=0.25, retries=2, backoff=0.05)  # no count limit
    records = [{"inputs": "in: 1 2", "outputs": "3", "feedback": "expected 4"}]
    assert refl("rule: ?", records) == "rule: add 1"
    t0, calls = time.perf_counter(), 0
    with pytest.raises(fc.ReflectorError) as e:
        while calls < 20:
            calls += 1
            with pytest.raises(RuntimeError, match="no reply"):  # one failed call, not retried
                refl("rule: ?", records)
    waited = time.perf_counter() - t0
    assert 1.0 <= waited < 2.5 and calls == 4, (waited, calls)  # 4 x the timeout, all told
    assert "4 x --llm-timeout" in str(e.value) and "\n" not in str(e.value)
    assert len(requests) == 1 + 4
    run = next(a for a in train.build_parser()._actions if a.dest == "cmd").choices["run"]
    assert "4x" in run._option_string_actions["--llm-timeout"].help  # the bound, in --help


def test_the_progress_line_says_when_the_run_waits_on_the_endpoint(llm_server):
    class Bar:  # the part of a tqdm bar the reflector uses
        postfix, shown = "val=0.50", []

        def set_postfix_str(self, text):
            self.shown.append((text, time.perf_counter()))

        def refresh(self):
            pass
    url, _ = llm_server([(200, GOOD, 0.3)])
    refl, bar = llm.LLMReflector(url, "x", timeout=5), Bar()
    llm.show_waits(refl, bar)
    t0 = time.perf_counter()
    refl("rule: ?", [{"inputs": "in: 1", "outputs": "1", "feedback": "expected 2"}])
    assert bar.shown and bar.shown[0][0].startswith(f"waiting on {url}")
    assert bar.shown[0][1] - t0 < 0.25  # said before the wait, not after
    assert bar.postfix == "val=0.50"  # the line as it was once the reply came


def test_a_run_shows_its_llm_waits(micro_base, tmp_path, llm_server, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    url, _ = llm_server([(200, GOOD)])
    train.run("fst", [("hidden-rule", 2)], MICRO, micro_base, str(tmp_path / "f"),
              reflector="llm", llm=dict(url=url, model="x"), log=lambda *a: None)
    assert f"waiting on {url}" in capsys.readouterr().err


def test_a_reply_without_a_fence_is_a_rejected_proposal_unless_every_reply_is_one(llm_server):
    bare = json.dumps({"choices": [{"message": {"content": "rule: add 1"}}]}).encode()
    records = [{"inputs": "in: 1", "outputs": "1", "feedback": "expected 2"}]
    url, _ = llm_server([(200, GOOD), (200, bare)])
    refl = llm.LLMReflector(url, "x", fail_limit=2, backoff=0.01)
    assert refl("rule: ?", records) == "rule: add 1"
    for _ in range(4):  # the endpoint is alive: each is one rejected proposal, never a stop
        with pytest.raises(ValueError, match="fenced"):
            refl("rule: ?", records)
    assert refl.failures == 0
    url, _ = llm_server([(200, bare)])
    refl = llm.LLMReflector(url, "x", fail_limit=2, backoff=0.01)
    with pytest.raises(ValueError, match="fenced"):
        refl("rule: ?", records)
    with pytest.raises(fc.ReflectorError) as e:  # every reply so far: this model never fences
        refl("rule: ?", records)
    assert "fence" in str(e.value) and "x" in str(e.value) and "in a row" not in str(e.value)


# -----------------------------------------------------------------------------
# a full disk, and a stop that names what is there

def test_a_full_disk_is_one_line_and_keeps_the_checkpoint(micro_base, tmp_path, monkeypatch,
                                                          capsys, log_rows):
    real_save, saves = torch.save, []

    def full_at_the_second_checkpoint(obj, f):
        saves.append(str(f))
        if str(f).endswith("ckpt.pt.tmp") and sum(s.endswith("ckpt.pt.tmp") for s in saves) == 2:
            real_save(obj, f)  # half written, as torch's writer leaves it
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
        return real_save(obj, f)
    monkeypatch.setattr(torch, "save", full_at_the_second_checkpoint)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    out = tmp_path / "r"
    argv = ["run", "--preset", "micro", "--method", "rl", "--task", "cipher", "--steps", "6",
            "--ckpt-every", "2", "--init", micro_base, "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    lines = _terminal(capsys.readouterr().err)
    ck = str(out / "ckpt.pt")
    assert e.value.code == 2 and lines == [
        f"error: cannot write {ck}: the disk is full (0.0 MiB free in {out}); the checkpoint {ck} "
        "holds step 2: free some space, then rerun with --resume"], lines
    assert torch.load(ck, weights_only=True)["step"] == 2 and sorted(os.listdir(out)) == [
        "ckpt.pt", "log.jsonl", "settings.json"]
    monkeypatch.undo()
    train.main(argv + ["--resume"])  # space again: the run continues from step 2
    assert [r["step"] for r in log_rows(out)] == list(range(6))


def test_a_stop_for_bad_steps_names_what_is_on_disk_and_the_kl_penalty(micro_base, tmp_path):
    with pytest.raises(UserError) as e:  # beta so large that every loss is non-finite
        train.run("rl", [("cipher", 20)], train.replace(MICRO, beta=1e308, max_bad_steps=3),
                  micro_base, str(tmp_path / "x"), log=lambda *a: None)
    msg = str(e.value)
    assert "3 optimizer steps in a row skipped" in msg and "no checkpoint yet" in msg
    assert "ckpt.pt" not in msg and "--beta" in msg
