"""RIFT as a TRL trainer: SFTTrainer's prompt-completion data plus a per-sample `reward` column.

    from datasets import Dataset
    from rift_core import RIFTConfig, RIFTTrainer

    dataset = Dataset.from_list([  # prompts/completions may also be conversational message lists
        {"prompt": "What is 2 + 3? ", "completion": "\\boxed{5}", "reward": 1.0},
        {"prompt": "What is 2 + 3? ", "completion": "\\boxed{6}", "reward": -0.2},
    ])  # or a bool `correct` column instead of `reward`: rewards then follow args.reward_scheme per prompt
    args = RIFTConfig("rift-out", learning_rate=2e-6, granularity="token")  # reward_loss="naive" for the baseline
    trainer = RIFTTrainer(model="Qwen/Qwen2.5-Math-1.5B", args=args, train_dataset=dataset)
    trainer.train()

The loss is losses.rift_loss (or losses.naive_loss) on the response tokens, normalised like TRL's NLL, so with
every reward equal to 1 it trains exactly as SFTTrainer does.
"""
import json
from dataclasses import dataclass, field

import torch
from trl import SFTConfig, SFTTrainer

from rift_core.losses import GRANULARITIES, divisor, naive_loss, rift_loss, token_logps
from rift_core.schemes import SCHEMES

REWARD_LOSSES = {"rift": rift_loss, "naive": naive_loss}


@dataclass
class RIFTConfig(SFTConfig):
    """SFTConfig plus the reward-weighted loss's settings; every SFTConfig field works as in SFTTrainer."""

    reward_loss: str = field(default="rift", metadata={
        "help": "`rift`: -r log p for r > 0, -r p for r < 0 (bounded); `naive`: -r log p for every sample "
                "(unbounded below once r < 0, paper Theorem 3.2).",
        "choices": list(REWARD_LOSSES)})
    granularity: str = field(default="token", metadata={
        "help": "`token`: one term per response token; `sequence`: one per sample (exp of the summed log-prob "
                "underflows on long responses); `sequence_geomean`: one per sample, length-normalised "
                "(see rift_core/losses.py).",
        "choices": list(GRANULARITIES)})
    reward_scheme: str = field(default="constant", metadata={
        "help": "How rewards come from a bool `correct` column when the dataset has no `reward` column, the samples "
                "of one prompt forming a group (rift_core/rewards.py).",
        "choices": list(SCHEMES)})
    r_pos: float = field(default=1.0, metadata={"help": "Reward of a correct sample under `reward_scheme`."})
    r_neg: float = field(default=-0.2, metadata={"help": "Reward of a wrong sample under `reward_scheme`."})

    def __post_init__(self):
        super().__post_init__()
        for name, value, known in (("reward_loss", self.reward_loss, REWARD_LOSSES),
                                   ("granularity", self.granularity, GRANULARITIES),
                                   ("reward_scheme", self.reward_scheme, SCHEMES)):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(known)}")


class RIFTTrainer(SFTTrainer):
    """SFTTrainer whose loss weights each sample's response tokens by its reward (losses.py)."""

    def __init__(self, model, args: RIFTConfig | None = None, train_dataset=None, eval_dataset=None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = RIFTConfig(f"{name.split('/')[-1]}-RIFT")
        if not isinstance(args, RIFTConfig):
            raise TypeError(f"RIFTTrainer takes a RIFTConfig (SFTConfig plus the loss settings), got {type(args).__name__}")
        train_dataset = _with_rewards(train_dataset, args)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: _with_rewards(d, args) for k, d in eval_dataset.items()}
        else:
            eval_dataset = _with_rewards(eval_dataset, args)
        super().__init__(model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        pad = self.data_collator

        def collate(examples):  # TRL's collator drops the columns it does not know, `reward` among them
            return {**pad(examples), "reward": torch.tensor([e["reward"] for e in examples], dtype=torch.float32)}

        self.data_collator = collate

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, "reward"]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The accumulated micro-batches and what the loss divides by over all of them (and every rank): response
        tokens, or samples for the sequence granularities, of the samples whose reward is not 0 (losses.divisor).
        The Trainer's own count is every label token, reward-0 samples included."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if num_items is None or not batches:  # the Trainer then scales the loss by the accumulation steps itself
            return batches, num_items
        count = sum(divisor(b["labels"][..., 1:] != -100, b["reward"], self.args.granularity) for b in batches)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count.to(device)).sum()
        return batches, count.to(device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = inputs.pop("reward")
        logps, mask = token_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        # num_items_in_batch: the divisor over the whole accumulated batch and every rank (get_batch_samples)
        loss = REWARD_LOSSES[self.args.reward_loss](logps, mask, rewards, self.args.granularity,
                                                    num_items=num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
        return (loss, None) if return_outputs else loss


def _with_rewards(dataset, args: RIFTConfig):
    """`dataset` with a `reward` column, derived from `correct` under args.reward_scheme when it has none."""
    columns = getattr(dataset, "column_names", None) or []
    if dataset is None or "reward" in columns:
        return dataset
    if "correct" not in columns:
        raise ValueError(f"RIFTTrainer needs a float 'reward' column, or a bool 'correct' column to derive rewards "
                         f"from with args.reward_scheme (dataset columns: {', '.join(columns)})")
    # Only here: rewards needs polars and math-verify, which a machine that only trains (gpu_check.sh) lacks.
    import polars as pl

    from rift_core.rewards import assign_rewards

    groups = pl.DataFrame({"problem_id": [json.dumps(p, sort_keys=True) for p in dataset["prompt"]],
                           "correct": [bool(c) for c in dataset["correct"]]})
    rewards = assign_rewards(groups, args.reward_scheme, args.r_pos, args.r_neg)["reward"]
    return dataset.add_column("reward", rewards.to_list())
