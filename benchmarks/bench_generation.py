"""Sampling throughput: the project's `sample_batch` against transformers' own generation, side by side.

Contenders, all on the same sequences (the same prompts x K, temperature 0.7, top-p 0.8, the same
max_new_tokens and EOS ids), timed in interleaved rounds so that load from other users hits them alike:

- `sample_batch` (rift_core.generation, what `generate_rollouts` runs): preallocated KV cache, finished
  rows dropped from the batch, eager attention on CPU;
- `model.generate(..., cache_implementation="static")`: transformers' preallocated `StaticCache`
  (sdpa and eager attention);
- `model.generate` with its default `DynamicCache` (sdpa), the reference;
- `model.generate_batch(...)`: transformers' continuous batching (paged KV cache, requests join and
  leave the running batch per step). Its KV cache is sized explicitly (`--cb-block-size`,
  `--cb-max-batch-tokens`): left to auto-sizing on CPU it spent 13-34 s setting up for 8 requests.

Model: the embedded default's architecture (rift_core.base_policy: Qwen2, hidden 192, 4 layers, word-level
vocabulary), randomly initialised; prompts: toy seed problems in the Qwen CoT chat template, K=8 each.
A random model rarely emits EOS, so a few extra token ids count as EOS (for every contender) to give
the spread of lengths real samples have. One torch thread. Tokens counted = generated tokens, EOS
included. Prints best-of-rounds tokens/s, sample_batch's speed over each contender (from the best rates
and as the median of per-round ratios) and tokens per CPU-second (load-independent check).
Results and the decision drawn from them: benchmarks/results/generation.md.

    .venv/bin/python benchmarks/bench_generation.py [--prompts 32] [--max-new-tokens 128] [--rounds 3]
    .venv/bin/python benchmarks/bench_generation.py --rounds 1 --only generate_batch --cb-max-batch-tokens 512
    .venv/bin/python benchmarks/bench_generation.py --model PATH  # a trained toy policy, its own EOS
"""
import argparse
import copy
import logging
import os
import tempfile
import time

import torch
from transformers import AutoTokenizer, ContinuousBatchingConfig, Qwen2Config, Qwen2ForCausalLM
from transformers import GenerationConfig as HFGenerationConfig

from rift_core import toy_task, toy_tokenizer
from rift_core.generation import GenerationConfig, sample_batch
from rift_core.prompts import render_prompt

TEMPERATURE, TOP_P = 0.7, 0.8


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=256, help="sequences per batch (sample_batch and model.generate)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--extra-eos", type=int, default=3, help="token ids that also count as EOS (random model)")
    p.add_argument("--model", default=None, help="a trained toy policy dir instead of a random model")
    p.add_argument("--cb-block-size", type=int, default=32)
    p.add_argument("--cb-max-batch-tokens", type=int, default=256, help="256 was the fastest of 256-8192 here")
    p.add_argument("--only", default=None, help="comma-separated substrings: run only contenders whose name has one")
    a = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if a.model:
        tok = AutoTokenizer.from_pretrained(a.model)
        trained = Qwen2ForCausalLM.from_pretrained(a.model)
        config, state, a.extra_eos = trained.config, trained.state_dict(), 0
    else:
        tok = toy_tokenizer.build_tokenizer(tempfile.mkdtemp())
        torch.manual_seed(0)
        config = Qwen2Config(vocab_size=len(tok), hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                             tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        state = Qwen2ForCausalLM(config).state_dict()

    def load(attn):
        # a copy each: _from_config writes the attention implementation into the config it is given
        m = Qwen2ForCausalLM._from_config(copy.deepcopy(config), attn_implementation=attn).eval()
        m.load_state_dict(state)
        assert m.config._attn_implementation == attn, (attn, m.config._attn_implementation)
        return m

    models = {"sdpa": load("sdpa"), "eager": load("eager"), "paged|sdpa": load("paged|sdpa")}
    eos = [tok.eos_token_id, *range(60, 60 + a.extra_eos)]
    questions = toy_task.problems("seed", n=a.prompts, seed=0)["question"].to_list()
    ids = tok([render_prompt(tok, q) for q in questions], add_special_tokens=False)["input_ids"]
    seqs = [x for x in ids for _ in range(a.k)]
    width = max(map(len, seqs))
    print(f"{a.model or 'random model'}: {sum(p.numel() for p in models['sdpa'].parameters()):,} params, "
          f"{len(seqs)} sequences, prompts {min(map(len, ids))}-{max(map(len, ids))} tokens, "
          f"max_new_tokens {a.max_new_tokens}, temperature {TEMPERATURE}, top-p {TOP_P}, batch {a.batch}, "
          f"1 thread; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    hf_cfg = HFGenerationConfig(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
                                max_new_tokens=a.max_new_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id)

    def hf_generate(model, cache):
        x = torch.full((len(seqs), width), tok.pad_token_id)
        m = torch.zeros_like(x)
        for i, s in enumerate(seqs):
            x[i, width - len(s):], m[i, width - len(s):] = torch.tensor(s), 1
        n = 0
        for s in range(0, len(seqs), a.batch):
            kw = {"cache_implementation": "static"} if cache == "static" else {}
            out = model.generate(input_ids=x[s:s + a.batch], attention_mask=m[s:s + a.batch],
                                 generation_config=hf_cfg, **kw)[:, width:]
            n += int((out != tok.pad_token_id).sum())  # generated tokens, EOS included (pad follows EOS)
        return n

    def continuous(model, _):
        per_request = -(-(width + a.max_new_tokens) // a.cb_block_size)
        cb = ContinuousBatchingConfig(block_size=a.cb_block_size, num_blocks=per_request * len(seqs) + 8,
                                      max_batch_tokens=a.cb_max_batch_tokens, seed=0)
        out = model.generate_batch(seqs, generation_config=hf_cfg, continuous_batching_config=cb, warmup=False)
        if len(out) != len(seqs) or any(o.error for o in out.values()):
            raise RuntimeError(f"generate_batch returned {len(out)} of {len(seqs)} requests or errors")
        return sum(len(o.generated_tokens) for o in out.values())

    def ours(model, _):
        cfg = GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=TEMPERATURE, top_p=TOP_P)
        gen = torch.Generator().manual_seed(0)
        return sum(len(t) for s in range(0, len(seqs), a.batch)
                   for t in sample_batch(model, seqs[s:s + a.batch], cfg, eos, tok.pad_token_id, gen)[0])

    runs = [("sample_batch (ours), eager", ours, "eager", None),
            ("generate, static cache, sdpa", hf_generate, "sdpa", "static"),
            ("generate, static cache, eager", hf_generate, "eager", "static"),
            ("generate, dynamic cache, sdpa", hf_generate, "sdpa", "dynamic"),
            ("generate_batch (continuous), paged|sdpa", continuous, "paged|sdpa", None)]
    if a.only:
        keep = a.only.split(",")
        runs = [r for r in runs if r[0] == runs[0][0] or any(k in r[0] for k in keep)]
    best, rates, cpu = {}, {}, {}
    for r in range(a.rounds):
        for name, fn, model, cache in (runs if r % 2 == 0 else runs[::-1]):  # alternate the order per round
            torch.manual_seed(r)
            t, c = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                n = fn(models[model], cache)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            cpu[name] = max(cpu.get(name, 0), n / dc)
            best[name] = max(best.get(name, 0), n / dt)
            rates.setdefault(name, []).append(n / dt)
            print(f"round {r}: {name:42s} {n:6d} tokens {dt:6.1f} s {n / dt:7.0f} tokens/s {n / dc:7.0f} per CPU-s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    base = best[runs[0][0]]
    print(f"\nbest of {a.rounds} rounds: tokens/s; sample_batch's speed over each (ours / theirs), from the best "
          "rates and the median of the per-round ratios (each round runs every contender back to back):")
    for name, *_ in runs:
        per_round = sorted(o / t for o, t in zip(rates[runs[0][0]], rates[name]))
        print(f"  {name:42s} {best[name]:7.0f} tokens/s   ours is {base / best[name]:4.2f}x (best), "
              f"{per_round[len(per_round) // 2]:4.2f}x (median per round; range {per_round[0]:.2f}-{per_round[-1]:.2f}); "
              f"{cpu[name]:6.0f} tokens per CPU-second, ours is {cpu[runs[0][0]] / cpu[name]:4.2f}x")


if __name__ == "__main__":
    main()
