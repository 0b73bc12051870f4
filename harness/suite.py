"""
suite.py: the reproduction's experiment as data -- which tasks, methods, probes and schedules the
suite runs, where every base and run lives (the folder layout, built here once), and the list of
runs (`jobs`) that train.py executes and report.py reads back.

    python train.py                               # runs suite.jobs(...), then report.write_report
    python train.py --bases 3 --seeds 3           # the grid: the same jobs for every replicate

Layout: <root>/b<base seed>/base/model.pt is a base; its runs sit in
run_dir(base_root(root, b), task, method, seed). To add a task to the suite, add its name to
SUITE_TASKS; to add a method, add a row to fst.METHODS (the suite runs every row marked `suite`).
"""

import os
import types

from world import tasks
from fst import METHODS, SUITE_METHODS

# like CodeIO, HoVer, Math; then the dial's middle level (a prompt fits 2 of the 3 entries)
SUITE_TASKS = ["hidden-rule", "cipher", "long-chain", "cipher-k2"]
PRIOR_TASK = "hidden-rule"                              # the plasticity probe starts from
                                                        # its weights ...
PLASTICITY_TASK = "hidden-rule-2"                       # ... and learns this one
                                                        # (another input marker)
PLASTICITY_INITS = ("base", "rl", "fst")                # C5: RL on it from these weights
CONTINUAL = ["hidden-rule", "cipher", "hidden-rule-2"]  # three stages, three markers,
                                                        # untold switches
EXPLORATION_TASK = "sparse"                             # C8: zero reward under the seed prompt
EXPLORATION_METHODS = ("rl", "fst", "context", "sequential")  # C8 with its controls
# SUITE_METHODS: the rows of fst.METHODS, the one table, that the suite runs
SWEEP_REFLECTORS = ["oracle", "demo"]                   # FST with these too (`--sweep`, first base)
# the methods without fast weights never read a context budget (rl, instructed): a dial level
# shares its family's runs of them
BUDGET_BLIND = tuple(m for m in SUITE_METHODS if not METHODS[m]["uses_context"])


def base_root(root, b):
    """Where base `b` (pretraining seed b) and every run from it live."""
    return os.path.join(root, f"b{b}")


def base_path(root, b):
    """Base b's weights: <root>/b<b>/base/model.pt (the one place this path is built)."""
    return os.path.join(base_root(root, b), "base", "model.pt")


# the committed grids: results/ beside this folder
COMMITTED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "results")


def committed_root(preset_name):
    """Where the committed grid of a preset keeps its runs and bases (phase.archive writes it)."""
    return os.path.join(COMMITTED, preset_name, "runs")


def plasticity_init(root, b, init, seed):
    """The weights C5's run from `init` starts from: base b, or the prior task's rl / fst run's."""
    if init == "base":
        return base_path(root, b)
    return os.path.join(run_dir(base_root(root, b), PRIOR_TASK, init, seed), "model.pt")


def run_dir(root, task, method, seed):
    """One run: <base root>/<task or 'plasticity' or 'continual'>/<method or init>/s<seed>. A dial
    level's budget-blind methods are its family's runs (cipher-k2's rl is the cipher's)."""
    d = tasks.NAMED_TASKS.get(task)
    if method in BUDGET_BLIND and d is not None and d.family:
        task = d.family
    return os.path.join(root, task, method, f"s{seed}")



def run_folders(root, bases=1, seeds=1):
    """The folders of every run `jobs` lists (what the report reads)."""
    lengths = types.SimpleNamespace(steps=1, continual_steps=1)  # folders do not depend on them
    return [folder for _, folder, _ in jobs(lengths, root, bases, seeds)]


def jobs(preset, root, bases=1, seeds=1, sweep=False):
    """Every run of the suite as (wave, folder, run kwargs), in the order --jobs 1 runs them:
    seed-major (every base's seed 0 first), so a grid stopped early still spans the bases; in a
    replicate the continual runs (three stages) first, so two workers end together. One wave: the
    plasticity probe starts once its prior task's weights exist (train.wave_runs)."""
    out, seen = [], set()
    for seed, b in [(s, b) for s in range(seeds) for b in range(bases)]:
        broot = base_root(root, b)
        base = base_path(root, b)

        def add(wave, method, schedule, folder, seed, init=base, reflector="edit"):
            if folder not in seen:  # a dial level shares its family's rl run
                seen.add(folder)
                out.append((wave, folder, dict(method=method, schedule=schedule, init=init,
                                                seed=seed, base=base, reflector=reflector)))
        for method in ("fst", "rl"):  # C6 continual: untold task switches
            add(1, method, [(t, preset.continual_steps) for t in CONTINUAL],
                run_dir(broot, "continual", method, seed), seed)
        for task in SUITE_TASKS:
            for method in SUITE_METHODS:  # every suite row of the one table (fst.METHODS)
                add(1, method, [(task, preset.steps)],
                    run_dir(broot, task, method, seed), seed)
        for method in EXPLORATION_METHODS:  # C8: exploration from zero reward
            add(1, method, [(EXPLORATION_TASK, preset.steps)],
                run_dir(broot, EXPLORATION_TASK, method, seed), seed)
        if sweep and b == 0:  # FST with the other reflectors, on the first base
            for name in SWEEP_REFLECTORS:
                for task in SUITE_TASKS:
                    add(1, "fst", [(task, preset.steps)],
                        run_dir(broot, task, f"fst-{name}", seed), seed, reflector=name)
        # C5 plasticity: RL on a new task from the prior task's weights
        for init in PLASTICITY_INITS:
            add(1, "rl", [(PLASTICITY_TASK, preset.steps)],
                run_dir(broot, "plasticity", init, seed), seed,
                init=plasticity_init(root, b, init, seed))
    return out
