"""
End-to-end smoke test: the whole reproduction suite (pretraining, rl / context / fst on every task, the
plasticity probe, the continual run, the report) on the `micro` preset, in a temporary folder.

It checks plumbing, not trends: every key of results.json is present and finite where a number is due,
and the report and its plots exist. The micro model is too small for its numbers to mean anything.
"""

import json
import math
import os

import report
import train


def _finite_leaves(d, path=""):
    """Yield (path, value) for every numeric leaf of a nested dict."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _finite_leaves(v, f"{path}/{k}")
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        yield path, d


def test_suite_end_to_end(tmp_path):
    root = str(tmp_path / "micro")
    train.suite(train.PRESETS["micro"], root, seeds=1, log=lambda *a: None)
    with open(os.path.join(root, "results.json")) as f:
        res = json.load(f)
    for key in ("preset", "seeds", "wall_s", "c1_sample_efficiency", "c2_asymptote", "c3_kl_at_matched_reward",
                "c4_forgetting", "c5_plasticity", "c6_continual", "c7_channels"):
        assert key in res, key
    for task in report.SUITE_TASKS:
        c1 = res["c1_sample_efficiency"][task]
        for k in ("rl_peak", "rl_steps_to_peak", "fst_steps_to_rl_peak", "ratio", "ratio_rollouts"):
            assert k in c1
        assert set(res["c3_kl_at_matched_reward"][task]) >= {"reward", "rl_kl", "fst_kl", "ratio"}
        assert set(res["c4_forgetting"][task]) == {"base", "rl", "fst"}
        for m in ("base", "rl", "fst"):
            assert set(res["c4_forgetting"][task][m]) == {"general_acc", "no_prompt_acc"}
        assert {"base_weights", "fst_weights"} <= set(res["c7_channels"][task])
        assert {"rl", "fst"} <= set(res["c2_asymptote"][task])
    assert {"from_base", "from_rl", "from_fst"} <= set(res["c5_plasticity"])
    assert len(res["c6_continual"]) == len(report.CONTINUAL)
    leaves = list(_finite_leaves(res))
    assert len(leaves) > 50
    for path, v in leaves:
        assert math.isfinite(v), path
    # every measured accuracy is a fraction
    for path, v in leaves:
        if path.endswith(("_acc/mean", "/rl_peak/mean", "/fst_peak/mean", "/auc/mean", "/final/mean")):
            assert 0.0 <= v <= 1.0, (path, v)
    assert os.path.getsize(os.path.join(root, "report.md")) > 500
    pngs = [f for f in os.listdir(root) if f.endswith(".png")]
    assert len(pngs) == 3 * len(report.SUITE_TASKS) + 2, pngs
    # every run logged the keys the design asks for
    with open(os.path.join(root, "cipher", "fst", "s0", "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for k in ("step", "rollouts", "reward", "loss", "clip_frac", "entropy", "grad_norm", "wall_s"):
        assert k in rows[0], k
    assert any("val_acc" in r and "val_greedy" in r for r in rows)
    assert all(b["rollouts"] > a["rollouts"] for a, b in zip(rows, rows[1:]))  # every step generates
    # running the suite again skips every finished stage (no log is rewritten) and reports the same numbers
    logs = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, fs in os.walk(root) for f in fs if f == "log.jsonl"}
    assert len(logs) == len(report.SUITE_METHODS) * len(report.SUITE_TASKS) + 3 + 2
    again = train.suite(train.PRESETS["micro"], root, seeds=1, log=lambda *a: None)
    assert {p: os.stat(p).st_mtime_ns for p in logs} == logs
    assert json.loads(json.dumps(again)) == res
    # each reflector's first-proposal hit rate, from the base's own outputs: graded strength
    rates = report.reflector_hit_rates(root, trials=5)
    assert set(rates) == set(report.SUITE_TASKS) | {report.PLASTICITY_TASK}
    assert rates["hidden-rule"]["oracle"] == 1.0  # the grammar search writes the 2-op rule from 3 examples
    assert rates["hidden-rule"]["edit"] == 0.0    # one local edit from `rule: ?` cannot state a 2-op rule
    assert all(0.0 <= v <= 1.0 for d in rates.values() for v in d.values())
