"""
End-to-end smoke test: the whole reproduction suite (pretraining, rl / context / fst on every task,
the plasticity probe, the continual run, the report) on the `micro` preset, in a temporary folder.

It checks plumbing, not trends: every key of results.json is present and finite where a number is
due, and the report and its plots exist. The micro model is too small for its numbers to mean
anything. The suite runs once (the module's `micro_suite` fixture); each test_suite_* test checks
one part of that run: results.json's keys, its claim rows, its numbers and the report, the runs'
logs, a second run (which skips every finished stage) and --jobs 2, the reflectors' hit rates.

Run: python -m pytest -q tests/test_suite.py   (minutes on CPU)
"""

import json
import math
import os
import shutil

import pytest
import torch

import train
from harness import grid, hit_rates, probes, report, runs, stats
from harness.cli import UserError
from world import pretrain, reflectors, tasks

S = train.SUITE  # the reproduction's table


def _finite_leaves(d, path=""):
    """Yield (path, value) for every numeric leaf of a nested dict."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _finite_leaves(v, f"{path}/{k}")
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        yield path, d


def _without_wall(d):
    if isinstance(d, dict):
        return {k: _without_wall(v) for k, v in d.items() if k != "wall_s"}
    return [_without_wall(v) for v in d] if isinstance(d, list) else d


@pytest.fixture(scope="module")
def micro_suite(tmp_path_factory):
    """The whole suite run once on micro -> (its folder, its results.json, a scratch folder)."""
    tmp_path = tmp_path_factory.mktemp("suite")
    root = str(tmp_path / "micro")
    train.reproduce(train.PRESETS["micro"], root, seeds=1, log=lambda *a: None)
    with open(os.path.join(root, "results.json")) as f:
        res = json.load(f)
    return root, res, tmp_path


def test_suite_end_to_end(micro_suite):
    _, res, _ = micro_suite
    for key in ("preset", "bases", "seeds", "replicates", "wall_s", "base_quality",
                "c1_sample_efficiency", "c2_asymptote", "c3_kl_at_matched_reward", "c4_forgetting",
                "c5_plasticity", "c6_continual", "c7_channels", "c8_exploration", "controls",
                "claims", "family", "curves"):
        assert key in res, key
    for task in S["tasks"]:
        c1 = res["c1_sample_efficiency"][task]
        assert set(c1["profile"]) == {"0.5", "0.8", "0.9", "1.0", "peak"}
        assert {"rl", "fst"} <= set(res["c2_asymptote"][task])
        for k in ("kl", "kl_common"):
            assert "above_floor" in res["c3_kl_at_matched_reward"][task][k]
        # C4 and C7 come from each run's measures.json, never from weights
        assert {"base", "rl", "fst", "sequential", "instructed"} <= set(
            res["c4_forgetting"][task]) and res["c4_forgetting"][task]["rebuilt"] == 1
        for m in ("base", "fst"):
            assert set(res["c4_forgetting"][task][m]) == {"general_acc", "seed_prompt_acc"}
        assert set(res["c4_forgetting"][task]["rl"]) == {"general_acc"}
        c7 = res["c7_channels"][task]
        assert {"base_weights", "fst_weights", "gains", "per_replicate"} <= set(c7)
        assert set(c7["gains"]) == {"prompt", "weights", "both", "interaction"}
        assert set(res["controls"][task]) == set(S["methods"]) - {"fst"}
        for m, c in res["curves"][task].items():
            assert len(c["steps"]) == len(c["val_acc"]) and len(c["rollouts"]) == 60, m


def test_suite_claim_rows(micro_suite):
    _, res, _ = micro_suite
    # every claim row: the tested statistic, its interval, n, per-replicate values and a label
    claims = {}
    for r in res["claims"]:
        assert {"mean", "ci95", "n", "per_replicate", "label"} <= set(r)
        assert r["label"] in stats.LABELS and list(r["per_replicate"]) == ["b0s0"]
        assert r["label"] in ("n < 5",) + stats.NO_TEST  # one replicate: no verdict anywhere
        claims.setdefault(r["claim"], []).append(r)
    assert len(claims["C1 faster"]) == len(S["tasks"]) * (len(stats.C1_ROWS) + 1)
    assert len(claims["C7 channels"]) == 4 * len(S["tasks"])  # gains and interaction
    assert len(claims["control"]) == (len(S["methods"]) - 1) * len(S["tasks"])
    assert len(claims["C6 keeps learning"]) == len(S["continual"]) - 1
    for c in ("C2 higher ceiling", "C3 less drift", "C4 forgets less (matches or beats)",
              "C5 RL-init barely learns", "C5 FST-init ~ base-init", "C7 channel split (pattern)",
              "C8 leaves zero sooner"):
        assert c in claims, c
    # long-chain is told: the instruction is its seed prompt, so instructed RL is RL bit for bit
    lc = [r for r in claims["control"] if r["task"] == "long-chain" and r["method"] == "instructed"]
    assert lc[0]["label"] == "= rl" and res["controls"]["long-chain"]["instructed"]["same_as_rl"]
    assert res["family"]["tests"] == 0  # nothing to test at n = 1
    assert {"from_base", "from_rl", "from_fst"} <= set(res["c5_plasticity"])
    assert len(res["c6_continual"]) == len(S["continual"])
    assert {"rl", "fst", "sequential", "context"} <= set(res["c8_exploration"])
    # every claim row sits beside its controls (n/a where the control has no such run)
    assert all(set(r["vs"]) == {"sequential", "instructed"} for r in res["claims"]
               if r["claim"] not in ("control", "C7 channels"))


def test_suite_numbers_are_finite_and_the_report_is_written(micro_suite):
    root, res, _ = micro_suite
    # the fair-test bar per base: RL-only's gain on base 0 is the gain the runs table shows
    for t in S["tasks"]:
        by_base = res["rl_gain_by_base"][t]["0"]
        assert by_base["mean"] == res["runs"][t]["rl"]["gain"]["mean"]
        assert by_base["min"] == res["runs"][t]["rl"]["min_gain"]
    leaves = list(_finite_leaves(res))
    assert len(leaves) > 50
    for path, v in leaves:
        assert math.isfinite(v), path
    # every measured accuracy is a fraction
    for path, v in leaves:
        if path.endswith(("_acc/mean", "/rl_peak/mean", "/fst_peak/mean", "/auc/mean",
                          "/final/mean")):
            assert 0.0 <= v <= 1.0, (path, v)
    assert os.path.getsize(os.path.join(root, "report.md")) > 500
    pngs = [f for f in os.listdir(root) if f.endswith(".png")]
    assert len(pngs) == 3 * len(S["tasks"]) + 2, pngs


def test_suite_runs_log_the_designed_keys(micro_suite):
    root, _, _ = micro_suite
    # every run logged the keys the design asks for
    b0 = runs.base_root(root, 0)
    rows = runs.read_log(runs.run_dir(b0, "cipher", "fst", 0))
    for k in ("step", "rollouts", "reward", "loss", "clip_frac", "capped_frac", "entropy",
              "grad_norm", "wall_s"):
        assert k in rows[0], k
    assert "val_greedy" in rows[-1] and {"kl", "kl_common"} <= set(rows[-1])
    # what the report reads off the final weights, written beside summary.json
    with open(os.path.join(runs.run_dir(b0, "cipher", "fst", 0), "measures.json")) as f:
        m = json.load(f)
    assert {"general_acc", "seed_prompt_acc", "deployed_prompt_acc", "base"} <= set(m)
    assert not os.path.exists(os.path.join(runs.run_dir(b0, "cipher", "context", 0),
                                           "measures.json"))  # no weights of its own
    with open(os.path.join(runs.run_dir(b0, "cipher", "sequential", 0), "measures.json")) as f:
        assert set(json.load(f)) == {"general_acc", "deployed_prompt", "samples"}  # C4 only
    # every step generates
    assert all(b["rollouts"] > a["rollouts"] for a, b in zip(rows, rows[1:]))
    # the exploration task's runs log a reward per step (binary per rollout: tests/test_tasks.py)
    sparse = runs.read_log(runs.run_dir(b0, S["exploration_task"], "rl", 0))
    assert len(sparse) == train.PRESETS["micro"].steps and all("reward" in r for r in sparse)


def test_suite_rerun_skips_finished_stages_and_jobs_2_gives_the_same_results(micro_suite):
    root, res, tmp_path = micro_suite
    b0 = runs.base_root(root, 0)
    # running the suite again skips every finished stage (no log is rewritten)
    # and reports the same numbers
    logs = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, fs in os.walk(root) for f in fs if f == "log.jsonl"}
    # a dial level's rl and instructed runs are its family's (one folder)
    per_task = {runs.run_dir(b0, t, m, 0, S["budget_blind"])
                for t in S["tasks"] for m in S["methods"]}
    levels = [t for t in S["tasks"] if tasks.NAMED_TASKS[t].family]  # cipher-k2
    for t in levels:  # a method without fast weights (no budget to read) runs once per family
        for m, flags in train.METHODS.items():
            family = runs.run_dir(b0, tasks.NAMED_TASKS[t].family, m, 0, S["budget_blind"])
            own = runs.run_dir(b0, t, m, 0, S["budget_blind"])
            assert (own == family) == (not flags["uses_context"]), (t, m)
    assert len(per_task) == (len(S["methods"]) * len(S["tasks"])
                             - len(S["budget_blind"]) * len(levels))
    assert len(logs) == len(per_task) + 2 + 3 + len(S["exploration_methods"])
    again = train.reproduce(train.PRESETS["micro"], root, seeds=1, log=lambda *a: None)
    assert {p: os.stat(p).st_mtime_ns for p in logs} == logs
    assert json.loads(json.dumps(again)) == res
    # --jobs 2 on a copy of the same base gives the same results.json
    other = str(tmp_path / "jobs")
    shutil.copytree(os.path.join(b0, "base"), os.path.join(runs.base_root(other, 0), "base"))
    train.reproduce(train.PRESETS["micro"], other, seeds=1, log=lambda *a: None, jobs=2)
    with open(os.path.join(other, "results.json")) as f:
        par = json.load(f)
    assert _without_wall(par) == _without_wall(res)  # wall clocks are the one thing that may differ


def test_suite_reflector_hit_rates(micro_suite):
    root, _, _ = micro_suite
    # each reflector's first-proposal hit rate, from the base's own outputs: graded strength
    rates = hit_rates.hit_rate_table(runs.base_path(root, 0), S["tasks"] + [S["plasticity_task"],
                                 S["exploration_task"]], ("oracle", "edit", "demo"), trials=5)
    assert set(rates) == set(S["tasks"]) | {S["plasticity_task"], S["exploration_task"]}
    # the grammar search writes the 2-op rule from 3 examples
    assert rates["hidden-rule"]["oracle"] == 1.0
    # one local edit from `rule: ?` cannot state a 2-op rule
    assert rates["hidden-rule"]["edit"] == 0.0
    assert all(v is None for v in rates["long-chain"].values())  # told: the seed states the rule
    assert all(0.0 <= v <= 1.0 for t, d in rates.items() if t != "long-chain" for v in d.values())


def test_leaving_zero_reward_needs_a_sustained_mean():
    rows = [{"step": i, "reward": r} for i, r in enumerate([0, 0.01, 0, 0, 0.02, 0, 0.1, 0.1, 0.1])]
    assert probes.first_success(rows) == 1
    assert probes.leave_zero(rows) == 8  # steps 4-8: (0.02 + 0 + 0.1 + 0.1 + 0.1) / 5 >= 0.05
    assert probes.leave_zero(rows[:6]) is None  # censored: never left zero


def test_a_run_starts_once_the_weights_it_starts_from_exist(tmp_path):
    have = tmp_path / "have.pt"
    have.write_bytes(b"")
    pending = [("a", {"init": str(tmp_path / "later.pt")}), ("b", {"init": str(have)})]
    assert runs.next_ready(pending) == ("b", {"init": str(have)})  # "a" waits, "b" goes first
    assert runs.next_ready(pending) is None and len(pending) == 1
    # nothing running and nothing ready: one line naming the run and the missing weights
    with pytest.raises(UserError, match="a cannot start: .*later.pt does not exist"):
        list(runs.run_all(train.run, train.PRESETS["micro"], pending, "cpu", 1, print))
    # a run that finished earlier is ready without its starting weights (an archived probe)
    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text("{}")
    later = [(str(done), {"init": str(tmp_path / "later.pt")})]
    assert runs.next_ready(later) == (str(done), {"init": str(tmp_path / "later.pt")})


def test_a_missing_base_is_copied_from_the_committed_grid_only_if_its_settings_match(
        tmp_path, monkeypatch):
    """prepare_bases copies results/<preset>/runs/b<b>/base when its pretraining settings and seed
    are the preset's, pretrains otherwise (and always with fresh_bases)."""
    from dataclasses import asdict
    preset = train.PRESETS["micro"]
    committed = tmp_path / "results" / "micro" / "runs" / "b0" / "base"
    committed.mkdir(parents=True)
    (committed / "model.pt").write_bytes(b"weights")
    metrics = {"preset": json.loads(json.dumps(asdict(preset))), "seed": 0, "wall_s": 12.0}
    (committed / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(runs, "COMMITTED", str(tmp_path / "results"))
    trained = []

    def fake_pretrain(preset, out, device, seed=0, log=print, resume=False):
        trained.append(seed)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "model.pt"), "wb") as f:
            f.write(b"trained")
        with open(os.path.join(out, "metrics.json"), "w") as f:
            f.write(json.dumps({"wall_s": 3.0}))
    monkeypatch.setattr(pretrain, "pretrain", fake_pretrain)
    lines = []
    walls = pretrain.prepare_bases(preset, str(tmp_path / "a"), 2, "cpu", lines.append)
    assert walls == [12.0, 3.0] and trained == [1]  # b0 copied; no committed b1: pretrained
    assert (tmp_path / "a" / "b0" / "base" / "model.pt").read_bytes() == b"weights"
    assert "committed grid's" in lines[0] and lines[1] == "pretraining base 1"
    pretrain.prepare_bases(preset, str(tmp_path / "b"), 1, "cpu", lines.append, fresh_bases=True)
    assert trained == [1, 0]
    metrics["preset"]["pretrain_steps"] += 1  # other settings: not the same base
    (committed / "metrics.json").write_text(json.dumps(metrics))
    assert pretrain.committed_base(preset, 0) is None
    pretrain.prepare_bases(preset, str(tmp_path / "c"), 1, "cpu", lines.append)
    assert trained == [1, 0, 0]


def test_every_entry_point_that_can_run_on_cuda_sets_the_device_numerics_first(
        tmp_path, monkeypatch):
    """suite(), run() and pretrain() called from Python, and a --jobs worker, each call
    setup_device with the device before any work (so --jobs 1 and --jobs N, and Python and the
    command line, run one set of numerics). CUDA is pretended: the stand-in records the device and
    hands back the CPU."""
    from dataclasses import replace
    seen = []

    def fake_setup(device):
        seen.append(str(device))
        return "cpu"
    monkeypatch.setattr(train, "setup_device", fake_setup)
    monkeypatch.setattr(pretrain, "setup_device", fake_setup)
    quiet = lambda *a: None  # noqa: E731
    micro = replace(train.PRESETS["micro"], pretrain_steps=1, steps=1)
    pretrain.pretrain(micro, str(tmp_path / "base"), "cuda", log=quiet)
    assert seen[0] == "cuda"
    seen.clear()
    train.run("rl", [("cipher", 1)], micro, str(tmp_path / "base" / "model.pt"),
              str(tmp_path / "run"), device="cuda", log=quiet)
    assert seen[0] == "cuda"

    class Stop(Exception):
        pass

    def no_bases(*a, **kw):
        raise Stop
    monkeypatch.setattr(pretrain, "prepare_bases", no_bases)
    seen.clear()
    with pytest.raises(Stop):
        train.reproduce(micro, str(tmp_path / "suite"), device="cuda", log=quiet)
    assert seen == ["cuda"]  # before the bases, the runs and the report
    ran = []
    monkeypatch.setattr(runs, "setup_device", fake_setup)
    seen.clear()
    runs._run_job(lambda **kw: ran.append((list(seen), kw["device"])) or {}, micro, "folder", {},
                  "cuda", torch.get_num_threads())
    assert ran == [(["cuda"], "cuda")]  # the worker set the numerics before its run


def test_the_grid_prints_its_runs_as_commands_that_resume_and_end_in_the_report(
        micro_suite, tmp_path, monkeypatch, log_rows, capsys):
    """`python -m harness.grid STAGE` prints the grid for a scheduler (Slurm array, GNU
    parallel, xargs -P): bases, then runs, then after (the plasticity probe, from runs' weights),
    then report. Each run command makes the run suite() makes (same folder, same log), resumes, and
    the report command rebuilds the suite's results.json from the folders alone."""
    import shlex
    import subprocess
    root, res, _ = micro_suite
    monkeypatch.chdir(tmp_path)
    here = os.path.join("runs", "micro")  # the commands' root (python train.py's)
    shutil.copytree(root, here)  # the suite's runs, made under another root (other settings) ...
    b0 = runs.base_root(here, 0)
    redo = [runs.run_dir(b0, "hidden-rule", "fst", 0), runs.run_dir(b0, "plasticity", "fst", 0)]
    for d in redo:  # ... but these two are made again by their commands
        shutil.rmtree(d)
    os.remove(os.path.join(here, "results.json"))

    def commands(*argv):
        capsys.readouterr()
        grid.main([argv[0], "--preset", "micro", *argv[1:]])
        return capsys.readouterr().out.splitlines()

    assert commands("bases") == []  # base 0 is there
    assert commands("bases", "--bases", "2") == [
        "python train.py pretrain --preset micro --seed 1 --out runs/micro/b1/base --resume"]
    todo_runs, after = commands("runs"), commands("after")
    out = lambda c: shlex.split(c)[shlex.split(c).index("--out") + 1]  # noqa: E731
    assert sorted(map(out, todo_runs + after)) == sorted(f for f, _ in train.suite_runs(
        train.PRESETS["micro"], here))  # every run of the suite, once
    assert all(c.startswith("python train.py run --preset micro ") and c.endswith(" --resume")
               for c in todo_runs + after)
    assert {out(c).split(os.sep)[-3] for c in after} == {"plasticity"}  # from runs' weights
    # as the README runs them (xargs, a shell) every command splits as the test splits it (the
    # continual runs' schedules hold ';')
    for c in todo_runs + after:
        argv = subprocess.run(["xargs", "-d", "\n", "-I{}", "sh", "-c", "{}"], check=True,
                              input=c.replace("python", "printf '%s\\n'", 1) + "\n",
                              capture_output=True, text=True).stdout.splitlines()
        assert argv == shlex.split(c)[1:]
    # the two runs, in stage order, on the suite's thread count (a run's sums depend on it)
    todo = [next(c for c in todo_runs if out(c) == redo[0]), next(c for c in after if out(c) == redo[1])]
    threads = torch.get_num_threads()
    try:
        for c in todo + todo[:1]:  # the last again: finished, nothing to do
            train.main(shlex.split(c)[2:] + ["--threads", str(threads)])
    finally:
        torch.set_num_threads(threads)
    for d in redo:  # what suite() logged
        assert log_rows(d) == log_rows(os.path.join(root, os.path.relpath(d, here)))
    [report_cmd] = commands("report")
    assert report_cmd == "python -m harness.report --preset micro --bases 1 --seeds 1"
    report.main(shlex.split(report_cmd)[3:])
    with open(os.path.join(here, "results.json")) as f:
        made = json.load(f)
    assert _without_wall(made) == _without_wall(res)
    wall = lambda d: json.load(open(os.path.join(d, "summary.json")))["wall_s"]  # noqa: E731
    # the wall time summed from the folders, as suite() sums it (two runs on a new clock)
    assert made["wall_s"] == pytest.approx(res["wall_s"] + sum(
        wall(d) - wall(os.path.join(root, os.path.relpath(d, here))) for d in redo))


def test_the_gpu_smoke_preset_is_the_gpu_model_with_every_stage_short():
    """gpu-smoke runs the whole suite (every run of the gpu preset's replicate, the same folders) at
    the gpu preset's model size, with short stages: the GPU path end to end in minutes. (Its runs
    need a GPU to take minutes; the CPU runs the same suite code at the micro size above.)"""
    gpu, smoke = train.PRESETS["gpu"], train.PRESETS["gpu-smoke"]
    for k in ("n_layer", "n_head", "n_embd", "block_size", "pretrain_batch", "row_tokens", "pack",
              "batch_problems", "group_size", "max_new_tokens", "optimizer_steps", "loss_type",
              "gepa_every", "gepa_proposals"):
        assert getattr(smoke, k) == getattr(gpu, k), k
    assert smoke.pretrain_steps * 10 <= gpu.pretrain_steps and smoke.steps * 8 <= gpu.steps
    assert smoke.steps >= 2 * smoke.gepa_every  # GEPA rounds interleave with RL
    assert smoke.eval_every < smoke.steps and smoke.kl_every < smoke.steps  # evals mid-run too
    assert smoke.continual_steps < smoke.steps
    assert smoke.context_only_rollouts < gpu.context_only_rollouts
    folders = lambda p: [f for f, _ in train.suite_runs(p, "r")]  # noqa: E731
    assert folders(smoke) == folders(gpu)
    assert runs.default_jobs("cuda") == max(1, min(8, (os.cpu_count() or 1) // 2))
