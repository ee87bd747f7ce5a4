"""Fine-tune a causal LM with one of the methods in methods.py on a frame or data file.

sft / dft: TRL SFTTrainer, loss_type "nll" / "dft", on (question, ground-truth solution);
rft:       the same NLL on the correct self-generated responses;
dpo:       TRL DPOTrainer on the paper's pairs (chosen = the response if correct, else the ground truth), or with
           dpo_pairing="responses" on correct vs incorrect responses of the same problem;
rift / naive: rift_trainer.RIFTTrainer, losses.rift_loss / losses.naive_loss on a per-sample reward;
kto:       TRL KTOTrainer on unpaired responses labelled desirable when correct.

Prompts are TRL conversational prompt/completion rows built with prompts.chat_messages, so the loss covers the
response tokens only. Checkpoints go to `<output>.work/` and a rerun resumes from the last one; the finished
model (HF model dir + tokenizer + rift_run.json) appears at `<output>` in one rename, never half-written. One
run writes an output at a time: `<output>.lock` (locks.py) is held from start to publish. With save_epochs, each
epoch's weights go to `<output>.work/epoch-<n>/` (each in one rename) and move to `<output>/epoch-<n>/` on publish.
Runs unchanged under `accelerate launch`.
"""
import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import polars as pl
import torch
from transformers import TrainerCallback

from rift_core import locks, methods
from rift_core.collapse import EPOCH_FILE, EPOCH_PREFIX, epoch_dirs
from rift_core.io import read_table
from rift_core.losses import GRANULARITIES, fit_fused_head_to_cpu

RUN_FILE = "rift_run.json"


@dataclass
class TrainConfig:
    method: str = field(metadata={"help": "Training method (rift_core/methods.py).", "choices": list(methods.METHODS)})
    model: str = field(metadata={"help": "Local HF model dir (a hub id works when online)."})
    output_dir: str = field(metadata={"help": "Final checkpoint directory.", "aliases": ["--output"]})
    template: str = field(default="qwen_cot", metadata={"help": "Prompt template (prompts.chat_messages)."})
    template_kwargs: dict = field(default_factory=dict, metadata={
        "help": 'JSON object passed to the chat template, e.g. {"enable_thinking": false}.'})
    learning_rate: float | None = field(default=None, metadata={
        "help": "Peak learning rate; None: the paper's rate for the method (methods.py)."})
    num_epochs: float = field(default=3.0, metadata={"help": "Epochs over the training rows."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; > 0 overrides num_epochs."})
    global_batch_size: int = field(default=64, metadata={
        "help": "Rows per optimizer step: per_device_batch_size x gradient accumulation x processes."})
    per_device_batch_size: int = field(default=4, metadata={"help": "Rows per forward pass on each process."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers lr_scheduler_type."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    max_length: int | None = field(default=4096, metadata={
        "help": "Prompt + response tokens; longer rows are truncated at the end. None: no limit."})
    granularity: str = field(default="token", metadata={
        "help": "rift / naive: token, sequence or sequence_geomean (losses.py).", "choices": list(GRANULARITIES)})
    beta: float = field(default=0.1, metadata={"help": "dpo / kto: strength of the pull towards the reference model."})
    dpo_pairing: Literal[methods.DPO_PAIRINGS] = field(default="ground_truth", metadata={
        "help": "dpo: `ground_truth` (the paper's: each response against the ground-truth solution, the response "
                "chosen when correct) or `responses` (a correct against an incorrect response of the same problem); "
                "see methods.DPO_PAIRINGS."})
    precompute_ref_log_probs: bool = field(default=False, metadata={
        "help": "dpo / kto: score the reference once up front instead of keeping a copy of the model."})
    desirable_weight: float = field(default=1.0, metadata={"help": "kto: weight of the losses of correct samples."})
    undesirable_weight: float = field(default=1.0, metadata={"help": "kto: weight of the losses of wrong samples."})
    reward_scheme: str | None = field(default=None, metadata={"help": "Recorded in rift_run.json."})
    dtype: str = field(default="float32", metadata={
        "help": "dtype the weights load in: float32, bfloat16, float16 or auto."})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every n optimizer steps; 0: once per epoch."})
    save_epochs: bool = field(default=False, metadata={
        "help": "Keep each epoch's weights (model + tokenizer) in <output>/epoch-<n>/; the final ones stay in "
                "<output>."})
    resume: bool = field(default=True, metadata={
        "help": "Resume from <output>.work/ when it holds checkpoints of this same run."})
    report_to: str = field(default="none", metadata={
        "help": "Where the trainer logs: none, tensorboard, trackio, wandb (when installed)."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights' init, data order and dropout."})


def train(cfg: TrainConfig, data: pl.DataFrame | str | os.PathLike, callbacks=(),
          on_progress: Callable | None = None, wait_for_lock: bool = False) -> dict:
    """Train, write the checkpoint to cfg.output_dir, return the run summary (also saved as rift_run.json).

    `data` is a frame or a Parquet/JSONL path with the method's columns (methods.py). `callbacks` are extra
    transformers TrainerCallbacks. `on_progress(stage="train", done=, total=, loss=, learning_rate=,
    samples_per_s=, epoch=)` is called on each trainer log, on the main process only; the caller throttles.

    The main process holds the output's lock (locks.hold) for the whole run, over `<output>.work/` and `<output>`:
    a second run on the same output fails at once naming the holder, or with `wait_for_lock` waits for it.
    """
    with locks.hold(cfg.output_dir, wait=wait_for_lock) if process_state().is_main_process else contextlib.nullcontext():
        return _train(cfg, data, callbacks, on_progress)


def _train(cfg: TrainConfig, data, callbacks, on_progress) -> dict:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    method = methods.get(cfg.method)
    if cfg.granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {cfg.granularity!r}; expected one of {', '.join(GRANULARITIES)}")
    source = str(data) if isinstance(data, (str, os.PathLike)) else "training frame"
    frame = read_table(data) if isinstance(data, (str, os.PathLike)) else data
    rows, notes = method.rows(frame, source, **method.option_values(cfg))
    for note in notes:
        warnings.warn(f"{source}: {note}", stacklevel=3)  # the caller of train()
    data_hash = hashlib.sha256(rows.write_csv().encode()).hexdigest()[:16]
    dataset = Dataset.from_list([method.record(row, cfg.template, cfg.template_kwargs)
                                 for row in rows.iter_rows(named=True)])

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
    progress = [_Progress(on_progress)] if on_progress else []
    trainer = _build_trainer(cfg, method, model, tokenizer, dataset, work, [monitor, *progress, *callbacks])
    if cfg.save_epochs:
        trainer.add_callback(_EpochSaver(trainer, work))
    if len(trainer.train_dataset) == 0:  # TRL drops rows whose prompt alone fills max_length
        raise ValueError(f"{source}: no row leaves room for a response within max_length={cfg.max_length} tokens")

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - start

    from accelerate.utils import gather_object

    rank_hashes = gather_object([_weights_hash(trainer.model)])
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
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
        "epoch_loss": epoch_losses(trainer.state.log_history),  # mean logged loss of epoch 1, 2, ...
        "saved_epochs": [n for n, _ in epoch_dirs(work)],  # epochs whose weights are in <output>/epoch-<n>/
        "learning_rate": trainer.args.learning_rate,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "processes": trainer.accelerator.num_processes,
        "effective_batch_size": trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
        * trainer.accelerator.num_processes,  # rows per optimizer step; global_batch_size unless warned otherwise
        "weight_hash_per_rank": rank_hashes,
        "resumed_from": resume_from,
        "seconds": round(seconds, 3),
        "step_seconds_median": round(statistics.median(monitor.step_seconds), 4) if monitor.step_seconds else None,
        **_peak_memory(),
        "config": _knobs(cfg),
    }
    _publish(trainer, tokenizer, summary, output, work)
    return summary


def _build_trainer(cfg: TrainConfig, method: methods.Method, model, tokenizer, dataset, work: Path, callbacks):
    trainer_class, config_class = method.classes()
    processes = process_state().num_processes
    accumulation = effective_accumulation(cfg.global_batch_size, cfg.per_device_batch_size, processes)
    args = config_class(
        output_dir=str(work),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=method.learning_rate if cfg.learning_rate is None else cfg.learning_rate,
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
        logging_steps=1,  # every step's loss: loss_history, and epoch_loss has one per epoch
        logging_nan_inf_filter=False,  # the default hides a NaN loss from the logs, and so from _Monitor
        report_to=cfg.report_to,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),  # also lets CPU ranks under torchrun join over gloo
        **method.config_kwargs,
        **{name: getattr(cfg, name) for name in method.passthrough},
    )
    extra = {}
    if method.reference:  # TRL would reload the reference from config._name_or_path; a copy works for any model
        extra["ref_model"] = None if cfg.precompute_ref_log_probs else copy.deepcopy(model)
    return trainer_class(model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks,
                         **extra)


def effective_accumulation(global_batch_size: int, per_device_batch_size: int, processes: int) -> int:
    """Gradient accumulation steps that make per_device x accumulation x processes = global_batch_size; warns,
    naming the numbers, when no whole number does (the run then steps on another batch size than configured)."""
    per_pass = per_device_batch_size * processes
    accumulation = max(1, global_batch_size // per_pass)
    if per_pass * accumulation != global_batch_size:
        warnings.warn(
            f"global_batch_size={global_batch_size} is not a multiple of per_device_batch_size={per_device_batch_size}"
            f" x {processes} process(es) = {per_pass}: each optimizer step sees {per_pass * accumulation} rows "
            f"({per_device_batch_size} x {accumulation} accumulation x {processes}), not {global_batch_size}; "
            f"pick a per-device batch or a process count that divides it", stacklevel=3)
    return accumulation


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


class _Progress(TrainerCallback):
    """Calls on_progress(stage="train", done=, total=, loss=, learning_rate=, samples_per_s=, epoch=) on each log."""

    def __init__(self, on_progress: Callable):
        self.on_progress, self._start = on_progress, None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._start is None:  # here, not on_train_begin: a resumed run has restored its step by now
            self._start = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        t0, step0 = self._start or (time.perf_counter(), state.global_step)
        seconds = time.perf_counter() - t0
        samples = (state.global_step - step0) * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.on_progress(stage="train", done=state.global_step, total=state.max_steps,
                         loss=logs.get("loss", logs.get("train_loss")), learning_rate=logs.get("learning_rate"),
                         samples_per_s=samples / seconds if seconds > 0 else None, epoch=state.epoch)


class _EpochSaver(TrainerCallback):
    """Saves the weights (model + tokenizer + epoch.json) after each epoch to `<work>/epoch-<n>/`: written to a
    temporary folder, then renamed into place (replacing the folder of an epoch that a resumed run redid).

    Saves in on_step_end of an epoch's last optimizer step (or of the run's last step, inside epoch n when
    max_steps cuts it short), which comes before that step's checkpoint: every checkpoint a run can resume from
    has the folders of the epochs it completed, and those stay. Every rank calls save_model (FSDP and DeepSpeed
    gather the weights there); the main process writes."""

    def __init__(self, trainer, work: Path):
        self.trainer, self.work = trainer, work

    def on_step_end(self, args, state, control, **kwargs):
        if abs(state.epoch - round(state.epoch)) > 1e-9 and state.global_step < state.max_steps:
            return
        n = math.ceil(state.epoch - 1e-9)
        final, tmp = self.work / f"{EPOCH_PREFIX}{n}", self.work / f".{EPOCH_PREFIX}{n}.tmp"
        _on_main(lambda: shutil.rmtree(tmp, ignore_errors=True))
        self.trainer.save_model(str(tmp))

        def finish():
            self.trainer.processing_class.save_pretrained(tmp)
            (tmp / EPOCH_FILE).write_text(json.dumps({"epoch": n, "step": state.global_step}))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)

        _on_main(finish)


def epoch_losses(log_history: list[dict]) -> list[float]:
    """Mean of the logged step losses of each epoch (1, 2, ...): a loss logged at fractional epoch e belongs to
    epoch ceil(e). An epoch with no logged loss gets NaN."""
    by_epoch: dict[int, list[float]] = {}
    for entry in log_history:
        if "loss" in entry and "epoch" in entry:
            by_epoch.setdefault(max(1, math.ceil(entry["epoch"] - 1e-9)), []).append(float(entry["loss"]))
    return [statistics.fmean(by_epoch[n]) if n in by_epoch else math.nan
            for n in range(1, max(by_epoch, default=0) + 1)]


def _knobs(cfg: TrainConfig) -> dict:  # what decides the weights; where logs and epoch copies go does not
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("output_dir", "resume", "report_to", "save_epochs")}


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
        for _, folder in epoch_dirs(work):
            os.replace(folder, tmp / folder.name)
        (tmp / RUN_FILE).write_text(json.dumps(summary, indent=1))
        old = output.with_name(f".{output.name}.old")
        if output.exists():
            os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    _on_main(finish)


def process_state():
    """The process group; without a GPU, processes started by torchrun (`accelerate launch --multi_gpu`) join as
    CPU ranks over gloo, as TrainingArguments(use_cpu=True) sets it up again."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _on_main(fn) -> None:
    state = process_state()
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
