"""
plots.py: the report's figures, drawn with matplotlib (headless). Each function writes one PNG.

    bands(path, {label: (xs, mean, lo, hi)}, xlabel, title)    # mean curves with 95% bands
    kl_vs_acc(path, {method: [(acc, kl) per replicate]}, task)  # drift from the base vs accuracy

report.py computes what is drawn (eval.mean_band gives the bands); nothing here measures.
"""


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
