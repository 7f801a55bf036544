"""`modelwarden backtest --plot`: each check's value against its threshold over time, actions marked.

Apart from the command so that matplotlib (the optional ``plot`` extra) is imported only when a
plot is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelwarden.commands.backtest import Trace
    from modelwarden.planning.backtest import Action

ACTION_COLOURS = {"alert": "tab:orange", "rollback": "tab:red", "retrain": "tab:purple"}


def plot(path: Path, trace: "Trace", actions: Sequence["Action"], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    checks = list(trace.values)
    figure, axes = plt.subplots(max(1, len(checks)), 1, sharex=True, squeeze=False,
                                figsize=(11, 2.2 * max(1, len(checks)) + 0.8))
    for axis, check in zip(axes[:, 0], checks):
        axis.plot(trace.times, trace.values[check], linewidth=0.8, label="value")
        if check in trace.thresholds:
            axis.axhline(trace.thresholds[check], color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
        for action in actions:
            axis.axvline(action.time, color=ACTION_COLOURS.get(action.action, "grey"), alpha=0.5, linewidth=0.8)
        axis.set_ylabel(check, rotation=0, ha="right", fontsize=8)
    axes[0, 0].set_title(f"backtest of {title}: values (lines), thresholds (dashed), actions (vertical: "
                         + ", ".join(f"{name} {colour.removeprefix('tab:')}" for name, colour in ACTION_COLOURS.items()) + ")",
                         fontsize=9)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
