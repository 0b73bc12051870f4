"""
harness/runs.py: the bookkeeping every run shares, in one place: where bases and runs live on disk
(the folder layout, built only here), the checks a run's folder gets before any file is written,
one writer per folder, the ledger a training loop keeps (ckpt.pt for --resume, the wall clock
across interruptions, the count of skipped optimizer steps), the reproduction's manifest
(suite.json), what finished runs wrote read back (replicates, measures) and a pool that runs a
list of runs in worker processes.

    from harness.runs import Ledger, settings_of, open_run, run_dir, base_path

Layout: <root>/b<base seed>/base/model.pt is a base; its runs sit in
run_dir(base_root(root, b), task, method, seed) = <root>/b<b>/<task>/<method>/s<seed>. A dial
level's budget-blind methods (those that never read a context budget) share their family's runs.
The committed grids keep the same layout under results/<preset>/runs (committed_root).

A run is found finished when its summary.json exists and its ckpt.pt is gone (`finished`). A folder
has one writer at a time (`one_writer`: a lock taken before the folder is checked); a folder that
holds another run, or a checkpoint made with other settings, is refused with a UserError (one line)
before any file is touched; a run's folder resumes only its own run (`check_run_folder`;
settings.json says whose it is until the first checkpoint does), and a resume reads the log rows its
checkpoint was saved after (`saved_rows`). Ctrl-C in a loop raises Interrupted, whose text says how
many steps were done and which step the checkpoint holds; a full disk is one line.
"""

import contextlib
import fcntl
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from types import SimpleNamespace

import torch

from fast_context import ReflectorError
from harness.cli import DISK_FULL, Interrupted, UserError, disk_full, quiet_worker
from model import (CheckpointError, read_checkpoint, save_checkpoint, setup_device,
                   write_atomic)
from world import tasks

# -----------------------------------------------------------------------------
# the folder layout: every base and run path is built here

# the committed grids: results/ beside this folder
COMMITTED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "results")


def base_root(root, b):
    """Where base `b` (pretraining seed b) and every run from it live."""
    return os.path.join(root, f"b{b}")


def base_path(root, b):
    """Base b's weights: <root>/b<b>/base/model.pt."""
    return os.path.join(base_root(root, b), "base", "model.pt")


def committed_root(preset_name):
    """Where the committed grid of a preset keeps its runs and bases (phase.archive writes it)."""
    return os.path.join(COMMITTED, preset_name, "runs")


def run_dir(root, task, method, seed, budget_blind=()):
    """One run: <base root>/<task or 'plasticity' or 'continual'>/<method or init>/s<seed>. A dial
    level's `budget_blind` methods are its family's runs (cipher-k2's rl is the cipher's)."""
    d = tasks.NAMED_TASKS.get(task)
    if method in budget_blind and d is not None and d.family:
        task = d.family
    return os.path.join(root, task, method, f"s{seed}")


def method_folder(method, reflector):
    """The folder of a method run with a reflector: fst + edit:0.9 -> 'fst-edit-p0.9' (no ':' in
    folder names); under the default reflector the method's own ('fst')."""
    return method if reflector == "edit" else f"{method}-{reflector.replace(':', '-p')}"


def plasticity_init(root, b, init, seed, prior_task):
    """The weights C5's run from `init` starts from: base b, or the prior task's rl / fst run's."""
    if init == "base":
        return base_path(root, b)
    return os.path.join(run_dir(base_root(root, b), prior_task, init, seed), "model.pt")


# -----------------------------------------------------------------------------
# the reproduction's manifest: what the suite runs, for the report to read back

def write_suite(root, table):
    """<root>/suite.json: the reproduction's table (tasks, methods, probes; train.SUITE)."""
    os.makedirs(root, exist_ok=True)
    write_atomic(os.path.join(root, "suite.json"), json.dumps(table, indent=1))


def read_suite(root):
    """-> the table train.py's reproduction wrote under `root`, as attributes (.tasks, .methods,
    .budget_blind, ...); UserError when there is none."""
    path = os.path.join(root, "suite.json")
    if not os.path.exists(path):
        raise UserError(f"no suite.json under {root}; `python train.py` writes it (finished runs "
                        "are found finished)")
    with open(path) as f:
        return SimpleNamespace(**json.load(f))


# -----------------------------------------------------------------------------
# what finished runs wrote, read back (the report and the phase grid read only these files)

def read_log(folder):
    with open(os.path.join(folder, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def replicates(root, reps, task, method):
    """{(base, seed): log rows} of one configuration, for the replicates whose run finished."""
    blind, out = read_suite(root).budget_blind, {}
    for b, s in reps:
        folder = run_dir(base_root(root, b), task, method, s, blind)
        if os.path.exists(os.path.join(folder, "summary.json")):
            out[(b, s)] = read_log(folder)
    return out


def measures(root, reps, task, method):
    """{(base, seed): the run's measures.json (eval.run_measures)} for the finished runs that
    have one, and {(base, seed): the run's logged wall time} for those that do not (what
    re-running them would cost)."""
    blind, have, missing = read_suite(root).budget_blind, {}, {}
    for b, s in reps:
        folder = run_dir(base_root(root, b), task, method, s, blind)
        if not os.path.exists(os.path.join(folder, "summary.json")):
            continue
        if os.path.exists(os.path.join(folder, "measures.json")):
            with open(os.path.join(folder, "measures.json")) as f:
                have[(b, s)] = json.load(f)
        else:
            with open(os.path.join(folder, "summary.json")) as f:
                missing[(b, s)] = json.load(f)["wall_s"]
    return have, missing


# -----------------------------------------------------------------------------
# a run's folder and checkpoint (pretraining's too): settings, one writer, the ledger

# Preset fields added after runs were archived, with the value that means "as before": a setting
# is recorded only where it differs, so every archived run still matches its own settings.
LATER_FIELDS = {"table_rows": 0.0, "adherence": 1.0, "gepa_pool": 0, "gepa_round_problems": 0,
                "log_frontier": False, "fixed_prompt": "", "probe_entries": False}


def settings_of(preset, **kw):
    """What a checkpoint must match to be resumed, as plain JSON values: the run's own settings and
    the preset's numbers that shape its result (checkpoint cadence and the guard limit do not)."""
    skip = ("ckpt_every", "pretrain_ckpt_every", "max_bad_steps", "batch_workers",
            "reflector_fail_rounds")
    p = {k: v for k, v in asdict(preset).items() if k not in skip
         and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    return json.loads(json.dumps(dict(kw, preset=p)))


RUN_FILES = ("log.jsonl", "ckpt.pt", "summary.json", "model.pt", "settings.json")


def holds_run(out_dir):
    return any(os.path.exists(os.path.join(out_dir, f)) for f in RUN_FILES)


# -----------------------------------------------------------------------------
# one writer per folder, and only its own run resumes it

LOCK = ".lock"  # in the folder: the writer's pid and command; flock'ed while it works


class Held(UserError):
    """The folder is being written by another process (a scheduler moves on to its next job)."""


@contextlib.contextmanager
def one_writer(folder):
    """Hold `folder` for this process: an exclusive lock taken before the folder is checked and
    released when the work ends, however it ends (the kernel drops the lock of a killed process).
    A second writer gets one line naming the first (UserError). A folder created here and still
    empty at the end is removed, so a refused command leaves nothing behind."""
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise
        raise UserError(f"{folder} cannot be created ({e.strerror}); pass another folder")
    path = os.path.join(folder, LOCK)
    fd = _take_lock(path, folder)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # before the lock goes: a waiting writer then sees
            os.remove(path)                 # that the file it opened is gone, and starts over
        os.close(fd)
        if created and not os.listdir(folder):
            os.rmdir(folder)


def _take_lock(path, folder):
    """-> the open, locked lock file of `folder` (its text: this process); UserError if another
    process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Held(f"{folder} is being written by another process ({_holder(path)}); "
                       "wait for it to end, or pass another --out") from None
        try:  # the file we locked must still be the one at `path` (its last holder removes it)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
    os.write(fd, f"pid {os.getpid()}: {command}\n".encode())
    return fd


def _holder(path):
    """The text the lock's holder wrote (pid and command); it may not have written it yet."""
    for _ in range(20):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    return "pid unknown"


def check_run_folder(out_dir, settings, resume):
    """--resume on a folder without a checkpoint: it may hold nothing but the start of this very
    run (killed before its first checkpoint: its settings.json and partial log), which restarts
    from step 0. -> None; UserError saying what the folder holds otherwise."""
    has = {f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))}
    if not resume or "ckpt.pt" in has or finished(out_dir) or not has:
        return
    if "model.pt" in has or "summary.json" in has:
        what = ("a base (model.pt and metrics.json)"
                if os.path.exists(os.path.join(out_dir, "metrics.json")) else
                "a model.pt with no run's checkpoint beside it" if "model.pt" in has else
                "a summary.json with no finished run's files")
        raise UserError(f"{out_dir} holds {what}, not a run to resume; pass a new --out")
    try:
        with open(os.path.join(out_dir, "settings.json")) as f:
            theirs = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"{out_dir} holds a log.jsonl with no record of the run that wrote it "
                        "(killed before its first checkpoint); pass a new --out") from None
    if theirs != settings:
        diff = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
        raise UserError(f"{out_dir} holds the start of another run (killed before its first "
                        f"checkpoint; it differs in {', '.join(diff)}); resume with its flags or "
                        "pass a new --out")


def saved_rows(out_dir, n):
    """The first `n` rows of out_dir/log.jsonl, those the checkpoint was saved after. -> list;
    UserError when the log is missing, shorter, or a row is cut or out of place."""
    path = os.path.join(out_dir, "log.jsonl")
    held = f"but its checkpoint was saved after {n} rows; restore the log, or start the run over " \
           "in a new --out"
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing {held}")
    with open(path) as f:
        lines = f.read().splitlines()[:n]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or row.get("step") != i:
            raise UserError(f"{path}: row {i + 1} is cut or not step {i}, {held}")
        rows.append(row)
    if len(rows) < n:
        raise UserError(f"{path} holds {len(rows)} rows {held}")
    return rows


def finished(out_dir):
    """A run that ended: its summary.json written and its checkpoint gone."""
    return (os.path.exists(os.path.join(out_dir, "summary.json"))
            and not os.path.exists(os.path.join(out_dir, "ckpt.pt")))


def finished_summary(out_dir, settings, resume, log):
    """Check the output folder before any file is touched. -> the summary of a finished run to
    resume, or None (start or continue); UserError when the folder holds another run."""
    summary_path = os.path.join(out_dir, "summary.json")
    if resume and finished(out_dir):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("settings") != settings:
            raise UserError(f"{out_dir} holds a finished run with other settings; resume with "
                            "the same flags or pass a new --out")
        log(f"{out_dir}: finished earlier, nothing to resume")
        return summary
    if not resume and holds_run(out_dir):
        raise UserError(f"{out_dir} already holds a run; add --resume to continue it, or pass a "
                        "new --out")
    check_run_folder(out_dir, settings, resume)
    return None


SHAPE = ("n_layer", "n_head", "n_embd", "block_size")  # what a preset fixes of a model


def fits_preset(cfg, preset, path):
    """A checkpoint a run starts from must have its preset's shape (summary.json records the
    preset's). -> None; UserError otherwise."""
    if any(getattr(cfg, k) != getattr(preset, k) for k in SHAPE):
        raise UserError(f"{path} is a {cfg.n_layer}-layer, {cfg.n_embd}-wide model, the preset "
                        f"{preset.name}'s are {preset.n_layer}-layer, {preset.n_embd}-wide; pass "
                        "the --preset it was made with, or another checkpoint")


def load_state(path, kind, settings):
    """-> the checkpoint dict (model.read_checkpoint); UserError (one line) if it is corrupt,
    foreign or made with other settings."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder where a checkpoint file belongs; pass another --out")
    if not os.path.isfile(path):  # a FIFO would block torch.load for ever
        raise UserError(f"{path} is not a regular file; pass another --out")
    try:
        ck = read_checkpoint(path, kind, fix="delete it to start that run over, or point --out "
                             "at the run it belongs to")
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if ck.get("settings") != settings:
        old = ck.get("settings") or {}
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise UserError(f"{path} was made with other settings ({', '.join(diff)}); "
                        "resume with the same flags or use a new --out")
    return ck


def open_run(out_dir, kind, settings, resume, max_bad_steps, log):
    """A run's folder checked before any file is touched. -> (the summary of a finished run to
    resume, None) or (None, its Ledger: ledger.saved holds the checkpoint to resume from)."""
    summary = finished_summary(out_dir, settings, resume, log)
    if summary is not None:
        return summary, None
    ledger = Ledger(out_dir, kind, settings, resume, max_bad_steps)
    if ledger.saved:  # the log must hold every row the checkpoint was saved after
        saved_rows(out_dir, ledger.saved["log_rows"])
    if resume and ledger.saved is None and holds_run(out_dir):  # killed before a checkpoint
        log(f"{out_dir}: no checkpoint to resume from, starting from step 0")
    return None, ledger


def say_if_nothing_to_resume(out_dir, resume, log=print):
    """--resume on a folder that holds no run (nor a checkpoint): one line, then step 0."""
    if resume and not holds_run(out_dir):
        log(f"{out_dir}: no checkpoint to resume from, starting from step 0")


def interruptible(ledger, body, *args):
    """body(*args); a Ctrl-C inside it becomes the ledger's one-line Interrupted (how far the work
    got, what its checkpoint holds), a full disk one line. Runs and pretraining run their bodies
    so."""
    try:
        return body(*args)
    except KeyboardInterrupt:
        pass  # leave the handler first: the loop's frames go and its progress bar closes
    except OSError as e:  # a full disk: one line
        ledger.stop_if_disk_full(e)
        raise
    raise ledger.interrupted()


def stopped(error, step, out_dir, n_rows):
    """A run whose reflector cannot work stops at `step`: the log so far and the last ckpt.pt stay
    for --resume, and no summary.json is written (the run is not finished). -> the one-line error
    to raise."""
    ck = "ckpt.pt" if os.path.exists(os.path.join(out_dir, "ckpt.pt")) else "no checkpoint yet"
    return ReflectorError(f"{error} (step {step}; {out_dir} keeps log.jsonl ({n_rows} rows) and "
                          f"{ck}; fix the endpoint, then rerun with --resume)")


class Ledger:
    """What a training loop keeps besides its model: the checkpoint file (ckpt.pt, for --resume),
    the wall clock across interruptions, and the count of skipped optimizer steps (the guard)."""

    def __init__(self, out_dir, kind, settings, resume, max_bad_steps):
        self.path, self.kind, self.settings, self.max_bad = (
            os.path.join(out_dir, "ckpt.pt"), kind, settings, max_bad_steps)
        self.saved = (load_state(self.path, kind, settings)
                      if resume and os.path.exists(self.path) else None)
        old = self.saved or {}
        self.skipped, self.bad_run, self.wall0 = (old.get("skipped", 0), old.get("bad_run", 0),
                                                  old.get("wall_s", 0.0))
        # steps done, and the step the checkpoint on disk holds (None: no checkpoint yet)
        self.reached, self.saved_step = old.get("step", 0), old.get("step")
        self.start_clock()

    def start_clock(self):
        self.t0 = time.time() - self.wall0

    def wall(self):
        return time.time() - self.t0

    def count(self, reason, what, log):
        """One optimizer step done (reason == '') or skipped (reason says why)."""
        self.skipped += bool(reason)
        self.bad_run = self.bad_run + 1 if reason else 0
        if reason:
            log(f"{what}: {reason}, update skipped ({self.skipped} so far)")

    cause = "the learning rate"  # what to lower when steps keep being skipped

    def check(self, step, reason):
        if self.bad_run >= self.max_bad:
            held = (f"the checkpoint {self.path} holds step {self.saved_step}"
                    if self.saved_step is not None else "no checkpoint yet")
            raise UserError(f"{self.bad_run} optimizer steps in a row skipped ({reason}, last at "
                            f"step {step}); no bad update reached the weights ({held}): lower "
                            f"{self.cause} and start a new run")

    def save(self, step, **state):
        write_atomic(self.path, dict(format=self.kind, settings=self.settings, step=step,
                                     wall_s=self.wall(), skipped=self.skipped, bad_run=self.bad_run,
                                     **state))
        self.saved_step = step

    def interrupted(self):
        """-> the Interrupted error of a Ctrl-C now: how far the work got, what its checkpoint
        holds."""
        held = (f"the checkpoint {self.path} holds step {self.saved_step}"
                if self.saved_step is not None else "no checkpoint yet, a resume starts at step 0")
        return Interrupted(f"interrupted after {self.reached} steps ({held})")

    def stop_if_disk_full(self, e):
        """A write a full disk refused (OSError `e`) -> raises the one-line UserError naming the
        file and what the checkpoint holds; any other failure returns (the caller re-raises)."""
        if e.errno not in DISK_FULL:
            return
        if e.filename is None:  # a plain append: the log
            e.filename = os.path.join(os.path.dirname(self.path), "log.jsonl")
        held = (f"the checkpoint {self.path} holds step {self.saved_step}"
                if self.saved_step is not None else "no checkpoint yet")
        raise disk_full(e, f"{held}: free some space, then rerun with --resume") from None

    def claim(self):
        """settings.json: whose folder this is, until the first checkpoint says it (a run killed
        before it restarts only if the settings match: check_run_folder)."""
        write_atomic(os.path.join(os.path.dirname(self.path), "settings.json"),
                     json.dumps(self.settings))

    def finish(self):
        os.remove(self.path)  # model.pt / summary.json now mark the work as finished
        claim = os.path.join(os.path.dirname(self.path), "settings.json")
        if os.path.exists(claim):
            os.remove(claim)


def problems_state(problems):
    """Problems -> plain lists, for a checkpoint (and back: problems_from)."""
    return [[list(p.inputs), list(p.answer), p.marker, p.exact_only] for p in problems]


def problems_from(state):
    return [tasks.Problem(tuple(i), tuple(a), m, e) for i, a, m, e in state]


def finish_run(ledger, model, extra, summary, measures=None):
    """A finished run's files: measures.json when given (eval.run_measures: what the report reads
    off the weights), model.pt (the weights, `extra` and the summary) and summary.json, which
    marks the run as finished; the checkpoint goes. -> summary"""
    out_dir = os.path.dirname(ledger.path)
    if measures is not None:
        write_atomic(os.path.join(out_dir, "measures.json"), json.dumps(measures, indent=1))
    save_checkpoint(os.path.join(out_dir, "model.pt"), model, dict(extra, summary=summary))
    write_atomic(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2))
    ledger.finish()
    return summary


# -----------------------------------------------------------------------------
# many runs: one after another, or in worker processes

def default_jobs(device):
    """--jobs when it is not given. A CPU with 2 or more cores: 2 (one thread each, as the committed
    grids ran). CUDA: up to 8 runs share the GPU, each in its own process (its own CUDA context)
    with 2 of the host's threads: a run at this model size is launch-bound and leaves the GPU idle
    most of the time, so runs side by side fill it; on CUDA a run's numbers do not depend on it."""
    cores = os.cpu_count() or 1
    if device == "cuda":
        return max(1, min(8, cores // 2))
    return 2 if cores > 1 else 1


def next_ready(pending):
    """The first pending (folder, kwargs) whose starting weights exist (the plasticity probe waits
    for its prior task's run), or that finished earlier (an archived run needs no weights to be
    found finished), removed from `pending`; None if none is ready."""
    for i, (folder, kwargs) in enumerate(pending):
        if os.path.exists(kwargs["init"]) or finished(folder):
            return pending.pop(i)
    return None


def stuck(pending):
    raise UserError(f"{pending[0][0]} cannot start: {pending[0][1]['init']} does not exist")


def run_all(run, preset, batch, device, jobs, log, root=""):
    """Yield (folder, summary) for every (folder, run kwargs) in `batch` as it finishes (one line
    each in `log`, the folder relative to `root`), each run `run(preset=..., out_dir=folder,
    resume=True, **kwargs)` (train.run): here one after another, or in `jobs` worker processes
    sharing this process's threads; each starts, in list order, once its weights exist."""
    for folder, s in _run_all(run, preset, batch, device, jobs, log):
        log(f"{os.path.relpath(folder, root or '.'):34s} final val {s['final_val_acc']:.3f} "
            f"best {s['best_val_acc']:.3f} rollouts {s['rollouts']} {s['wall_s']:.0f}s "
            f"prompt={s['deployed_prompt']!r}")
        yield folder, s


def _run_all(run, preset, batch, device, jobs, log):
    pending = list(batch)
    if jobs == 1 or not batch:
        while pending:
            folder, kwargs = next_ready(pending) or stuck(pending)
            yield folder, run(preset=preset, out_dir=folder, device=device, log=log, resume=True,
                              **kwargs)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    threads, running = max(1, torch.get_num_threads() // jobs), set()
    # Ctrl-C reaches every worker: each quits at once, its checkpoint intact (written atomically)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                             initializer=quiet_worker) as pool:
        while pending or running:
            while len(running) < jobs and (job := next_ready(pending)):
                running.add(pool.submit(_run_job, run, preset, *job, device, threads))
            if not running:
                stuck(pending)
            done, running = wait(running, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)


def _run_job(run, preset, folder, kwargs, device, threads):
    """One run in a worker process (--jobs N): its own thread count; its log lines are dropped
    (the caller logs each summary)."""
    torch.set_num_threads(threads)
    setup_device(device)
    return folder, run(preset=preset, out_dir=folder, device=device, log=lambda *a: None,
                       resume=True, **kwargs)
