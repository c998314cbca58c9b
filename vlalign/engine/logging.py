"""Rank-0 training log: a tqdm bar (rate, ETA), plain periodic lines, `metrics.jsonl`, optional TensorBoard.

Every record is one JSON object per line in `<out_dir>/metrics.jsonl`. Training records carry iteration
(optimizer steps done), epoch (fractional epochs done), lr (the base lr times the schedule; groups scale it by
their lr_mult), loss, each loss_* and time_per_iter (seconds, data + step, averaged over the log window).
Evaluation records carry iteration, epoch and `eval/<metric>` entries.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"


def _tensorboard_writer(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "TrainConfig.tensorboard=True but the `tensorboard` package is not installed "
            "(pip install 'vlalign[tensorboard]'); logging to metrics.jsonl only.",
            stacklevel=3,
        )
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop records after `iteration`: a resumed run re-does those iterations and would log them twice."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run may be cut short
            continue
        if record.get("iteration", 0) <= iteration:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


class MetricLogger:
    """Writes the run's records on the main process; on other ranks every method does nothing.

    Args:
        out_dir: run folder (metrics.jsonl, tensorboard/).
        enabled: True on rank 0 only.
        total_iters / start_iter: the bar's range (start_iter > 0 when resuming).
        tensorboard: also write scalars with torch.utils.tensorboard when the package exists.
    """

    def __init__(self, out_dir: str | Path, enabled: bool, total_iters: int, start_iter: int = 0,
                 tensorboard: bool = False) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.bar = None
        self.writer = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.out_dir / METRICS_FILE, start_iter)
        self.file = open(self.out_dir / METRICS_FILE, "a")  # kept open for the run; closed in close()
        # disable=None lets tqdm switch itself off when stderr is not a terminal (log files, CI);
        # the plain lines of log() keep the progress visible there.
        self.bar = tqdm(total=total_iters, initial=start_iter, dynamic_ncols=True, disable=None, unit="it")
        self.writer = _tensorboard_writer(self.out_dir) if tensorboard else None

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, record: dict[str, Any], echo: bool = True) -> None:
        """Append a record to metrics.jsonl (and TensorBoard); echo it as one plain line."""
        if not self.enabled:
            return
        self.file.write(json.dumps(record, default=_jsonable) + "\n")
        self.file.flush()
        step = record.get("iteration", 0)
        scalars = {k: v for k, v in record.items() if k != "iteration" and _is_number(v)}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
        if self.bar is not None and "loss" in scalars:
            self.bar.set_postfix(loss=f"{scalars['loss']:.4g}", refresh=False)
        if echo:
            text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in scalars.items())
            tqdm.write(f"[iter {step}] {text}", file=sys.stdout)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.file.close()


def _is_number(value: Any) -> bool:
    # NaN/inf stay in: a diverging loss must show in the log.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _jsonable(value: Any) -> Any:
    # Metrics often arrive as numpy or torch scalars; JSON wants Python numbers.
    if hasattr(value, "tolist"):  # 0-d -> Python scalar, n-d -> nested lists
        return value.tolist()
    raise TypeError(f"metric value of type {type(value).__name__} is not JSON serialisable")
