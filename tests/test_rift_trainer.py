import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from rift_core import RIFTConfig, RIFTTrainer

torch.set_num_threads(1)  # tiny models; the machine is shared


def rows(n=8, conversational=False) -> list[dict]:
    """Prompt-completion rows, even ones right (+1), odd ones wrong (-0.2)."""
    out = []
    for i in range(n):
        prompt, completion = f"What is {i} + {i}? ", f"\\boxed{{{2 * i + i % 2}}}"
        if conversational:
            prompt = [{"role": "user", "content": prompt}]
            completion = [{"role": "assistant", "content": completion}]
        out.append({"prompt": prompt, "completion": completion, "reward": 1.0 if i % 2 == 0 else -0.2})
    return out


def settings(tmp_path, **kw) -> dict:
    return {**dict(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2,
                   learning_rate=1e-3, warmup_steps=0, bf16=False, gradient_checkpointing=False, save_strategy="no",
                   logging_steps=1, report_to="none", use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0), **kw}


def fit(tiny_model, trainer_class, args, data: list[dict]):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(data),
                            processing_class=AutoTokenizer.from_pretrained(tiny_model))
    trainer.train()
    return trainer


@pytest.mark.parametrize("conversational", [False, True])
def test_trains_on_prompt_completion_data_like_sft_trainer_takes_it(tiny_model, tmp_path, conversational):
    trainer = fit(tiny_model, RIFTTrainer, RIFTConfig(**settings(tmp_path)), rows(conversational=conversational))
    before = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    after = trainer.model.state_dict()
    assert trainer.state.global_step == 2 and any(not torch.equal(before[k], after[k]) for k in before)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses)))


def test_unit_rewards_train_exactly_as_sft_trainer(tiny_model, tmp_path):
    data = [{**r, "reward": 1.0} for r in rows()]
    rift = fit(tiny_model, RIFTTrainer, RIFTConfig(**settings(tmp_path / "rift")), data)
    sft = fit(tiny_model, SFTTrainer, SFTConfig(**settings(tmp_path / "sft"), loss_type="nll"),
              [{k: v for k, v in r.items() if k != "reward"} for r in data])
    a, b = rift.model.state_dict(), sft.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)


def test_naive_loss_is_a_setting_and_goes_below_zero_where_rift_stays_bounded(tiny_model, tmp_path):
    negatives = [{**r, "reward": -1.0} for r in rows()]
    kw = dict(max_steps=6, learning_rate=5e-2, gradient_accumulation_steps=1)
    losses = {}
    for loss in ("rift", "naive"):
        trainer = fit(tiny_model, RIFTTrainer, RIFTConfig(**settings(tmp_path / loss, **kw), reward_loss=loss), negatives)
        losses[loss] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert all(0.0 <= x <= 1.0 for x in losses["rift"])  # |r| * mean p lies in [0, |r|]
    assert losses["naive"][-1] < losses["naive"][0] - 5  # -r log p = log p heads for -inf


def test_rewards_come_from_correct_under_the_scheme_grouped_by_prompt(tiny_model, tmp_path):
    data = [{"prompt": f"Q{i // 4}", "completion": f" A{i}", "correct": i % 4 == 0 or i >= 4} for i in range(8)]
    args = RIFTConfig(**settings(tmp_path, max_steps=1), reward_scheme="gpg_scaled", r_pos=1.0, r_neg=-0.2)
    trainer = fit(tiny_model, RIFTTrainer, args, data)
    # prompt Q0: 1 of 4 right, alpha = 1/4; prompt Q1: all right, alpha = 1
    assert trainer.train_dataset["reward"] == pytest.approx([0.25, -0.05, -0.05, -0.05, 1.0, 1.0, 1.0, 1.0])


def test_a_dataset_without_reward_or_correct_and_bad_settings_are_clear_errors(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="needs a float 'reward' column, or a bool 'correct' column"):
        fit(tiny_model, RIFTTrainer, RIFTConfig(**settings(tmp_path)), [{"prompt": "Q", "completion": " A"}])
    with pytest.raises(TypeError, match="takes a RIFTConfig"):
        fit(tiny_model, RIFTTrainer, SFTConfig(**settings(tmp_path)), rows())
    with pytest.raises(ValueError, match="unknown reward_loss 'nll'"):
        RIFTConfig(**settings(tmp_path), reward_loss="nll")
    with pytest.raises(ValueError, match="unknown granularity 'tokens'"):
        RIFTConfig(**settings(tmp_path), granularity="tokens")


def test_import_rift_core_stays_light_until_the_trainer_is_asked_for():
    code = ("import sys, rift_core; assert 'trl' not in sys.modules\n"
            "from rift_core import RIFTConfig, RIFTTrainer; assert 'trl' in sys.modules\n"
            "assert issubclass(RIFTTrainer, __import__('trl').SFTTrainer)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("granularity", ["token", "sequence"])
def test_reward_zero_rows_change_nothing_not_even_the_divisor_across_accumulation(tiny_model, tmp_path, granularity):
    """Eight rows, four of them reward 0 (as gaussian / gpg_mean give a problem whose samples all agree), over two
    accumulated micro-batches, train exactly like the four others in one batch: the divisor counts only the
    tokens (samples) of rows with a reward, over the whole accumulated batch."""
    signal = rows(4)
    zeros = [{**r, "prompt": f"Zero {i}? ", "reward": 0.0} for i, r in enumerate(rows(4))]
    kw = dict(max_steps=1, granularity=granularity, optim="sgd")  # Adam's first step would hide a scale error
    mixed = fit(tiny_model, RIFTTrainer, RIFTConfig(**settings(tmp_path / "mixed", **kw)), signal + zeros)
    alone = fit(tiny_model, RIFTTrainer, RIFTConfig(**settings(tmp_path / "alone", gradient_accumulation_steps=1, **kw)),
                signal)
    assert mixed.args.gradient_accumulation_steps == 2
    a, b = mixed.model.state_dict(), alone.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (mixed, alone)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
