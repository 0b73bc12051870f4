r"""
train.py: the training side of fastslow: pretraining, the FST loop and its baselines, the suite.

    # the whole reproduction (see README), then the report; a missing base is copied from the
    # committed grid's (results/<preset>/runs) when its pretraining settings match
    python train.py                   # --fresh-bases: pretrain it here instead
    # a base -> runs/tiny/b0/base/{model.pt,metrics.json}
    python train.py pretrain --preset tiny --seed 0
    python train.py run --method rl|context|fst --task hidden-rule [--steps N --seed S --out DIR]
    # task switches, untold
    python train.py run --method fst --schedule 'hidden-rule@100;cipher@100'
    python train.py run --method rl --task hidden-rule-2 \
        --init runs/tiny/b0/hidden-rule/fst/s0/model.pt
    # the grid: 3 bases x 3 run seeds, one report
    python train.py --bases 3 --seeds 3 --sweep --jobs 1
    # the grid for a scheduler, stage by stage: bases, runs, after, report (each resumes)
    python train.py --bases 3 --seeds 3 --commands runs | xargs -P 8 -d '\n' -I{} sh -c {}
    # the phase diagram: carriability dial x reflector strength (phase.py)
    python train.py --phase --bases 3 --seeds 3 --jobs 2
    # continue an interrupted run
    python train.py run --method fst --task cipher --resume

The method is fst.py (one step, `fst.fst_step`, with switches for the baselines: `fst.METHODS`,
and its phases: GEPA's birth, context-only's budget stop); pretraining, and the bookkeeping runs
share (settings, checkpoints, the ledger), live in pretrain.py. Here `run` is the loop (resume,
evaluate, log, checkpoint), `suite` every run the report needs. A run logs a JSON line per step
(log.jsonl), then summary.json and model.pt; `rollouts` counts every rollout generated, GEPA's
evaluations included (not val's).

Runs survive interruption (`Ledger`): every `ckpt_every` steps and at the end ckpt.pt (weights,
optimizer, RNG states, step, GEPA state, log position) is written atomically, and `--resume`
continues from it; every random draw is saved or a function of the step, so a resumed run logs what
an uninterrupted one would. Ctrl-C prints one line (the command that continues), exit code 130
(SIGTERM the same line, 143). One process writes a folder at a time (pretrain.one_writer), and
--resume continues only the folder's own run, its log checked against its checkpoint. A
non-finite loss or gradient skips the step (logged, counted); `max_bad_steps` in a row stop the run,
as does an llm reflector that cannot work (down or refusing at the first call, or
`reflector_fail_rounds` rounds of failed proposals): one line, log and last checkpoint kept, no
summary.json. A user's mistake (flag, path, spec, a folder holding another run) raises
cli.UserError before any file is written; `main` prints it as one line, exit code 2.

Presets are dataclass instances in PRESETS: every number a run depends on is there.
"""

import argparse
import copy
import json
import os
import random
import shlex
import time
from dataclasses import dataclass, asdict, replace

import torch
from tqdm import tqdm

import eval as ev
import fast_context as fc
from harness import phase as phase_grid
from world import reflectors
from harness import report
from world import tasks
from harness.cli import (CHECKPOINT, FOLDER, MOST_SEED, MOST_SEEDS, MOST_STEPS, MOST_THREADS, URL,
                         CLIParser, UserError, continue_line, exit_on_user_error, nonnegative,
                         positive, quiet_worker, refuse_ignored_flags, writable_folder)
from world.llm import show_waits
from rl import LOSS_TYPES
from fst import (METHODS, RunState, fast_weights_state, fst_step, last_step,
                 make_evaluate, start_fast_weights, token_counter, total_rollouts)
from model import save_checkpoint, setup_device, write_atomic
from world.pretrain import (Ledger, committed_base, finished_summary, fits_preset, holds_run,
                            load_base, one_writer, prepare_bases, pretrain, saved_rows, settings_of)
from harness.suite import base_path, jobs as suite_jobs


# -----------------------------------------------------------------------------
# presets: every number a run depends on, in one place

@dataclass
class Preset:
    name: str
    # model
    n_layer: int = 4              # transformer blocks
    n_head: int = 4               # attention heads (head dim n_embd / n_head)
    n_embd: int = 128             # model width
    block_size: int = 256         # longest sequence, in tokens
    # pretraining
    pretrain_steps: int = 1700
    pretrain_batch: int = 64      # rows per step
    pretrain_lr: float = 1.5e-3   # AdamW peak lr: a linear warmup times a cosine to a tenth
    pretrain_warmup: int = 100    # linear warmup steps
    pretrain_betas: tuple = (0.9, 0.95)  # pretraining's AdamW betas
    pretrain_eval_every: int = 100000  # no mid-run eval: it costs wall time the budget lacks
    pack: int = 10                # problems drawn per pretraining row (they share one context) ...
    row_tokens: int = 78          # ... of which a row keeps as many as fit this many tokens
                                  # (tasks.pretrain_row)
    calibration: float = 0.05     # share of rows whose context is the seed prompt
                                  # over a random rule
    table_rows: float = 0.0       # the adherence world: share of rows that are partial tables
                                  # (tasks.table_row; 0 elsewhere) ...
    adherence: float = 1.0        # ... whose answers follow a stated entry this often
    batch_workers: int = 0        # processes building pretraining batches ahead (0: in the loop)
    threads: int = 2              # torch threads in all: pretraining's, split over --jobs for runs
                                  # (one each at least); a run's sums depend on its thread count
    # RL (slow weights)
    steps: int = 100              # RL steps per run (per stage for schedules)
    batch_problems: int = 16      # problems per RL step
    group_size: int = 8           # rollouts per problem (G)
    lr: float = 1e-4              # RL's AdamW lr, constant
    betas: tuple = (0.9, 0.99)    # RL's AdamW betas (the KL coefficient is `beta`, below)
    grad_clip: float = 1.0        # max global grad norm (pretraining and RL)
    temperature: float = 1.0      # sampling temperature of the RL rollouts (the log-probs' too)
    max_new_tokens: int = 12      # completion length cap, RL rollouts and evaluation
    inner_steps: int = 1          # passes over one batch of rollouts
    optimizer_steps: int = 2      # optimizer steps per pass (row chunks, minibatches):
                                  # from the 2nd one, ratio != 1
    loss_type: str = "cispo"       # grpo | dr_grpo | dapo | cispo (rl.policy_loss)
    cispo_cap: float = 5.0        # CISPO: the importance weight's cap
    clip_eps: float = 0.2         # grpo, dr_grpo, dapo: the ratio is clipped to 1 -/+ clip_eps ...
    dapo_clip_higher: float = 0.28  # ... and dapo's upper side to 1 + dapo_clip_higher
    adv_scale: str = "group"       # advantage scale: group | batch | none (rl.group_advantages)
    beta: float = 0.0             # k3 KL penalty to the initial weights (0: measured only)
    eval_every: int = 5           # val accuracy every N RL steps (and at the last)
    eval_samples: int = 1         # one sample per val problem (256 rollouts); greedy exact
                                  # match at the last eval only
    kl_every: int = 25            # KL to the base every kl_every steps and at the end, on ...
    kl_problems: int = 128        # ... the first kl_problems val problems ...
    kl_samples: int = 4           # ... x kl_samples completions, under the deployed
                                  # and the seed prompt
    # GEPA (fast weights)
    gepa_pool: int = 0            # 0: a round re-scores the frontier; P: the whole pool
                                  # (at most P candidates, fast_context.pool_members)
    gepa_round_problems: int = 0  # 0: GEPA's D_p is the task's; N: each round's D_p is the
                                  # first N problems of the next T RL batches
    log_frontier: bool = False    # log every round's frontier prompts (row "front")
    probe_entries: bool = False   # at every eval, the weights under the seed prompt: greedy
                                  # accuracy and each table entry's (eval.seed_prompt_probe)
    fixed_prompt: str = ""        # instructed: this prompt instead of the task's instruction
                                  # (e.g. the best prompt within the budget, measured on the base)
    gepa_every: int = 6           # T: a GEPA round every T RL steps
    gepa_proposals: int = 4       # K proposals per round
    prompts_per_problem: int = 2  # m frontier prompts share each problem's G rollouts
    gepa_minibatch: int = 3       # b: train problems per GEPA mutation (parent and child)
    max_context_tokens: int = 48  # token budget of a context (a dial task brings its own)
    context_only_rollouts: int = 600  # context-only's rollouts (and sequential's first phase)
    n_train: int = 2048           # train problems per task (RL batches, GEPA's minibatches)
    n_val: int = 256              # val problems per task
    n_pareto: int = 16            # |D_p|, GEPA's Pareto set
    window: int = 64              # schedules: GEPA's data is the last `window` problems
                                  # of the stream
    continual_steps: int = 100    # steps per stage of the suite's continual schedule
                                  # (not a multiple of T)
    # reflectors (fast_context's reflection step)
    edit_hypotheses: int = 8      # edit: candidate rules checked per call, at most
    demos_with_rule: int = 2      # oracle, edit: demonstrations below a proposed rule
    demos_alone: int = 3          # demo: demonstrations in a proposal
    # random streams: pretraining batch = f(seed * data_seed_stride + step), a step's rollouts too
    data_seed_stride: int = 1_000_003
    rollout_seed_stride: int = 100_003
    # reliability
    ckpt_every: int = 25          # run checkpoint (ckpt.pt) every N steps and at the end
    pretrain_ckpt_every: int = 200  # pretraining checkpoint every N steps
    max_bad_steps: int = 5        # this many skipped (non-finite) optimizer steps in a row
                                  # stop the run
    # llm reflector: this many rounds' worth of proposals (x gepa_proposals) failing in a row
    # stop the run (0: never)
    reflector_fail_rounds: int = 3


# the adherence experiment's runs: the paper's stage length; GEPA rounds as the paper's (the whole
# pool, at most 10, re-scored on 32 problems of the next T batches: <= 10 x 32 + 4 x (2 x 3 + 32)
# = 472 rollouts a round, the paper's 960 calls on 192 problems scaled to T x 16 = 96 problems);
# every frontier logged; the internalization probe at every eval (every 10 steps)
ADH_RUNS = dict(steps=400, gepa_pool=10, gepa_round_problems=32, log_frontier=True,
                probe_entries=True, eval_every=10)
PRESETS = {
    "tiny": Preset("tiny"),
    # gpu: one replicate in minutes on one H100 (LOG.md 2026-12-05: 4000 pretraining steps, about
    # 100 s, 9x the tiny base's rows; 400 steps reached general accuracy 0.94 on an H200)
    "gpu": Preset("gpu", n_layer=6, n_head=6, n_embd=384, pretrain_steps=4000, pretrain_batch=256,
                  pretrain_lr=1e-3, pretrain_warmup=200, threads=8, batch_workers=4),
    # gpu-smoke: the whole suite at the gpu preset's model size in about two minutes on one GPU
    # (a short pretraining, short runs; its numbers mean nothing): the GPU path end to end
    "gpu-smoke": Preset("gpu-smoke", n_layer=6, n_head=6, n_embd=384, pretrain_steps=300,
                        pretrain_batch=256, pretrain_lr=1e-3, pretrain_warmup=50, threads=8,
                        batch_workers=4, steps=12, eval_every=4, kl_every=6, kl_problems=32,
                        kl_samples=2, n_val=64, context_only_rollouts=120, continual_steps=6,
                        ckpt_every=6),
    # the adherence world (tasks.table_row): a tiny base that follows a partial table's stated
    # entries about 70% of the time, and its control that follows them always
    "adh": Preset("adh", table_rows=0.25, adherence=0.7, pretrain_steps=2200, **ADH_RUNS),
    "adh-ctl": Preset("adh-ctl", table_rows=0.25, adherence=1.0, pretrain_steps=2200, **ADH_RUNS),
    # micro: the end-to-end smoke test's preset (seconds, not minutes; its numbers mean nothing)
    "micro": Preset("micro", n_layer=2, n_head=2, n_embd=64, pretrain_steps=30, pretrain_batch=16,
                    pretrain_eval_every=1000, steps=4, batch_problems=4, group_size=4, eval_every=2,
                    kl_every=2, gepa_every=2, gepa_proposals=2, context_only_rollouts=60, n_val=8,
                    n_pareto=4, window=8, continual_steps=3, max_new_tokens=8),
}
def default_jobs(device):
    """--jobs when it is not given. A CPU with 2 or more cores: 2 (one thread each, as the committed
    grids ran). CUDA: up to 8 runs share the GPU, each in its own process (its own CUDA context)
    with 2 of the host's threads: a run at this model size is launch-bound and leaves the GPU idle
    most of the time, so runs side by side fill it; on CUDA a run's numbers do not depend on it."""
    cores = os.cpu_count() or 1
    if device == "cuda":
        return max(1, min(8, cores // 2))
    return 2 if cores > 1 else 1


def pick_device(flag):
    return ("cuda" if torch.cuda.is_available() else "cpu") if flag == "auto" else flag


def start_run(method, task, preset, init, base, seed, reflector, llm, device, ledger,
              windowed=False):
    """Models, optimizer, reflector and GEPA state of a run, restored from ledger.saved when
    resuming. -> (RunState, base model, log rows so far, done flag)."""
    model, enc = load_base(init, pick_device(device))
    fits_preset(model.cfg, preset, init)
    base_model, base_enc = load_base(base, model.wte.weight.device) if base and base != init \
        else (copy.deepcopy(model), enc)
    if tasks.tokenizer_state(base_enc) != tasks.tokenizer_state(enc) or base_model.cfg != model.cfg:
        raise UserError(f"{init} and the base {base} differ in tokenizer or model shape; KL needs "
                        "the base this run started from")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=preset.betas, weight_decay=0.0,
                            fused=model.wte.weight.is_cuda)
    count_tokens = token_counter(enc)
    budget = task.max_context_tokens or preset.max_context_tokens  # a dial task brings its own
    if reflector == "llm":  # a dead endpoint stops the run after that many failed calls in a row
        llm = dict(llm or {}, fail_limit=preset.reflector_fail_rounds * preset.gepa_proposals)
    s = RunState(model=model, enc=enc, opt=opt,
                 ref=copy.deepcopy(model).eval() if preset.beta > 0 else None,
                 rng=random.Random(seed), seed=seed, **METHODS[method],
                 prompt=preset.fixed_prompt or None,
                 evaluate=make_evaluate(model, enc, preset), gepa=None, task=task,
                 reflect=reflectors.make_reflector(
                     reflector, budget, count_tokens, seed, preset.edit_hypotheses,
                     preset.demos_with_rule, preset.demos_alone, **(llm or {})))
    ck, rows, done = ledger.saved, [], False
    # resume: weights, optimizer, RNG streams, counters, GEPA state, the log so far
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        s.rng.setstate((ck["rng"][0], tuple(ck["rng"][1]), ck["rng"][2]))
        torch.set_rng_state(ck["torch_rng"])
        s.rl_rollouts, done = ck["rl_rollouts"], ck["done"]
        rows = saved_rows(os.path.dirname(ledger.path), ck["log_rows"])  # later rows dropped
    # the fast weights: GEPA's birth (sequential: to its budget), or its state from the checkpoint
    start_fast_weights(s, preset, budget, count_tokens, saved=ck, windowed=windowed)
    base_model.eval()
    return s, base_model, rows, done


def run(method, schedule, preset, init, out_dir, seed=0, reflector="edit", base=None, device="auto",
        log=print, resume=False, llm=None):
    """One training run from checkpoint `init`; writes out_dir/log.jsonl, summary.json and model.pt.
    `base` (default: init) is the model KL(pi_theta || pi_base) is measured against. resume=True
    continues from out_dir/ckpt.pt, or returns the summary of a run that already finished.
    -> summary dict. Ctrl-C raises cli.Interrupted (how far it got, what the checkpoint holds)."""
    device = setup_device(pick_device(device))  # the device's numerics, however run is reached
    writable_folder(out_dir)
    settings = settings_of(preset, method=method, schedule=[[t, n] for t, n in schedule], seed=seed,
                           init=init, base=base or init, reflector=reflector)
    with one_writer(out_dir):  # taken before the folder is checked, released however it ends
        summary = finished_summary(out_dir, settings, resume, log)
        if summary is not None:
            return summary
        ledger = Ledger(out_dir, "fastslow-run-1", settings, resume, preset.max_bad_steps)
        if ledger.saved:  # the log must hold every row the checkpoint was saved after
            saved_rows(out_dir, ledger.saved["log_rows"])
        if preset.beta > 0:
            ledger.cause = "the learning rate (--lr) or the KL penalty (--beta)"
        if resume and ledger.saved is None and holds_run(out_dir):  # killed before its first ckpt
            log(f"{out_dir}: no checkpoint to resume from, starting from step 0")
        try:
            return run_from(ledger, settings, method, schedule, preset, init, out_dir, seed,
                            reflector, base, device, log, llm)
        except KeyboardInterrupt:
            pass  # leave the handler first: the loop's frames go and its progress bar closes
        except OSError as e:  # a full disk: one line
            ledger.stop_if_disk_full(e)
            raise
        raise ledger.interrupted()


def run_from(ledger, settings, method, schedule, preset, init, out_dir, seed, reflector, base,
             device, log, llm):
    """The body of `run` once its folder is checked: models, the loop, the final files."""
    stages = [(tasks.make_task(spec, n_train=preset.n_train, n_pareto=preset.n_pareto,
                               n_val=preset.n_val), n) for spec, n in schedule]
    # step -> index of its stage
    stage_at = [k for k, (_, n) in enumerate(stages) for _ in range(n)]
    start = ledger.saved["step"] if ledger.saved else 0
    task = stages[stage_at[max(start - 1, 0)]][0]  # the stage of the last step done
    s, base_model, rows, done = start_run(method, task, preset, init, base, seed, reflector, llm,
                                          device, ledger, windowed=len(stages) > 1)
    if ledger.saved:
        log(f"{out_dir}: resuming at step {start}")
    os.makedirs(out_dir, exist_ok=True)
    ledger.claim()  # settings.json: this folder is this run's
    # as of ckpt
    write_atomic(os.path.join(out_dir, "log.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    ledger.start_clock()
    logf = open(os.path.join(out_dir, "log.jsonl"), "a")
    pbar = tqdm(range(start, len(stage_at) if not done else start),
                desc=f"{method} {stages[0][0].name}", leave=False)
    show_waits(s.reflect, pbar)  # an llm reflector says on this line when it waits on its endpoint
    for step in pbar:
        row = {"step": step}
        # a switch changes the data stream; nobody tells the learner
        s.task = stages[stage_at[step]][0]
        row["task"] = s.task.name
        try:
            row.update(fst_step(s, step, preset))
        except fc.ReflectorError as e:  # the reflector cannot work: stop, keep what is on disk
            raise stopped(e, step, out_dir, rows, [logf, pbar]) from e
        ledger.count(row.get("skipped", ""), f"step {step}", log)  # no update, no skip: a no-op
        row["rollouts"] = total_rollouts(s)
        last = last_step(s, preset, step, len(stage_at))
        ev.evaluate_step(s, base_model, preset, step, last, row)
        if "val_acc" in row:
            pbar.set_postfix(val=f"{row['val_acc']:.2f}", rollouts=row["rollouts"])
        row["wall_s"] = ledger.wall()
        rows.append(row)
        logf.write(json.dumps(row) + "\n")
        logf.flush()
        ledger.reached = step + 1
        ledger.check(step, row.get("skipped", ""))
        if last or (step + 1) % preset.ckpt_every == 0:
            save_run(s, ledger, step + 1, last, len(rows))
        if last:
            break  # the context-only baseline stops at its rollout budget
    logf.close()
    if len(stages) == 1 and s.trains_weights and init == (base or init):
        # what a report reads off the final weights (C4; an FST run's C7 table), so it never
        # needs model.pt
        write_atomic(os.path.join(out_dir, "measures.json"), json.dumps(ev.run_measures(
            s.model, s.enc, s.task, [r for r in rows if "val_acc" in r][-1]["prompt"],
            base=base_model if s.uses_context and s.gepa_rounds else None), indent=1))
    return finish_run(s, method, stages, rows, settings, seed, init, reflector, preset, ledger)


def stopped(error, step, out_dir, rows, opened):
    """A run whose reflector cannot work stops at `step`: the log so far and the last ckpt.pt stay
    for --resume, and no summary.json is written (the run is not finished). The log file and the
    progress bar (`opened`) are closed, so the error is the only line left. -> the one-line
    error to raise."""
    for f in opened:
        f.close()
    ck = "ckpt.pt" if os.path.exists(os.path.join(out_dir, "ckpt.pt")) else "no checkpoint yet"
    return fc.ReflectorError(f"{error} (step {step}; {out_dir} keeps log.jsonl ({len(rows)} rows) "
                             f"and {ck}; fix the endpoint, then rerun with --resume)")


def save_run(s, ledger, steps_done, done, log_rows):
    """ckpt.pt: everything a resumed run needs to log exactly what an uninterrupted one would."""
    ledger.save(steps_done, done=done, model=s.model.state_dict(), opt=s.opt.state_dict(),
                rng=list(s.rng.getstate()), torch_rng=torch.get_rng_state(),
                rl_rollouts=s.rl_rollouts, log_rows=log_rows, **fast_weights_state(s))


def finish_run(s, method, stages, rows, settings, seed, init, reflector, preset, ledger):
    """model.pt and summary.json (which marks the run as finished); the checkpoint goes.
    -> summary."""
    final = [r for r in rows if "val_acc" in r][-1]
    summary = {"method": method, "schedule": [[t.spec, n] for t, n in stages],
               "final_val_acc": final["val_acc"], "final_val_greedy": final["val_greedy"],
               "best_val_acc": max(r["val_acc"] for r in rows if "val_acc" in r),
               "steps": rows[-1]["step"] + 1, "rollouts": rows[-1]["rollouts"],
               "wall_s": ledger.wall(), "seed": seed, "init": init,
               "deployed_prompt": final["prompt"], "reflector": reflector,
               "skipped_steps": ledger.skipped, "config": asdict(preset), "settings": settings}
    out_dir = os.path.dirname(ledger.path)
    save_checkpoint(os.path.join(out_dir, "model.pt"), s.model,
                    {"tokenizer": tasks.tokenizer_state(s.enc), "deployed_prompt": final["prompt"],
                     "summary": summary})
    write_atomic(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2))
    ledger.finish()
    return summary


# -----------------------------------------------------------------------------
# the reproduction suite: every run the report needs, then the report (folders: suite.run_dir)

def next_ready(pending):
    """The first pending (folder, kwargs) whose starting weights exist (the plasticity probe waits
    for its prior task's run), removed from `pending`; None if none is ready."""
    for i, (_, kwargs) in enumerate(pending):
        if os.path.exists(kwargs["init"]):
            return pending.pop(i)
    return None


def wave_runs(preset, batch, device, jobs, log):
    """Yield (folder, summary) for the runs of one wave as they finish: here one after another, or
    in `jobs` worker processes sharing this process's threads; each starts, in list order, once the
    weights it starts from exist."""
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
                running.add(pool.submit(_run_job, preset, *job, device, threads))
            if not running:
                stuck(pending)
            done, running = wait(running, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)


def stuck(pending):
    raise UserError(f"{pending[0][0]} cannot start: {pending[0][1]['init']} does not exist")


def _run_job(preset, folder, kwargs, device, threads):
    """One suite run in a worker process (--jobs N): its own thread count; its log lines are
    dropped (the suite logs each summary)."""
    torch.set_num_threads(threads)
    setup_device(device)
    return folder, run(preset=preset, out_dir=folder, device=device, log=lambda *a: None,
                       resume=True, **kwargs)


def suite(preset, root, bases=1, seeds=1, device="auto", log=print, sweep=False, jobs=1,
          phase=False, fresh_bases=False):
    """Every run the report needs, for bases 0..bases-1 x run seeds 0..seeds-1, then one report;
    finished stages are skipped, an interrupted one resumes. jobs > 1: stages in that many processes
    (preset.threads split among them, one at least); a run is a function of its settings and its
    thread count (jobs 1 and 2 agree only when preset.threads is 1). The wall time sums the
    stages' (pretraining included); missing bases: pretrain.prepare_bases. phase=True: the phase
    diagram's grid instead (phase.py)."""
    t0, device = time.time(), setup_device(pick_device(device))
    walls = prepare_bases(preset, root, bases, device, log, fresh_bases)
    todo = phase_grid.jobs(preset, root, bases, seeds) if phase else suite_jobs(preset, root, bases,
                                                                                 seeds, sweep)
    for wave in (1, 2):
        batch = [(folder, kw) for w, folder, kw in todo if w == wave]
        for folder, s in wave_runs(preset, batch, device, jobs, log):  # in order, as they finish
            walls.append(s["wall_s"])
            log(f"{os.path.relpath(folder, root):34s} final val {s['final_val_acc']:.3f} "
                f"best {s['best_val_acc']:.3f} rollouts {s['rollouts']} {s['wall_s']:.0f}s "
                f"prompt={s['deployed_prompt']!r}")
    write = phase_grid.write_report if phase else report.write_report
    results = write(root, bases, seeds, sum(walls), device=device)
    written = os.path.join(root, "phase", "phase.md") if phase else os.path.join(root, "report.md")
    log(f"report: {written} (stages {sum(walls):.0f}s, "
        f"this invocation {time.time() - t0:.0f}s)")
    return results


GRID_STAGES = ("bases", "runs", "after", "report")


def grid_commands(preset, root, stage, bases=1, seeds=1, sweep=False, phase=False,
                  fresh_bases=False, threads=None, device="auto"):
    """The grid (the suite's, or the phase diagram's) as shell commands, one per line, for a
    scheduler that runs them in any order and in parallel (a Slurm array, GNU parallel, xargs -P):
    the commands of `stage` may all run at once; the stages go in GRID_STAGES order. bases: the
    missing bases (copied from the committed grid, as suite() does, or pretrained); runs: every run
    that starts from a base; after: those that start from another run's weights (the plasticity
    probe); report: the command that writes the report from the finished runs' folders
    (harness.report, or harness.phase with phase=True; the wall time summed from them, as suite()
    sums it). Each command
    resumes (--resume), so a scheduler may retry one that was killed; each is the run suite() would
    make (same folder, same settings); `threads` and `device` are passed on when given. -> [str]"""
    py = ["python", "train.py"]
    on = ["--device", device] if device != "auto" else []
    common = ["--preset", preset.name] + (["--threads", str(threads)] if threads else []) + on
    if stage == "report":  # from the folders alone (no run is started or resumed)
        return [shlex.join(["python", "-m", "harness.phase" if phase else "harness.report",
                            "--preset", preset.name, "--bases", str(bases), "--seeds", str(seeds)]
                           + ([] if phase else on))]
    base_paths = [base_path(root, b) for b in range(bases)]
    if stage == "bases":
        out = []
        for b, path in enumerate(base_paths):
            folder = os.path.dirname(path)
            if os.path.exists(path):
                continue
            cached = None if fresh_bases else committed_base(preset, b)
            cached = cached and os.path.relpath(cached)  # the commands run from the repo's root
            out.append(f"mkdir -p {shlex.quote(folder)} && cp -r {shlex.quote(cached)}/. "
                       f"{shlex.quote(folder)}/" if cached else
                       shlex.join(py + ["pretrain"] + common + ["--seed", str(b), "--out", folder,
                                                                "--resume"]))
        return out
    todo = phase_grid.jobs(preset, root, bases, seeds) if phase else suite_jobs(preset, root, bases,
                                                                                 seeds, sweep)
    out = []
    for _, folder, kw in todo:
        if (kw["init"] in base_paths) != (stage == "runs"):
            continue
        schedule = ";".join(f"{t}@{n}" for t, n in kw["schedule"])
        out.append(shlex.join(py + ["run"] + common + [
            "--method", kw["method"], "--schedule", schedule, "--init", kw["init"],
            "--base", kw["base"], "--seed", str(kw["seed"]), "--reflector", kw["reflector"],
            "--out", folder, "--resume"]))
    return out


# -----------------------------------------------------------------------------
# command line

def build_parser():
    ap = CLIParser(prog="train.py", description="fastslow: Fast-Slow Training at small scale. "
                   "With no command: the whole reproduction suite (pretrain if needed, all runs, "
                   "the report).")

    def common(parser, default):  # the same flags before or after the subcommand
        parser.add_argument("--preset", default=default(None),
                            help="tiny | gpu | gpu-smoke | micro (default: tiny on CPU, gpu on "
                                 "CUDA)")
        parser.add_argument("--device", default=default("auto"), choices=["auto", "cpu", "cuda"])
        parser.add_argument("--seeds", type=positive(int, MOST_SEEDS), default=default(1),
                            help="suite: repeat every run with seeds 0..N-1 "
                                 f"(at most {MOST_SEEDS})")
        parser.add_argument("--bases", type=positive(int, MOST_SEEDS), default=default(1),
                            help="suite: one base per pretraining seed 0..N-1, every run on each "
                                 f"(at most {MOST_SEEDS})")
        parser.add_argument("--jobs", type=positive(int), default=default(None),
                            help="suite: run independent stages in N processes (default: 2 on "
                                 "a CPU with 2 or more cores, else 1; on CUDA up to 8 share the "
                                 "GPU, half the host's cores)")
        parser.add_argument("--sweep", action="store_true", default=default(False),
                            help="suite: also FST with the oracle and demo reflectors (first base)")
        parser.add_argument("--threads", type=positive(int, MOST_THREADS), default=default(None),
                            help="torch threads in all (default: the preset's; at most "
                                 f"{MOST_THREADS:,}); the committed grids used 1")
        parser.add_argument("--phase", action="store_true", default=default(False),
                            help="the phase diagram's grid instead of the suite (phase.py)")
        parser.add_argument("--fresh-bases", action="store_true", default=default(False),
                            help="suite: pretrain missing bases here instead of copying the "
                                 "committed grid's (results/<preset>/runs)")
    common(ap, lambda d: d)
    ap.add_argument("--commands", choices=GRID_STAGES, default=None,
                    help="print the grid's commands of one stage, one per line, for a scheduler "
                         "(Slurm array, GNU parallel, xargs -P), instead of running them: bases, "
                         "then runs, then after (runs from another run's weights), then report")
    sub = ap.add_subparsers(dest="cmd", parser_class=CLIParser)
    p = sub.add_parser("pretrain", help="train the base model")
    common(p, lambda d: argparse.SUPPRESS)  # SUPPRESS: an absent flag keeps the top-level value
    p.add_argument("--out", type=FOLDER, default=None,
                   help="output folder (default runs/<preset>/b<seed>/base)")
    p.add_argument("--seed", type=nonnegative(int, MOST_SEED), default=0,
                   help=f"pretraining seed (at most {MOST_SEED:,})")
    p.add_argument("--steps", type=positive(int, MOST_STEPS), default=None,
                   help=f"pretraining steps (default: the preset's; at most {MOST_STEPS:,})")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted pretraining from --out/ckpt.pt")
    p.add_argument("--ckpt-every", type=positive(int), default=None,
                   help="checkpoint every N steps")
    r = sub.add_parser("run", help="one run: rl | context | fst on a task or a schedule")
    common(r, lambda d: argparse.SUPPRESS)
    add_run_flags(r)
    return ap


def add_run_flags(r):
    """The flags of `python train.py run`."""
    # what to learn
    r.add_argument("--method", default="fst", choices=list(METHODS))
    r.add_argument("--task", default="hidden-rule",
                   help="hidden-rule | cipher | long-chain | hidden-rule-2 | sparse | 'rule:OP,OP'")
    r.add_argument("--schedule", default=None, type=schedule_spec,
                   help="continual: 'TASK@STEPS;TASK@STEPS;...' (overrides --task; at most "
                        f"{MOST_STEPS:,} steps in all)")
    r.add_argument("--init", type=CHECKPOINT, default=None,
                   help="checkpoint to start from (default runs/<preset>/b0/base/model.pt)")
    r.add_argument("--base", type=CHECKPOINT, default=None,
                   help="checkpoint KL is measured against (default: the preset's base)")
    r.add_argument("--out", type=FOLDER, default=None,
                   help="output folder (default runs/<preset>/<task>/<method>/s<seed>)")
    r.add_argument("--seed", type=nonnegative(int, MOST_SEED), default=0,
                   help=f"run seed (at most {MOST_SEED:,})")
    # reliability
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    r.add_argument("--ckpt-every", type=positive(int), default=None,
                   help="checkpoint every N steps")
    # slow weights
    r.add_argument("--steps", type=positive(int, MOST_STEPS), default=None,
                   help=f"RL steps (default: the preset's; at most {MOST_STEPS:,})")
    r.add_argument("--lr", type=positive(float), default=None)
    r.add_argument("--inner-steps", type=positive(int), default=None,
                   help="passes over one rollout batch")
    r.add_argument("--optimizer-steps", type=positive(int), default=None,
                   help="optimizer steps per pass")
    r.add_argument("--loss", default=None, choices=list(LOSS_TYPES))
    r.add_argument("--beta", type=nonnegative(float), default=None,
                   help="k3 KL penalty to the initial weights")
    # fast weights
    r.add_argument("--reflector", default="edit", type=reflector_spec,
                   help="oracle | edit | demo | llm, or NAME:P (a proposal wrong with probability "
                        "P, the strength dial), e.g. edit:0.5")
    r.add_argument("--llm-url", type=URL, default=None,
                   help="llm: API root, e.g. http://localhost:11434/v1")
    r.add_argument("--llm-model", default=None, help="llm: the model's name on that server")
    r.add_argument("--llm-timeout", type=positive(float), default=30.0,
                   help="llm: seconds a request may take (a timeout is not retried); calls "
                        "failing in a row for 4x this long stop the run (2 minutes by default)")
    r.add_argument("--gepa-every", type=positive(int), default=None,
                   help="T: a GEPA round every T RL steps")
    r.add_argument("--proposals", type=positive(int), default=None,
                   help="K: proposals per GEPA round")
    r.add_argument("--budget", type=positive(int), default=None,
                   help="context-only: rollout budget")
    r.add_argument("--fixed-prompt", default=None,
                   help="instructed: this prompt instead of the task's true instruction")


def schedule_spec(text):
    """argparse type of --schedule: TASK@STEPS;... with at most MOST_STEPS steps in all."""
    try:
        tasks.parse_schedule(text, 1, most=MOST_STEPS)
    except tasks.SpecError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def reflector_spec(text):
    """argparse type of --reflector: NAME or NAME:P (reflectors.parse_reflector)."""
    try:
        reflectors.parse_reflector(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def with_overrides(preset, **flags):
    return replace(preset, **{k: v for k, v in flags.items() if v is not None})


def say_if_nothing_to_resume(out_dir, resume):
    """--resume on a folder that holds no run (nor a checkpoint): one line, then step 0."""
    if resume and not holds_run(out_dir):
        print(f"{out_dir}: no checkpoint to resume from, starting from step 0")


def pretrain_command(args, preset, root, device):
    """`python train.py pretrain ...`: one base, its metrics printed."""
    preset = with_overrides(preset, pretrain_steps=args.steps, pretrain_ckpt_every=args.ckpt_every)
    out = args.out or os.path.dirname(base_path(root, args.seed))
    say_if_nothing_to_resume(out, args.resume)
    m = pretrain(preset, out, device, seed=args.seed, resume=args.resume)
    print(json.dumps({k: m[k] for k in ("general_acc", "heldout_chain_acc", "acc_by_op",
                                        "acc_by_chain_len", "params", "tokens", "wall_s")}))
    print(json.dumps(m["tasks"]))


def run_command(args, preset, root, device):
    """`python train.py run ...`: validate every spec before any work, then one run."""
    preset = with_overrides(preset, steps=args.steps, lr=args.lr, inner_steps=args.inner_steps,
                            optimizer_steps=args.optimizer_steps,
                            loss_type=args.loss, beta=args.beta, gepa_every=args.gepa_every,
                            gepa_proposals=args.proposals, context_only_rollouts=args.budget,
                            ckpt_every=args.ckpt_every, fixed_prompt=args.fixed_prompt)
    schedule = tasks.parse_schedule(args.schedule or args.task, preset.steps, most=MOST_STEPS)
    for spec, _ in schedule:
        tasks.make_task(spec)
    llm = None
    if args.fixed_prompt is not None and (args.method != "instructed"
                                          or not args.fixed_prompt.strip()):
        raise UserError("--fixed-prompt takes a non-empty prompt, and is for --method instructed")
    if args.reflector != "llm" and (args.llm_url or args.llm_model):
        raise UserError("--llm-url and --llm-model are for --reflector llm")
    if args.reflector == "llm":
        if not (args.llm_url and args.llm_model):
            raise UserError("--reflector llm needs --llm-url and --llm-model")
        llm = dict(url=args.llm_url, model=args.llm_model, timeout=args.llm_timeout)
    default_base = base_path(root, 0)
    base = args.base or (default_base if os.path.exists(default_base) else None)
    tag = ("schedule" if args.schedule
           else args.task.replace(":", "_").replace(" ", "").replace(",", "+"))
    out = args.out or os.path.join(root, tag, args.method, f"s{args.seed}")
    say_if_nothing_to_resume(out, args.resume)
    s = run(args.method, schedule, preset, args.init or default_base, out, args.seed,
            args.reflector, device=device, base=base, resume=args.resume, llm=llm)
    print(json.dumps({k: s[k] for k in ("final_val_acc", "best_val_acc", "final_val_greedy",
                                        "steps", "rollouts", "wall_s", "deployed_prompt",
                                        "skipped_steps")}))


@exit_on_user_error
def main(argv=None):
    args = build_parser().parse_args(argv)
    refuse_ignored_flags(args)
    device = setup_device(pick_device(args.device))
    name = args.preset if args.preset is not None else ("gpu" if device == "cuda" else "tiny")
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    preset = with_overrides(PRESETS[name], threads=args.threads)
    root = os.path.join("runs", name)
    if args.commands:  # printed, not run: the machine that prints them needs no GPU
        if args.cmd is not None:
            raise UserError("--commands prints the grid's commands; give it without a subcommand")
        for line in grid_commands(preset, root, args.commands, args.bases, args.seeds, args.sweep,
                                  args.phase, args.fresh_bases, args.threads, args.device):
            print(line)
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
    torch.set_num_threads(preset.threads if device == "cpu" else torch.get_num_threads())
    try:
        if args.cmd is None:
            suite(preset, root, bases=args.bases, seeds=args.seeds, device=device,
                  sweep=args.sweep, phase=args.phase, fresh_bases=args.fresh_bases,
                  jobs=args.jobs or default_jobs(device))
        elif args.cmd == "pretrain":
            pretrain_command(args, preset, root, device)
        else:
            run_command(args, preset, root, device)
    except KeyboardInterrupt as e:  # one line: how far it got and the command that continues
        raise continue_line(e, "train.py", argv, args.cmd and "--resume") from None


if __name__ == "__main__":
    main()
