"""Paper Table 7 on one GPU: peak training memory and step time per method, in one go.

Run it through `benchmarks/gpu_check.sh` (which installs TRL offline and writes the results file); by hand:
    python benchmarks/gpu_table7.py --out results.md [--variants fp32,fp32+gc,bf16] [--batch 4]
                                    [--response-chars 1000] [--steps 6] [--methods sft,rift] [--deadline-s 390]
    python benchmarks/gpu_table7.py --tiny --out results.md   # CPU dry run at toy shapes: proves the plumbing only

What runs: a randomly initialised Qwen2 with Qwen2.5-Math-1.5B's shapes (hidden 1536, 28 layers, 12 heads / 2 KV
heads, intermediate 8960, vocab 151,936, tied embeddings; 1.54B parameters), built straight on the GPU (no disk),
trains each method (sft, dft, rft, dpo, rift, naive, kto), each in its own process, for a few optimizer steps of
`--batch` rows, with bf16 autocast, in each of the VARIANTS: `fp32` fp32 master weights (and fp32 gradients and
AdamW state); `fp32+gc` the same with gradient checkpointing, as the paper profile trains; `bf16` weights (and
gradients and AdamW state) in bf16. Rows: bench_memory.batch_rows, half correct (reward +1) and half wrong (-0.2),
the ground-truth solution equal to the response, so every method sees the same tokens (DPO twice, chosen and
rejected); the tokenizer is byte-level, so a ~1,000-character response is ~1,000 tokens (+ ~110 prompt tokens).
Memory: torch.cuda.max_memory_allocated (and max_memory_reserved) from just before train() to its end: weights,
gradients, AdamW state, activations, DPO's / KTO's reference copy. Step time: the median optimizer step after the
first. Paper Table 7 (GB): SFT 17.95, RFT 18.12, DFT 26.90, RIFT 20.10, DPO 43.31.

Dependencies, on purpose: torch, transformers, trl (with its datasets and accelerate) and, of this project, only
rift_core.rift_trainer, rift_core.losses and rift_core.prompts (those and nothing else). The check asks a GPU machine
for no polars, Dagster, math-verify or vLLM, so rift_core.trainer / methods (polars) are not loaded: this script trains
each method the way rift_core.trainer does (same TRL trainer and config class, same settings, same records; the
real RIFTTrainer for rift / naive), and tests/test_gpu_check.py holds records and settings to rift_core's. The script
hides the packages it does not need from itself (ABSENT_ON_GPU) on every machine, so the CPU dry run fails
the same way the GPU run would if one of them crept in.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in (str(REPO), str(REPO / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# Not needed on a GPU machine: hidden from this script on every machine, so none creeps in.
ABSENT_ON_GPU = ("polars", "dagster", "duckdb", "math_verify", "pebble", "vllm")

QWEN25_MATH_15B = dict(vocab=151936, hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960)
TINY = dict(vocab=4096, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128)
METHODS = ("sft", "dft", "rft", "dpo", "rift", "naive", "kto")  # the table's order
RUN_ORDER = ("sft", "rift", "dpo", "dft", "rft", "naive", "kto")  # most wanted first, in case time runs out
PAPER_GB = {"sft": 17.95, "rft": 18.12, "dft": 26.90, "rift": 20.10, "dpo": 43.31}
# name: (weights dtype, gradient checkpointing, heading); bf16 autocast in all
VARIANTS = {
    "fp32": ("float32", False, "fp32 master weights, bf16 autocast"),
    "fp32+gc": ("float32", True, "fp32 master weights, bf16 autocast, gradient checkpointing (the paper profile)"),
    "bf16": ("bfloat16", False, "bf16 weights, gradients and AdamW state, bf16 autocast"),
}

# How rift_core.methods trains each method: (TRL config class, fixed config settings, the paper's learning rate,
# TrainConfig fields passed through with their defaults). tests/test_gpu_check.py holds these to rift_core.
_NLL = {"loss_type": "nll", "completion_only_loss": True}
SPECS = {
    "sft": ("SFTConfig", _NLL, 1e-5, {}),
    "dft": ("SFTConfig", {"loss_type": "dft", "completion_only_loss": True}, 1e-5, {}),
    "rft": ("SFTConfig", _NLL, 1e-5, {}),
    "dpo": ("DPOConfig", {}, 2e-6, {"beta": 0.1, "precompute_ref_log_probs": False}),
    "rift": ("RIFTConfig", {"reward_loss": "rift", "completion_only_loss": True}, 2e-6, {"granularity": "token"}),
    "naive": ("RIFTConfig", {"reward_loss": "naive", "completion_only_loss": True}, 2e-6, {"granularity": "token"}),
    "kto": ("KTOConfig", {}, 2e-6, {"beta": 0.1, "precompute_ref_log_probs": False, "desirable_weight": 1.0,
                                    "undesirable_weight": 1.0}),
}
REFERENCE = ("dpo", "kto")  # trained against a frozen copy of the model


def hide_absent_packages() -> None:
    """Make the packages the check does not need unimportable (find_spec says None, import raises)."""
    for name in ABSENT_ON_GPU:
        sys.modules.setdefault(name, None)


# ---- the training rows, as rift_core.methods turns a labelled buffer into TRL records --------------------------

def records(method: str, rows: list[dict], template: str = "qwen_cot") -> list[dict]:
    """TRL conversational records for `method` from buffer rows (question, response, reward, correct, solution)."""
    from rift_core.prompts import chat_messages

    def turn(text):
        return [{"role": "assistant", "content": text}]

    out, seen = [], set()
    for r in rows:
        if method in ("sft", "dft", "dpo") and not (r.get("solution") or "").strip():
            continue  # nothing to imitate (methods._with_solutions)
        if method in ("sft", "dft"):  # the problems' ground-truth solutions, once each
            if (r["question"], r["solution"]) in seen:
                continue
            seen.add((r["question"], r["solution"]))
            part = {"completion": turn(r["solution"])}
        elif method == "rft":  # the correct samples
            if not r["correct"]:
                continue
            part = {"completion": turn(r["response"])}
        elif method in ("rift", "naive"):
            part = {"completion": turn(r["response"]), "reward": float(r["reward"])}
        elif method == "dpo":  # dpo_pairing "ground_truth": the response if correct, else the ground truth, is chosen
            truth, response = turn(r["solution"]), turn(r["response"])
            chosen, rejected = (response, truth) if r["correct"] else (truth, response)
            part = {"chosen": chosen, "rejected": rejected}
        elif method == "kto":
            part = {"completion": turn(r["response"]), "label": bool(r["correct"])}
        else:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        out.append({"prompt": chat_messages(r["question"], template), **part})
    return out


def build_trainer(method: str, model, tokenizer, rows: list[dict], work: str, steps: int, batch: int,
                  max_length: int, bf16: bool, gradient_checkpointing: bool = False, callbacks=()):
    """The trainer rift_core.trainer._build_trainer builds for `method` with TrainConfig's defaults, except that it
    never saves a checkpoint (that would time the disk) and runs `steps` optimizer steps of `batch` rows."""
    import copy

    import torch
    import trl
    from datasets import Dataset

    from rift_core.rift_trainer import RIFTConfig, RIFTTrainer

    config_name, config_kwargs, learning_rate, passthrough = SPECS[method]
    if config_name == "RIFTConfig":
        config_class, trainer_class = RIFTConfig, RIFTTrainer
    else:
        config_class = getattr(trl, config_name)
        trainer_class = getattr(trl, config_name.replace("Config", "Trainer"))
    args = config_class(
        output_dir=work, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
        max_grad_norm=1.0, num_train_epochs=3.0, max_steps=steps, max_length=max_length, bf16=bf16,
        gradient_checkpointing=gradient_checkpointing, save_strategy="no", logging_steps=1,
        logging_nan_inf_filter=False, report_to="none", seed=0, data_seed=0, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), **config_kwargs, **passthrough,
    )
    extra = {"ref_model": copy.deepcopy(model)} if method in REFERENCE else {}
    return trainer_class(model, args=args, train_dataset=Dataset.from_list(records(method, rows)),
                         processing_class=tokenizer, callbacks=list(callbacks), **extra)


# ---- one method in one process --------------------------------------------------------------------------------

def byte_tokenizer():
    """tests/conftest.py's byte-level tokenizer with a ChatML template (~260 tokens), built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def random_model(shapes: dict, tokenizer, dtype: str, device: str):
    """A seeded random Qwen2 of `shapes`, initialised on `device` in `dtype` (ids beyond the tokenizer never occur)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=shapes["vocab"], hidden_size=shapes["hidden"], num_hidden_layers=shapes["layers"],
        num_attention_heads=shapes["heads"], num_key_value_heads=shapes["kv_heads"],
        intermediate_size=shapes["intermediate"], max_position_embeddings=32768, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # as from_pretrained(dtype=...): float buffers it makes stay fp32
    try:
        with torch.device(device):
            return Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> None:
    """Train one method; print one RESULT line of JSON."""
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    if not cuda:
        from rift_core.losses import fit_fused_head_to_cpu

        fit_fused_head_to_cpu()  # as rift_core.trainer does without a GPU
    from bench_memory import batch_rows

    class StepTimer(TrainerCallback):  # as rift_core.trainer._Monitor: every step after the first
        def __init__(self):
            self.seconds, self._t = [], None

        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            if self._t is not None and state.global_step > 1:
                self.seconds.append(time.perf_counter() - self._t)

    shapes = json.loads(args.shapes)
    tokenizer = byte_tokenizer()
    weights, checkpointing, _ = VARIANTS[args.variant]
    model = random_model(shapes, tokenizer, weights, "cuda" if cuda else "cpu")
    timer = StepTimer()
    rows = batch_rows(args.batch, args.response_chars)
    with tempfile.TemporaryDirectory(prefix="gpu_table7_") as work:
        trainer = build_trainer(args.child, model, tokenizer, rows, work, args.steps, args.batch,
                                args.response_chars + 256, bf16=True,
                                gradient_checkpointing=checkpointing, callbacks=[timer])
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # drop what building left cached, so `reserved` counts training alone
            torch.cuda.reset_peak_memory_stats()
        rss_before = _rss_bytes()
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    import accelerate
    import datasets
    import transformers
    import trl

    result = {
        "method": args.child,
        "variant": args.variant,
        "steps": trainer.state.global_step,
        "step_s": statistics.median(timer.seconds) if timer.seconds else None,
        "step_runs": [round(s, 4) for s in timer.seconds],
        "train_s": round(seconds, 3),
        "final_loss": losses[-1] if losses else None,
        "peak_allocated": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_reserved": torch.cuda.max_memory_reserved() if cuda else None,
        "peak_rss_delta": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
        "parameters": sum(p.numel() for p in model.parameters()),
        "environment": {
            "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
            "device_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "trl": trl.__version__, "datasets": datasets.__version__,
            "accelerate": accelerate.__version__, "attention": getattr(model.config, "_attn_implementation", None),
        },
    }
    print("RESULT " + json.dumps(result), flush=True)


# ---- the parent: one process per method, the results file rewritten after each -------------------------------

def run_one(args, method: str, variant: str, shapes: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--variant", variant, "--shapes", json.dumps(shapes),
           "--batch", str(args.batch), "--response-chars", str(args.response_chars), "--steps", str(args.steps),
           "--threads", str(args.threads)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # only --deadline-s sets a timeout
        tail = (e.stderr or b"")[-2000:]
        return {"method": method, "variant": variant, "status": "stopped at --deadline-s",
                "error": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"method": method, "variant": variant, "status": f"failed (exit {proc.returncode})",
                "error": proc.stderr[-3000:]}
    return {**json.loads(lines[-1][len("RESULT "):]), "status": "ok", "wall_s": round(time.time() - start, 1)}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def report(runs: list[dict], settings: dict) -> str:
    """The results file: settings, one table per variant, the raw runs as JSON."""
    ok = [r for r in runs if r["status"] == "ok"]
    env = ok[0]["environment"] if ok else {}
    gpu = settings["device"] == "cuda"
    mem_key, mem_name = ("peak_allocated", "peak allocated (GiB)") if gpu else ("peak_rss_delta", "peak RSS delta (GiB)")
    lines = [
        f"# Paper Table 7: peak training memory and step time per method ({env.get('device', 'no run finished')})",
        "",
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `benchmarks/gpu_table7.py` "
        f"({'--tiny CPU dry run: toy shapes, proves the plumbing only' if settings['tiny'] else 'GPU run'})",
        "- environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None),
        f"- model: random Qwen2, shapes {settings['shapes']}" + (f", {ok[0]['parameters'] / 1e6:,.1f}M parameters" if ok else ""),
        f"- per method: its own process; {settings['steps']} optimizer steps of {settings['batch']} rows of "
        f"~{settings['response_chars']} response tokens (+ ~110 prompt tokens); AdamW, the paper's learning rates",
        f"- memory: {mem_name}: " + ("torch.cuda.max_memory_allocated from just before train() to its end (weights, "
                                     "gradients, AdamW state, activations, DPO's / KTO's reference copy); reserved: "
                                     "max_memory_reserved" if gpu else "ru_maxrss after train() minus RSS before it"),
        "- step time: median optimizer step after the first",
    ]

    def ratio(a, b):
        return f"{a / b:.2f}" if _finite(a) and _finite(b) and b else "-"

    for variant in settings["variants"]:
        mine = {r["method"]: r for r in runs if r["variant"] == variant}
        if not mine:
            continue
        lines += ["", f"## {variant}: {VARIANTS[variant][2]}", ""]
        base = mine.get("sft") if mine.get("sft", {}).get("status") == "ok" else None
        cols = ["method", mem_name, "x SFT"] + (["peak reserved (GiB)"] if gpu else [])
        cols += ["step time (s)", "x SFT", "final loss"] + (["paper Table 7 (GB)"] if gpu else [])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for method in METHODS:
            r = mine.get(method)
            if r is None:
                continue
            if r["status"] != "ok":
                lines.append("| " + " | ".join([method, r["status"]] + [""] * (len(cols) - 2)) + " |")
                continue
            cells = [method, f"{r[mem_key] / 2**30:.2f}", ratio(r[mem_key], base and base[mem_key])]
            cells += [f"{r['peak_reserved'] / 2**30:.2f}"] if gpu else []
            cells += [f"{r['step_s']:.3f}", ratio(r["step_s"], base and base["step_s"]), f"{r['final_loss']:.4g}"]
            cells += [str(PAPER_GB.get(method, "-"))] if gpu else []
            lines.append("| " + " | ".join(cells) + " |")
    for r in runs:
        if r.get("error"):
            lines += ["", f"{r['method']} ({r['variant']}): {r['status']}", "", "```", r["error"].strip()[-3000:],
                      "```"]
    raw = {"settings": settings, "runs": [{k: v for k, v in r.items() if k != "error"} for r in runs]}
    lines += ["", "Raw results:", "", "```json", json.dumps(raw, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    hide_absent_packages()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy shapes on the CPU: a dry run of the plumbing")
    p.add_argument("--out", type=Path, help="the results file (markdown), rewritten after every method")
    p.add_argument("--variants", default="fp32", help=f"comma list of {', '.join(VARIANTS)}, run in that order")
    p.add_argument("--batch", type=int, default=4, help="rows per optimizer step (one micro-batch)")
    p.add_argument("--response-chars", type=int, default=1000, help="~tokens per response (byte-level tokenizer)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--methods", default=",".join(RUN_ORDER), help="comma list, run in that order")
    p.add_argument("--deadline-s", type=float, default=0,
                   help="start no method later than this many seconds in, stop one still running then; 0: none")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--shapes", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    variants, methods = args.variants.split(","), args.methods.split(",")
    for v in variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown variant {v!r}; expected some of {', '.join(VARIANTS)}")
    for m in methods:
        if m not in SPECS:
            p.error(f"--methods: unknown method {m!r}; expected some of {', '.join(METHODS)}")
    if args.tiny:
        shapes, args.batch, args.response_chars, args.steps, args.threads = TINY, 4, 100, 3, 1
    else:
        shapes = QWEN25_MATH_15B
    settings = {"tiny": args.tiny, "device": "cpu" if args.tiny else "cuda", "shapes": shapes, "variants": variants,
                "batch": args.batch, "response_chars": args.response_chars, "steps": args.steps}
    start, runs = time.time(), []
    for variant in variants:
        for method in methods:
            left = args.deadline_s - (time.time() - start) if args.deadline_s else None
            if left is not None and left < 20:
                runs.append({"method": method, "variant": variant, "status": "skipped: --deadline-s reached"})
            else:
                print(f"[{time.time() - start:5.0f} s] {method} ({variant}) ...", file=sys.stderr, flush=True)
                r = run_one(args, method, variant, shapes, left)
                runs.append(r)
                print(f"[{time.time() - start:5.0f} s] {method} ({variant}): {r['status']}"
                      + (f"; memory {(r['peak_allocated'] or r['peak_rss_delta']) / 2**30:.2f} GiB, step "
                         f"{r['step_s']:.3f} s" if r["status"] == "ok" else "\n" + r.get("error", "")[-1500:]),
                      file=sys.stderr, flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(report(runs, settings))
    print(report(runs, settings).split("\nRaw results:")[0])
    failed = [f"{r['method']} ({r['variant']}): {r['status']}" for r in runs if r["status"].startswith("failed")]
    cut = sum(r["status"] != "ok" and not r["status"].startswith("failed") for r in runs)
    if cut:
        print(f"{cut} of {len(runs)} runs not measured: --deadline-s reached", file=sys.stderr)
    if failed:
        raise SystemExit("failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
