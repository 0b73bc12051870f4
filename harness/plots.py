"""
plots.py: the report's figures, drawn with matplotlib (headless). Each function writes one PNG.

    bands(path, {label: (xs, mean, lo, hi)}, xlabel, title)    # mean curves with 95% bands
    kl_vs_acc(path, {method: [(acc, kl) per replicate]}, task)  # drift from the base vs accuracy
    task_figures(out, task, {"step": bands, "rollouts": bands}, n, kl_series)  # a task's three

report.py computes what is drawn (eval.mean_band gives the bands); nothing here measures.
"""

import os


def bands(path, series, xlabel, title, vlines=()):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (xs, m, lo, hi) in series.items():
        line, = ax.plot(xs, m, label=label, lw=1.2)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    for v in vlines:
        ax.axvline(v, color="gray", ls="--", lw=0.8)
    ax.set(xlabel=xlabel, ylabel="val exact match", ylim=(-0.02, 1.02))
    _finish(fig, ax, path, title)


def task_figures(out, task, bands_by_x, n, kl_series):
    """One task's figures in folder `out`: val accuracy against steps and against rollouts
    (bands_by_x = {'step': series, 'rollouts': series} as `bands` takes), KL against accuracy
    -> their file names."""
    names = []
    for x, series in bands_by_x.items():
        names.append(f"{task}_acc_vs_{'steps' if x == 'step' else 'rollouts'}.png")
        bands(os.path.join(out, names[-1]), series,
              "RL steps" if x == "step" else "rollouts generated (all)",
              f"{task}: val accuracy, mean and 95% band over {n} replicates")
    names.append(f"{task}_kl_vs_acc.png")
    kl_vs_acc(os.path.join(out, names[-1]), kl_series, task)
    return names


def kl_vs_acc(path, series, task):
    """KL to the base against val accuracy at the KL evals, one thin line per replicate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, curves in series.items():
        color = None
        for i, (acc, kl) in enumerate(curves):
            line, = ax.plot(acc, kl, marker="o", ms=2, lw=0.6, color=color,
                            label=m if i == 0 else None)
            color = line.get_color()
    ax.set(xlabel="val exact match", ylabel="KL(pi_theta || pi_base) per token")
    _finish(fig, ax, path, f"{task}: drift from the base vs accuracy")


def _finish(fig, ax, path, title):
    import matplotlib.pyplot as plt
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
