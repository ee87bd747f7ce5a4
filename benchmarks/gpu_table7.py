"""Paper Table 7 on one GPU: peak training memory and step time per method, in one go.

A randomly initialised model with Qwen2.5-Math-1.5B's shapes (hidden 1536, 28 layers, 12 heads / 2 KV heads,
intermediate 8960, vocab 151,936, tied embeddings, bf16 weights) trains each method through rift_core.trainer, each
in its own process, on batches of the same rows (half rewarded +1, half -0.2, so RFT's positives fill a batch too;
the ground-truth solution equals the response, so every method sees the same tokens and DPO sees them twice). Memory is torch.cuda.max_memory_allocated over the
whole run (weights, AdamW state, activations, DPO's reference copy); step time the median optimizer step after the
first. The paper's Table 7 (GB): SFT 17.95, RFT 18.12, DFT 26.90, RIFT 20.10, DPO 43.31.

On the GPU machine, from the repository root:
    python benchmarks/gpu_table7.py [--wheels wheels/] [--batch 4] [--response-chars 1000] [--steps 4]
`--wheels DIR` first installs the wheels in DIR (no index, no deps) for packages the machine lacks, e.g. built here
with `pip download --no-deps -d wheels trl==1.16.0 math-verify==0.9.0 ...`.
To prove the script on a CPU: python benchmarks/gpu_table7.py --tiny
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

QWEN25_MATH_15B = dict(vocab=151936, hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960)
TINY = dict(vocab=4096, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128)
METHODS = ("sft", "dft", "rft", "rift", "dpo")
PAPER_GB = {"sft": 17.95, "rft": 18.12, "dft": 26.90, "rift": 20.10, "dpo": 43.31}


def install_wheels(folder: Path) -> None:
    wheels = sorted(str(w) for w in folder.glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *wheels], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, to prove the script runs")
    p.add_argument("--wheels", type=Path)
    p.add_argument("--batch", type=int, default=4, help="rows per optimizer step (one micro-batch)")
    p.add_argument("--response-chars", type=int, default=1000, help="~tokens per response (byte-level tokenizer)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()
    if args.wheels:
        install_wheels(args.wheels)
    for module in ("torch", "transformers", "trl", "accelerate", "datasets", "polars", "psutil", "pytest"):
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f"missing package {module!r}: bring its wheel and pass --wheels DIR")
    import torch

    from bench_memory import batch_rows, build_model, run_methods, table

    if args.tiny:
        shapes, dtype, args.batch, args.response_chars, args.steps = TINY, "float32", 2, 100, 3
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --tiny on a CPU")
        shapes, dtype = QWEN25_MATH_15B, "bfloat16"
    extra = ("--dtype", dtype) + (("--gradient-checkpointing",) if args.gradient_checkpointing else ())
    rows = batch_rows(args.batch, args.response_chars)
    with tempfile.TemporaryDirectory(prefix="gpu_table7_") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "model", dtype=dtype, **shapes)
        results = run_methods(model, args.methods.split(","), rows, tmp, args.steps, args.batch,
                              max_length=args.response_chars + 256, threads=4, repeats=1, extra=extra)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    key = "cuda_peak" if torch.cuda.is_available() else "peak_rss_delta"
    print(f"device: {device}; shapes {shapes}; weights {dtype}; batch {args.batch} rows of ~{args.response_chars} "
          f"response tokens (+ ~110 prompt tokens); {args.steps} steps; gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}; memory = {key}")
    print(table(results, key, 2**30, "GiB", digits=2))
    if not args.tiny:
        print("\n| method | ours (GiB) | paper Table 7 (GB) |\n|---|---|---|")
        for method, r in results.items():
            print(f"| {method} | {r[key] / 2**30:.2f} | {PAPER_GB.get(method, '-')} |")


if __name__ == "__main__":
    main()
