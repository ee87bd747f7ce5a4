import json
import re

import pytest
from conftest import session_base_policy
from safetensors.torch import load_file

from rift_core import base_policy, toy_task, toy_tokenizer
from rift_core.prompts import QWEN_MATH_COT_SYSTEM, render_prompt

TINY = dict(hidden=32, layers=1, heads=2, steps=3, batch=4, n_warmup=64)  # fixed steps: no calibration
STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


def test_problems_are_seeded_and_well_formed():
    a, b = toy_task.problems("seed", 200, seed=0), toy_task.problems("seed", 200, seed=0)
    assert a.equals(b)
    assert not a["question"].equals(toy_task.problems("seed", 200, seed=1)["question"])
    assert a.columns == ["problem_id", "question", "answer", "solution", "source"]
    assert a["problem_id"].n_unique() == a["question"].n_unique() == 200
    assert set(a["source"]) == {"toy:seed"}
    assert toy_task.problems("id", 50)["problem_id"].to_list() == toy_task.problems("id", 80)["problem_id"].head(50).to_list()


@pytest.mark.parametrize("split", list(toy_task.SPLITS))
def test_solutions_are_correct_step_by_step(split):
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    for row in toy_task.problems(split, 300).iter_rows(named=True):
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
    for split in toy_task.SPLITS:
        for seed in (0, 1):
            for q in toy_task.problems(split, 1000 if split != "warmup" else 5000, seed=seed)["question"]:
                assert seen.setdefault(q, split) == split, f"{q!r} in {seen[q]} and {split}"


def test_calibration_split_is_held_out():
    ranges = sorted(toy_task.BUCKETS.values())
    assert set(toy_task.BUCKETS) == set(toy_task.SPLITS) == set(toy_task.DEFAULT_SIZES)
    assert ranges[0][0] == 0 and ranges[-1][1] == 100  # every bucket belongs to exactly one split
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))
    calib = toy_task.problems("calibration", 300)
    assert {toy_task.split_of(q) for q in calib["question"]} == {"calibration"}
    others = {q for split in toy_task.SPLITS if split != "calibration" for q in toy_task.problems(split, 2000)["question"]}
    assert not others & set(calib["question"])
    assert max(s.count(" = ") for s in calib["solution"]) <= 3  # the rollouts' difficulty, like `seed`
    # the splits the pipeline reads kept their problems when `calibration` took buckets from `warmup`
    assert toy_task.BUCKETS["seed"] == (60, 75) and toy_task.BUCKETS["warmup"] == (0, 57)


def test_validation_split_mixes_the_benchmarks_and_is_held_out():
    from rift_core.data import load_problems

    val = toy_task.problems("validation", 300)
    assert toy_task.problems("validation", 300).equals(val)  # deterministic
    assert not val["question"].equals(toy_task.problems("validation", 300, seed=1)["question"])
    assert {toy_task.split_of(q) for q in val["question"]} == {"validation"} and set(val["source"]) == {"toy:validation"}
    # a third each of the id / ood_steps / ood_numbers difficulties, in turn
    assert toy_task.SPLITS["validation"] == (toy_task.SPLITS["id"], toy_task.SPLITS["ood_steps"], toy_task.SPLITS["ood_numbers"])
    steps = [s.count(" = ") for s in val["solution"]]
    assert max(steps[1::3]) == 4 and max(steps[0::3]) <= 3 and max(steps[2::3]) <= 3
    assert max(int(a) for a in val["answer"][2::3]) > toy_task.SPLITS["id"].max_value >= max(int(a) for a in val["answer"][0::3])
    # its buckets come from the benchmarks' old range (75-100), none from warmup, calibration or seed
    lo, hi = toy_task.BUCKETS["validation"]
    assert 75 <= lo < hi <= 100 and toy_task.BUCKETS["seed"] == (60, 75) and toy_task.BUCKETS["id"] == (75, 85)
    others = {q for split in toy_task.SPLITS if split != "validation"
              for q in toy_task.problems(split, 2000 if split != "warmup" else 5000)["question"]}
    assert not others & set(val["question"])
    # loadable wherever a benchmark is: the pipeline's problem loader and the CLI
    loaded = load_problems("toy:validation", limit=50, seed=0)
    assert loaded.equals(val.head(50))


def test_retuned_splits_keep_the_tokenizer_corpus():
    """The tokenizer corpus (part of the base policy's cache key) is frozen at the splits the tiny policy
    was trained with: retuning the benchmark splits or adding one must not retrain it."""
    assert set(toy_tokenizer._CORPUS_SPLITS) == set(toy_task.SPLITS) - {"validation"}
    for split in ("warmup", "seed", "id", "calibration"):  # unchanged splits: the corpus draws them as problems() does
        d, buckets = toy_tokenizer._CORPUS_SPLITS[split]
        assert d == toy_task.SPLITS[split] and buckets == toy_task.BUCKETS[split]
        assert toy_task.draw(split, d, buckets, 50, 0).equals(toy_task.problems(split, 50, 0))
    assert toy_tokenizer._CORPUS_SPLITS["ood_steps"][0].steps == (4, 5)  # as the calibrated policy's corpus had it


def _stop_rule(measured: dict, **cfg):
    """Run train_to_target with a fake measure: `measured` maps step -> (pos, mixed)."""
    cfg = base_policy.ToyConfig(**{"target_pos": (0.35, 0.65), "target_mixed_min": 0.55, **cfg})
    trained, asked = [], []

    def measure(step):
        asked.append(step)
        return measured.get(step, (0.0, 0.0))

    return cfg, trained, asked, lambda: base_policy.train_to_target(trained.append, measure, cfg)


def test_stop_rule_stops_at_the_first_check_inside_the_target():
    measured = {100: (0.2, 0.6), 125: (0.7, 0.6), 150: (0.5, 0.5), 175: (0.4, 0.6), 200: (0.5, 0.7)}
    cfg, trained, asked, run = _stop_rule(measured, check_every=25, min_steps=100, max_steps=1000)
    result = run()
    assert (result["step"], result["pos"], result["mixed"]) == (175, 0.4, 0.6)
    assert asked == [100, 125, 150, 175] and trained == [100, 25, 25, 25]  # no check before min_steps
    assert [c["step"] for c in result["checks"]] == asked
    # the bounds are inclusive
    assert _stop_rule({50: (0.35, 0.55)}, check_every=50, max_steps=100)[3]()["step"] == 50
    assert base_policy.in_target(0.65, 0.55, cfg) and not base_policy.in_target(0.66, 0.9, cfg) and not base_policy.in_target(0.5, 0.54, cfg)


def test_stop_rule_gives_up_after_the_step_budget():
    cfg, trained, asked, run = _stop_rule({25: (0.1, 0.3), 50: (0.9, 0.1)}, check_every=25, max_steps=60)
    with pytest.raises(base_policy.CalibrationError, match=r"max_steps=60.*step 25: %Pos 10.0% %Mixed 30.0%.*step 50"):
        run()
    assert asked == [25, 50, 60] and sum(trained) == 60  # the last check falls on the budget itself
    with pytest.raises(ValueError, match="target_pos"):
        base_policy.ToyConfig(target_pos=(0.7, 0.3))


def test_calibrated_training_records_its_check_and_is_undisturbed_by_it(tmp_path, monkeypatch):
    """The real measure (the pipeline's sampler on the calibration split, in a process of its own while training
    goes on) with a target any policy meets: training stops at the first check, records it, and the weights equal
    a plain run of that many steps, though training went on while the check sampled."""
    import torch

    monkeypatch.setattr(base_policy.os, "cpu_count", lambda: torch.get_num_threads() + 1)  # a core to spare for the check

    calib = dict(TINY, steps=0, target_pos=(0.0, 1.0), target_mixed_min=0.0, check_every=2, max_steps=4,
                 check_problems=2, check_k=2, check_max_new_tokens=8)
    path = base_policy.ensure_base_policy(tmp_path / "c", progress=False, **calib)
    record = base_policy.read_calibration(path)
    assert record["calibrated"] and record["step"] == 2 and [c["step"] for c in record["checks"]] == [2]
    assert record["discarded_steps"] == 2  # trained on while the check's process started and sampled
    assert 0 <= record["pos"] <= 1 and 0 <= record["mixed"] <= 1
    assert record["torch_version"] == torch.__version__ and record["threads"] == torch.get_num_threads()
    assert record["target_pos"] == [0.0, 1.0] and isinstance(record.get("train_seconds"), float)  # recorded, not timed
    assert not (path / ".check").exists()
    plain = base_policy.ensure_base_policy(tmp_path / "p", progress=False, **{**TINY, "steps": 2})
    assert base_policy.read_calibration(plain)["calibrated"] is False
    a, b = load_file(path / "model.safetensors"), load_file(plain / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)

    with pytest.raises(base_policy.CalibrationError, match="max_steps=2"):
        base_policy.ensure_base_policy(tmp_path / "f", progress=False, **{**calib, "target_pos": (1.0, 1.0),
                                                                  "target_mixed_min": 1.0, "max_steps": 2})
    assert not list((tmp_path / "f").iterdir())  # a failed calibration leaves nothing behind


def test_smoke_policy_has_right_and_wrong_samples_on_its_seeds(tmp_path_factory):
    """The smoke profile trains until some samples are right and some wrong: RFT needs a right one, RIFT and
    DPO a wrong one. Checked on the 12 seed problems its rollouts use, with its sampling settings (on the policy
    the session's other tests use: conftest.session_base_policy)."""
    from rift_core.generation import generate_rollouts
    from rift_core.profiles import load_profile

    prof = load_profile("smoke")
    cfg = prof.toy_config()
    path = session_base_policy(tmp_path_factory, "smoke")
    record = base_policy.read_calibration(path)
    assert record["calibrated"] and base_policy.in_target(record["pos"], record["mixed"], cfg)
    seeds = toy_task.problems("seed", prof.n_seeds, prof.seed)
    rollouts = generate_rollouts(seeds, str(path), prof.generation_config(), progress=False)
    right = sum(toy_task.last_boxed(r) == a for r, a in zip(rollouts["response"], rollouts["answer"]))
    assert 0 < right < rollouts.height, f"{right} of {rollouts.height} right"


def test_difficulty_knobs_shape_the_ood_splits():
    def n_steps(split):
        return [s.count(" = ") for s in toy_task.problems(split, 300)["solution"]]

    # ood_steps: 3-4 steps (a 4-step problem is beyond any warm-up or seed problem), more on average than seed
    assert max(n_steps("seed")) <= 3 < max(n_steps("ood_steps"))
    assert min(n_steps("ood_steps")) >= 3 and sum(n_steps("ood_steps")) > sum(n_steps("seed")) + 200
    biggest = lambda split: max(int(a) for a in toy_task.problems(split, 300)["answer"])  # noqa: E731
    assert biggest("seed") <= toy_task.SPLITS["seed"].max_value < biggest("ood_numbers")
    numbers = lambda split: [int(x) for q in toy_task.problems(split, 300)["question"] for x in re.findall(r"\d+", q)]  # noqa: E731
    assert max(numbers("seed")) <= toy_task.SPLITS["seed"].max_number < max(numbers("ood_numbers"))
    with_distractor = sum(q.count(".") > s.count("=") + 1 for q, s in toy_task.problems("seed", 300).select("question", "solution").iter_rows())
    assert 0 < with_distractor < 300
    with pytest.raises(ValueError, match="unknown toy split 'train'"):
        toy_task.problems("train")


def test_tokenizer_round_trips_every_split(tmp_path):
    from transformers import AutoTokenizer

    toy_tokenizer.build_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    for split in toy_task.SPLITS:
        for q, sol in toy_task.problems(split, 100).select("question", "solution").iter_rows():
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

    path = base_policy.ensure_base_policy(tmp_path / "a", progress=False, **TINY)
    weights = (path / "model.safetensors").stat().st_mtime_ns
    assert base_policy.ensure_base_policy(tmp_path / "a", progress=False, **TINY) == path  # reused, not retrained
    assert (path / "model.safetensors").stat().st_mtime_ns == weights
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind

    again = base_policy.ensure_base_policy(tmp_path / "b", progress=False, **TINY)
    assert again.name == path.name
    first, second = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    assert base_policy.ensure_base_policy(tmp_path / "a", progress=False, **{**TINY, "seed": 1}) != path

    # A qwen2 model dir makes AutoTokenizer build a Qwen2Tokenizer: it must be the tokenizer trained with.
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert model.config.eos_token_id == tok.eos_token_id and model.config.vocab_size == len(tok)
    built = toy_tokenizer.build_tokenizer(tmp_path / "tok")
    text = render_prompt(tok, toy_task.problems("seed", 1)["question"][0]) + toy_task.problems("seed", 1)["solution"][0]
    assert tok(text)["input_ids"] == built(text)["input_ids"] and tok.decode(tok(text)["input_ids"]) == text
    assert json.loads((path / "toy_config.json").read_text())["hidden"] == TINY["hidden"]
    enc = tok([render_prompt(tok, "Tom has 3 apples. How many apples does Tom have now?")], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]

    with pytest.raises(ValueError, match="unknown toy setting.*hiden"):
        base_policy.ensure_base_policy(tmp_path, hiden=8)


def test_snapshot_at_step_n_is_the_policy_trained_for_n_steps(tmp_path):
    base_policy.train_base_policy(tmp_path / "long", base_policy.ToyConfig(**{**TINY, "steps": 6}), progress=False, save_at=(3,))
    base_policy.train_base_policy(tmp_path / "short", base_policy.ToyConfig(**{**TINY, "steps": 3}), progress=False)
    a, b = load_file(tmp_path / "long/step-3/model.safetensors"), load_file(tmp_path / "short/model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    c = load_file(tmp_path / "long/model.safetensors")
    assert not all((a[k] == c[k]).all() for k in a)


def test_cli_writes_a_split(tmp_path):
    from rift_core.__main__ import main

    for split in ("ood_steps", "validation"):
        main(["toy", "problems", split, "--n", "20", "--seed", "3", "--out", str(tmp_path / f"{split}.jsonl")])
        lines = (tmp_path / f"{split}.jsonl").read_text().splitlines()
        assert [json.loads(x)["question"] for x in lines] == toy_task.problems(split, 20, seed=3)["question"].to_list()
