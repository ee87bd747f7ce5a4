"""The collapse experiment (paper Theorem 3.2): per-epoch loss and validation score of runs on the same buffer.

The naive reward-weighted NLL, -r log p on every sample, is unbounded below once a reward is negative: training
drives the loss down without end and the policy collapses. RIFT's negative term -r p lies in [0, |r|], so its
loss stays >= 0. Train each method with TrainConfig(save_epochs=True), score every `epoch_dirs` folder (and the
base model as epoch 0), then `collapse_table` and `verdict`. Imports no torch: the Dagster layer calls it.
"""
import os
from pathlib import Path

import polars as pl

EPOCH_PREFIX = "epoch-"  # <output>/epoch-<n>/: the weights after epoch n (trainer.TrainConfig.save_epochs)
EPOCH_FILE = "epoch.json"  # in each epoch folder: {"epoch": n, "step": the optimizer step it was saved at}


def epoch_dirs(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, folder) of each `epoch-<n>` folder in `output_dir`, by epoch; [] when there is none."""
    found = [(int(p.name[len(EPOCH_PREFIX):]), p) for p in Path(output_dir).glob(f"{EPOCH_PREFIX}*")
             if p.is_dir() and p.name[len(EPOCH_PREFIX):].isdigit()]
    return sorted(found)


def collapse_table(runs: dict[str, dict], val_scores: pl.DataFrame) -> pl.DataFrame:
    """One row per method and epoch: method, epoch, loss, mean_at_k.

    `runs`: method -> its run summary (rift_run.json; `epoch_loss` is the mean training loss of epoch 1, 2, ...).
    `val_scores`: columns method, epoch, mean_at_k; epoch 0 is the base model (its loss is null), and a row whose
    method is null scores it for every method. Epochs with no score (or no loss) get null. Methods keep the
    order of `runs`."""
    order = list(runs)
    losses = pl.DataFrame(
        [{"method": m, "epoch": 0, "loss": None} for m in order]
        + [{"method": m, "epoch": n, "loss": loss} for m in order for n, loss in enumerate(runs[m]["epoch_loss"], 1)],
        schema={"method": pl.String, "epoch": pl.Int64, "loss": pl.Float64})
    scores = val_scores.select(pl.col("method").cast(pl.String), pl.col("epoch").cast(pl.Int64),
                               pl.col("mean_at_k").cast(pl.Float64))
    shared = scores.filter(pl.col("method").is_null()).drop("method")
    scores = pl.concat([scores.filter(pl.col("method").is_not_null()),
                        pl.DataFrame({"method": order}).join(shared, how="cross")])
    frame = losses.join(scores, on=["method", "epoch"], how="full", coalesce=True)
    return (frame.filter(pl.col("method").is_in(order))
            .with_columns(pl.col("loss").fill_nan(None))
            .sort(pl.col("method").replace_strict(order, range(len(order))), "epoch")
            .select("method", "epoch", "loss", "mean_at_k"))


def verdict(frame: pl.DataFrame, k: int | None = None) -> str:
    """One sentence on what `collapse_table` shows, per method: the loss from the first to the last epoch and how
    it moved (every epoch down or up, or where its minimum was; whether and from when it went below 0), and the
    validation Mean@k from epoch 0 to the last epoch scored."""
    label = f"Mean@{k}" if k else "Mean@k"
    parts = []
    for (method,), rows in frame.group_by("method", maintain_order=True):
        rows = rows.sort("epoch")
        trained = rows.filter(pl.col("loss").is_not_null())
        part = f"{method}: "
        if trained.height:
            epochs, loss = trained["epoch"].to_list(), trained["loss"].to_list()
            steps = [b - a for a, b in zip(loss, loss[1:])]
            low = loss.index(min(loss))
            trend = ("falls every epoch, " if steps and all(s < 0 for s in steps)
                     else "rises every epoch, " if steps and all(s > 0 for s in steps)
                     else f"lowest {loss[low]:.3g} at epoch {epochs[low]}, " if steps else "")
            negative = [e for e, x in zip(epochs, loss) if x < 0]
            sign = f"below 0 from epoch {negative[0]}" if negative else "never below 0"
            part += f"loss {loss[0]:.3g} -> {loss[-1]:.3g} over {len(loss)} epoch(s) ({trend}{sign})"
        else:
            part += "no training loss"
        scored = rows.filter(pl.col("mean_at_k").is_not_null())
        if scored.height:
            first, last = scored.row(0, named=True), scored.row(-1, named=True)
            part += (f", validation {label} {first['mean_at_k']:.0%} (epoch {first['epoch']}) -> "
                     f"{last['mean_at_k']:.0%} (epoch {last['epoch']})")
        parts.append(part)
    return "; ".join(parts) + "." if parts else "no runs."
