import json
import re

import pytest
from safetensors.torch import load_file

from rift_core import toy
from rift_core.prompts import QWEN_MATH_COT_SYSTEM, render_prompt

TINY = dict(hidden=32, layers=1, heads=2, steps=3, batch=4, n_warmup=64)
STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


def test_problems_are_seeded_and_well_formed():
    a, b = toy.problems("seed", 200, seed=0), toy.problems("seed", 200, seed=0)
    assert a.equals(b)
    assert not a["question"].equals(toy.problems("seed", 200, seed=1)["question"])
    assert a.columns == ["problem_id", "question", "answer", "solution", "source"]
    assert a["problem_id"].n_unique() == a["question"].n_unique() == 200
    assert set(a["source"]) == {"toy:seed"}
    assert toy.problems("id", 50)["problem_id"].to_list() == toy.problems("id", 80)["problem_id"].head(50).to_list()


@pytest.mark.parametrize("split", list(toy.SPLITS))
def test_solutions_are_correct_step_by_step(split):
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    for row in toy.problems(split, 300).iter_rows(named=True):
        assert row["solution"].endswith(f"\\boxed{{{row['answer']}}}")
        value = int(re.match(r"Start with (\d+)\.", row["solution"]).group(1))
        steps = STEP.findall(row["solution"])
        assert steps, row["solution"]
        for x, op, y, z in steps:
            assert int(x) == value and ops[op](int(x), int(y)) == int(z) >= 0, row["solution"]
            value = int(z)
        assert str(value) == row["answer"]


def test_splits_never_share_a_problem():
    seen = {}
    for split in toy.SPLITS:
        for seed in (0, 1):
            for q in toy.problems(split, 1000 if split != "warmup" else 5000, seed=seed)["question"]:
                assert seen.setdefault(q, split) == split, f"{q!r} in {seen[q]} and {split}"


def test_difficulty_knobs_shape_the_ood_splits():
    def n_steps(split):
        return [s.count(" = ") for s in toy.problems(split, 300)["solution"]]

    assert max(n_steps("seed")) <= 3 < min(n_steps("ood_steps"))
    biggest = lambda split: max(int(a) for a in toy.problems(split, 300)["answer"])  # noqa: E731
    assert biggest("seed") <= toy.SPLITS["seed"].max_value < biggest("ood_numbers")
    with_distractor = sum(q.count(".") > s.count("=") + 1 for q, s in toy.problems("seed", 300).select("question", "solution").iter_rows())
    assert 0 < with_distractor < 300
    with pytest.raises(ValueError, match="unknown toy split 'train'"):
        toy.problems("train")


def test_tokenizer_round_trips_every_split(tmp_path):
    from transformers import AutoTokenizer

    toy.build_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    for split in toy.SPLITS:
        for q, sol in toy.problems(split, 100).select("question", "solution").iter_rows():
            text = render_prompt(tok, q) + sol + tok.eos_token
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == text
            assert len(ids) < 200  # word-level: one token per word and per digit
    prompt = render_prompt(tok, "Tom has 3 apples. How many apples does Tom have now?")
    assert prompt.startswith(f"<|im_start|>system\n{QWEN_MATH_COT_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tok.convert_ids_to_tokens(tok("Start with 123.")["input_ids"]) == ["Start", "Ġwith", "Ġ", "1", "2", "3", "."]
    assert tok.decode(tok("Any other text: 7½ ü")["input_ids"]) == "Any other text: 7½ ü"  # byte-level fallback
    assert tok.decode(tok("<|im_start|>user\nTom 4<|im_end|>")["input_ids"], skip_special_tokens=True) == "user\nTom 4"


def test_base_policy_is_cached_deterministic_and_loadable(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = toy.ensure_base_policy(tmp_path / "a", progress=False, **TINY)
    weights = (path / "model.safetensors").stat().st_mtime_ns
    assert toy.ensure_base_policy(tmp_path / "a", progress=False, **TINY) == path  # reused, not retrained
    assert (path / "model.safetensors").stat().st_mtime_ns == weights
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind

    again = toy.ensure_base_policy(tmp_path / "b", progress=False, **TINY)
    assert again.name == path.name
    first, second = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    assert toy.ensure_base_policy(tmp_path / "a", progress=False, **{**TINY, "seed": 1}) != path

    # A qwen2 model dir makes AutoTokenizer build a Qwen2Tokenizer: it must be the tokenizer trained with.
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert model.config.eos_token_id == tok.eos_token_id and model.config.vocab_size == len(tok)
    built = toy.build_tokenizer(tmp_path / "tok")
    text = render_prompt(tok, toy.problems("seed", 1)["question"][0]) + toy.problems("seed", 1)["solution"][0]
    assert tok(text)["input_ids"] == built(text)["input_ids"] and tok.decode(tok(text)["input_ids"]) == text
    assert json.loads((path / "toy_config.json").read_text())["hidden"] == TINY["hidden"]
    enc = tok([render_prompt(tok, "Tom has 3 apples. How many apples does Tom have now?")], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]

    with pytest.raises(ValueError, match="unknown toy setting.*hiden"):
        toy.ensure_base_policy(tmp_path, hiden=8)


def test_snapshot_at_step_n_is_the_policy_trained_for_n_steps(tmp_path):
    toy.train_base_policy(tmp_path / "long", toy.ToyConfig(**{**TINY, "steps": 6}), progress=False, save_at=(3,))
    toy.train_base_policy(tmp_path / "short", toy.ToyConfig(**{**TINY, "steps": 3}), progress=False)
    a, b = load_file(tmp_path / "long/step-3/model.safetensors"), load_file(tmp_path / "short/model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    c = load_file(tmp_path / "long/model.safetensors")
    assert not all((a[k] == c[k]).all() for k in a)


def test_cli_writes_a_split(tmp_path):
    from rift_core.__main__ import main

    main(["toy", "problems", "ood_steps", "--n", "20", "--seed", "3", "--out", str(tmp_path / "ood.jsonl")])
    lines = (tmp_path / "ood.jsonl").read_text().splitlines()
    assert [json.loads(x)["question"] for x in lines] == toy.problems("ood_steps", 20, seed=3)["question"].to_list()
