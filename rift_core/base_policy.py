"""The small base policy of the embedded task: a Qwen2 trained from scratch on the `warmup` split until it is as
unsure as the paper's starting models (calibration), cached under a key of everything it depends on."""
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from rift_core import toy_task
from rift_core.generation import GenerationConfig, generate_rollouts
from rift_core.io import tmp_beside
from rift_core.prompts import render_prompt
from rift_core.toy_tokenizer import CHATML, build_tokenizer, corpus

@dataclass
class ToyConfig:
    """Base-policy settings; all of them (and the warm-up text) make the policy's cache key.

    The policy trains until it enters the regime the paper targets, measured every `check_every` steps
    (from `min_steps` on) by sampling `check_k` answers to each of `check_problems` problems of the held-out
    `calibration` split: it stops at the first check with %Pos within `target_pos` and %Mixed >=
    `target_mixed_min`, and fails after `max_steps`. A fixed step count sits on a knife edge where float
    noise (CPU kernels, thread count) decides the regime (benchmarks/results/tiny.md).
    """

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    batch: int = 32
    lr: float = 2e-3
    n_warmup: int = 32_000  # warm-up problems (when steps reached x batch is below this, none is seen twice)
    seed: int = 0
    bf16: bool = True  # bf16 autocast: measured 1.2x faster than fp32 on this CPU
    target_pos: tuple[float, float] = (0.35, 0.65)  # share of correct samples, inclusive bounds
    target_mixed_min: float = 0.55  # share of problems whose samples are neither all right nor all wrong
    check_every: int = 25
    min_steps: int = 0  # no check before this step (an untrained policy is far from the target)
    max_steps: int = 1500  # give up (CalibrationError) when no check up to here is inside the target
    check_problems: int = 64
    check_k: int = 8  # K, temperature, top-p and length of the check: those the profile's rollouts use
    check_temperature: float = 0.7
    check_top_p: float = 1.0
    check_max_new_tokens: int = 96
    steps: int = 0  # > 0: train exactly this many steps, with no calibration (tests, uncalibrated policies)

    def __post_init__(self):
        self.target_pos = tuple(float(x) for x in self.target_pos)
        lo, hi = self.target_pos if len(self.target_pos) == 2 else (1, 0)
        checks = {"target_pos": 0 <= lo <= hi <= 1, "target_mixed_min": 0 <= self.target_mixed_min <= 1,
                  "check_every": self.check_every >= 1, "max_steps": self.max_steps >= 1,
                  "check_problems": self.check_problems >= 1, "check_k": self.check_k >= 1, "steps": self.steps >= 0}
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid ToyConfig: {', '.join(bad)}")


class CalibrationError(RuntimeError):
    """The base policy never entered the target regime within its step budget."""


def in_target(pos: float, mixed: float, cfg: ToyConfig) -> bool:
    lo, hi = cfg.target_pos
    return lo <= pos <= hi and mixed >= cfg.target_mixed_min


def train_to_target(advance, measure, cfg: ToyConfig, on_check=None) -> dict:
    """Call `advance(n)` (train n more steps) and, every `cfg.check_every` steps from `cfg.min_steps` on,
    `measure(step) -> (pos, mixed)`; stop at the first check inside the target.

    Returns {"step", "pos", "mixed", "checks": [{"step", "pos", "mixed"}, ...]}; raises CalibrationError
    once `cfg.max_steps` steps are done without a check inside the target.
    """
    checks, step = [], 0
    first = max(cfg.check_every, cfg.min_steps)
    while step < cfg.max_steps:
        nxt = first if step < first else step + cfg.check_every
        nxt = min(nxt, cfg.max_steps)
        advance(nxt - step)
        step = nxt
        pos, mixed = measure(step)
        checks.append({"step": step, "pos": pos, "mixed": mixed})
        if on_check is not None:
            on_check(checks[-1])
        if in_target(pos, mixed, cfg):
            return {"step": step, "pos": pos, "mixed": mixed, "checks": checks}
    lo, hi = cfg.target_pos
    seen = "; ".join(f"step {c['step']}: %Pos {c['pos']:.1%} %Mixed {c['mixed']:.1%}" for c in checks)
    raise CalibrationError(
        f"toy base policy: no check inside the target (%Pos {lo:.0%}-{hi:.0%}, %Mixed >= {cfg.target_mixed_min:.0%}, "
        f"{cfg.check_problems} calibration problems x K={cfg.check_k}) within max_steps={cfg.max_steps}. "
        f"Checks: {seen or 'none'}. Raise max_steps, check more often (check_every), widen the target or "
        "change lr / seed.")


def measure_regime(model_dir: str | os.PathLike, cfg: ToyConfig) -> tuple[float, float]:
    """(%Pos, %Mixed) as fractions of the policy in `model_dir` on the calibration split, sampled with the
    pipeline's sampler (rift_core.generation) and graded by exact match of the last \\boxed{} number."""
    calib = toy_task.problems("calibration", cfg.check_problems, cfg.seed)
    gen = GenerationConfig(k=cfg.check_k, temperature=cfg.check_temperature, top_p=cfg.check_top_p,
                           max_new_tokens=cfg.check_max_new_tokens, seed=cfg.seed, batch_size=512,
                           chunk_problems=max(1, calib.height))
    rollouts = generate_rollouts(calib, str(model_dir), gen, progress=False)
    graded = rollouts.select("problem_id", correct=pl.Series([
        toy_task.last_boxed(r) == a for r, a in zip(rollouts["response"], rollouts["answer"])]))
    per = graded.group_by("problem_id").agg(pl.col("correct").mean())["correct"]
    return float(graded["correct"].mean()), float(((per > 0) & (per < 1)).mean())


def _encode(tok, frame: pl.DataFrame) -> list[tuple[list[int], int]]:
    """(prompt + solution + eos token ids, prompt length) per problem."""
    prompts = [render_prompt(tok, q) for q in frame["question"]]
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tok([s + tok.eos_token for s in frame["solution"]], add_special_tokens=False)["input_ids"]
    return [(p + c, len(p)) for p, c in zip(p_ids, c_ids)]


def _batch(examples, pad_id):
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    for row, (seq, n_prompt) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])  # loss on the answer only
    return ids, labels, (ids != pad_id).long()


def train_base_policy(out_dir: str | os.PathLike, cfg: ToyConfig, progress: bool = True, save_at=(),
                      measure=None) -> dict:
    """Train a Qwen2 from scratch on the warm-up split and save model + tokenizer to `out_dir`.

    With `cfg.steps` > 0 it trains exactly that many steps; otherwise until a check is inside the target
    (train_to_target; `measure(model_dir) -> (pos, mixed)`, default measure_regime). Returns the calibration
    record (step reached, %Pos / %Mixed of that check, all checks, torch version and threads).
    `save_at` lists steps after which to also save `out_dir/step-N` (with a constant rate, the policy saved
    at step N equals the one trained for exactly N steps).
    """
    import torch
    from tqdm import tqdm
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir)
    data = _encode(tok, toy_task.problems("warmup", cfg.n_warmup, cfg.seed))
    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.98))
    budget = cfg.steps or cfg.max_steps
    warm = min(25, max(1, budget // 10))
    # Linear warm-up, then constant: the policy stops where a longer run would pass through, still unsure
    # (decaying the rate instead delayed the jump in arithmetic accuracy past the end of training).

    def lr_at(step):
        return cfg.lr * min(1.0, (step + 1) / warm)

    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(data), generator=gen).tolist()
    model.train()
    bar = tqdm(total=budget, desc="toy base policy", disable=not progress)
    per_epoch = max(1, len(data) // cfg.batch)
    state = {"step": 0, "order": order, "ahead": 0}  # ahead: steps trained while the last check ran

    def train_step() -> None:
        step = state["step"]
        if step and step % per_epoch == 0:
            state["order"] = torch.randperm(len(data), generator=gen).tolist()
        start = (step % per_epoch) * cfg.batch
        ids, labels, mask = _batch([data[i] for i in state["order"][start : start + cfg.batch]], tok.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
        state["step"] = step + 1
        if step + 1 in save_at:
            _save(model, tok, out_dir / f"step-{step + 1}")

    def advance(n: int) -> None:
        for _ in range(n - state["ahead"]):
            train_step()
        state["ahead"] = 0

    check_dir = out_dir / ".check"
    # With a core to spare, a check samples in a process of its own (same thread count, so the same samples)
    # while training goes on; a check inside the target then puts the weights back to the step it measured.
    overlap = measure is None and cfg.steps == 0 and (os.cpu_count() or 1) > torch.get_num_threads()
    checker = _checker(torch.get_num_threads()) if overlap else None

    def measure_at(step: int) -> tuple[float, float]:
        _save(model, tok, check_dir)
        if checker is None:
            with torch.random.fork_rng():  # sampling leaves the training's random state as it was
                return (measure or measure_regime)(check_dir, cfg)
        check = checker.submit(measure_regime, check_dir, cfg)
        while not check.done() and state["ahead"] < cfg.check_every and state["step"] < cfg.max_steps:
            train_step()
            state["ahead"] += 1
        pos, mixed = check.result()
        if state["ahead"] and in_target(pos, mixed, cfg):
            model.load_state_dict(Qwen2ForCausalLM.from_pretrained(check_dir).state_dict())
        return pos, mixed

    def on_check(c):
        bar.write(f"toy base policy: step {c['step']}: %Pos {c['pos']:.1%} %Mixed {c['mixed']:.1%}")

    record = {"torch_version": torch.__version__, "threads": torch.get_num_threads()}
    try:
        if cfg.steps:
            advance(cfg.steps)
            record.update(step=cfg.steps, pos=None, mixed=None, checks=[], calibrated=False)
        else:
            result = train_to_target(advance, measure_at, cfg, on_check if progress else None)
            record.update(result, calibrated=True, discarded_steps=state["step"] - result["step"])
    finally:
        bar.close()
        if checker is not None:
            checker.shutdown(cancel_futures=True)
        shutil.rmtree(check_dir, ignore_errors=True)
    record.update(target_pos=list(cfg.target_pos), target_mixed_min=cfg.target_mixed_min,
                  check_problems=cfg.check_problems, check_k=cfg.check_k)
    _save(model, tok, out_dir)
    return record


def _checker(threads: int):
    """One spawned process for calibration checks, with the training's torch thread count."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_set_threads,
                               initargs=(threads,))


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _save(model, tok, path: Path) -> None:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)


CALIBRATION_FILE = "calibration.json"  # in the policy's folder: step, pos, mixed, checks, torch_version, threads


def read_calibration(policy_dir: str | os.PathLike) -> dict | None:
    """The calibration record ensure_base_policy left in `policy_dir` (None for a policy without one)."""
    path = Path(policy_dir) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.exists() else None


def policy_key(cfg: ToyConfig) -> str:
    """Hash of everything the base policy depends on: settings, vocabulary and the warm-up text itself."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(json.dumps(corpus()).encode())
    h.update(CHATML.encode())
    for q, s in toy_task.problems("warmup", cfg.n_warmup, cfg.seed).select("question", "solution").iter_rows():
        h.update(f"{q}\0{s}\0".encode())
    return h.hexdigest()[:16]


def ensure_base_policy(out_dir: str | os.PathLike, progress: bool = True, **toy_cfg) -> Path:
    """Path of the base policy for `toy_cfg` under `out_dir`, training it only if it is not there yet."""
    unknown = sorted(set(toy_cfg) - set(ToyConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown toy setting(s) {', '.join(unknown)}; known: {', '.join(ToyConfig.__dataclass_fields__)}")
    cfg = ToyConfig(**toy_cfg)
    final = Path(out_dir) / f"toy-base-{policy_key(cfg)}"
    if (final / "config.json").exists():
        return final
    tmp = tmp_beside(final)
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    try:
        record = train_base_policy(tmp, cfg, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = round(time.time() - t0, 1)
    (tmp / "toy_config.json").write_text(json.dumps({**asdict(cfg), "train_seconds": seconds}))
    (tmp / CALIBRATION_FILE).write_text(json.dumps({**record, "train_seconds": seconds}, indent=2))
    try:
        os.replace(tmp, final)  # atomic: a crash leaves no half-written policy under the final name
    except OSError:  # another process finished the same policy first
        shutil.rmtree(tmp, ignore_errors=True)
    return final
