"""
phase.py: the phase diagram. When does FST help? A grid over two dials, every cell run against the
same RL-only baseline and controls:

    python train.py --phase --bases 3 --seeds 3      # every run (resumable), then the report
    python phase.py --preset tiny --bases 3 --seeds 3 --out results/tiny/phase   # the report alone

- carriability (tasks.DIAL_LEVELS): the cipher under a context budget that fits k = 3, 2, 1, 0 of
  its 3 table entries. What a prompt within the budget can carry is measured on the bases alone,
  before any run (`python select_tasks.py --dial`).
- reflector strength (REFLECTORS): `edit`, and `edit:P`, whose proposals are wrong with probability
  P (reflectors.NoisyReflector); strength = 1 - P. RL-only is strength "none".

Per cell (level x reflector) and replicate (base x run seed): FST, the sequential control and
context-only (GEPA on the frozen base, whose logs measure the reflector before any FST run). RL-only
and instructed RL ignore the budget (the seed prompt is 4 tokens; the instruction is the free
ceiling), so they are the cipher's runs and are shared by every cell. Runs are ordered replicate by
replicate (seed-major over bases), so a grid stopped early holds whole replicates of every cell.
"""

import os

import report
import tasks

LEVELS = tasks.DIAL_LEVELS                 # k: table entries the budget fits
REFLECTORS = ("edit", "edit:0.5")          # strength 1.0 and 0.5
CELL_METHODS = ("fst", "sequential")       # run per cell; context-only too, in wave 0
SHARED_METHODS = ("rl", "instructed")      # one run per replicate, every cell's baseline
SHARED_TASK = "cipher"


def level_task(k):
    return f"cipher-k{k}"


def method_dir(method, reflector):
    """fst + edit:0.5 -> 'fst-edit-p0.5' (no ':' in folder names)."""
    return f"{method}-{reflector.replace(':', '-p')}"


def replicate_order(bases, seeds):
    """(base, seed) pairs seed-major: every base's seed 0 first."""
    return [(b, s) for s in range(seeds) for b in range(bases)]


def jobs(preset, root, bases=3, seeds=3):
    """Every run of the phase diagram as (wave, folder, run kwargs), like train.suite_jobs. Wave 1:
    context-only in every cell (the reflectors on the frozen bases); wave 2: the training runs,
    replicate by replicate."""
    out = []
    for wave in (1, 2):
        for b, seed in replicate_order(bases, seeds):
            broot = report.base_root(root, b)
            base = os.path.join(broot, "base", "model.pt")

            def add(method, task, folder, reflector="edit"):
                out.append((wave, report.run_dir(broot, task, folder, seed),
                            dict(method=method, schedule=[(task, preset.steps)], init=base,
                                 seed=seed, base=base, reflector=reflector)))
            if wave == 2:
                for method in SHARED_METHODS:
                    add(method, SHARED_TASK, method)
            for k in LEVELS:
                for refl in REFLECTORS:
                    for method in (("context",) if wave == 1 else CELL_METHODS):
                        add(method, level_task(k), method_dir(method, refl), refl)
    return out
