"""The training methods, one record each: the columns a method needs, which buffer rows it trains on, how a row
becomes a TRL dataset record, which trainer and config train it, and the paper's learning rate.

Adding a method is adding one `Method` below (KTO was added that way). Imports no torch/trl: Dagster imports this
module to build its partitions, and the trainer classes are imported by name only when a run starts.
"""
import importlib
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from rift_core.prompts import chat_messages


@dataclass(frozen=True)
class Method:
    name: str
    columns: tuple[str, ...]  # the training frame's columns (docs/ARCHITECTURE.md)
    learning_rate: float  # the paper's default rate
    trainer: str  # "module:Class" of the TRL-style trainer
    config: str  # "module:Class" of its config
    select: Callable  # (name, rows, source) -> (rows, notes): which of the validated rows train
    completion: Callable  # row -> the method's part of a TRL record (completion, reward, chosen/rejected, label)
    config_kwargs: dict = field(default_factory=dict)  # fixed settings of the config for this method
    passthrough: tuple[str, ...] = ()  # TrainConfig fields the config takes under the same name
    reference: bool = False  # the trainer compares with a frozen copy of the model (DPO, KTO)
    from_solutions: bool = False  # trains on the problems' ground-truth solutions, not on the labelled rollouts

    def buffer_rows(self, problems: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
        """The training frame for this method from the problems and the labelled rollout buffer."""
        if self.from_solutions:
            return problems.filter(pl.col("solution").is_not_null()).select("problem_id", *self.columns)
        if "solution" in self.columns:  # DPO pairs each response with the ground-truth solution
            labels = labels.join(problems.select("problem_id", "solution"), on="problem_id", how="left")
        return labels.select("problem_id", "sample_idx", *self.columns)

    def rows(self, frame: pl.DataFrame, source: str = "training frame") -> tuple[pl.DataFrame, list[str]]:
        """Validate `frame` and return the rows to train on plus notes on what was dropped or odd."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{source}: method {self.name!r} needs column(s) {', '.join(missing)} "
                             f"(has: {', '.join(frame.columns)})")
        rows = frame.select(self.columns).with_row_index("row")
        if rows.is_empty():
            raise ValueError(f"{source}: no rows to train {self.name} on (empty buffer)")
        for column in self.columns:
            if column != "solution":  # a missing solution drops its row, below
                _reject(rows, pl.col(column).is_null(), source, f"column {column!r} is null")
        if "reward" in rows.columns:
            rows = rows.with_columns(pl.col("reward").cast(pl.Float64))
            _reject(rows, ~pl.col("reward").is_finite(), source, "column 'reward' is NaN or infinite")
        notes = []
        if "solution" in rows.columns:  # MATH seeds carry no worked solution: those rows have nothing to imitate
            empty = rows.filter(pl.col("solution").is_null() | (pl.col("solution").str.strip_chars() == ""))
            if len(empty):
                notes.append(f"dropped {len(empty)} of {len(rows)} rows with no 'solution'")
                rows = rows.join(empty.select("row"), on="row", how="anti")
            if rows.is_empty():
                raise ValueError(f"{source}: no row has a ground-truth 'solution', so {self.name} has nothing to train on")
        rows, more = self.select(self.name, rows, source)
        return rows.drop("row"), notes + more

    def record(self, row: dict, template: str = "qwen_cot", template_kwargs: dict | None = None) -> dict:
        """One TRL conversational record: the prompt messages plus the method's completion part."""
        rec = {"prompt": chat_messages(row["question"], template), **self.completion(row)}
        if template_kwargs:
            rec["chat_template_kwargs"] = template_kwargs
        return rec

    def classes(self) -> tuple[type, type]:
        """(trainer class, config class), imported now."""
        return _load(self.trainer), _load(self.config)


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _reject(rows: pl.DataFrame, bad: pl.Expr, source: str, what: str) -> None:
    hits = rows.filter(bad)["row"].to_list()
    if hits:
        shown = ", ".join(map(str, hits[:10])) + (" ..." if len(hits) > 10 else "")
        raise ValueError(f"{source}: {what} in {len(hits)} row(s) (0-based rows {shown})")


# ---- which rows train --------------------------------------------------------------------------

def _all(name, rows, source):
    return rows, []


def _unique_solutions(name, rows, source):  # a labels frame repeats each problem K times
    return rows.unique(["question", "solution"], keep="first", maintain_order=True), []


def _positives(name, rows, source):
    rows = rows.filter(pl.col("reward") > 0)
    if rows.is_empty():
        raise ValueError(f"{source}: no row has reward > 0, so {name} has no positive sample to train on")
    return rows, []


def _reward_signal(name, rows, source):
    positives, negatives = (rows["reward"] > 0).sum(), (rows["reward"] < 0).sum()
    if positives + negatives == 0:
        raise ValueError(f"{source}: every reward is 0, so {name} has no signal to train on")
    notes = ["no positive rewards: the run only pushes probability down"] if positives == 0 else []
    if negatives == 0:
        notes.append("no negative rewards: the run is reward-weighted NLL on the positives")
    return rows, notes


def _both_labels(name, rows, source):
    right = rows["correct"].sum()
    if right in (0, len(rows)):
        return rows, [f"every sample is {'correct' if right else 'wrong'}: {name} sees one kind of example only"]
    return rows, []


# ---- the method's part of a TRL record ---------------------------------------------------------

def _turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _solution(row):
    return {"completion": _turn(row["solution"])}


def _response(row):
    return {"completion": _turn(row["response"])}


def _rewarded(row):
    return {"completion": _turn(row["response"]), "reward": row["reward"]}


def _pair(row):  # the paper's DPO pairs: the response if correct, else the ground truth, is chosen
    truth, response = _turn(row["solution"]), _turn(row["response"])
    chosen, rejected = (response, truth) if row["correct"] else (truth, response)
    return {"chosen": chosen, "rejected": rejected}


def _labelled(row):  # KTO's unpaired format: desirable (True) or undesirable (False)
    return {"completion": _turn(row["response"]), "label": bool(row["correct"])}


_SFT = dict(trainer="trl:SFTTrainer", config="trl:SFTConfig")
_RIFT = dict(trainer="rift_core.rift_trainer:RIFTTrainer", config="rift_core.rift_trainer:RIFTConfig",
             passthrough=("granularity",), select=_reward_signal, completion=_rewarded)
_REGISTRY = {m.name: m for m in (
    Method("sft", ("question", "solution"), 1e-5, **_SFT, select=_unique_solutions, completion=_solution,
           config_kwargs={"loss_type": "nll", "completion_only_loss": True}, from_solutions=True),
    Method("dft", ("question", "solution"), 1e-5, **_SFT, select=_unique_solutions, completion=_solution,
           config_kwargs={"loss_type": "dft", "completion_only_loss": True}, from_solutions=True),
    Method("rft", ("question", "response", "reward"), 1e-5, **_SFT, select=_positives, completion=_response,
           config_kwargs={"loss_type": "nll", "completion_only_loss": True}),
    Method("dpo", ("question", "response", "correct", "solution"), 2e-6, trainer="trl:DPOTrainer",
           config="trl:DPOConfig", select=_all, completion=_pair, passthrough=("beta", "precompute_ref_log_probs"),
           reference=True),
    Method("rift", ("question", "response", "reward"), 2e-6, **_RIFT,
           config_kwargs={"reward_loss": "rift", "completion_only_loss": True}),
    Method("naive", ("question", "response", "reward"), 2e-6, **_RIFT,
           config_kwargs={"reward_loss": "naive", "completion_only_loss": True}),
    # the paper does not run KTO: DPO's rate, the other method that holds a frozen reference model
    Method("kto", ("question", "response", "correct"), 2e-6, trainer="trl:KTOTrainer", config="trl:KTOConfig",
           select=_both_labels, completion=_labelled, reference=True,
           passthrough=("beta", "precompute_ref_log_probs", "desirable_weight", "undesirable_weight")),
)}
METHODS: tuple[str, ...] = tuple(_REGISTRY)


def get(name: str) -> Method:
    """The record of method `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return _REGISTRY[name]
