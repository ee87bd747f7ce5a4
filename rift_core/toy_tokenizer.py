"""The embedded task's tokenizer: a byte-level BPE of Qwen2's kind, one token per word of the task and per digit."""
import json
import os
import re

from rift_core import toy_task
from rift_core.prompts import QWEN_MATH_COT_SYSTEM


# The tokenizer's corpus (part of the base policy's cache key) draws 50 problems of each split as the splits
# were when the tiny policy was calibrated: frozen here, so retuning a benchmark split or adding one neither
# changes the tokenizer nor retrains the policy.
_NUMBERS_THEN = dict(max_number=10, max_value=30, distractors=(0, 0, 1))
_CORPUS_SPLITS = {
    "warmup": (toy_task.Difficulty(steps=(1, 2, 3), **_NUMBERS_THEN), (0, 57)),
    "seed": (toy_task.Difficulty(steps=(2, 3), **_NUMBERS_THEN), (60, 75)),
    "id": (toy_task.Difficulty(steps=(2, 3), **_NUMBERS_THEN), (75, 85)),
    "ood_steps": (toy_task.Difficulty(steps=(4, 5), **_NUMBERS_THEN), (85, 93)),
    "ood_numbers": (toy_task.Difficulty(steps=(2, 3), max_number=50, max_value=150, distractors=(0, 0, 1)), (93, 100)),
    "calibration": (toy_task.Difficulty(steps=(2, 3), **_NUMBERS_THEN), (57, 60)),
}

# ChatML, as Qwen2.5 writes it.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    """Texts covering every word, digit and symbol run the task and the chat prompt can produce."""
    words = " ".join([toy_task.START, *toy_task.ADD, *toy_task.SUB, *toy_task.MUL, *toy_task.DISTRACT,
                      toy_task.QUESTION, *toy_task.NAMES, *toy_task.ITEMS, QWEN_MATH_COT_SYSTEM,
                      "Start with The answer is system user assistant"])
    words = re.sub(r"\{(name|other|item|n)\}", " ", words).split()
    texts = [f"{w} {w}" for w in words] + [f"<|im_start|>{r}\n" for r in ("system", "user", "assistant")]
    for split, (d, buckets) in _CORPUS_SPLITS.items():
        for p in toy_task.draw(split, d, buckets, 50, seed=0).iter_rows(named=True):
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
    raw.train_from_iterator(corpus(), trainer)
    spec = json.loads(raw.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    tok = Qwen2Tokenizer(vocab=spec["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, additional_special_tokens=["<|im_start|>"], clean_up_tokenization_spaces=False)
    tok.chat_template = CHATML
    tok.save_pretrained(out_dir)
    return tok
