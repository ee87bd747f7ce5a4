import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from rift_core import methods
from rift_core.cli.train import build_parser
from rift_core.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # tiny models; the machine is shared


def buffer(n=16, negative=-0.2) -> pl.DataFrame:
    """A labelled buffer: even rows correct (+1), odd rows wrong (negative)."""
    return pl.DataFrame(
        [
            {
                "question": f"What is {i} + {i}?",
                "response": f"{i} + {i} = {2 * i + i % 2}. \\boxed{{{2 * i + i % 2}}}",
                "reward": 1.0 if i % 2 == 0 else negative,
                "correct": i % 2 == 0,
                "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}",
            }
            for i in range(n)
        ]
    )


def config(tiny_model, out, method="rift", **kw) -> TrainConfig:
    base = dict(global_batch_size=8, per_device_batch_size=4, num_epochs=1, learning_rate=1e-3, max_length=192,
                warmup_ratio=0.0)  # with 1-2 steps, warm-up would leave the first step at lr 0
    return TrainConfig(method=method, model=str(tiny_model), output_dir=str(out), **{**base, **kw})


def training_rows(method, frame, source="training frame"):
    return methods.get(method).rows(frame, source)


def weights(path) -> dict:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def same(a: dict, b: dict, atol=0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


@pytest.mark.parametrize("method", methods.METHODS)
def test_every_method_trains_and_writes_a_loadable_checkpoint(tiny_model, tmp_path, method):
    summary = train(config(tiny_model, tmp_path / "ckpt", method), buffer())
    out = tmp_path / "ckpt"
    run = json.loads((out / "rift_run.json").read_text())
    assert run["method"] == method and run["steps"] == summary["steps"] > 0
    assert run["gradient_accumulation_steps"] == 2 and len(run["loss_history"]) == run["steps"]
    assert run["peak_memory_bytes"] > 0 and len(run["data_hash"]) == 16
    AutoTokenizer.from_pretrained(out)
    assert not same(weights(out), weights(tiny_model))
    assert not (tmp_path / "ckpt.work").exists() and not (tmp_path / ".ckpt.tmp").exists()


def test_rift_with_unit_rewards_is_exactly_trl_sft_nll(tiny_model, tmp_path):
    """The reward column, the collator and the token normalisation under gradient accumulation agree with TRL."""
    data = buffer().with_columns(reward=pl.lit(1.0), correct=pl.lit(True))  # rft keeps the correct rows
    train(config(tiny_model, tmp_path / "rift", "rift"), data)
    train(config(tiny_model, tmp_path / "rft", "rft"), data)
    assert same(weights(tmp_path / "rift"), weights(tmp_path / "rft"), atol=1e-6)


def test_runs_are_deterministic_for_a_seed(tiny_model, tmp_path):
    a = train(config(tiny_model, tmp_path / "a"), buffer())
    b = train(config(tiny_model, tmp_path / "b"), buffer())
    assert a["weight_hash_per_rank"] == b["weight_hash_per_rank"]
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_naive_collapses_on_negatives_while_rift_stays_bounded(tiny_model, tmp_path):
    negatives = buffer(8, negative=-1.0).filter(pl.col("reward") < 0)
    kw = dict(global_batch_size=4, per_device_batch_size=4, num_epochs=6, learning_rate=5e-2, warmup_ratio=0.0)
    naive = train(config(tiny_model, tmp_path / "naive", "naive", **kw), negatives)
    rift = train(config(tiny_model, tmp_path / "rift", "rift", **kw), negatives)
    assert naive["loss_history"][-1] < naive["loss_history"][0] - 5  # -r log p heads for -inf
    assert all(0.0 <= loss <= 1.0 for loss in rift["loss_history"])  # |r| * mean p lies in [0, |r|]
    assert rift["notes"] == ["no positive rewards: the run only pushes probability down"]


def test_a_non_finite_loss_stops_training_and_writes_no_checkpoint(tiny_model, tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(config(tiny_model, tmp_path / "out", "naive", learning_rate=1e30, max_steps=4), buffer())
    assert not (tmp_path / "out").exists()


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path / "out", max_steps=4, save_steps=2, num_epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, buffer(), callbacks=[Interrupt()])
    assert not (tmp_path / "out").exists() and (tmp_path / "out.work" / "checkpoint-2").is_dir()

    changed = config(tiny_model, tmp_path / "out", max_steps=4, save_steps=2, num_epochs=3, learning_rate=5e-4)
    with pytest.raises(ValueError, match="different run"):
        train(changed, buffer())

    resumed = train(cfg, buffer())
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    straight = train(config(tiny_model, tmp_path / "straight", max_steps=4, num_epochs=3), buffer())
    assert straight["resumed_from"] is None
    assert same(weights(tmp_path / "out"), weights(tmp_path / "straight"), atol=1e-6)


def test_prompts_longer_than_max_length_are_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="no row leaves room for a response within max_length=40"):
        train(config(tiny_model, tmp_path / "out", max_length=40), buffer())


def test_bad_buffers_get_errors_that_name_the_problem():
    data = buffer()
    with pytest.raises(ValueError, match="empty buffer"):
        training_rows("rift", data.head(0))
    with pytest.raises(ValueError, match=r"needs column\(s\) reward"):
        training_rows("rift", data.drop("reward"), "buf.parquet")
    bad = data.with_columns(reward=pl.when(pl.int_range(pl.len()).is_in([3, 5])).then(float("nan")).otherwise("reward"))
    with pytest.raises(ValueError, match=r"buf.parquet: column 'reward' is NaN or infinite in 2 row\(s\) \(0-based rows 3, 5\)"):
        training_rows("rift", bad, "buf.parquet")
    with pytest.raises(ValueError, match="infinite"):
        training_rows("naive", data.with_columns(reward=pl.lit(float("-inf"))))
    with pytest.raises(ValueError, match="every reward is 0"):
        training_rows("rift", data.with_columns(reward=pl.lit(0.0)))
    with pytest.raises(methods.NothingToTrain, match="none of the 8 samples is correct"):
        training_rows("rft", data.filter(~pl.col("correct")))
    with pytest.raises(ValueError, match="'question' is null"):
        training_rows("sft", data.with_columns(question=pl.lit(None, pl.String)))
    with pytest.raises(ValueError, match="no row has a ground-truth 'solution'"):
        training_rows("sft", data.with_columns(solution=pl.lit(None, pl.String)))
    with pytest.raises(ValueError, match="unknown method"):
        training_rows("ppo", data)


def test_buffers_missing_one_side_train_with_a_note():
    rows, notes = training_rows("rift", buffer().filter(pl.col("reward") > 0))
    assert len(rows) == 8 and notes == ["no negative rewards: the run is reward-weighted NLL on the positives"]
    rows, notes = training_rows("rft", buffer())
    assert len(rows) == 8 and rows["correct"].all()
    rows, notes = training_rows("sft", pl.concat([buffer(), buffer()]).with_columns(
        solution=pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise("solution")))
    assert len(rows) == 16 and notes == ["dropped 1 of 32 rows with no 'solution'"]  # row 16 repeats row 0


def test_cli_under_accelerate_with_two_processes_trains_the_same_weights_on_both_ranks(tiny_model, tmp_path):
    data = tmp_path / "buffer.parquet"
    buffer().write_parquet(data)
    out = tmp_path / "ckpt"
    # `accelerate launch --cpu` starts one process unless MPI is set up; --multi_gpu starts torchrun, and the
    # trainer joins the ranks over gloo on a machine without GPU
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "rift_core", "train", "--method", "rift", "--model", str(tiny_model), "--data", str(data),
        "--output", str(out), "--global-batch-size", "8", "--per-device-batch-size", "2", "--num-epochs", "1",
        "--learning_rate", "1e-3", "--max_length", "192", "--warmup-ratio", "0", "--no-bf16", "--save-epochs",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "rift_run.json").read_text())
    assert run["processes"] == 2 and run["gradient_accumulation_steps"] == 2
    hashes = run["weight_hash_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert run["saved_epochs"] == [1] and same(weights(out / "epoch-1"), weights(out))  # written once, by rank 0
    # the two ranks together saw the same 8-sample global batches as one process does
    single = train(config(tiny_model, tmp_path / "single", "rift"), buffer())
    assert run["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert same(weights(out), weights(tmp_path / "single"), atol=1e-5)


@pytest.mark.parametrize("granularity", ["token", "sequence"])
def test_gradient_accumulation_trains_like_one_big_batch(tiny_model, tmp_path, granularity):
    ga = train(config(tiny_model, tmp_path / "ga", granularity=granularity, per_device_batch_size=4), buffer())
    big = train(config(tiny_model, tmp_path / "big", granularity=granularity, per_device_batch_size=8), buffer())
    assert ga["gradient_accumulation_steps"] == 2 and big["gradient_accumulation_steps"] == 1
    assert ga["loss_history"] == pytest.approx(big["loss_history"], rel=1e-5)  # Adam would hide a scale error
    assert same(weights(tmp_path / "ga"), weights(tmp_path / "big"), atol=1e-5)


def test_on_progress_reports_each_log_with_the_step_and_loss(tiny_model, tmp_path):
    calls = []
    summary = train(config(tiny_model, tmp_path / "out", max_steps=3), buffer(), on_progress=lambda **kw: calls.append(kw))
    steps = [c for c in calls if c["loss"] is not None and "train_loss" not in c]
    assert [c["done"] for c in calls[:3]] == [1, 2, 3] and all(c["total"] == 3 for c in calls)
    assert set(calls[0]) == {"stage", "done", "total", "loss", "learning_rate", "samples_per_s", "epoch"}
    assert all(c["stage"] == "train" and c["samples_per_s"] > 0 for c in calls)
    assert [c["loss"] for c in calls[:3]] == pytest.approx(summary["loss_history"])
    assert isinstance(summary["final_loss"], float) and steps


def test_the_registry_knows_every_method_and_names_them_when_asked_for_another():
    assert methods.METHODS == ("sft", "dft", "rft", "dpo", "rift", "naive", "kto")
    assert methods.get("rift").learning_rate == 2e-6 and methods.get("sft").learning_rate == 1e-5
    with pytest.raises(ValueError, match="unknown method 'ppo'; expected one of sft, dft, rft, dpo, rift, naive, kto"):
        methods.get("ppo")


def test_buffer_rows_build_each_methods_frame_from_problems_and_labels():
    problems = pl.DataFrame({"problem_id": ["a", "b"], "question": ["qa", "qb"], "solution": ["sa", None]})
    labels = pl.DataFrame({"problem_id": ["a", "a", "b"], "sample_idx": [0, 1, 0], "question": ["qa", "qa", "qb"],
                           "response": ["x", "y", "z"], "correct": [True, False, False], "reward": [1.0, -0.2, -0.2]})
    assert methods.get("sft").buffer_rows(problems, labels).to_dicts() == [
        {"problem_id": "a", "question": "qa", "solution": "sa"}]
    dpo = methods.get("dpo").buffer_rows(problems, labels)
    assert dpo.columns == ["problem_id", "sample_idx", "question", "response", "correct", "solution"]
    assert dpo["solution"].to_list() == ["sa", "sa", None]
    assert methods.get("rift").buffer_rows(problems, labels).columns == [
        "problem_id", "sample_idx", "question", "response", "reward"]
    kto = methods.get("kto")
    assert kto.record(labels.row(1, named=True), "plain") == {
        "prompt": [{"role": "user", "content": "qa"}],
        "completion": [{"role": "assistant", "content": "y"}], "label": False}


def test_methods_imports_no_training_stack_and_no_module_imports_profiles():
    code = ("import sys, rift_core, rift_core.methods; assert not {'torch', 'trl', 'transformers'} & set(sys.modules)\n"
            "import rift_core.trainer, rift_core.rift_trainer; assert 'rift_core.profiles' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_cli_flags_take_both_spellings_none_json_and_a_yaml_config(tmp_path):
    import dataclasses

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("method: kto\nmodel: m\noutput_dir: o\ndata: d.parquet\nlearning_rate: 1e-5\nbf16: true\n"
                         "template_kwargs: {enable_thinking: false}\n")
    cfg, args = build_parser().parse_args_and_config(["--config", str(yaml_file), "--max-steps", "7", "--no-bf16"])
    assert (cfg.method, cfg.model, cfg.output_dir, args.data) == ("kto", "m", "o", "d.parquet")
    assert cfg.learning_rate == 1e-5 and cfg.max_steps == 7 and cfg.bf16 is False
    assert cfg.template_kwargs == {"enable_thinking": False}
    cfg, _ = build_parser().parse_args_and_config([
        "--method", "rift", "--model", "m", "--output", "o", "--data", "d", "--max_steps", "3", "--learning-rate",
        "none", "--max-length", "none", "--template-kwargs", '{"a": 1}', "--no-resume", "--bf16", "--report_to",
        "tensorboard"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.max_length, cfg.template_kwargs) == (3, None, None, {"a": 1})
    assert cfg.resume is False and cfg.bf16 is True and cfg.report_to == "tensorboard"
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}  # the profile loader reads these
    assert types["learning_rate"] == float | None and types["template_kwargs"] is dict
    with pytest.raises(SystemExit):
        build_parser().parse_args_and_config(["--method", "ppo", "--model", "m", "--output", "o", "--data", "d"])


def test_save_epochs_keeps_each_epochs_weights_beside_the_final_ones(tiny_model, tmp_path):
    out = tmp_path / "out"
    summary = train(config(tiny_model, out, "naive", num_epochs=3, save_epochs=True), buffer())
    assert summary["steps"] == 6 and summary["saved_epochs"] == [1, 2, 3]  # 16 rows / 8 per step = 2 steps an epoch
    assert len(summary["epoch_loss"]) == 3
    assert summary["epoch_loss"] == pytest.approx([sum(summary["loss_history"][i:i + 2]) / 2 for i in (0, 2, 4)])
    epochs = [weights(out / f"epoch-{n}") for n in (1, 2, 3)]
    for n in (1, 2, 3):
        AutoTokenizer.from_pretrained(out / f"epoch-{n}")
        assert json.loads((out / f"epoch-{n}" / "epoch.json").read_text()) == {"epoch": n, "step": 2 * n}
    assert not same(epochs[0], weights(tiny_model))
    assert not same(epochs[0], epochs[1]) and not same(epochs[1], epochs[2])
    assert same(epochs[2], weights(out))  # the last epoch is the final model
    assert json.loads((out / "rift_run.json").read_text())["epoch_loss"] == summary["epoch_loss"]
    assert not (tmp_path / "out.work").exists() and not list(out.glob(".*"))

    plain = train(config(tiny_model, tmp_path / "plain", "naive", num_epochs=3), buffer())
    assert plain["saved_epochs"] == [] and not list((tmp_path / "plain").glob("epoch-*"))
    assert plain["epoch_loss"] == summary["epoch_loss"]  # saving copies changes nothing
    cfg, _ = build_parser().parse_args_and_config(["--method", "naive", "--model", "m", "--output", "o", "--data", "d",
                                              "--save-epochs"])
    assert cfg.save_epochs is True


def test_a_run_cut_short_by_max_steps_saves_its_partial_last_epoch(tiny_model, tmp_path):
    summary = train(config(tiny_model, tmp_path / "out", max_steps=3, num_epochs=3, save_epochs=True), buffer())
    assert summary["saved_epochs"] == [1, 2] and len(summary["epoch_loss"]) == 2  # steps 1-2, then step 3
    assert same(weights(tmp_path / "out" / "epoch-2"), weights(tmp_path / "out"))


def test_an_interrupted_run_keeps_its_epoch_folders_and_resumes(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path / "out", "naive", num_epochs=3, save_steps=2, save_epochs=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, buffer(), callbacks=[Interrupt()])  # step 3: inside epoch 2
    work = tmp_path / "out.work"
    assert (work / "checkpoint-2").is_dir() and [p.name for p in work.glob("epoch-*")] == ["epoch-1"]
    written = (work / "epoch-1" / "model.safetensors").stat().st_mtime_ns

    resumed = train(cfg, buffer())
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["saved_epochs"] == [1, 2, 3]
    assert (tmp_path / "out" / "epoch-1" / "model.safetensors").stat().st_mtime_ns == written  # kept, not redone
    assert len(resumed["epoch_loss"]) == 3  # the checkpoint's log history carries epoch 1's losses
    straight = train(config(tiny_model, tmp_path / "straight", "naive", num_epochs=3, save_epochs=True), buffer())
    assert resumed["epoch_loss"] == pytest.approx(straight["epoch_loss"], rel=1e-5)
    for n in (1, 2, 3):
        assert same(weights(tmp_path / "out" / f"epoch-{n}"), weights(tmp_path / "straight" / f"epoch-{n}"), atol=1e-6)
