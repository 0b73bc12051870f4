"""
Clear errors: bad input (a bad flag, task spec or schedule; a missing, truncated, foreign or
other-shaped checkpoint; an output folder that holds a run or is a file) gives one `error:` line,
exit code 2 and touches no existing file, from main() and from a real command line alike. A walk
takes every flag of every script from its argparse parser and feeds it bad values of its kind
(FLAG_KINDS): each must give one `error:` line, exit code 2 and leave every file as it was. A
SIGINT (Ctrl-C) to a real subprocess must give one line and exit code 130, the command it prints
must finish the run, and a Ctrl-C mid-write leaves the old file whole.

Everything runs on the `micro` preset (the `micro_base` fixture of tests/conftest.py); `workdir` is
a runs/micro folder with a base, a finished run, an interrupted one and bad files.

Run: python -m pytest -q tests/test_errors.py   (a minute or two on CPU)
"""

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields, replace

import pytest
import torch

from harness import bench
from harness import cli
from harness import gpu_check  # (imported, it reads no command line)
from harness import grid
from harness import phase
from harness import runs
from harness import report
from harness import select_tasks
import train
from model import GPT, GPTConfig, CheckpointError, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    preset = replace(train.PRESETS["micro"], ckpt_every=1)
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
    # sizes bounded when parsed (they would build memory in proportion to them)
    "steps too many": ["run", "--preset", "micro", "--steps", str(10**12), "--out", "new"],
    "stage too long": ["run", "--preset", "micro", "--schedule", "hidden-rule@100000000000",
                       "--out", "new"],
    "task stage too long": ["run", "--preset", "micro", "--task", "hidden-rule@100000000000",
                            "--out", "new"],
    "seeds too many": ["--preset", "micro", "--seeds", str(10**20)],
    "seed too large": ["run", "--preset", "micro", "--seed", str(2**70), "--out", "new"],
    "threads too many": ["run", "--preset", "micro", "--threads", "99999999999", "--out", "new"],
    # tracebacks before
    "superscript stage": ["run", "--preset", "micro", "--schedule", "hidden-rule@²",
                          "--out", "new"],
    "out name too long": ["run", "--preset", "micro", "--out", "x" * 300],
    "out under /proc": ["run", "--preset", "micro", "--out", "/proc/fastslow/r"],
    "out under /sys": ["run", "--preset", "micro", "--out", "/sys/fastslow"],
    "pretrain out under /sys": ["pretrain", "--preset", "micro", "--out", "/sys/fastslow"],
    # silent or misleading before
    "empty out": ["run", "--preset", "micro", "--out", ""],
    "empty preset": ["pretrain", "--preset", "", "--steps", "1", "--out", "new"],
    "empty schedule": ["run", "--preset", "micro", "--schedule", "", "--out", "new"],
    "reflector with no level": ["run", "--preset", "micro", "--reflector", "edit:", "--out", "new"],
    "suite flag to run": ["run", "--preset", "micro", "--seeds", "3", "--out", "new"],
    "suite flag before run": ["--bases", "2", "run", "--preset", "micro", "--out", "new"],
    "suite flag to pretrain": ["pretrain", "--preset", "micro", "--jobs", "2", "--out", "new"],
    "the phase grid's flag": ["--preset", "micro", "--phase"],  # python -m harness.phase --run
    "a micro base for a tiny run": ["run", "--preset", "tiny", "--init",
                                    "runs/micro/b0/base/model.pt", "--base",
                                    "runs/micro/b0/base/model.pt", "--steps", "1", "--out", "new"],
    "resume onto a base": ["run", "--preset", "micro", "--out", "runs/micro/b0/base", "--resume",
                           "--steps", "1"],
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
                                 ["harness.report", "--seeds", "two"],
                                 ["harness.report", "--preset", "micro", "--out", "notes.txt"],
                                 ["harness.gpu_check", "--out", "notes.txt"],
                                 ["harness.bench", "rollout", "--prompts", "-3"],
                                 ["harness.bench", "rollout", "--min-len", "250", "--max-len",
                                  "300", "--prompts", "1", "--samples", "1", "--device", "cpu"]])
def test_command_lines_print_one_line_not_a_traceback(cmd, workdir):
    # train.py runs as a file, the harness's scripts as modules (python -m harness.X)
    script = [os.path.join(ROOT, cmd[0])] if cmd[0].endswith(".py") else ["-m", cmd[0]]
    p = subprocess.run([sys.executable] + script + cmd[1:], cwd=workdir,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


def test_sizes_are_bounded_when_parsed_and_help_states_the_bound():
    """A size that would build memory in proportion to it is refused by the parser, and every
    bounded flag's --help says its bound."""
    huge = str(10**20)
    cases = {"train.py": ["--seeds", huge], "train.py pretrain": ["--steps", huge],
             "train.py run": ["--steps", huge], "select_tasks.py": ["--screen", str(10**9)],
             "report.py": ["--bases", huge], "phase.py": ["--seeds", huge]}
    parsers = _parsers()
    for script, bad in cases.items():
        with pytest.raises(cli.UserError, match="at most"):
            parsers[script][0].parse_args(bad)
    run = parsers["train.py run"][0]
    with pytest.raises(cli.UserError, match="at most"):
        run.parse_args(["--schedule", "hidden-rule@100000000000"])
    bounded = 0
    for script, (parser, _, _) in parsers.items():
        for name, action in _flags(parser).items():
            most = getattr(action.type, "most", None)
            if most is not None:
                bounded += 1
                assert f"{most:,}" in (action.help or ""), (script, name)
    assert bounded >= 10
    assert "1,000,000" in run._option_string_actions["--schedule"].help


def test_a_fifo_is_refused_not_waited_on(workdir, tmp_path):
    """torch.load on a named pipe waits for a writer for ever: --init and a run's ckpt.pt."""
    os.mkfifo(tmp_path / "pipe.pt")
    os.makedirs(tmp_path / "r")
    os.mkfifo(tmp_path / "r" / "ckpt.pt")
    base = str(workdir / "runs" / "micro" / "b0" / "base" / "model.pt")
    for argv in (["--init", "pipe.pt", "--out", "new"],
                 ["--init", base, "--out", "r", "--resume"]):
        p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "run", "--preset",
                            "micro"] + argv, cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and "not a regular file" in lines[0], p.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check runs for real on a GPU")
def test_gpu_check_without_cuda_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--out", "gc"], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                       timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--smoke" in lines[0], p.stderr


def test_report_with_only_the_phase_grids_runs_is_one_line(workdir, tmp_path):
    """The phase grid shares the cipher's rl run with the suite; the rest of the suite is
    missing."""
    root = tmp_path / "runs" / "micro" / "b0"
    shutil.copytree(workdir / "runs" / "micro" / "b0" / "base", root / "base")
    shutil.copytree(workdir / "done", root / "cipher" / "rl" / "s0")
    runs.write_suite(str(root.parent), train.SUITE)  # as the phase grid writes it
    before = _snapshot(tmp_path)
    p = subprocess.run([sys.executable, "-m", "harness.report", "--preset", "micro"],
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                       text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "not finished" in lines[0], p.stderr
    assert _snapshot(tmp_path) == before


def test_suite_with_a_base_missing_its_metrics_is_one_line(workdir, tmp_path, capsys,
                                                          monkeypatch):
    os.makedirs(tmp_path / "runs" / "micro" / "b0" / "base")
    shutil.copyfile(workdir / "runs" / "micro" / "b0" / "base" / "model.pt",
                    tmp_path / "runs" / "micro" / "b0" / "base" / "model.pt")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "micro", "--jobs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "metrics.json" in err[0], err
    assert _snapshot(tmp_path) == before


def test_the_phase_grid_names_the_report_it_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(phase.pretrain, "prepare_bases", lambda *a, **kw: [0.0])
    monkeypatch.setattr(phase, "jobs", lambda *a, **kw: [])

    def write_report(root, *a, **kw):
        os.makedirs(os.path.join(root, "phase"))
        open(os.path.join(root, "phase", "phase.md"), "w").close()
        return {"_out": os.path.join(root, "phase")}
    monkeypatch.setattr(phase, "write_report", write_report)
    said = []
    phase.run_grid(train.PRESETS["micro"], str(tmp_path), 1, 1, log=said.append)
    named = said[-1].split()[1]
    assert named == str(tmp_path / "phase" / "phase.md") and os.path.exists(named)


# -----------------------------------------------------------------------------
# every flag of every script through bad values: the flags come from each script's parser, their
# kinds from this table, so a new flag fails the walk until it is given a kind here

LLM = ["--reflector", "llm", "--llm-url", "http://localhost:9/v1", "--llm-model", "m"]
COMMON = {"--preset": ("text", [["--preset", "huge"], ["--preset", "nan"], ["--preset", ""]]),
          "--device": "choice", "--seeds": "number", "--bases": "number", "--jobs": "number",
          "--sweep": "switch", "--fresh-bases": "switch"}


def preset_flags(aliases=(), run=False):
    """Every Preset field is a flag of train.py: its kind from the field's type; `aliases`: the
    fields a command names otherwise ({field: flag}), whose own flag it leaves out; the fixed prompt
    is `run`'s alone (and for --method instructed)."""
    kinds, taken = {}, dict(aliases)
    for f in fields(train.Preset):
        flag = taken.get(f.name, "--" + f.name.replace("_", "-"))
        if f.name == "name" or (flag in taken.values() and f.name not in taken):
            continue
        if f.name == "fixed_prompt":
            if run:
                kinds[flag] = ("text", [["--method", "instructed", "--fixed-prompt", " "],
                                        ["--fixed-prompt", "rule: map 0>4 +"]])
            continue
        bad = [[flag, v] for v in ("x", "0.9", "0.9,1", "nan,0.9", "-0.1,0.9")]
        kinds[flag] = {str: "choice", bool: "switch", tuple: ("text", bad)}.get(f.type, "number")
    return kinds


TRAIN = dict(COMMON, **preset_flags())
# kind: number | folder (written into) | checkpoint (read) | choice | switch | text; a text flag
# carries the argv fragments that must be refused
FLAG_KINDS = {
    "train.py": TRAIN,
    "train.py pretrain": dict(COMMON, **preset_flags({"pretrain_steps": "--steps",
                                                      "pretrain_ckpt_every": "--ckpt-every"}), **{
        "--out": "folder", "--seed": "number", "--resume": "switch"}),
    "train.py run": dict(COMMON, **preset_flags({"loss_type": "--loss",
                                                 "gepa_proposals": "--proposals",
                                                 "context_only_rollouts": "--budget"}, run=True), **{
        "--method": "choice",
        "--reflector": ("text", [["--reflector", v]
                                 for v in ("bogus", "edit:2", "edit:x", "llm:0.5", "edit:")]),
        "--task": ("text", [["--task", "rule:frobnicate 3"], ["--task", "nan"],
                            ["--task", "-3"]]),
        "--schedule": ("text", [["--schedule", v] for v in (
            "cipher@x", "cipher@-3", "cipher@nan", ";", "", "cipher@²", "cipher@10000000000",
            "cipher@600000;hidden-rule@600000")]),
        "--init": "checkpoint", "--base": "checkpoint", "--out": "folder",
        "--seed": "number", "--resume": "switch",
        "--llm-url": ("text", [LLM + ["--llm-url", v] for v in ("notaurl", "ftp://h/v1", "nan",
                                                              "http://")]),
        "--llm-model": ("text", [LLM + ["--llm-model", ""], ["--llm-model", "m"]]),
        "--llm-timeout": "number"}),
    "report.py": {"--preset": ("text", [["--preset", "huge"]]), "--bases": "number",
                  "--seeds": "number", "--out": "folder", "--device": "choice",
                  "--hit-rates": "switch", "--runs": "folder", "--measure": "folder"},
    "select_tasks.py": {"--preset": ("text", [["--preset", "huge"]]), "--bases": "number",
                        "--screen": "number", "--dial": "switch"},
    "phase.py": {"--preset": ("text", [["--preset", "huge"]]), "--bases": "number",
                 "--seeds": "number", "--out": "folder", "--hit-rates": "switch",
                 "--archive": "folder", "--runs": "folder", "--run": "switch",
                 "--jobs": "number", "--fresh-bases": "switch"},
    "bench.py": {"what": "choice", "--device": "choice", "--threads": "number",
                 "--warmup": "number", "--repeats": "number", "--prompts": "number",
                 "--samples": "number", "--max-new": "number", "--min-len": "number",
                 "--max-len": "number", "--naive-repeats": "number", "--no-hf": "switch",
                 "--batch": "number",
                 "--vocabs": ("text", [["--vocabs", v] for v in ("x", "-3", "nan", "0", "8,",
                                                                "²")]),
                 "--bandwidth": "number"},
    "gpu_check.py": {"--out": "folder", "--work": "folder", "--smoke": "switch",
                     "--pretrain-steps": "number", "--fst-steps": "number",
                     "--budget-s": "number"},
    "grid.py": {"stage": "choice", "--preset": ("text", [["--preset", "huge"]]),
                "--bases": "number", "--seeds": "number", "--sweep": "switch", "--phase": "switch",
                "--fresh-bases": "switch", "--threads": "number", "--device": "choice"},
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
            "gpu_check.py": (gpu_check.build_parser(), gpu_check.parse_args, []),
            "grid.py": (grid.build_parser(), grid.main, ["runs", "--preset", "micro"])}


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
    if kind == "folder":  # places that pass os.access yet take no new folder; a name too long
        values += ["/proc/fastslow", "/sys/fastslow", "x" * 300]
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

def test_ctrl_c_is_one_line_exit_130_and_resume_finishes(workdir, tmp_path, log_rows):
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
    rows = log_rows(out)
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
    assert [r["step"] for r in log_rows(out)] == list(range(6))


def test_sigterm_prints_the_line_ctrl_c_prints_and_exits_143(workdir, tmp_path, log_rows):
    """A scheduler's stop (SIGTERM) ends the run as Ctrl-C does: its checkpoint, one line."""
    base = str(workdir / "runs" / "micro" / "b0" / "base" / "model.pt")
    out = str(tmp_path / "r")
    cmd = ["run", "--preset", "micro", "--method", "rl", "--task", "cipher", "--steps", "40",
           "--ckpt-every", "1", "--init", base, "--out", out]
    env = dict(os.environ, TQDM_DISABLE="1")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + cmd, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ck, t0 = os.path.join(out, "ckpt.pt"), time.time()
    while time.time() - t0 < 120 and not os.path.exists(ck):
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    lines = err.strip().splitlines()
    step = torch.load(ck, weights_only=True)["step"]
    assert len(lines) == 1 and lines[0].startswith(
        f"interrupted after {len(log_rows(out))} steps (the checkpoint {ck} holds step {step}); "
        f"continue with: python train.py run "), err
    assert lines[0].endswith(" --resume") and not os.path.exists(os.path.join(out, ".lock"))


def test_ctrl_c_outside_a_loop_and_in_the_suite_is_one_line_with_the_command(monkeypatch,
                                                                             capsys):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "run_command", interrupted)
    monkeypatch.setattr(train, "reproduce", interrupted)
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


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(workdir, tmp_path, capsys,
                                                                 log_rows):
    base = str(workdir / "runs" / "micro" / "b0" / "base" / "model.pt")
    out = str(tmp_path / "fresh")
    train.main(["run", "--preset", "micro", "--method", "rl", "--task", "cipher", "--steps", "1",
                "--init", base, "--out", out, "--resume"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{out}: no checkpoint to resume from, starting from step 0"
    assert len(log_rows(out)) == 1
