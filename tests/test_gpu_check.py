"""
tests/test_gpu_check.py: the GPU check's logic, run on the CPU (`python -m harness.gpu_check
--smoke`: the micro preset, Triton's interpreter, every stage but the CUDA test file). It passes,
writes its JSON alone to --out (the models and runs go to --work, outside it), and records what a
GPU run must report: the sampler/trainer log-prob gap (from the fst run's log, and measured with
TF32 on and off), bitwise-repeatable gradients at shapes that pick SDPA's non-deterministic
backward unless determinism is enforced, and a killed and resumed run that logs what an
uninterrupted one logged.

Run: python -m pytest -q tests/test_gpu_check.py   (about half a minute on CPU)
"""

import json
import os
import subprocess
import sys

import pytest

from harness import gpu_check  # (imported, it reads no command line)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_smoke_check_passes_and_leaves_only_its_json_in_out(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    p = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--smoke", "--out", str(out),
                        "--work", str(work)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert os.listdir(out) == ["gpu_check.json"]  # the models and runs stayed in --work
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["all_ok"] and "pytest" not in res  # the CUDA test file runs on a GPU only
    for stage in ("kernels/distribution_V320", "model", "bench/decode", "runs", "numerics",
                  "determinism"):
        assert res[stage]["ok"], stage
    assert res["runs"]["fst"]["logp_gap_mean"] is not None
    num = res["numerics"]
    assert {"logp_gap_tf32", "logp_gap_fp32", "rl_shape_generate_ms_graphs_True"} <= set(num)
    assert [r["tokens"] for r in num["repeat_backward"]] == [77, 200, 30, 9]
    assert all(r["same_grads"] for r in num["repeat_backward"])
    det = res["determinism"]
    assert det["killed_mid_run"] and det["resumed_same_log"] and det["fst_twice_same_log"]


def test_the_work_folder_may_not_sit_inside_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(["--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert e.value.code == 2 and "inside --out" in capsys.readouterr().err
