"""
harness/grid.py: the grid (the suite's, or the phase diagram's) as shell commands, one per line,
for a scheduler that runs them in any order and in parallel (a Slurm array, GNU parallel, xargs -P).

    python -m harness.grid runs --preset tiny --bases 3 --seeds 3 | xargs -P 8 -d '\n' -I{} sh -c {}

The stages go in order: `bases` (the missing bases: copied from the committed grid, as
train.reproduce does, or pretrained), `runs` (every run that starts from a base), `after` (those
that start from another run's weights: the plasticity probe), `report` (the command that writes the
report from the finished runs' folders). The commands of one stage may all run at once. Each
command resumes (--resume), so a scheduler may retry one that was killed, and each is the run
train.reproduce would make (same folder, same settings). Printing writes runs/<preset>/suite.json,
the suite's table the report reads.
"""

import os
import shlex

import train
from harness import phase as phase_grid
from harness import runs
from harness.cli import (MOST_SEEDS, MOST_THREADS, CLIParser, UserError, exit_on_user_error,
                         positive)
from world import pretrain

STAGES = ("bases", "runs", "after", "report")


def commands(preset, root, stage, bases=1, seeds=1, sweep=False, phase=False, fresh_bases=False,
             threads=None, device="auto"):
    """The commands of `stage` (see the module docstring); `threads` and `device` are passed on
    when given. -> [str]"""
    py = ["python", "train.py"]
    on = ["--device", device] if device != "auto" else []
    common = ["--preset", preset.name] + (["--threads", str(threads)] if threads else []) + on
    if stage == "report":  # from the folders alone (no run is started or resumed)
        return [shlex.join(["python", "-m", "harness.phase" if phase else "harness.report",
                            "--preset", preset.name, "--bases", str(bases), "--seeds", str(seeds)]
                           + ([] if phase else on))]
    base_paths = [runs.base_path(root, b) for b in range(bases)]
    if stage == "bases":
        out = []
        for b, path in enumerate(base_paths):
            folder = os.path.dirname(path)
            if os.path.exists(path):
                continue
            cached = None if fresh_bases else pretrain.committed_base(preset, b)
            cached = cached and os.path.relpath(cached)  # the commands run from the repo's root
            out.append(f"mkdir -p {shlex.quote(folder)} && cp -r {shlex.quote(cached)}/. "
                       f"{shlex.quote(folder)}/" if cached else
                       shlex.join(py + ["pretrain"] + common + ["--seed", str(b), "--out", folder,
                                                                "--resume"]))
        return out
    todo = ([(folder, kw) for _, folder, kw in phase_grid.jobs(preset, root, bases, seeds)]
            if phase else train.suite_runs(preset, root, bases, seeds, sweep))
    out = []
    for folder, kw in todo:
        if (kw["init"] in base_paths) != (stage == "runs"):
            continue
        schedule = ";".join(f"{t}@{n}" for t, n in kw["schedule"])
        out.append(shlex.join(py + ["run"] + common + [
            "--method", kw["method"], "--schedule", schedule, "--init", kw["init"],
            "--base", kw["base"], "--seed", str(kw["seed"]), "--reflector", kw["reflector"],
            "--out", folder, "--resume"]))
    return out


def build_parser():
    ap = CLIParser(prog="python -m harness.grid",
                   description="print the grid's commands of one stage, one per line, for a "
                               "scheduler (Slurm array, GNU parallel, xargs -P)")
    ap.add_argument("stage", choices=STAGES,
                    help="bases, then runs, then after (runs from another run's weights), then "
                         "report")
    ap.add_argument("--preset", default="tiny", help="tiny | gpu | gpu-smoke | micro")
    ap.add_argument("--bases", type=positive(int, MOST_SEEDS), default=1,
                    help=f"bases (pretraining seeds 0..N-1) (at most {MOST_SEEDS})")
    ap.add_argument("--seeds", type=positive(int, MOST_SEEDS), default=1,
                    help=f"run seeds 0..N-1 (at most {MOST_SEEDS})")
    ap.add_argument("--sweep", action="store_true", help="also FST with the other reflectors")
    ap.add_argument("--phase", action="store_true", help="the phase diagram's grid")
    ap.add_argument("--fresh-bases", action="store_true",
                    help="pretrain missing bases instead of copying the committed grid's")
    ap.add_argument("--threads", type=positive(int, MOST_THREADS), default=None,
                    help=f"passed on to every run (at most {MOST_THREADS:,})")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return ap


@exit_on_user_error
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.preset not in train.PRESETS:
        raise UserError(f"unknown preset '{args.preset}'; choose one of "
                        f"{', '.join(train.PRESETS)}")
    if args.phase and args.sweep:
        raise UserError("--sweep adds reflectors to the suite's grid, not to --phase's; "
                        "drop one of them")
    root = os.path.join("runs", args.preset)
    runs.write_suite(root, train.SUITE)  # the suite's table, which the report reads
    for line in commands(train.PRESETS[args.preset], root, args.stage, args.bases, args.seeds,
                         args.sweep, args.phase, args.fresh_bases, args.threads, args.device):
        print(line)


if __name__ == "__main__":
    main()
