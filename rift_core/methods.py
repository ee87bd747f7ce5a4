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

# How DPO forms its (chosen, rejected) pairs (TrainConfig.dpo_pairing):
# - "ground_truth" (the paper's): every response against the problem's ground-truth solution; the response is chosen
#   when it is correct, the ground truth otherwise. K pairs per problem; needs worked solutions.
# - "responses": a correct against an incorrect response of the same problem, every response in at least one pair
#   (max(#correct, #incorrect) pairs, cycling through the smaller side); problems whose samples are all correct or
#   all incorrect give no pair. No ground truth needed: the preference data of on-policy DPO variants.
DPO_PAIRINGS = ("ground_truth", "responses")


class NothingToTrain(ValueError):
    """The data holds nothing this method can learn from (no positive sample for RFT, no solution for SFT, ...).
    Not a bug in the data: the run cannot happen, and the message says why and what would change it."""


@dataclass(frozen=True)
class Method:
    name: str
    columns: tuple[str, ...]  # the training frame's columns (docs/ARCHITECTURE.md)
    learning_rate: float  # the paper's default rate
    trainer: str  # "module:Class" of the TRL-style trainer
    config: str  # "module:Class" of its config
    select: Callable  # (name, rows, source, **options) -> (rows, notes): which validated rows train, and how
    completion: Callable  # row -> the method's part of a TRL record (completion, reward, chosen/rejected, label)
    config_kwargs: dict = field(default_factory=dict)  # fixed settings of the config for this method
    passthrough: tuple[str, ...] = ()  # TrainConfig fields the config takes under the same name
    options: tuple[str, ...] = ()  # TrainConfig fields that decide which rows train: `select` takes them by name
    reference: bool = False  # the trainer compares with a frozen copy of the model (DPO, KTO)
    from_solutions: bool = False  # trains on the problems' ground-truth solutions, not on the labelled rollouts

    def buffer_rows(self, problems: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
        """The training frame for this method from the problems and the labelled rollout buffer."""
        if self.from_solutions:
            return problems.filter(pl.col("solution").is_not_null()).select("problem_id", *self.columns)
        if "solution" in self.columns:  # DPO pairs each response with the ground-truth solution
            labels = labels.join(problems.select("problem_id", "solution"), on="problem_id", how="left")
        return labels.select("problem_id", "sample_idx", *self.columns)

    def rows(self, frame: pl.DataFrame, source: str = "training frame", **options) -> tuple[pl.DataFrame, list[str]]:
        """Validate `frame` and return the rows to train on plus notes on what was dropped or odd. `options` are
        the method's `options` (e.g. dpo_pairing); `option_values(cfg)` reads them from a TrainConfig. Raises
        NothingToTrain when no row is left to learn from."""
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"method {self.name!r} takes no option {', '.join(sorted(unknown))} "
                             f"(its options: {', '.join(self.options) or 'none'})")
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{source}: method {self.name!r} needs column(s) {', '.join(missing)} "
                             f"(has: {', '.join(frame.columns)})")
        rows = frame.select(self.columns).with_row_index("row")
        if rows.is_empty():
            raise NothingToTrain(f"{source}: no rows to train {self.name} on (empty buffer)")
        for column in self.columns:
            if column != "solution":  # a missing solution drops its row where a method needs one (_with_solutions)
                _reject(rows, pl.col(column).is_null(), source, f"column {column!r} is null")
        if "reward" in rows.columns:
            rows = rows.with_columns(pl.col("reward").cast(pl.Float64))
            _reject(rows, ~pl.col("reward").is_finite(), source, "column 'reward' is NaN or infinite")
        rows, notes = self.select(self.name, rows, source, **options)
        return rows.drop("row", strict=False), notes

    def option_values(self, cfg) -> dict:
        """The method's options as set in `cfg` (a TrainConfig), for `rows`."""
        return {name: getattr(cfg, name) for name in self.options}

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

def _with_solutions(name, rows, source):
    """The rows that have a ground-truth solution (a seed set may carry none: nothing to imitate then)."""
    solution = pl.col("solution").cast(pl.String)  # a column of nulls only reads as dtype Null
    empty = rows.filter(solution.is_null() | (solution.str.strip_chars() == ""))
    notes = [f"dropped {len(empty)} of {len(rows)} rows with no 'solution'"] if len(empty) else []
    if len(empty) == len(rows):
        raise NothingToTrain(f"{source}: no row has a ground-truth 'solution', so {name} has nothing to train on")
    return rows.join(empty.select("row"), on="row", how="anti", maintain_order="left"), notes


def _unique_solutions(name, rows, source):  # a labels frame repeats each problem K times
    rows, notes = _with_solutions(name, rows, source)
    return rows.unique(["question", "solution"], keep="first", maintain_order=True), notes


def _correct(name, rows, source):
    """RFT's positives: the correct samples. Decided on `correct`, not on the reward's sign: under the gaussian and
    gpg_mean schemes every sample of an all-correct problem has reward 0, and those are positives all the same."""
    kept = rows.filter(pl.col("correct"))
    if kept.is_empty():
        raise NothingToTrain(
            f"{source}: none of the {len(rows)} samples is correct, so {name} has no positive sample to train on "
            f"(it trains on correct responses only; a stronger base model, more samples per problem or easier seed "
            f"problems give it some)")
    return kept, []


def _reward_signal(name, rows, source):
    positives, negatives = (rows["reward"] > 0).sum(), (rows["reward"] < 0).sum()
    if positives + negatives == 0:
        raise NothingToTrain(f"{source}: every reward is 0, so {name} has no signal to train on")
    notes = ["no positive rewards: the run only pushes probability down"] if positives == 0 else []
    if negatives == 0:
        notes.append("no negative rewards: the run is reward-weighted NLL on the positives")
    zeros = len(rows) - positives - negatives
    if zeros:  # e.g. the problems whose samples all agree, under the gaussian and gpg_mean schemes
        notes.append(f"{zeros} of {len(rows)} rows have reward 0: no gradient, and not counted in the loss's "
                     f"divisor (losses.py)")
    return rows, notes


def _pairs(name, rows, source, dpo_pairing: str = "ground_truth"):
    """(question, chosen, rejected) rows; see DPO_PAIRINGS."""
    if dpo_pairing == "ground_truth":
        rows, notes = _with_solutions(name, rows, source)
        right = pl.col("correct")
        return rows.select("question", pl.when(right).then("response").otherwise("solution").alias("chosen"),
                           pl.when(right).then("solution").otherwise("response").alias("rejected")), notes
    if dpo_pairing != "responses":
        raise ValueError(f"unknown dpo_pairing {dpo_pairing!r}; expected one of {', '.join(DPO_PAIRINGS)}")
    pairs, problems = [], 0
    for (question,), group in rows.group_by("question", maintain_order=True):
        right = group.filter(pl.col("correct"))["response"].to_list()
        wrong = group.filter(~pl.col("correct"))["response"].to_list()
        problems += 1
        if right and wrong:
            pairs += [(question, right[i % len(right)], wrong[i % len(wrong)]) for i in range(max(len(right), len(wrong)))]
    if not pairs:
        raise NothingToTrain(
            f"{source}: no problem has both a correct and an incorrect response, so {name} with "
            f"dpo_pairing='responses' has no pair to train on (dpo_pairing='ground_truth', the paper's, pairs each "
            f"response with the ground-truth solution instead)")
    frame = pl.DataFrame(pairs, schema=["question", "chosen", "rejected"], orient="row")
    paired = frame["question"].n_unique()
    notes = [f"{len(pairs)} pairs of a correct and an incorrect response from {paired} of {problems} problems"
             + (f"; the other {problems - paired} have only correct or only incorrect samples" if paired < problems else "")]
    return frame, notes


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


def _pair(row):  # the pairs _pairs formed
    return {"chosen": _turn(row["chosen"]), "rejected": _turn(row["rejected"])}


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
    Method("rft", ("question", "response", "correct"), 1e-5, **_SFT, select=_correct, completion=_response,
           config_kwargs={"loss_type": "nll", "completion_only_loss": True}),
    Method("dpo", ("question", "response", "correct", "solution"), 2e-6, trainer="trl:DPOTrainer",
           config="trl:DPOConfig", select=_pairs, completion=_pair, passthrough=("beta", "precompute_ref_log_probs"),
           reference=True, options=("dpo_pairing",)),
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
