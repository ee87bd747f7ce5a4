"""Rollouts: K sampled responses per problem, from transformers (CPU/GPU) or vLLM (GPU).

Work is cut into chunks of `chunk_problems` problems, each written atomically to
`<out_dir>/chunk-NNNNN.parquet` as soon as it is done, next to a `manifest.json` naming the model and
settings. A restarted run skips finished chunks. Each chunk is sampled from its own seed, derived from
(seed, chunk index) — per problem for vLLM — so a resumed run returns exactly the rows of an
uninterrupted one, and a folder made with other settings is refused rather than mixed.
"""
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from rift_core import locks
from rift_core.io import tmp_beside, write_parquet_atomic
from rift_core.prompts import render_prompt

ROLLOUT_SCHEMA = {
    "problem_id": pl.String, "sample_idx": pl.Int64, "question": pl.String, "answer": pl.String,
    "prompt": pl.String, "response": pl.String, "num_tokens": pl.Int64, "finish_reason": pl.String,
    "model": pl.String, "temperature": pl.Float64, "top_p": pl.Float64, "max_new_tokens": pl.Int64,
    "seed": pl.Int64, "source": pl.String,
}
MANIFEST_VERSION = 1
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")


@dataclass
class GenerationConfig:
    backend: str = field(default="transformers", metadata={"help": "transformers (CPU/GPU) or vllm (GPU)."})
    k: int = field(default=8, metadata={"help": "Samples per problem."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 = greedy."})
    top_p: float = field(default=0.8, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Longest response, in tokens."})
    seed: int = field(default=0, metadata={"help": "Seed of the chunk (vLLM: problem) sampling streams."})
    batch_size: int = field(default=256, metadata={"help": "Sequences per forward pass (transformers)."})
    template: str = field(default="qwen_cot", metadata={"help": "Prompt template: qwen_cot or plain."})
    template_kwargs: dict = field(default_factory=dict, metadata={
        "help": 'Chat-template arguments, JSON on the command line, e.g. {"enable_thinking": false} for Qwen3.'})
    chunk_problems: int = field(default=64, metadata={"help": "Problems per resumable chunk file."})
    dtype: str = field(default="auto", metadata={"help": "auto (as saved), float32, bfloat16 or float16."})
    vllm_kwargs: dict = field(default_factory=dict, metadata={
        "help": 'Extra vllm.LLM(...) arguments, JSON, e.g. {"tensor_parallel_size": 8}.'})

    def __post_init__(self):
        checks = {
            "backend": self.backend in ("transformers", "vllm"), "k": self.k >= 1,
            "temperature": self.temperature >= 0, "top_p": 0 < self.top_p <= 1,
            "max_new_tokens": self.max_new_tokens >= 1, "batch_size": self.batch_size >= 1,
            "chunk_problems": self.chunk_problems >= 1,
            "dtype": self.dtype in ("auto", "float32", "bfloat16", "float16"),
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid GenerationConfig: {', '.join(bad)}")


def derive_seed(seed: int, key) -> int:
    """A 63-bit seed for one chunk (or problem): independent streams that do not depend on run order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") >> 1


def model_fingerprint(model: str) -> str:
    """Identity of a local model dir: configs, tokenizer and sampled bytes of each weight file (cheap even
    for 7B). Other files (run logs a trainer adds later) do not count. A hub id is its own identity.
    """
    path = Path(model)
    if not path.is_dir():
        return f"id:{model}"
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin") or f.name in MODEL_FILES:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                for i in range(16):  # 16 x 64 KiB spread over the file
                    fh.seek(size * i // 16)
                    h.update(fh.read(1 << 16))
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------- transformers backend


def _growing_cache(model, capacity: int):
    """A KV cache writing into buffers preallocated for the whole generation.

    transformers' DynamicCache torch.cat's the whole cache on every step; on CPU that re-allocation took
    55-70% of decoding time (measured, see benchmarks/results/generation.md).
    """
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    if "sliding_attention" in (getattr(model.config, "layer_types", None) or []):
        return DynamicCache(config=model.config)

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                b, h, _, _ = key_states.shape
                self.kbuf = key_states.new_empty(b, h, capacity, key_states.shape[-1])
                self.vbuf = value_states.new_empty(b, h, capacity, value_states.shape[-1])
                self.n = 0
            n = self.n + key_states.shape[-2]
            self.kbuf[:, :, self.n:n] = key_states
            self.vbuf[:, :, self.n:n] = value_states
            self.n = n
            self.keys, self.values = self.kbuf[:, :, :n], self.vbuf[:, :, :n]
            return self.keys, self.values

        def batch_select_indices(self, indices):
            self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
            self.keys, self.values = self.kbuf[:, :, :self.n], self.vbuf[:, :, :self.n]

    return Cache(layers=[GrowingLayer() for _ in range(model.config.num_hidden_layers)])


def _sample_next(logits, temperature: float, top_p: float, gen):
    import torch

    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        sorted_p = sorted_p * (sorted_p.cumsum(-1) - sorted_p < top_p)  # keep the smallest set reaching top_p
        return order.gather(-1, torch.multinomial(sorted_p, 1, generator=gen)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def sample_batch(model, prompts: list[list[int]], cfg: GenerationConfig, eos_ids: list[int], pad_id: int, gen):
    """Sample one continuation per prompt (token id lists): (token ids, stopped at EOS) per prompt.

    Left-padded prefill, then one token per step through a KV cache. Finished rows leave the batch once
    a quarter of it has finished, so a few long samples do not keep the whole batch running.
    """
    import torch

    device = model.device
    b, width = len(prompts), max(map(len, prompts))
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    eos = torch.tensor(eos_ids, device=device)
    cache = _growing_cache(model, width + cfg.max_new_tokens)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    pos = pos[:, -1:]
    out = torch.full((b, cfg.max_new_tokens), pad_id, dtype=torch.long, device=device)
    length = torch.full((b,), cfg.max_new_tokens, dtype=torch.long, device=device)
    rows = torch.arange(b, device=device)  # original index of each batch row
    live = torch.ones(b, dtype=torch.bool, device=device)
    for t in range(cfg.max_new_tokens):
        nxt = _sample_next(logits, cfg.temperature, cfg.top_p, gen)
        out[rows[live], t] = nxt[live]
        stopped = live & torch.isin(nxt, eos)
        length[rows[stopped]] = t + 1  # counting the EOS token, as vLLM does
        live &= ~stopped
        n_live = int(live.sum())
        if n_live == 0 or t + 1 == cfg.max_new_tokens:
            break
        if 4 * (len(live) - n_live) >= len(live):
            keep = live.nonzero().squeeze(-1)
            rows, nxt, pos, mask, live = rows[keep], nxt[keep], pos[keep], mask[keep], live[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        pos = pos + 1
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True).logits[:, -1]
    out, length = out.cpu(), length.cpu()
    stop = out[torch.arange(b), (length - 1).clamp(min=0)]
    stopped = torch.isin(stop, eos.cpu()).tolist()
    return [out[i, :n].tolist() for i, n in enumerate(length.tolist())], stopped


def check_round_trip(tokenizer, prompt: str) -> None:
    """Warn when the tokenizer loses text: transformers 5 may load a model dir's tokenizer as its model
    type's class (Qwen2Tokenizer for any qwen2 config), which silently drops what that class cannot encode."""
    back = tokenizer.decode(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if "".join(back.split()) != "".join(prompt.split()):
        warnings.warn(f"{type(tokenizer).__name__} does not round-trip the prompt: {prompt[:200]!r} decodes back "
                      f"as {back[:200]!r}; the model will be sampled on a mangled prompt", stacklevel=3)


class TransformersBackend:
    def __init__(self, model: str, cfg: GenerationConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # Eager attention decodes faster than SDPA on CPU at one query token per step (measured).
        self.model = AutoModelForCausalLM.from_pretrained(
            model, dtype="auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype),
            attn_implementation="eager" if device == "cpu" else None,
        ).to(device).eval()
        tok, gc = self.tokenizer, self.model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else tok.eos_token_id
        self.eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id} - {None})
        if not self.eos_ids:
            raise ValueError(f"{model}: neither the tokenizer nor the generation config names an EOS token")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]

    def render(self, questions: list[str]) -> list[str]:
        prompts = [render_prompt(self.tokenizer, q, self.cfg.template, self.cfg.template_kwargs) for q in questions]
        check_round_trip(self.tokenizer, prompts[0])
        return prompts

    def generate(self, prompts: list[str], chunk_seed: int, problem_ids: list[str], progress) -> list[tuple]:
        """(response, num_tokens, finish_reason) for each prompt x K, prompt-major; `progress(samples, tokens)`
        after each batch."""
        import torch

        cfg, tok = self.cfg, self.tokenizer
        ids = tok(prompts, add_special_tokens=False)["input_ids"]
        seqs = [(i, j) for i in range(len(prompts)) for j in range(cfg.k)]
        # Similar prompt lengths share a batch: less padding. The order is fixed, so sampling is too.
        seqs.sort(key=lambda s: len(ids[s[0]]))
        gen = torch.Generator(device=self.model.device).manual_seed(chunk_seed)
        results = {}
        with torch.inference_mode():
            for start in range(0, len(seqs), cfg.batch_size):
                batch = seqs[start:start + cfg.batch_size]
                tokens, stopped = sample_batch(self.model, [ids[i] for i, _ in batch], cfg, self.eos_ids,
                                               self.pad_id, gen)
                for seq, toks, stop in zip(batch, tokens, stopped):
                    text = tok.decode(toks[:-1] if stop else toks, skip_special_tokens=True)
                    results[seq] = (text, len(toks), "stop" if stop else "length")
                progress(len(batch), sum(map(len, tokens)))
        return [results[i, j] for i in range(len(prompts)) for j in range(cfg.k)]


# ------------------------------------------------------------------------------------------- vLLM backend


def vllm_sampling_params(cfg: GenerationConfig, seeds: list[int]):
    """One SamplingParams per prompt (n=K), each with its own seed so samples do not depend on batching."""
    from vllm import SamplingParams

    return [SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
                           seed=s) for s in seeds]


def rows_from_vllm(outputs, k: int) -> list[tuple[str, int, str]]:
    """Map vLLM RequestOutputs (one per prompt, in prompt order) to (response, num_tokens, finish_reason)."""
    rows = []
    for request in outputs:
        completions = sorted(request.outputs, key=lambda c: c.index)
        if len(completions) != k:
            raise RuntimeError(f"vLLM request {request.request_id}: expected {k} completions, got {len(completions)}")
        for c in completions:
            if c.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM request {request.request_id}: completion {c.index} ended with "
                                   f"finish_reason={c.finish_reason!r}")
            rows.append((c.text, len(c.token_ids), c.finish_reason))
    return rows


class VLLMBackend:
    def __init__(self, model: str, cfg: GenerationConfig):
        from vllm import LLM

        self.cfg = cfg
        self.llm = LLM(model=model, seed=cfg.seed, dtype=cfg.dtype, **cfg.vllm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    render = TransformersBackend.render

    def generate(self, prompts: list[str], chunk_seed: int, problem_ids: list[str], progress) -> list[tuple]:
        params = vllm_sampling_params(self.cfg, [derive_seed(self.cfg.seed, pid) for pid in problem_ids])
        # Token ids, not text: vLLM would add special tokens (a second BOS) to an already-rendered chat prompt.
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        outputs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        results = rows_from_vllm(outputs, self.cfg.k)
        progress(len(results), sum(r[1] for r in results))
        return results


# ------------------------------------------------------------------------------------------------ driver


def _manifest(model: str, cfg: GenerationConfig, problems: pl.DataFrame) -> dict:
    digest = hashlib.sha256()
    for pid, q, a in problems.select("problem_id", "question", "answer").iter_rows():
        digest.update(f"{pid}\0{q}\0{a}\0".encode())
    settings = asdict(cfg)
    if cfg.backend == "vllm":
        settings.pop("batch_size")  # vLLM schedules its own batches; samples are seeded per problem
    return {"version": MANIFEST_VERSION, "model": str(model), "model_fingerprint": model_fingerprint(model),
            "settings": settings, "problems": digest.hexdigest()[:16], "n_problems": problems.height}


def _check_manifest(out_dir: Path, manifest: dict) -> None:
    path = out_dir / "manifest.json"
    if not path.exists():
        if any(out_dir.glob("chunk-*.parquet")):
            raise ValueError(f"{out_dir} holds chunk files but no manifest.json; refusing to mix them in")
        tmp = tmp_beside(path)
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, path)
        return
    stored = json.loads(path.read_text())
    flat = lambda m: {**{k: v for k, v in m.items() if k != "settings"}, **m.get("settings", {})}  # noqa: E731
    old, new = flat(stored), flat(manifest)
    diff = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(f"{out_dir} holds rollouts from other settings ({'; '.join(diff)}). Resume with the "
                         "same settings, or choose another output folder.")


def generate_rollouts(problems: pl.DataFrame, model: str, cfg: GenerationConfig | None = None,
                      out_dir: str | os.PathLike | None = None, progress: bool = True,
                      on_progress: Callable | None = None, wait_for_lock: bool = False) -> pl.DataFrame:
    """The rollouts frame: `cfg.k` samples for every problem (columns in docs/ARCHITECTURE.md).

    With `out_dir`, chunks already there (same model, settings and problems) are reused and the others
    written as they finish, so an interrupted call resumes. This process alone writes `out_dir` meanwhile
    (locks.hold): another call on it fails at once naming the holder, or with `wait_for_lock` waits for it.

    `progress` shows a tqdm bar. `on_progress(stage="generate", done=, total=, tokens_per_s=,
    samples_per_s=, chunks_done=, chunks_total=)` is called (keywords only) after each sampled batch
    (vLLM: each chunk) and once up front; done / total count samples, those of reused chunks included.
    """
    if out_dir is None:
        return _generate_rollouts(problems, model, cfg, None, progress, on_progress)
    with locks.hold(out_dir, wait=wait_for_lock):
        return _generate_rollouts(problems, model, cfg, out_dir, progress, on_progress)


def _generate_rollouts(problems, model, cfg, out_dir, progress, on_progress) -> pl.DataFrame:
    import time

    from tqdm import tqdm

    cfg = cfg or GenerationConfig()
    missing = {"problem_id", "question", "answer"} - set(problems.columns)
    if missing:
        raise ValueError(f"problems frame lacks column(s) {', '.join(sorted(missing))}")
    if problems["problem_id"].is_duplicated().any():
        dup = problems.filter(problems["problem_id"].is_duplicated())["problem_id"][0]
        raise ValueError(f"problems frame has duplicate problem_id {dup!r}")
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_manifest(out_dir, _manifest(model, cfg, problems))

    n_chunks = -(-problems.height // cfg.chunk_problems)
    chunks = [problems.slice(i * cfg.chunk_problems, cfg.chunk_problems) for i in range(n_chunks)]
    paths = [out_dir / f"chunk-{i:05d}.parquet" if out_dir else None for i in range(n_chunks)]
    done = {i: pl.read_parquet(p) for i, p in enumerate(paths) if p is not None and p.exists()}
    todo = [i for i in range(n_chunks) if i not in done]
    backend = None
    bar = tqdm(total=sum(chunks[i].height for i in todo) * cfg.k, desc="rollouts", unit="sample",
               disable=not progress or not todo)
    state = {"done": sum(f.height for f in done.values()), "new": 0, "tokens": 0, "start": time.monotonic()}

    def advance(samples: int, tokens: int) -> None:
        bar.update(samples)
        state["done"] += samples
        state["new"] += samples
        state["tokens"] += tokens
        if on_progress is not None:
            elapsed = time.monotonic() - state["start"]
            on_progress(stage="generate", done=state["done"], total=problems.height * cfg.k,
                        tokens_per_s=state["tokens"] / elapsed if elapsed > 0 else None,
                        samples_per_s=state["new"] / elapsed if elapsed > 0 else None,
                        chunks_done=n_chunks - len(todo) + finished, chunks_total=n_chunks)

    finished = 0
    if on_progress is not None:  # reused chunks, before the model loads
        on_progress(stage="generate", done=state["done"], total=problems.height * cfg.k,
                    chunks_done=n_chunks - len(todo), chunks_total=n_chunks)
    for i in todo:
        if backend is None:
            backend = (VLLMBackend if cfg.backend == "vllm" else TransformersBackend)(model, cfg)
            state["start"] = time.monotonic()  # rates count sampling, not the model load
        chunk = chunks[i]
        prompts = backend.render(chunk["question"].to_list())
        results = backend.generate(prompts, derive_seed(cfg.seed, f"chunk{i}"), chunk["problem_id"].to_list(),
                                   advance)
        settings = (str(model), cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed)
        sources = chunk["source"] if "source" in chunk.columns else [None] * chunk.height  # Table 1 is per dataset
        problem_rows = zip(chunk["problem_id"], chunk["question"], chunk["answer"], sources)
        rows = [(pid, j, q, a, prompt, *results[n * cfg.k + j], *settings, src)
                for n, ((pid, q, a, src), prompt) in enumerate(zip(problem_rows, prompts)) for j in range(cfg.k)]
        frame = pl.DataFrame(rows, schema=ROLLOUT_SCHEMA, orient="row")
        if paths[i] is not None:
            write_parquet_atomic(frame, paths[i])
        done[i] = frame
        finished += 1
    bar.close()
    return pl.concat([done[i] for i in range(n_chunks)]) if done else pl.DataFrame(schema=ROLLOUT_SCHEMA)
