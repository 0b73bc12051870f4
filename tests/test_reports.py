"""
The committed reports rebuild from committed files alone: the files git holds at HEAD are
extracted into an empty folder (what a fresh clone has: no runs/, no weights but the bases'), the
suite report and the phase report are rebuilt there from results/tiny/runs with the README's
commands (python -m harness.report / harness.phase), and they equal the committed
results/tiny/{report.md, results.json} and results/tiny/phase/{phase.md, phase.json}, byte for
byte; so does the adherence experiment's report (results/adherence/adherence.{md,json}).

Run: python -m pytest -q tests/test_reports.py   (about a minute on CPU)
"""

import os
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _committed_tree(dest):
    """HEAD's files (git archive), or None outside a git checkout."""
    try:
        data = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", "HEAD"],
                              check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = os.path.join(dest, "head.tar")
    with open(path, "wb") as f:
        f.write(data)
    with tarfile.open(path) as t:
        t.extractall(os.path.join(dest, "clone"), filter="data")
    return os.path.join(dest, "clone")


def test_committed_reports_rebuild_from_committed_files(tmp_path):
    clone = _committed_tree(str(tmp_path))
    if clone is None:
        pytest.skip("not a git checkout: nothing committed to rebuild from")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    out = tmp_path / "out"
    grid = ["--runs", "results/tiny/runs", "--bases", "3", "--seeds", "3"]
    for module, to in (("harness.report", "suite"), ("harness.phase", "phase")):
        subprocess.run([sys.executable, "-m", module] + grid + ["--out", str(out / to)],
                       cwd=clone, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "harness.adherence_report", "--root",
                    "results/adherence/runs", "--out", str(out / "adherence")],
                   cwd=clone, env=env, check=True, capture_output=True)
    for built, committed in (("suite/report.md", "results/tiny/report.md"),
                             ("suite/results.json", "results/tiny/results.json"),
                             ("phase/phase.md", "results/tiny/phase/phase.md"),
                             ("phase/phase.json", "results/tiny/phase/phase.json"),
                             ("adherence/adherence.md", "results/adherence/adherence.md"),
                             ("adherence/adherence.json", "results/adherence/adherence.json")):
        with open(out / built) as a, open(os.path.join(clone, committed)) as b:
            assert a.read() == b.read(), f"{committed} differs from its rebuild"
