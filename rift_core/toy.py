"""The embedded task: seeded arithmetic word problems, a tokenizer with one token per word and per digit,
and a small base policy.

No pretrained math model is reachable offline, so the CPU miniature of the paper brings its own task and
trains its own imperfect Qwen2 on it (a warm-up split), then RIFT and the baselines fine-tune that policy
on its own rollouts on the disjoint `seed` split, and every model is scored on an in-distribution and two
out-of-distribution benchmark splits (more steps; larger numbers).
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from rift_core.prompts import QWEN_MATH_COT_SYSTEM, render_prompt

# ---------------------------------------------------------------------------------------------- problems

NAMES = ["Tom", "Ann", "Ben", "Mia", "Sam", "Lily", "Max", "Zoe", "Leo", "Eva", "Jack", "Nora"]
ITEMS = ["apples", "pears", "books", "coins", "cards", "stamps", "shells", "marbles", "pencils", "cookies"]
START = "{name} has {n} {item}."
ADD = ["{name} buys {n} more {item}.", "{name} finds {n} more {item}.", "{other} gives {name} {n} more {item}."]
SUB = ["{name} gives {n} {item} to {other}.", "{name} sells {n} {item}.", "{name} loses {n} {item}."]
MUL = ["{name} then has {n} times as many {item}."]
DISTRACT = ["{other} has {n} {item}.", "{other} is {n} years old.", "The shop has {n} {item}."]
QUESTION = "How many {item} does {name} have now?"


@dataclass(frozen=True)
class Difficulty:
    steps: tuple[int, ...]  # number of operations, drawn uniformly from this tuple (repeat to weight)
    max_number: int  # operands (and the start) are drawn from 1..max_number
    max_value: int  # intermediate results stay in 0..max_value
    distractors: tuple[int, ...]  # irrelevant sentences per problem, drawn from this tuple
    mul: float = 0.15  # chance that a step multiplies (by 2 or 3) when the result stays in range


# The base policy learns on 1-3 step problems; rollouts and the in-distribution benchmark use the 2-3
# step ones, where a partly trained policy is unsure enough for its K samples to disagree.
_NUMBERS = dict(max_number=10, max_value=30, distractors=(0, 0, 1))
SPLITS = {
    "warmup": Difficulty(steps=(1, 2, 3), **_NUMBERS),  # trains the base policy
    "seed": Difficulty(steps=(2, 3), **_NUMBERS),  # the problems rollouts are sampled on
    "id": Difficulty(steps=(2, 3), **_NUMBERS),  # in-distribution benchmark
    "ood_steps": Difficulty(steps=(4, 5), **_NUMBERS),
    "ood_numbers": Difficulty(steps=(2, 3), max_number=50, max_value=150, distractors=(0, 0, 1)),
}
DEFAULT_SIZES = {"warmup": 50_000, "seed": 2_000, "id": 500, "ood_steps": 500, "ood_numbers": 500}
# Every question hashes to one of 100 buckets and each split owns a disjoint range of them, so no two
# splits can share a problem whatever their seeds or sizes.
BUCKETS = {"warmup": (0, 60), "seed": (60, 75), "id": (75, 85), "ood_steps": (85, 93), "ood_numbers": (93, 100)}


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def split_of(question: str) -> str:
    bucket = int(_digest(question)[:8], 16) % 100
    return next(s for s, (lo, hi) in BUCKETS.items() if lo <= bucket < hi)


def make_problem(rng: random.Random, d: Difficulty) -> dict:
    """One word problem with its worked solution (one equation per step) ending in \\boxed{answer}."""
    name, other = rng.sample(NAMES, 2)
    item, item2 = rng.sample(ITEMS, 2)
    value = rng.randint(1, d.max_number)
    sentences, lines = [START.format(name=name, n=value, item=item)], [f"Start with {value}."]
    for _ in range(rng.choice(d.steps)):
        if value * 3 <= d.max_value and rng.random() < d.mul:
            n = rng.randint(2, 3)
            template, new, op = rng.choice(MUL), value * n, "*"
        elif value > 1 and (value + 1 > d.max_value or rng.random() < 0.5):
            n = rng.randint(1, min(value, d.max_number))
            template, new, op = rng.choice(SUB), value - n, "-"
        else:
            n = rng.randint(1, min(d.max_number, d.max_value - value))
            template, new, op = rng.choice(ADD), value + n, "+"
        sentences.append(template.format(name=name, other=other, n=n, item=item))
        lines.append(f"{value} {op} {n} = {new}.")
        value = new
    for _ in range(rng.choice(d.distractors)):
        at = rng.randint(1, len(sentences))
        sentences.insert(at, rng.choice(DISTRACT).format(other=other, n=rng.randint(1, d.max_number), item=item2))
    sentences.append(QUESTION.format(item=item, name=name))
    lines.append(f"The answer is \\boxed{{{value}}}")
    return {"question": " ".join(sentences), "answer": str(value), "solution": " ".join(lines)}


def problems(split: str, n: int | None = None, seed: int = 0) -> pl.DataFrame:
    """`n` distinct problems of `split` (default size per split), the same ones for the same seed."""
    if split not in SPLITS:
        raise ValueError(f"unknown toy split {split!r}; expected one of {', '.join(SPLITS)}")
    n = DEFAULT_SIZES[split] if n is None else n
    rng = random.Random(f"rift-toy:{seed}:{split}")  # str seeds hash with sha512: stable across runs
    rows, seen, draws = [], set(), 0
    while len(rows) < n:
        draws += 1
        if draws > 200 * n + 10_000:
            raise RuntimeError(f"toy split {split!r}: cannot draw {n} distinct problems (got {len(rows)})")
        p = make_problem(rng, SPLITS[split])
        if p["question"] in seen or split_of(p["question"]) != split:
            continue
        seen.add(p["question"])
        rows.append({"problem_id": "toy-" + _digest(p["question"])[:12], **p, "source": f"toy:{split}"})
    schema = {c: pl.String for c in ("problem_id", "question", "answer", "solution", "source")}
    return pl.DataFrame(rows, schema=schema)


# --------------------------------------------------------------------------------------------- tokenizer

# ChatML, as Qwen2.5 writes it.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    """Texts covering every word, digit and symbol run the task and the chat prompt can produce."""
    words = " ".join([START, *ADD, *SUB, *MUL, *DISTRACT, QUESTION, *NAMES, *ITEMS, QWEN_MATH_COT_SYSTEM,
                      "Start with The answer is system user assistant"])
    words = re.sub(r"\{(name|other|item|n)\}", " ", words).split()
    texts = [f"{w} {w}" for w in words] + [f"<|im_start|>{r}\n" for r in ("system", "user", "assistant")]
    for split in SPLITS:
        for p in problems(split, 50, seed=0).iter_rows(named=True):
            texts += [p["question"], p["solution"]]
    return texts


def build_tokenizer(out_dir: str | os.PathLike):
    """Save the task's tokenizer to `out_dir` and return it.

    A byte-level BPE with Qwen2's own pre-tokenizer (one token per digit), trained on the task's text until
    every word is one token: a model dir of model_type qwen2 loads its tokenizer as `Qwen2Tokenizer`, which
    rebuilds that pre-tokenizer around the saved vocab and merges, so this one must be of the same kind.
    Any other text still round-trips, byte by byte.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    base = Qwen2Tokenizer()._tokenizer  # the normaliser, pre-tokeniser and decoder Qwen2 uses
    raw = Tokenizer(models.BPE())
    raw.normalizer, raw.pre_tokenizer, raw.decoder = base.normalizer, base.pre_tokenizer, base.decoder
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(_corpus(), trainer)
    spec = json.loads(raw.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    tok = Qwen2Tokenizer(vocab=spec["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, additional_special_tokens=["<|im_start|>"], clean_up_tokenization_spaces=False)
    tok.chat_template = CHATML
    tok.save_pretrained(out_dir)
    return tok


# ------------------------------------------------------------------------------------------- base policy


@dataclass
class ToyConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    steps: int = 600  # optimizer steps on the warm-up split; more makes the policy too sure for mixed groups
    batch: int = 32
    lr: float = 2e-3
    n_warmup: int = 32_000  # warm-up problems (more than steps x batch: none is seen twice)
    seed: int = 0
    bf16: bool = True  # bf16 autocast: measured 1.2x faster than fp32 on this CPU


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


def train_base_policy(out_dir: str | os.PathLike, cfg: ToyConfig, progress: bool = True, save_at=()) -> Path:
    """Train a Qwen2 from scratch on the warm-up split and save model + tokenizer to `out_dir`.

    `save_at` lists steps after which to also save `out_dir/step-N` (to calibrate: with a constant rate,
    the policy saved at step N equals the one trained with steps=N).
    """
    import torch
    from tqdm import tqdm
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir)
    data = _encode(tok, problems("warmup", cfg.n_warmup, cfg.seed))
    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.98))
    warm = min(25, max(1, cfg.steps // 10))
    # Linear warm-up, then constant: the policy stops where a longer run would pass through, still unsure
    # (decaying the rate instead delayed the jump in arithmetic accuracy past the end of training).

    def lr_at(step):
        return cfg.lr * min(1.0, (step + 1) / warm)

    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(data), generator=gen).tolist()
    model.train()
    bar = tqdm(range(cfg.steps), desc="toy base policy", disable=not progress)
    per_epoch = max(1, len(data) // cfg.batch)
    for step in bar:
        if step and step % per_epoch == 0:
            order = torch.randperm(len(data), generator=gen).tolist()
        start = (step % per_epoch) * cfg.batch
        ids, labels, mask = _batch([data[i] for i in order[start : start + cfg.batch]], tok.pad_token_id)
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
        if step + 1 in save_at:
            _save(model, tok, out_dir / f"step-{step + 1}")
    _save(model, tok, out_dir)
    return out_dir


def _save(model, tok, path: Path) -> None:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)


def policy_key(cfg: ToyConfig) -> str:
    """Hash of everything the base policy depends on: settings, vocabulary and the warm-up text itself."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(json.dumps(_corpus()).encode())
    h.update(CHATML.encode())
    for q, s in problems("warmup", cfg.n_warmup, cfg.seed).select("question", "solution").iter_rows():
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
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    train_base_policy(tmp, cfg, progress)
    (tmp / "toy_config.json").write_text(json.dumps({**asdict(cfg), "train_seconds": round(time.time() - t0, 1)}))
    try:
        os.replace(tmp, final)  # atomic: a crash leaves no half-written policy under the final name
    except OSError:  # another process finished the same policy first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rift_core toy", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("problems", help="write a split to JSONL")
    p.add_argument("split", choices=list(SPLITS))
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    t = sub.add_parser("tokenizer", help="save the word-level tokenizer to a folder")
    t.add_argument("out")
    b = sub.add_parser("base-policy", help="train (or reuse) the base policy of a profile; prints its path")
    b.add_argument("--profile", default="tiny")
    b.add_argument("--out", default=None, help="folder for cached policies (default data/<profile>/toy)")
    args = ap.parse_args(argv)

    if args.cmd == "problems":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        problems(args.split, args.n, args.seed).write_ndjson(tmp)
        os.replace(tmp, out)
        print(out)
    elif args.cmd == "tokenizer":
        build_tokenizer(args.out)
        print(args.out)
    else:
        from rift_core.profiles import load_profile

        prof = load_profile(args.profile)
        if prof.base_model != "toy":
            raise SystemExit(f"{prof.source}: base_model is {prof.base_model!r}, not 'toy'; nothing to train")
        print(ensure_base_policy(args.out or Path("data") / prof.name / "toy", **prof.toy))


if __name__ == "__main__":
    main()
