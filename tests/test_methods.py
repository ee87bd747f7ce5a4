"""The method registry's row selection: RFT's positives, DPO's two pairings, and the buffers a method cannot
train on (methods.NothingToTrain, which the Dagster graph turns into a failure of that partition alone)."""
import json

import polars as pl
import pytest
import torch

from rift_core import methods
from rift_core.methods import NothingToTrain
from rift_core.rewards import assign_rewards

torch.set_num_threads(1)  # tiny models; the machine is shared


def labelled(correct_per_problem: list[list[bool]], scheme: str = "constant", solutions: bool = True) -> pl.DataFrame:
    """A labels frame joined with solutions, as buffer_rows makes it: problem i's sample j answers 'q{i}' with 'r{i}.{j}'."""
    rows = [{"problem_id": f"p{i}", "sample_idx": j, "question": f"q{i}", "response": f"r{i}.{j}", "correct": c,
             "solution": f"s{i}" if solutions else None}
            for i, samples in enumerate(correct_per_problem) for j, c in enumerate(samples)]
    return assign_rewards(pl.DataFrame(rows), scheme)


MIXED = [[True, False, False], [True, True, True], [False, False, False], [True, True, False]]


@pytest.mark.parametrize("scheme", ["constant", "gaussian", "gpg_mean", "gpg_scaled"])
def test_rft_trains_on_the_correct_samples_whatever_their_reward(scheme):
    buffer = labelled(MIXED, scheme)
    if scheme in ("gaussian", "gpg_mean"):  # the all-correct problem p1 has reward 0: `reward > 0` would lose it
        assert buffer.filter(pl.col("problem_id") == "p1")["reward"].to_list() == [0.0, 0.0, 0.0]
    rows, notes = methods.get("rft").rows(buffer)
    assert rows["response"].to_list() == ["r0.0", "r1.0", "r1.1", "r1.2", "r3.0", "r3.1"] and notes == []
    assert methods.get("rft").record(rows.row(0, named=True), "plain") == {
        "prompt": [{"role": "user", "content": "q0"}], "completion": [{"role": "assistant", "content": "r0.0"}]}


def test_rft_with_no_correct_sample_cannot_train_and_says_why():
    with pytest.raises(NothingToTrain, match=r"buf\.parquet: none of the 6 samples is correct, so rft has no "
                                             r"positive sample to train on \(it trains on correct responses only"):
        methods.get("rft").rows(labelled([[False] * 3] * 2), "buf.parquet")


def dpo_rows(buffer, **options):
    rows, notes = methods.get("dpo").rows(buffer, "buf", **options)
    return [tuple(r) for r in rows.select("question", "chosen", "rejected").rows()], notes


def test_dpo_pairs_each_response_with_the_ground_truth_by_default_as_the_paper():
    pairs, notes = dpo_rows(labelled(MIXED[:1]))
    # correct: the response is chosen over the ground truth; wrong: the ground truth over the response
    assert pairs == [("q0", "r0.0", "s0"), ("q0", "s0", "r0.1"), ("q0", "s0", "r0.2")] and notes == []
    assert dpo_rows(labelled(MIXED[:1]), dpo_pairing="ground_truth") == (pairs, notes)
    assert methods.get("dpo").record({"question": "q0", "chosen": "r0.0", "rejected": "s0"}, "plain") == {
        "prompt": [{"role": "user", "content": "q0"}], "chosen": [{"role": "assistant", "content": "r0.0"}],
        "rejected": [{"role": "assistant", "content": "s0"}]}
    no_truth = labelled(MIXED).with_columns(solution=pl.when(pl.col("problem_id") == "p0").then(None).otherwise("solution"))
    pairs, notes = dpo_rows(no_truth)
    assert len(pairs) == 9 and notes == ["dropped 3 of 12 rows with no 'solution'"]
    with pytest.raises(NothingToTrain, match="no row has a ground-truth 'solution'"):
        dpo_rows(labelled(MIXED, solutions=False))


def test_dpo_responses_pairing_puts_every_response_of_a_mixed_problem_in_a_pair():
    pairs, notes = dpo_rows(labelled(MIXED, solutions=False), dpo_pairing="responses")
    assert pairs == [  # p0: 1 right, 2 wrong -> 2 pairs; p1, p2 all one kind -> none; p3: 2 right, 1 wrong -> 2 pairs
        ("q0", "r0.0", "r0.1"), ("q0", "r0.0", "r0.2"), ("q3", "r3.0", "r3.2"), ("q3", "r3.1", "r3.2")]
    assert notes == ["4 pairs of a correct and an incorrect response from 2 of 4 problems; the other 2 have only "
                     "correct or only incorrect samples"]
    with pytest.raises(NothingToTrain, match="no problem has both a correct and an incorrect response.*ground_truth"):
        dpo_rows(labelled([[True, True], [False, False]]), dpo_pairing="responses")


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown dpo_pairing 'best'; expected one of ground_truth, responses"):
        dpo_rows(labelled(MIXED), dpo_pairing="best")
    with pytest.raises(ValueError, match="method 'rift' takes no option dpo_pairing"):
        methods.get("rift").rows(labelled(MIXED), dpo_pairing="responses")


def test_the_profile_checks_the_pairing_at_load(tmp_path):
    from rift_core.profiles import load_profile

    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\nmethods: {dpo: {dpo_pairing: responses}}\n")
    prof = load_profile(str(path))
    assert prof.train_config("dpo", "m", "o").dpo_pairing == "responses"
    assert prof.train_config("rift", "m", "o").dpo_pairing == "ground_truth"
    path.write_text("extends: smoke\nmethods: {dpo: {dpo_pairing: best}}\n")
    with pytest.raises(ValueError, match="section 'methods.dpo', key 'dpo_pairing'.*'best'"):
        load_profile(str(path))


def test_rift_notes_the_reward_zero_rows_left_out_of_its_divisor():
    rows, notes = methods.get("rift").rows(labelled(MIXED, "gaussian"))
    assert len(rows) == 12  # every row still trains (reward 0: no gradient)
    assert notes == ["6 of 12 rows have reward 0: no gradient, and not counted in the loss's divisor (losses.py)"]


def test_every_buffer_a_method_cannot_learn_from_is_nothing_to_train():
    assert issubclass(NothingToTrain, ValueError)
    all_wrong = labelled([[False] * 3] * 2)
    for method, frame in [("sft", all_wrong.head(0)), ("sft", labelled(MIXED, solutions=False)),
                          ("rft", all_wrong), ("rift", all_wrong.with_columns(reward=pl.lit(0.0)))]:
        with pytest.raises(NothingToTrain):
            methods.get(method).rows(frame)


@pytest.mark.parametrize("pairing, n_pairs", [("ground_truth", 12), ("responses", 4)])
def test_dpo_trains_with_either_pairing(tiny_model, tmp_path, pairing, n_pairs):
    from rift_core.trainer import TrainConfig, train

    cfg = TrainConfig(method="dpo", model=str(tiny_model), output_dir=str(tmp_path / "dpo"), dpo_pairing=pairing,
                      global_batch_size=4, per_device_batch_size=4, num_epochs=1, learning_rate=1e-3, max_length=192,
                      warmup_ratio=0.0)
    summary = train(cfg, labelled(MIXED))
    run = json.loads((tmp_path / "dpo" / "rift_run.json").read_text())
    assert summary["rows"] == run["rows"] == n_pairs and run["config"]["dpo_pairing"] == pairing
    assert run["steps"] == n_pairs // 4 and all(map(torch.isfinite, torch.tensor(run["loss_history"])))
