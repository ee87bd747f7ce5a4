"""Sampling throughput of the transformers backend against plain `model.generate`, side by side.

Model: the embedded default's architecture (rift_core.toy: Qwen2, hidden 192, 4 layers, word-level
vocabulary), randomly initialised; prompts: toy seed problems in the Qwen CoT chat template, K=8 each.
A random model rarely emits EOS, so a few extra token ids count as EOS (for both contenders) to give the
spread of lengths real samples have. Both sample with temperature 0.7 / top-p 0.8 on one thread.

    .venv/bin/python benchmarks/bench_generation.py [--prompts 32] [--max-new-tokens 128] [--rounds 2]
    .venv/bin/python benchmarks/bench_generation.py --model PATH  # a trained toy policy, its own EOS
"""
import argparse
import tempfile
import time

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from rift_core import toy
from rift_core.generation import GenerationConfig, sample_batch
from rift_core.prompts import render_prompt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--extra-eos", type=int, default=3, help="token ids that also count as EOS (random model)")
    p.add_argument("--model", default=None, help="a trained toy policy dir instead of a random model")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.model:
        tok = AutoTokenizer.from_pretrained(a.model)
        trained = Qwen2ForCausalLM.from_pretrained(a.model)
        config, state, a.extra_eos = trained.config, trained.state_dict(), 0
    else:
        tok = toy.build_tokenizer(tempfile.mkdtemp())
        torch.manual_seed(0)
        config = Qwen2Config(vocab_size=len(tok), hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                             tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        state = Qwen2ForCausalLM(config).state_dict()
    models = {"sdpa": Qwen2ForCausalLM._from_config(config, attn_implementation="sdpa").eval()}
    models["sdpa"].load_state_dict(state)
    models["eager"] = Qwen2ForCausalLM._from_config(config, attn_implementation="eager").eval()
    models["eager"].load_state_dict(models["sdpa"].state_dict())
    models["eager_bf16"] = Qwen2ForCausalLM._from_config(config, attn_implementation="eager").eval()
    models["eager_bf16"].load_state_dict(models["sdpa"].state_dict())
    models["eager_bf16"].to(torch.bfloat16)
    eos = [tok.eos_token_id, *range(60, 60 + a.extra_eos)]
    questions = toy.problems("seed", n=a.prompts, seed=0)["question"].to_list()
    ids = tok([render_prompt(tok, q) for q in questions], add_special_tokens=False)["input_ids"]
    seqs = [x for x in ids for _ in range(a.k)]
    print(f"{a.model or 'random model'}: {sum(p.numel() for p in models['sdpa'].parameters()):,} params, "
          f"{len(seqs)} sequences, prompts "
          f"{min(map(len, ids))}-{max(map(len, ids))} tokens, max_new_tokens {a.max_new_tokens}, 1 thread")

    def hf_generate(model, batch):
        width = max(map(len, seqs))
        x = torch.full((len(seqs), width), tok.pad_token_id)
        m = torch.zeros_like(x)
        for i, s in enumerate(seqs):
            x[i, width - len(s):], m[i, width - len(s):] = torch.tensor(s), 1
        n = 0
        for s in range(0, len(seqs), batch):
            out = model.generate(input_ids=x[s:s + batch], attention_mask=m[s:s + batch], do_sample=True,
                                 temperature=0.7, top_p=0.8, top_k=0, max_new_tokens=a.max_new_tokens,
                                 eos_token_id=eos, pad_token_id=tok.pad_token_id)[:, width:]
            n += int((~torch.isin(out, torch.tensor([tok.pad_token_id]))).sum())  # generated tokens, EOS included
        return n

    def ours(model, batch):
        cfg = GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=0.7, top_p=0.8)
        gen = torch.Generator().manual_seed(0)
        return sum(len(t) for s in range(0, len(seqs), batch)
                   for t in sample_batch(model, seqs[s:s + batch], cfg, eos, tok.pad_token_id, gen)[0])

    runs = [("model.generate, sdpa, fp32, batch 256", hf_generate, "sdpa", 256),
            ("model.generate, eager, fp32, batch 256", hf_generate, "eager", 256),
            ("sample_batch, eager, fp32, batch 256", ours, "eager", 256),
            ("sample_batch, eager, fp32, batch 64", ours, "eager", 64),
            ("sample_batch, eager, bf16, batch 256", ours, "eager_bf16", 256)]
    best = {}
    for r in range(a.rounds):
        for name, fn, model, batch in runs:
            torch.manual_seed(r)
            t = time.perf_counter()
            with torch.inference_mode():
                n = fn(models[model], batch)
            dt = time.perf_counter() - t
            best[name] = max(best.get(name, 0), n / dt)
            print(f"round {r}: {name:42s} {n:6d} tokens {dt:6.1f} s {n / dt:7.0f} tokens/s", flush=True)
    base = best[runs[0][0]]
    print("\nbest of rounds (tokens/s, ratio to model.generate sdpa fp32):")
    for name, *_ in runs:
        print(f"  {name:42s} {best[name]:7.0f}  {best[name] / base:4.2f}x")


if __name__ == "__main__":
    main()
