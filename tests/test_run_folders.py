"""
A folder is one run's, and nothing in it is lost: `--resume` refuses a folder that holds anything
but its own run (a base, another run's first rows), one writer at a time holds a folder (a second
one, with or without --resume, gets one line naming the first's pid), and a resume checks the log
against the checkpoint (rows missing, short or cut: one line). Each case runs end to end through
train.py's command line in a temporary folder and compares the md5 of every file that was there
before with what is there after.

Everything runs on the `micro` preset (tests/conftest.py's `micro_base`). Bad flags, the walk of
every flag, Ctrl-C and SIGTERM are in tests/test_errors.py; checkpoints, resume and the llm
reflector's endpoint in tests/test_reliability.py.

Run: python -m pytest -q tests/test_run_folders.py   (about a minute on CPU)
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _md5s(folder):
    """{name: md5} of every file in `folder` (the lock file aside: it is the writer's own)."""
    return {f: hashlib.md5(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder)) if f != ".lock"}


def _main(argv, capsys):
    """train.py's main in this process -> (exit code, the lines on stderr)."""
    try:
        train.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def _run(out, base, *more):
    return ["run", "--preset", "micro", "--task", "cipher", "--steps", "4", "--init", base,
            "--out", str(out), *more]


def _refused(argv, folder, capsys, *words):
    """argv must give one `error:` line holding `words`, exit code 2, and leave `folder` as it
    was."""
    before = _md5s(folder)
    code, err = _main(argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    assert all(w in err[0] for w in words), err[0]
    assert _md5s(folder) == before
    return err[0]


# -----------------------------------------------------------------------------
# only its own run resumes a folder

def test_resume_on_a_base_folder_refuses_and_keeps_the_base(micro_base, tmp_path, capsys):
    b = tmp_path / "B"
    shutil.copytree(os.path.dirname(micro_base), b)
    assert set(_md5s(b)) == {"model.pt", "metrics.json"}
    argv = _run(b, str(b / "model.pt"), "--base", micro_base, "--steps", "2", "--resume")
    line = _refused(argv, b, capsys, str(b), "a base")
    assert "--resume" not in line  # the advice never leads back to the loss
    _refused(argv[:-1], b, capsys, "already holds a run")  # without --resume: refused as before


def _killed_before_first_checkpoint(out, base, monkeypatch, capsys, *flags):
    """A run stopped by Ctrl-C at step 2, before its first checkpoint -> its folder's md5s."""
    real = train.fst_step

    def stop_at_2(s, step, preset):
        if step == 2:
            raise KeyboardInterrupt
        return real(s, step, preset)
    monkeypatch.setattr(train, "fst_step", stop_at_2)
    code, _ = _main(_run(out, base, "--ckpt-every", "100", *flags), capsys)
    monkeypatch.setattr(train, "fst_step", real)
    assert code == 130 and not os.path.exists(out / "ckpt.pt")
    return _md5s(out)


def test_a_run_killed_before_its_first_checkpoint_resumes_only_as_itself(
        micro_base, tmp_path, monkeypatch, capsys, log_rows):
    out = tmp_path / "r"
    held = _killed_before_first_checkpoint(out, micro_base, monkeypatch, capsys, "--method", "fst")
    assert set(held) == {"log.jsonl", "settings.json"} and len(log_rows(out)) == 2
    # another run's flags: refused, its rows kept
    line = _refused(_run(out, micro_base, "--method", "rl", "--seed", "3", "--resume"), out,
                    capsys, "another run", "method", "seed")
    assert "killed before its first checkpoint" in line
    # its own flags: it starts over from step 0 and finishes
    code, err = _main(_run(out, micro_base, "--method", "fst", "--resume"), capsys)
    assert code == 0, err
    assert [r["step"] for r in log_rows(out)] == [0, 1, 2, 3]
    assert set(_md5s(out)) == {"log.jsonl", "summary.json", "model.pt", "measures.json"}


def test_a_partial_log_with_no_record_of_its_run_is_refused(micro_base, tmp_path, monkeypatch,
                                                            capsys):
    out = tmp_path / "r"
    _killed_before_first_checkpoint(out, micro_base, monkeypatch, capsys)
    os.remove(out / "settings.json")  # as a run of an earlier version leaves it
    _refused(_run(out, micro_base, "--resume"), out, capsys, "no record of the run")
    for more in ([], ["--resume"]):  # nor does a pretraining take a run's folder
        _refused(["pretrain", "--preset", "micro", "--out", str(out), *more], out, capsys,
                 "a run's files")


def test_a_model_without_a_run_is_refused(micro_base, tmp_path, capsys):
    out = tmp_path / "w"
    os.makedirs(out)
    shutil.copyfile(micro_base, out / "model.pt")  # weights copied in by hand
    _refused(_run(out, micro_base, "--resume"), out, capsys, "model.pt with no run's checkpoint")


# -----------------------------------------------------------------------------
# one writer per folder

def _wait_for(path, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path) and open(path).read().count("\n") >= 2:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never had two rows")


def test_a_second_writer_is_refused_with_the_first_ones_pid(micro_base, tmp_path, capsys,
                                                             log_rows):
    out = tmp_path / "r"
    argv = _run(out, micro_base, "--steps", "8", "--seed", "0")
    env = dict(os.environ, TQDM_DISABLE="1")
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + argv,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, text=True)
    try:
        _wait_for(out / "log.jsonl")
        first.send_signal(signal.SIGSTOP)  # hold it still: the folder does not change meanwhile
        for more in (["--seed", "1"], ["--seed", "0", "--resume"]):  # another run; a resume
            line = _refused(_run(out, micro_base, "--steps", "8", *more), out, capsys,
                            "another process", f"pid {first.pid}")
            assert "train.py" in line
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    finally:
        first.kill() if first.poll() is None else None
    assert first.returncode == 0, err
    assert [r["step"] for r in log_rows(out)] == list(range(8))  # the first run's, whole
    assert train.json.load(open(out / "summary.json"))["seed"] == 0
    assert not os.path.exists(out / ".lock")  # released on exit
    code, _ = _main(_run(out, micro_base, "--steps", "8", "--resume"), capsys)
    assert code == 0  # free again: a resume of the finished run finds it finished


# -----------------------------------------------------------------------------
# the log checked against the checkpoint on resume

@pytest.fixture(scope="module")
def stopped_run(micro_base, tmp_path_factory):
    """A run stopped after its last checkpoint (6 rows logged, ckpt.pt after 6) -> its folder."""
    out = tmp_path_factory.mktemp("stopped") / "r"

    def stop(*a, **kw):
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "finish_run", stop)
        with pytest.raises(SystemExit) as e:
            train.main(_run(out, micro_base, "--steps", "6", "--ckpt-every", "3"))
    assert e.value.code == 130 and os.path.exists(out / "ckpt.pt")
    return out


@pytest.fixture
def stopped_at_the_end(stopped_run, tmp_path):
    """A copy of stopped_run's folder (a run's settings do not hold its folder)."""
    return shutil.copytree(stopped_run, tmp_path / "r")


@pytest.mark.parametrize("damage", ["emptied", "short", "cut", "missing", "out of order"])
def test_resume_refuses_a_log_that_does_not_match_its_checkpoint(stopped_at_the_end, micro_base,
                                                                 capsys, damage):
    out, log = stopped_at_the_end, stopped_at_the_end / "log.jsonl"
    lines = open(log).read().splitlines(keepends=True)
    assert len(lines) == 6
    new = {"emptied": [], "short": lines[:4], "cut": lines[:5] + [lines[5][:20]],
           "missing": None, "out of order": lines[:2] + lines[3:4] + lines[2:3] + lines[4:]}[damage]
    if new is None:
        os.remove(log)
    else:
        open(log, "w").write("".join(new))
    line = _refused(_run(out, micro_base, "--steps", "6", "--ckpt-every", "3", "--resume"), out,
                    capsys, "log.jsonl", "6 rows")
    assert "new --out" in line


def test_resume_with_its_whole_log_finishes(stopped_at_the_end, micro_base, capsys, log_rows):
    out = stopped_at_the_end
    code, err = _main(_run(out, micro_base, "--steps", "6", "--ckpt-every", "3", "--resume"),
                      capsys)
    assert code == 0, err
    assert [r["step"] for r in log_rows(out)] == list(range(6))
    assert set(_md5s(out)) == {"log.jsonl", "summary.json", "model.pt", "measures.json"}
