"""Peak training memory and step time per method, as ratios against TRL's plain SFT, measured in one run.

Every method trains the same random Qwen2 (hidden 128, 4 layers) with a 49,152-token vocabulary, so the LM head
and its logits dominate memory, on batches of 8 rows of the same text, each in a fresh subprocess on 1 thread:

    .venv/bin/python benchmarks/bench_memory.py [--steps 6] [--vocab 49152] [--repeats 2]

Memory is the child's peak RSS over the run (ru_maxrss high-water at the end minus RSS just before `train()`:
model load, trainer set-up and the steps; DPO's reference copy included). Step time is the median optimizer step
after the first. Two counterfactuals: `rift_full_logits` is RIFT with the [B, T, V] float32 logits materialised
and log-softmaxed, the path rift_core avoids; `sft_trl_tiles` is SFT with TRL's GPU-sized fused-head tiles
instead of the CPU-sized ones the trainer sets (losses.fit_fused_head_to_cpu). Targets: rift <= 1.10x sft memory, <= 1.15x sft step time.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("sft", "rft", "dft", "rift", "naive", "dpo", "rift_full_logits", "sft_trl_tiles")


def build_model(path: Path, vocab: int, hidden: int = 128, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                intermediate: int | None = None, dtype: str = "float32") -> Path:
    """A random Qwen2 of the given shapes, with the tests' byte-level tokenizer (ids beyond it are never used)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    build_tiny_model(path)  # writes the tokenizer (and a model we replace)
    torch.manual_seed(0)
    tok = Qwen2Config.from_pretrained(path)
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=intermediate or hidden * 2, max_position_embeddings=32768,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    Qwen2ForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(path)
    return path


def batch_rows(batch: int = 8, response_chars: int = 300) -> list[dict]:
    """2 x batch rows, half rewarded +1 and half -0.2, so RFT's positives also fill a batch; the ground-truth
    solution is the response, so every method sees the same tokens (DPO sees each twice, chosen and rejected)."""
    rows = []
    for i in range(2 * batch):
        text = (f"Step {i}: " + "we add the numbers and carry the tens. " * 40)[:response_chars] + f" \\boxed{{{i}}}"
        rows.append(dict(question=f"What is {i} + {i}?", response=text, solution=text, reward=1.0 if i % 2 == 0 else -0.2,
                         correct=i % 2 == 0))
    return rows


def child(args) -> None:
    """Train one method and print one JSON line with its memory and timing."""
    import psutil
    import torch

    torch.set_num_threads(args.threads)
    import polars as pl

    import rift_core.trainer as trainer

    method = args.method
    if method == "rift_full_logits":
        method = "rift"

        def full_logits(model, input_ids, attention_mask, labels):
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1].float()
            targets = labels[:, 1:]
            mask = targets != -100
            logps = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
            return logps * mask, mask

        import rift_core.rift_trainer as rift_trainer

        rift_trainer.token_logps = full_logits
    if method == "sft_trl_tiles":
        method = "sft"
        trainer.fit_fused_head_to_cpu = lambda: None
    data = pl.DataFrame(json.loads(Path(args.data).read_text()))
    cfg = trainer.TrainConfig(
        method=method, model=args.model, output_dir=str(Path(args.out) / args.method), max_steps=args.steps,
        per_device_batch_size=args.batch, global_batch_size=args.batch, learning_rate=1e-5, warmup_ratio=0.0,
        max_length=args.max_length, dtype=args.dtype, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        save_steps=10**6,  # no mid-run checkpoints: they would time the disk
    )
    before = psutil.Process().memory_info().rss
    summary = trainer.train(cfg, data)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print("RESULT " + json.dumps({
        "method": args.method,
        "peak_rss_delta": maxrss - before,
        "cuda_peak": summary["peak_memory_bytes"] if summary["peak_memory_source"] == "cuda_max_allocated" else None,
        "step_s": summary["step_seconds_median"],
        "final_loss": summary["final_loss"],
    }), flush=True)


def run_methods(model: Path, methods, data: list[dict], out: Path, steps: int, batch: int, max_length: int,
                threads: int, repeats: int = 1, extra: tuple = ()) -> dict:
    """Run each method `repeats` times, round-robin, each in its own process; return the best run per method."""
    data_file = out / "data.json"
    data_file.write_text(json.dumps(data))
    results = {}
    for _ in range(repeats):
        for method in methods:
            cmd = [sys.executable, __file__, "--child", method, "--model", str(model), "--data", str(data_file),
                   "--out", str(out), "--steps", str(steps), "--batch", str(batch), "--max-length", str(max_length),
                   "--threads", str(threads), *extra]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise RuntimeError(f"{method} failed:\n{proc.stderr[-4000:]}")
            r = json.loads(lines[-1][len("RESULT "):])
            print(f"  {method}: {r}", file=sys.stderr, flush=True)
            best = results.get(method)
            if best is None:
                results[method] = {**r, "step_runs": [r["step_s"]]}
            else:  # memory is deterministic; keep the fastest step time (least disturbed by other load)
                best["step_runs"].append(r["step_s"])
                best["step_s"] = min(best["step_runs"])
    return results


def table(results: dict, memory_key: str, unit: float, unit_name: str, digits: int = 1) -> str:
    base = results["sft"]
    lines = [f"| method | peak memory ({unit_name}) | x SFT | step time (s) | x SFT |", "|---|---|---|---|---|"]
    for method, r in results.items():
        lines.append(
            f"| {method} | {r[memory_key] / unit:.{digits}f} | {r[memory_key] / base[memory_key]:.2f} | "
            f"{r['step_s']:.3f} | {r['step_s'] / base['step_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child")
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()
    if args.child:
        args.method = args.child
        return child(args)

    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "model", args.vocab)
        results = run_methods(model, methods, batch_rows(args.batch), tmp, args.steps, args.batch, args.max_length,
                              args.threads, args.repeats)
    print(f"Qwen2 hidden 128, 4 layers, vocab {args.vocab}; batch {args.batch} rows of ~420 tokens; {args.steps} steps; "
          f"{args.threads} thread(s); memory = peak RSS delta (ru_maxrss - RSS before train()); "
          f"memory of the first run, step time = best of {args.repeats} medians")
    print(table(results, "peak_rss_delta", 2**20, "MiB"))
    rift, sft = results.get("rift"), results["sft"]
    if rift:
        mem, step = rift["peak_rss_delta"] / sft["peak_rss_delta"], rift["step_s"] / sft["step_s"]
        print(f"RIFT vs SFT: memory {mem:.2f}x (target <= 1.10) {'PASS' if mem <= 1.10 else 'FAIL'}; "
              f"step time {step:.2f}x (target <= 1.15) {'PASS' if step <= 1.15 else 'FAIL'}")


if __name__ == "__main__":
    main()
