"""Fine-tune a causal LM with one of six methods on a frame or data file.

sft / dft: TRL SFTTrainer, loss_type "nll" / "dft", on (question, ground-truth solution);
rft:       the same NLL on self-generated responses with reward > 0;
dpo:       TRL DPOTrainer on the paper's pairs (chosen = the response if correct, else the ground truth);
rift / naive: an SFTTrainer whose loss is losses.rift_loss / losses.naive_loss on a per-sample reward.

Prompts are TRL conversational prompt/completion rows built with prompts.chat_messages, so the loss covers the
response tokens only. Checkpoints go to `<output>.work/` and a rerun resumes from the last one; the finished
model (HF model dir + tokenizer + rift_run.json) appears at `<output>` in one rename, never half-written.
Runs unchanged under `accelerate launch`.
"""
import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from transformers import TrainerCallback

from rift_core.io import read_table
from rift_core.losses import GRANULARITIES, fit_fused_head_to_cpu, naive_loss, rift_loss, token_logps
from rift_core.profiles import METHODS
from rift_core.prompts import chat_messages

PAPER_LR = {"sft": 1e-5, "dft": 1e-5, "rft": 1e-5, "dpo": 2e-6, "rift": 2e-6, "naive": 2e-6}
COLUMNS = {
    "sft": ("question", "solution"),
    "dft": ("question", "solution"),
    "rft": ("question", "response", "reward"),
    "rift": ("question", "response", "reward"),
    "naive": ("question", "response", "reward"),
    "dpo": ("question", "response", "correct", "solution"),
}
RUN_FILE = "rift_run.json"


@dataclass
class TrainConfig:
    method: str
    model: str  # local HF model dir (a hub id works when online)
    output_dir: str
    template: str = "qwen_cot"  # prompts.chat_messages template
    template_kwargs: dict = field(default_factory=dict)  # passed to the chat template, e.g. {"enable_thinking": False}
    learning_rate: float | None = None  # None: the paper's rate for the method (PAPER_LR)
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_epochs
    global_batch_size: int = 64  # per_device_batch_size x gradient accumulation x processes
    per_device_batch_size: int = 4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = 4096  # prompt + response tokens; longer rows are truncated at the end
    granularity: str = "token"  # rift / naive: token, sequence or sequence_geomean (see losses.py)
    beta: float = 0.1  # dpo
    precompute_ref_log_probs: bool = False  # dpo: score the reference once up front instead of keeping a copy
    reward_scheme: str | None = None  # recorded in rift_run.json
    dtype: str = "float32"  # dtype the weights load in: float32, bfloat16, float16 or auto
    bf16: bool = False  # bf16 autocast
    gradient_checkpointing: bool = False
    save_steps: int = 0  # checkpoint every n optimizer steps; 0: once per epoch
    resume: bool = True  # resume from <output>.work/ when it holds checkpoints of this same run
    seed: int = 0


def train(cfg: TrainConfig, data: pl.DataFrame | str | os.PathLike, callbacks=()) -> dict:
    """Train, write the checkpoint to cfg.output_dir, return the run summary (also saved as rift_run.json).

    `data` is a frame or a Parquet/JSONL path with the method's columns (COLUMNS). `callbacks` are extra
    transformers TrainerCallbacks (progress reporting, tests).
    """
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    if cfg.granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {cfg.granularity!r}; expected one of {', '.join(GRANULARITIES)}")
    source = str(data) if isinstance(data, (str, os.PathLike)) else "training frame"
    frame = read_table(data) if isinstance(data, (str, os.PathLike)) else data
    rows, notes = training_rows(cfg.method, frame, source)
    for note in notes:
        warnings.warn(f"{source}: {note}", stacklevel=2)
    data_hash = hashlib.sha256(rows.write_csv().encode()).hexdigest()[:16]
    dataset = _to_dataset(cfg, rows)

    output = Path(cfg.output_dir)
    work = output.with_name(output.name + ".work")
    run_key = {**_knobs(cfg), "data_hash": data_hash}
    resume_from = _prepare_work_dir(work, run_key, cfg.resume, get_last_checkpoint)

    if not torch.cuda.is_available():
        fit_fused_head_to_cpu()
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = cfg.dtype if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    monitor = _Monitor()
    trainer = _build_trainer(cfg, model, tokenizer, dataset, work, [monitor, *callbacks])
    if len(trainer.train_dataset) == 0:  # TRL drops rows whose prompt alone fills max_length
        raise ValueError(f"{source}: no row leaves room for a response within max_length={cfg.max_length} tokens")

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - start

    from accelerate.utils import gather_object

    rank_hashes = gather_object([_weights_hash(trainer.model)])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {
        "method": cfg.method,
        "model": cfg.model,
        "reward_scheme": cfg.reward_scheme,
        "data_source": source,
        "data_hash": data_hash,
        "rows": len(rows),
        "notes": notes,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "final_loss": losses[-1] if losses else None,
        "loss_history": losses,
        "learning_rate": trainer.args.learning_rate,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "processes": trainer.accelerator.num_processes,
        "weight_hash_per_rank": rank_hashes,
        "resumed_from": resume_from,
        "seconds": round(seconds, 3),
        "step_seconds_median": round(statistics.median(monitor.step_seconds), 4) if monitor.step_seconds else None,
        **_peak_memory(),
        "config": _knobs(cfg),
    }
    _publish(trainer, tokenizer, summary, output, work)
    return summary


def training_rows(method: str, frame: pl.DataFrame, source: str = "training frame") -> tuple[pl.DataFrame, list[str]]:
    """Validate `frame` for `method` and return the rows to train on plus notes on what was dropped or odd."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    missing = [c for c in COLUMNS[method] if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: method {method!r} needs column(s) {', '.join(missing)} (has: {', '.join(frame.columns)})"
        )
    rows = frame.select(COLUMNS[method]).with_row_index("row")
    if rows.is_empty():
        raise ValueError(f"{source}: no rows to train {method} on (empty buffer)")
    notes = []
    for column in ("question", "response", "reward", "correct"):
        if column in rows.columns:
            _reject(rows, pl.col(column).is_null(), source, f"column {column!r} is null")
    if "reward" in rows.columns:
        rows = rows.with_columns(pl.col("reward").cast(pl.Float64))
        _reject(rows, ~pl.col("reward").is_finite(), source, "column 'reward' is NaN or infinite")
    if "solution" in rows.columns:  # MATH seeds carry no worked solution: those rows have nothing to imitate
        empty = rows.filter(pl.col("solution").is_null() | (pl.col("solution").str.strip_chars() == ""))
        if len(empty):
            notes.append(f"dropped {len(empty)} of {len(rows)} rows with no 'solution'")
            rows = rows.join(empty.select("row"), on="row", how="anti")
        if rows.is_empty():
            raise ValueError(f"{source}: no row has a ground-truth 'solution', so {method} has nothing to train on")
    if method in ("sft", "dft"):  # a labels frame repeats each problem K times
        rows = rows.unique(["question", "solution"], keep="first", maintain_order=True)
    if method == "rft":
        rows = rows.filter(pl.col("reward") > 0)
        if rows.is_empty():
            raise ValueError(f"{source}: no row has reward > 0, so rft has no positive sample to train on")
    if method in ("rift", "naive"):
        positives, negatives = (rows["reward"] > 0).sum(), (rows["reward"] < 0).sum()
        if positives + negatives == 0:
            raise ValueError(f"{source}: every reward is 0, so {method} has no signal to train on")
        if positives == 0:
            notes.append("no positive rewards: the run only pushes probability down")
        if negatives == 0:
            notes.append("no negative rewards: the run is reward-weighted NLL on the positives")
    return rows.drop("row"), notes


def _reject(rows: pl.DataFrame, bad: pl.Expr, source: str, what: str) -> None:
    hits = rows.filter(bad)["row"].to_list()
    if hits:
        shown = ", ".join(map(str, hits[:10])) + (" ..." if len(hits) > 10 else "")
        raise ValueError(f"{source}: {what} in {len(hits)} row(s) (0-based rows {shown})")


def _to_dataset(cfg: TrainConfig, rows: pl.DataFrame):
    from datasets import Dataset

    def turn(text):
        return [{"role": "assistant", "content": text}]

    records = []
    for row in rows.iter_rows(named=True):
        rec = {"prompt": chat_messages(row["question"], cfg.template)}
        if cfg.method == "dpo":
            truth, response = turn(row["solution"]), turn(row["response"])
            rec["chosen"], rec["rejected"] = (response, truth) if row["correct"] else (truth, response)
        else:
            rec["completion"] = turn(row["solution"] if cfg.method in ("sft", "dft") else row["response"])
        if cfg.method in ("rift", "naive"):
            rec["reward"] = row["reward"]
        if cfg.template_kwargs:
            rec["chat_template_kwargs"] = cfg.template_kwargs
        records.append(rec)
    return Dataset.from_list(records)


def _build_trainer(cfg, model, tokenizer, dataset, work: Path, callbacks):
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    processes = _state().num_processes
    accumulation = max(1, cfg.global_batch_size // (cfg.per_device_batch_size * processes))
    common = dict(
        output_dir=str(work),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=PAPER_LR[cfg.method] if cfg.learning_rate is None else cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        max_length=cfg.max_length,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        save_strategy="steps" if cfg.save_steps else "epoch",
        save_steps=cfg.save_steps or 500,
        save_total_limit=1,
        logging_steps=1,
        logging_nan_inf_filter=False,  # the default hides a NaN loss from the logs, and so from _Monitor
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),  # also lets CPU ranks under torchrun join over gloo
    )
    if cfg.method == "dpo":
        args = DPOConfig(**common, beta=cfg.beta, precompute_ref_log_probs=cfg.precompute_ref_log_probs)
        # TRL would reload the reference from config._name_or_path; a copy works for any model
        ref = None if cfg.precompute_ref_log_probs else copy.deepcopy(model)
        return DPOTrainer(
            model, ref_model=ref, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
        )
    args = SFTConfig(**common, loss_type="dft" if cfg.method == "dft" else "nll", completion_only_loss=True)
    if cfg.method in ("sft", "dft", "rft"):
        return SFTTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    return _reward_trainer_class()(
        model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks,
        loss_fn=rift_loss if cfg.method == "rift" else naive_loss, granularity=cfg.granularity,
    )


def _reward_trainer_class():
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class RewardTrainer(SFTTrainer):
        """SFTTrainer that carries a per-sample `reward` column to a losses.py loss."""

        def __init__(self, *args, loss_fn, granularity, processing_class, **kwargs):
            self.loss_fn, self.granularity = loss_fn, granularity
            pad = DataCollatorForLanguageModeling(pad_token_id=processing_class.pad_token_id)

            def collate(examples):  # TRL's collator drops unknown columns such as `reward`
                return {**pad(examples), "reward": torch.tensor([e["reward"] for e in examples], dtype=torch.float32)}

            super().__init__(*args, processing_class=processing_class, data_collator=collate, **kwargs)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "reward"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rewards = inputs.pop("reward")
            logps, mask = token_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
            # num_items_in_batch counts response tokens over the whole accumulated batch (and every rank); the
            # sequence granularities normalise by samples instead
            num_items = num_items_in_batch
            if self.granularity != "token" and num_items_in_batch is not None:
                num_items = rewards.numel() * self.current_gradient_accumulation_steps
            loss = self.loss_fn(logps, mask, rewards, self.granularity, num_items=num_items)
            if self.granularity == "token" and self.args.average_tokens_across_devices and num_items is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
            return (loss, None) if return_outputs else loss

    return RewardTrainer


class _Monitor(TrainerCallback):
    """Stops the run on a non-finite loss or gradient (before the step is checkpointed) and times steps."""

    def __init__(self):
        self.step_seconds, self._t = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t is not None and state.global_step > 1:  # the first step pays for warm-up allocations
            self.step_seconds.append(time.perf_counter() - self._t)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise FloatingPointError(
                    f"non-finite {key} ({value}) at step {state.global_step}: training stopped and no final "
                    f"checkpoint was written; lower the learning rate or check the rewards"
                )


def _knobs(cfg: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("output_dir", "resume")}


def _prepare_work_dir(work: Path, run_key: dict, resume: bool, get_last_checkpoint) -> str | None:
    """The checkpoint to resume from, if `work` holds one of this same run; checkpoints of another run are refused."""
    key_file = work / "run_key.json"
    if work.exists() and not resume:
        _on_main(lambda: shutil.rmtree(work))
    last = get_last_checkpoint(str(work)) if work.exists() else None
    if last and key_file.exists() and json.loads(key_file.read_text()) != run_key:
        raise ValueError(
            f"{work} holds checkpoints of a different run (config or data changed); delete it or pass resume=False"
        )

    def write_key():
        work.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(run_key, indent=1, sort_keys=True))

    _on_main(write_key)
    return last


def _publish(trainer, tokenizer, summary: dict, output: Path, work: Path) -> None:
    """Write model, tokenizer and rift_run.json beside `output`, then rename into place."""
    tmp = output.with_name(f".{output.name}.tmp")
    _on_main(lambda: shutil.rmtree(tmp, ignore_errors=True))  # leftovers of a crash mid-publish
    trainer.save_model(str(tmp))  # every rank calls it; the main one writes

    def finish():
        tokenizer.save_pretrained(tmp)
        (tmp / RUN_FILE).write_text(json.dumps(summary, indent=1))
        old = output.with_name(f".{output.name}.old")
        if output.exists():
            os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    _on_main(finish)


def _state():
    """The process group; without a GPU, processes started by torchrun (`accelerate launch --multi_gpu`) join as
    CPU ranks over gloo, as TrainingArguments(use_cpu=True) sets it up again."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _on_main(fn) -> None:
    state = _state()
    if state.is_main_process:
        fn()
    state.wait_for_everyone()


def _weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _peak_memory() -> dict:
    if torch.cuda.is_available():
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_source": "cuda_max_allocated"}
    # Linux reports ru_maxrss in KiB: the process high-water mark, model loading included
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_source": "ru_maxrss"}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m rift_core train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="Parquet or JSONL file (or folder of Parquet parts)")
    parser.add_argument("--output", required=True, dest="output_dir", help="final checkpoint directory")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "output_dir":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.type is dict:
            parser.add_argument(flag, type=json.loads, default={}, help="JSON object")
        elif f.name in ("method", "model"):
            parser.add_argument(flag, required=True, **({"choices": METHODS} if f.name == "method" else {}))
        else:
            base = {int | None: int, float | None: float, str | None: str}.get(f.type, f.type)
            parser.add_argument(flag, type=_optional(base), default=f.default)
    args = vars(parser.parse_args(argv))
    data = args.pop("data")
    summary = train(TrainConfig(**args), data)
    if _state().is_main_process:
        json.dump({k: v for k, v in summary.items() if k != "loss_history"}, sys.stdout, indent=1)
        print()


def _optional(base):
    def parse(text: str):
        return None if text.lower() == "none" else base(text)

    parse.__name__ = base.__name__
    return parse
