r"""
train.py: Fast-Slow Training, wired together. Read it top to bottom: Preset (every number) and
PRESETS; METHODS (switches of one step); fst_step (one screen); run (one run's loop: resume, step,
evaluate, log, checkpoint); reproduce (SUITE's runs, the report); main (any Preset field a flag).

    python train.py                                   # the reproduction: a base, every run, report
    python train.py --bases 3 --seeds 3 --sweep       # the grid (resumable)
    python train.py pretrain --preset tiny --seed 0   # a base -> runs/tiny/b0/base/model.pt
    python train.py run --method rl|context|fst|instructed|sequential --task hidden-rule --lr 3e-4
    python train.py run --method fst --schedule 'hidden-rule@100;cipher@100'  # untold switches
    python train.py run --method fst --task cipher --resume    # continue an interrupted run

It wires model.py, rollout.py, rl.py (slow weights), fast_context.py (fast weights) and eval.py;
world/ holds the tasks, reflectors and pretraining, harness/ the bookkeeping (runs.py) and the
experiments. A run writes log.jsonl, summary.json, model.pt (and measures.json); ckpt.pt resumes.
"""

import argparse
import copy
import json
import os
import random
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

import eval as ev
import fast_context as fc
import rl
import rollout
from model import GPT, pick_device, setup_device, write_atomic
from world import pretrain, reflectors, tasks
from harness import runs  # the bookkeeping: folders, ckpt.pt, the worker pool
from harness.cli import (CHECKPOINT, FOLDER, MOST_SEED, MOST_SEEDS, MOST_STEPS, MOST_THREADS,
                         CLIParser, UserError, add_config_flags, continue_line, exit_on_user_error,
                         nonnegative, parsed_by, positive, refuse_ignored_flags, with_flags,
                         writable_folder)
from world.llm import add_flags as llm_flags, options as llm_options, show_waits


# -----------------------------------------------------------------------------
# config: every number a run depends on, in one place

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
    row_tokens: int = 78          # ... of which a row keeps what fits this many tokens
    calibration: float = 0.05     # share of rows with the seed prompt over a random rule
    table_rows: float = 0.0       # the adherence world: share of rows that are partial tables ...
    adherence: float = 1.0        # ... whose answers follow a stated entry this often
    batch_workers: int = 0        # processes building pretraining batches ahead (0: in the loop)
    threads: int = 2              # torch threads, split over --jobs (a run's sums depend on it)
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
    optimizer_steps: int = 2      # optimizer steps per pass (minibatches): from the 2nd, ratio != 1
    loss_type: str = "cispo"       # grpo | dr_grpo | dapo | cispo (rl.policy_loss)
    cispo_cap: float = 5.0        # CISPO: the importance weight's cap
    clip_eps: float = 0.2         # grpo, dr_grpo, dapo: the ratio is clipped to 1 -/+ clip_eps ...
    dapo_clip_higher: float = 0.28  # ... and dapo's upper side to 1 + dapo_clip_higher
    adv_scale: str = "group"       # advantage scale: group | batch | none (rl.group_advantages)
    beta: float = 0.0             # k3 KL penalty to the initial weights (0: measured only)
    eval_every: int = 5           # val accuracy every N RL steps (and at the last)
    eval_samples: int = 1         # samples per val problem; greedy exact match at the last eval
    kl_every: int = 25            # KL to the base every kl_every steps and at the end, on ...
    kl_problems: int = 128        # ... the first kl_problems val problems ...
    kl_samples: int = 4           # ... x kl_samples completions, deployed and seed prompt
    # GEPA (fast weights)
    gepa_pool: int = 0            # 0: a round re-scores the frontier; P: the whole pool (<= P)
    gepa_round_problems: int = 0  # N: a round's D_p is the next T batches' first N problems
    log_frontier: bool = False    # log every round's frontier prompts (row "front")
    probe_entries: bool = False   # at every eval, the weights under the seed prompt (eval.py)
    fixed_prompt: str = ""        # instructed: this prompt instead of the task's instruction
    gepa_every: int = 6           # T: a GEPA round every T RL steps
    gepa_proposals: int = 4       # K proposals per round
    prompts_per_problem: int = 2  # m frontier prompts share each problem's G rollouts
    gepa_minibatch: int = 3       # b: train problems per GEPA mutation (parent and child)
    max_context_tokens: int = 48  # token budget of a context (a dial task brings its own)
    context_only_rollouts: int = 600  # context-only's rollouts (and sequential's first phase)
    n_train: int = 2048           # train problems per task (RL batches, GEPA's minibatches)
    n_val: int = 256              # val problems per task
    n_pareto: int = 16            # |D_p|, GEPA's Pareto set
    window: int = 64              # schedules: GEPA's data is the stream's last `window` problems
    continual_steps: int = 100    # steps per stage of the continual run (not a multiple of T)
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
    max_bad_steps: int = 5        # this many skipped (non-finite) updates in a row stop a run
    reflector_fail_rounds: int = 3  # llm: this many rounds of failed proposals stop a run (0: no)


GPU = Preset("gpu", n_layer=6, n_head=6, n_embd=384, pretrain_steps=4000, pretrain_batch=256,
             pretrain_lr=1e-3, pretrain_warmup=200, threads=8, batch_workers=4)
ADH_RUNS = dict(steps=400, gepa_pool=10, gepa_round_problems=32, log_frontier=True,
                probe_entries=True, eval_every=10)
PRESETS = {
    "tiny": Preset("tiny"),
    "gpu": GPU,  # a replicate in minutes on one H100 (LOG.md 2026-12-05)
    # gpu-smoke: the whole suite at the gpu model size in about two minutes (numbers mean nothing)
    "gpu-smoke": replace(GPU, name="gpu-smoke", pretrain_steps=300, pretrain_warmup=50, steps=12,
                         eval_every=4, kl_every=6, kl_problems=32, kl_samples=2, n_val=64,
                         context_only_rollouts=120, continual_steps=6, ckpt_every=6),
    # the adherence world (tasks.table_row): a base that follows a partial table's stated entries
    # about 70% of the time, and its control that follows them always; runs as the paper's (400
    # steps, the whole pool of <= 10 re-scored on 32 problems of the next T batches), probed
    "adh": Preset("adh", table_rows=0.25, adherence=0.7, pretrain_steps=2200, **ADH_RUNS),
    "adh-ctl": Preset("adh-ctl", table_rows=0.25, adherence=1.0, pretrain_steps=2200, **ADH_RUNS),
    # micro: the end-to-end smoke test's preset (seconds, not minutes; its numbers mean nothing)
    "micro": Preset("micro", n_layer=2, n_head=2, n_embd=64, pretrain_steps=30, pretrain_batch=16,
                    pretrain_eval_every=1000, steps=4, batch_problems=4, group_size=4, eval_every=2,
                    kl_every=2, gepa_every=2, gepa_proposals=2, context_only_rollouts=60, n_val=8,
                    n_pareto=4, window=8, continual_steps=3, max_new_tokens=8),
}


# -----------------------------------------------------------------------------
# the methods: switch settings of the one FST step. rl: the seed prompt, RL; context: GEPA on the
# frozen weights (a step is a round); fst: both, a round every T steps, groups over the frontier;
# controls: instructed (RL under the true instruction, or --fixed-prompt), sequential (GEPA on the
# frozen base to its budget, then RL), sequential-1 (FST's first round only, then RL)

FLAGS = ("uses_context", "gepa_rounds", "later_rounds", "trains_weights", "instructed", "suite")
METHODS = {name: dict(zip(FLAGS, row)) for name, row in {
    #         frontier in groups, GEPA rounds, after round 0, RL updates, instruction, in the suite
    "rl":           (False, False, False, True, False, True),
    "context":      (True, True, True, False, False, True),
    "fst":          (True, True, True, True, False, True),
    "instructed":   (False, False, False, True, True, True),
    "sequential":   (True, False, False, True, False, True),
    "sequential-1": (True, True, False, True, False, False),
}.items()}


# -----------------------------------------------------------------------------
# one FST step

@dataclass
class RunState:
    """Everything a run carries from one step to the next (the log rows aside)."""
    model: GPT
    enc: object                # the tokenizer
    opt: torch.optim.Optimizer
    ref: object                # the KL penalty's reference (the initial weights) if beta > 0
    rng: random.Random         # problem and prompt draws
    seed: int
    uses_context: bool; gepa_rounds: bool; later_rounds: bool  # METHODS' switches
    trains_weights: bool; instructed: bool; suite: bool
    evaluate: object           # GEPA's evaluate: greedy rollouts of the current weights
    reflect: object            # the reflector (fast_context's reflection step)
    gepa: object               # fast_context.GEPAState, or None without fast weights
    task: tasks.Task           # the task of the current stage
    window: list = None        # schedules: the stream's last problems, GEPA's data (else None)
    rl_rollouts: int = 0
    prompt: str = None         # instructed: this fixed prompt instead of the true instruction
    queue: list = None         # the next RL batches, drawn early for a round that scores on them


def fst_step(state, step, preset):
    """One step of Fast-Slow Training -> log fields."""
    row, n = {}, preset.batch_problems
    due = (state.gepa_rounds and (not state.trains_weights or step % preset.gepa_every == 0)
           and (state.later_rounds or step == 0))
    if due and preset.gepa_round_problems:  # the round scores on the next T batches: draw them
        state.queue = [state.rng.sample(state.task.train, n) for _ in range(preset.gepa_every)]
    problems = state.queue.pop(0) if state.queue else state.rng.sample(state.task.train, n)
    # 1. fast weights: a GEPA round with the current policy (every T steps; every step for
    #    context-only); a schedule's GEPA data slides with the stream first, untold of a switch
    if due:
        slid = step > 0 and fc.slide_data(state.gepa, state.window, preset.n_pareto)
        ahead = [p for batch in [problems] + (state.queue or []) for p in batch]
        row.update(gepa_round(state, preset, rescore=step > 0 and (state.trains_weights or slid),
                              pareto=ahead[:preset.gepa_round_problems] or None))
    elif step == 0 and state.gepa is not None and preset.log_frontier:  # sequential's frontier
        row["front"] = [[p, c] for p, c in fc.frontier_prompts(state.gepa)]
    if state.window is not None:
        state.window = (state.window + problems)[-preset.window:]
    if not state.trains_weights:
        return row
    # 2. m frontier prompts per problem, by the instances each covers (else the fixed prompt)
    state.model.train()
    n, G = len(problems), preset.group_size
    draws = (fc.draw_prompts(state.gepa, n, preset.prompts_per_problem, G, state.rng)
             if state.gepa is not None else [fc.Draw(fixed_prompt(state), G, i) for i in range(n)])
    # 3. sample the groups: G rollouts per problem, split over its prompts, scored by the verifier
    ro = rollout.sample_rollouts(state.model, state.enc, [d.context for d in draws],
                                 [problems[d.problem] for d in draws], [d.rollouts for d in draws],
                                 preset.temperature, state.seed * preset.rollout_seed_stride + step,
                                 max_new_tokens=preset.max_new_tokens,
                                 group=[d.problem for d in draws])
    state.rl_rollouts += len(ro)
    # 4. one advantage baseline per problem, across all its rollouts whatever prompt they used
    adv = rl.group_advantages(torch.tensor(ro.rewards), torch.tensor(ro.group),
                              scale=preset.adv_scale)
    # 5. slow weights: the update, each rollout conditioned on the prompt it actually used
    row.update(rl.update_policy(state.model, state.opt, ro, adv.to(ro.mask.device), preset,
                                ref=state.ref))
    return row


def gepa_round(state, preset, rescore, pareto=None):
    """Fast weights: one GEPA round (K proposals, current policy, D_p `pareto`) -> log fields."""
    state.model.eval()
    r = fc.run_round(state.gepa, state.evaluate, preset.gepa_proposals, state.reflect,
                     rescore=rescore, pool=preset.gepa_pool, pareto=pareto)
    row = dict(gepa_accepted=r["accepted"], frontier=r["frontier"], prompt=r["best_prompt"])
    if preset.log_frontier:  # every prompt on the frontier, with the instances it covers
        row["front"] = [[p, c] for p, c in fc.frontier_prompts(state.gepa)]
    if r["invalid"]:  # empty, over-budget or failed proposals: rejected, and logged here
        row["gepa_invalid"] = r["invalid"]
    return row


def fixed_prompt(state):
    """A method without fast weights: the seed prompt, or the true instruction (instructed)."""
    return (state.prompt or state.task.instruction) if state.instructed else state.task.seed_prompt


def deployed_prompt(state):
    """The prompt evaluation deploys: the frontier's best on D_p, else the fixed prompt."""
    return fc.best_prompt(state.gepa) if state.gepa is not None else fixed_prompt(state)


# -----------------------------------------------------------------------------
# one run: the loop (resume, step, evaluate, log, checkpoint) and its start and end

def run(method, schedule, preset, init, out_dir, seed=0, reflector="edit", base=None, device="auto",
        log=print, resume=False, llm=None):
    """One run from checkpoint `init` -> out_dir/log.jsonl, summary.json, model.pt; KL is measured
    against `base` (default: init); resume=True continues from out_dir/ckpt.pt, or returns a
    finished run's summary. -> summary dict; Ctrl-C raises cli.Interrupted."""
    device = setup_device(pick_device(device))  # the device's numerics, however run is reached
    writable_folder(out_dir)
    settings = runs.settings_of(preset, method=method, schedule=[[t, n] for t, n in schedule],
                                seed=seed, init=init, base=base or init, reflector=reflector)
    with runs.one_writer(out_dir):  # taken before the folder is checked, released however it ends
        summary, ledger = runs.open_run(out_dir, "fastslow-run-1", settings, resume,
                                        preset.max_bad_steps, log)
        if summary is not None:
            return summary
        if preset.beta > 0:  # what to lower when steps keep being skipped
            ledger.cause = "the learning rate (--lr) or the KL penalty (--beta)"
        return runs.interruptible(ledger, run_from, ledger, settings, method, schedule, preset,
                                  init, out_dir, seed, reflector, base, device, log, llm)


def run_from(ledger, settings, method, schedule, preset, init, out_dir, seed, reflector, base,
             device, log, llm):
    """The body of `run` once its folder is checked: models, the loop, the final files."""
    stages = [(tasks.make_task(spec, n_train=preset.n_train, n_pareto=preset.n_pareto,
                               n_val=preset.n_val), n) for spec, n in schedule]
    stage_at = [k for k, (_, n) in enumerate(stages) for _ in range(n)]  # step -> its stage
    start = ledger.saved["step"] if ledger.saved else 0
    task = stages[stage_at[max(start - 1, 0)]][0]  # the stage of the last step done
    state, base_model, log_rows, done = start_run(method, task, preset, init, base, seed, reflector,
                                                  llm, device, ledger, windowed=len(stages) > 1)
    if ledger.saved:
        log(f"{out_dir}: resuming at step {start}")
    ledger.claim()  # settings.json: this folder (one_writer made it) is this run's
    log_path = os.path.join(out_dir, "log.jsonl")  # as the checkpoint saw it, then a row a step
    write_atomic(log_path, "".join(json.dumps(r) + "\n" for r in log_rows))
    ledger.start_clock()
    logf = open(log_path, "a")
    pbar = tqdm(range(start, len(stage_at) if not done else start),
                desc=f"{method} {stages[0][0].name}", leave=False)
    show_waits(state.reflect, pbar)  # an llm reflector says on this line when it waits
    for step in pbar:
        state.task = stages[stage_at[step]][0]  # a switch: nobody tells the learner
        row = {"step": step, "task": state.task.name}
        try:
            row.update(fst_step(state, step, preset))
        except fc.ReflectorError as e:  # the reflector cannot work: stop, keep what is on disk
            logf.close()
            pbar.close()  # the error is the only line left
            raise runs.stopped(e, step, out_dir, len(log_rows)) from e
        ledger.count(row.get("skipped", ""), f"step {step}", log)  # a skipped update is counted
        row["rollouts"] = state.rl_rollouts + (state.gepa.rollouts if state.gepa else 0)  # all
        # the schedule's end, or for context-only (no weight updates) GEPA's rollout budget spent
        last = step == len(stage_at) - 1 or (not state.trains_weights and
                                             state.gepa.rollouts >= preset.context_only_rollouts)
        if step % preset.eval_every == 0 or last:
            row.update(ev.evaluate(state.model, base_model, state.enc, state.task,
                                   deployed_prompt(state), preset, step, last,
                                   with_kl=step % preset.kl_every == 0 or last))
            pbar.set_postfix(val=f"{row['val_acc']:.2f}", rollouts=row["rollouts"])
        row["wall_s"] = ledger.wall()
        log_rows.append(row)
        logf.write(json.dumps(row) + "\n")
        logf.flush()
        ledger.reached = step + 1
        ledger.check(step, row.get("skipped", ""))
        if last or (step + 1) % preset.ckpt_every == 0:
            save_run(state, ledger, step + 1, last, len(log_rows))
        if last:
            break  # the context-only baseline stops at its rollout budget
    logf.close()
    return finish_run(state, stages, log_rows, settings, preset, ledger, base_model)


def start_run(method, task, preset, init, base, seed, reflector, llm, device, ledger,
              windowed=False):
    """A run's start, or ledger.saved's state -> (RunState, base model, log rows, done flag)."""
    model, enc, base_model = pretrain.load_start(init, base, pick_device(device), preset)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=preset.betas, weight_decay=0.0,
                            fused=model.wte.weight.is_cuda)
    count_tokens = tasks.token_counter(enc)
    budget = task.max_context_tokens or preset.max_context_tokens  # a dial task brings its own
    if reflector == "llm":  # a dead endpoint stops the run after this many failed calls in a row
        llm = dict(llm or {}, fail_limit=preset.reflector_fail_rounds * preset.gepa_proposals)
    # GEPA's evaluate: a re-score's candidates in one generate call on CUDA, one each on the CPU
    evaluate = rollout.greedy_evaluate(model, enc, preset.max_new_tokens,
                                       batched=model.wte.weight.device.type == "cuda")
    state = RunState(model=model, enc=enc, opt=opt,
                     ref=copy.deepcopy(model).eval() if preset.beta > 0 else None,
                     rng=random.Random(seed), seed=seed, **METHODS[method], evaluate=evaluate,
                     prompt=preset.fixed_prompt or None,
                     gepa=None, task=task, reflect=reflectors.make_reflector(
                         reflector, budget, count_tokens, seed, preset.edit_hypotheses,
                         preset.demos_with_rule, preset.demos_alone, **(llm or {})))
    ck, log_rows, done = ledger.saved, [], False
    if ck is not None:  # resume: weights, optimizer, RNG streams, counters, the log so far
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state.rng.setstate((ck["rng"][0], tuple(ck["rng"][1]), ck["rng"][2]))
        torch.set_rng_state(ck["torch_rng"])
        state.rl_rollouts, done = ck["rl_rollouts"], ck["done"]
        log_rows = runs.saved_rows(os.path.dirname(ledger.path), ck["log_rows"])
    # the fast weights: GEPA's birth (sequential: to its budget), or its state from the checkpoint
    start_fast_weights(state, preset, budget, count_tokens, saved=ck, windowed=windowed)
    base_model.eval()
    return state, base_model, log_rows, done


def start_fast_weights(state, preset, max_tokens, count_tokens, saved=None, windowed=False):
    """The fast weights at a run's start (fc.start), or from `saved` (ckpt.pt): GEPA's pool, and a
    schedule's window with the GEPA data drawn from it. Without fast weights, state.gepa is None."""
    if windowed:  # a schedule: GEPA's data follows the stream (slide_window)
        state.window = []
    if saved is not None and saved["window"] is not None:
        state.window, pareto, train = [runs.problems_from(x) for x in saved["window"]]
    else:
        pareto, train = state.task.pareto, state.task.train
    if saved is not None and saved.get("queue"):
        state.queue = [runs.problems_from(x) for x in saved["queue"]]
    if state.uses_context:  # sequential: GEPA on the frozen base to its budget, before any RL
        state.gepa = fc.start(state.task.seed_prompt, pareto, train, state.evaluate, state.reflect,
                              state.seed, preset.gepa_minibatch, max_tokens, count_tokens,
                              saved=saved and saved["gepa"], first_budget=None
                              if state.gepa_rounds else preset.context_only_rollouts)


def save_run(state, ledger, steps_done, done, log_rows):
    """ckpt.pt: everything a resumed run needs to log exactly what an uninterrupted one would."""
    window, gepa = None, state.gepa  # a schedule's stream window, and GEPA's data drawn from it
    if state.window is not None:
        window = [runs.problems_state(x) for x in (state.window, gepa.pareto if gepa else [],
                                                    gepa.train if gepa else [])]
    ledger.save(steps_done, done=done, model=state.model.state_dict(), opt=state.opt.state_dict(),
                rng=list(state.rng.getstate()), torch_rng=torch.get_rng_state(),
                rl_rollouts=state.rl_rollouts, log_rows=log_rows,
                gepa=fc.state_dict(state.gepa) if state.gepa else None, window=window,
                **({"queue": [runs.problems_state(x) for x in state.queue]} if state.queue
                   else {}))


def finish_run(state, stages, log_rows, settings, preset, ledger, base_model):
    """The run's summary and weights (runs.finish_run), and what the report reads off the weights
    of a one-task run from the base that trains them (C4; an FST run's C7 table). -> summary"""
    final = [r for r in log_rows if "val_acc" in r][-1]
    from_base = settings["init"] == settings["base"]
    measures = (ev.run_measures(state.model, state.enc, state.task, final["prompt"],
                                base_model if state.uses_context and state.gepa_rounds else None)
                if len(stages) == 1 and state.trains_weights and from_base else None)
    summary = {"method": settings["method"], "schedule": [[t.spec, n] for t, n in stages],
               "final_val_acc": final["val_acc"], "final_val_greedy": final["val_greedy"],
               "best_val_acc": max(r["val_acc"] for r in log_rows if "val_acc" in r),
               "steps": log_rows[-1]["step"] + 1, "rollouts": log_rows[-1]["rollouts"],
               "wall_s": ledger.wall(), "seed": settings["seed"], "init": settings["init"],
               "deployed_prompt": final["prompt"], "reflector": settings["reflector"],
               "skipped_steps": ledger.skipped, "config": asdict(preset), "settings": settings}
    extra = {"tokenizer": tasks.tokenizer_state(state.enc), "deployed_prompt": final["prompt"]}
    return runs.finish_run(ledger, state.model, extra, summary, measures)


# -----------------------------------------------------------------------------
# the reproduction: every run the report needs, then the report (it reads <root>/suite.json)

SUITE = dict(
    tasks=["hidden-rule", "cipher", "long-chain", "cipher-k2"],  # CodeIO, HoVer, Math; dial k=2
    prior_task="hidden-rule",        # C5: the plasticity probe starts from this task's weights ...
    plasticity_task="hidden-rule-2",  # ... and learns this one (another input marker)
    plasticity_inits=["base", "rl", "fst"],  # C5: RL on it from these weights
    continual=["hidden-rule", "cipher", "hidden-rule-2"],  # C6: three stages, untold switches
    exploration_task="sparse",       # C8: zero reward under the seed prompt ...
    exploration_methods=["rl", "fst", "context", "sequential"],  # ... with its controls
    sweep_reflectors=["oracle", "demo"],  # FST with these too (--sweep, first base)
    methods=[m for m, flags in METHODS.items() if flags["suite"]],  # the table's suite rows
    # no fast weights, no context budget: a dial level shares its family's runs (runs.run_dir)
    budget_blind=[m for m, f in METHODS.items() if f["suite"] and not f["uses_context"]])


def suite_runs(preset, root, bases=1, seeds=1, sweep=False):
    """The suite's runs as (folder, run kwargs), seed-major, three-stage continual runs first."""
    out, seen = [], set()
    for seed, b in [(s, b) for s in range(seeds) for b in range(bases)]:
        broot, base = runs.base_root(root, b), runs.base_path(root, b)

        def add(method, schedule, task, folder=None, init=base, reflector="edit"):
            path = runs.run_dir(broot, task, folder or method, seed, SUITE["budget_blind"])
            if path not in seen:  # a dial level shares its family's rl run
                seen.add(path)
                out.append((path, dict(method=method, schedule=schedule, init=init, seed=seed,
                                       base=base, reflector=reflector)))
        for method in ("fst", "rl"):  # C6 continual: untold task switches
            add(method, [(t, preset.continual_steps) for t in SUITE["continual"]], "continual")
        for task in SUITE["tasks"]:
            for method in SUITE["methods"]:  # every suite row of the one table
                add(method, [(task, preset.steps)], task)
        for method in SUITE["exploration_methods"]:  # C8: exploration from zero reward
            add(method, [(SUITE["exploration_task"], preset.steps)], SUITE["exploration_task"])
        if sweep and b == 0:  # FST with the other reflectors, on the first base
            for name in SUITE["sweep_reflectors"]:
                for task in SUITE["tasks"]:
                    add("fst", [(task, preset.steps)], task, runs.method_folder("fst", name),
                        reflector=name)
        for init in SUITE["plasticity_inits"]:  # C5 plasticity: RL on a new task from these
            add("rl", [(SUITE["plasticity_task"], preset.steps)], "plasticity", init,
                init=runs.plasticity_init(root, b, init, seed, SUITE["prior_task"]))
    return out


def reproduce(preset, root, bases=1, seeds=1, device="auto", log=print, sweep=False, jobs=1,
              fresh_bases=False):
    """Every run the report needs (resumable; in `jobs` processes), then the report. -> results"""
    t0, device = time.time(), setup_device(pick_device(device))
    walls = pretrain.prepare_bases(preset, root, bases, device, log, fresh_bases)
    runs.write_suite(root, SUITE)
    todo = suite_runs(preset, root, bases, seeds, sweep)
    walls += [s["wall_s"] for _, s in runs.run_all(run, preset, todo, device, jobs, log, root)]
    from harness import report  # the report reads the runs from disk; it never imports train
    results = report.write_report(root, bases, seeds, sum(walls), device=device)
    log(f"report: {os.path.join(root, 'report.md')} (stages {sum(walls):.0f}s, "
        f"this invocation {time.time() - t0:.0f}s)")
    return results


# -----------------------------------------------------------------------------
# command line: any Preset field is a flag (--lr 3e-4, --betas 0.9,0.95); ALIASES: other names
ALIASES = {"run": {"loss_type": "--loss", "gepa_proposals": "--proposals",
                   "context_only_rollouts": "--budget"},
           "pretrain": {"pretrain_steps": "--steps", "pretrain_ckpt_every": "--ckpt-every"}}


def add_common_flags(parser, default, command=None):
    """Flags allowed before or after the command (on a command's, default SUPPRESS: no override)."""
    parser.add_argument("--preset", default=default(None),
                        help="tiny | gpu | gpu-smoke | micro (default: tiny on CPU, gpu on CUDA)")
    parser.add_argument("--device", default=default("auto"), choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seeds", type=positive(int, MOST_SEEDS), default=default(1),
                        help=f"reproduction: run seeds 0..N-1 (at most {MOST_SEEDS})")
    parser.add_argument("--bases", type=positive(int, MOST_SEEDS), default=default(1),
                        help=f"reproduction: one base per seed 0..N-1 (at most {MOST_SEEDS})")
    parser.add_argument("--jobs", type=positive(int), default=default(None),
                        help="reproduction: runs in N processes (default: runs.default_jobs)")
    parser.add_argument("--sweep", action="store_true", default=default(False),
                        help="reproduction: also FST with the oracle and demo reflectors")
    parser.add_argument("--fresh-bases", action="store_true", default=default(False),
                        help="reproduction: pretrain missing bases, not the committed grid's")
    add_config_flags(parser, Preset, default, ALIASES.get(command),
                     skip=("name",) if command == "run" else ("name", "fixed_prompt"),
                     choices={"loss_type": rl.LOSS_TYPES, "adv_scale": rl.ADV_SCALES},
                     zero_ok=("beta", "batch_workers", "reflector_fail_rounds", "calibration"),
                     most={"steps": MOST_STEPS, "pretrain_steps": MOST_STEPS,
                           "threads": MOST_THREADS})


def build_parser():
    ap = CLIParser(prog="train.py", description="fastslow: Fast-Slow Training at small scale. With "
                   "no command: the whole reproduction (a base if needed, every run, the report).")
    add_common_flags(ap, lambda d: d)
    sub = ap.add_subparsers(dest="cmd", parser_class=CLIParser)
    p = sub.add_parser("pretrain", help="train the base model")
    add_common_flags(p, lambda d: argparse.SUPPRESS, "pretrain")
    p.add_argument("--out", type=FOLDER, default=None,
                   help="output folder (default runs/<preset>/b<seed>/base)")
    p.add_argument("--seed", type=nonnegative(int, MOST_SEED), default=0,
                   help=f"pretraining seed (at most {MOST_SEED:,})")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted pretraining from --out/ckpt.pt")
    r = sub.add_parser("run", help="one run: a method on a task or a schedule")
    add_common_flags(r, lambda d: argparse.SUPPRESS, "run")
    r.add_argument("--method", default="fst", choices=list(METHODS))
    r.add_argument("--task", default="hidden-rule",
                   help="hidden-rule | cipher | long-chain | hidden-rule-2 | sparse | 'rule:OP,OP'")
    r.add_argument("--schedule", default=None, type=parsed_by(
                   lambda text: tasks.parse_schedule(text, 1, most=MOST_STEPS)),
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
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    r.add_argument("--reflector", default="edit", type=parsed_by(reflectors.parse_reflector),
                   help="oracle | edit | demo | llm, or NAME:P (wrong with probability P)")
    llm_flags(r)  # --llm-url, --llm-model, --llm-timeout
    return ap


def pretrain_command(args, preset, root, device):
    """`python train.py pretrain ...`: one base, its metrics printed."""
    out = args.out or os.path.dirname(runs.base_path(root, args.seed))
    runs.say_if_nothing_to_resume(out, args.resume)
    metrics = pretrain.pretrain(preset, out, device, seed=args.seed, resume=args.resume)
    print(json.dumps({k: metrics[k] for k in ("general_acc", "heldout_chain_acc", "acc_by_op",
                                              "acc_by_chain_len", "params", "tokens", "wall_s")}))
    print(json.dumps(metrics["tasks"]))


def run_command(args, preset, root, device):
    """`python train.py run ...`: every spec checked before any work, then one run."""
    schedule = tasks.parse_schedule(args.schedule or args.task, preset.steps, most=MOST_STEPS)
    for spec, _ in schedule:
        tasks.make_task(spec)
    llm = llm_options(args.reflector, args.llm_url, args.llm_model, args.llm_timeout)
    default_base = runs.base_path(root, 0)
    base = args.base or (default_base if os.path.exists(default_base) else None)
    tag = ("schedule" if args.schedule
           else args.task.replace(":", "_").replace(" ", "").replace(",", "+"))
    out = args.out or runs.run_dir(root, tag, args.method, args.seed)
    runs.say_if_nothing_to_resume(out, args.resume)
    summary = run(args.method, schedule, preset, args.init or default_base, out, args.seed,
                  args.reflector, device=device, base=base, resume=args.resume, llm=llm)
    print(json.dumps({k: summary[k] for k in ("final_val_acc", "best_val_acc", "final_val_greedy",
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
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
    preset = with_flags(PRESETS[name], args)
    torch.set_num_threads(preset.threads if device == "cpu" else torch.get_num_threads())
    root = os.path.join("runs", name)
    try:
        if args.cmd is None:
            reproduce(preset, root, bases=args.bases, seeds=args.seeds, device=device,
                      sweep=args.sweep, fresh_bases=args.fresh_bases,
                      jobs=args.jobs or runs.default_jobs(device))
        elif args.cmd == "pretrain":
            pretrain_command(args, preset, root, device)
        else:
            run_command(args, preset, root, device)
    except KeyboardInterrupt as e:  # one line: how far it got and the command that continues
        raise continue_line(e, "train.py", argv, args.cmd and "--resume") from None


if __name__ == "__main__":
    main()
