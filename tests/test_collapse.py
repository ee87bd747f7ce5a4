import polars as pl
import torch
from polars.testing import assert_frame_equal
from transformers import AutoModelForCausalLM, AutoTokenizer

from rift_core.collapse import collapse_table, epoch_dirs, verdict
from rift_core.trainer import train
from test_trainer import buffer, config

RUNS = {"naive": {"epoch_loss": [0.41, -1.2, -3.2]}, "rift": {"epoch_loss": [0.5, 0.31, 0.3]}}
SCORES = pl.DataFrame({"method": [None, "naive", "naive", "naive", "rift", "rift", "rift"],
                       "epoch": [0, 1, 2, 3, 1, 2, 3],
                       "mean_at_k": [0.38, 0.30, 0.11, 0.02, 0.39, 0.40, 0.41]})


def test_epoch_dirs_lists_the_epoch_folders_by_number(tmp_path):
    for name in ("epoch-10", "epoch-2", "epoch-1", "epoch-x", ".epoch-3.tmp", "checkpoint-4"):
        (tmp_path / name).mkdir()
    (tmp_path / "epoch-5").write_text("a file")
    assert epoch_dirs(tmp_path) == [(1, tmp_path / "epoch-1"), (2, tmp_path / "epoch-2"), (10, tmp_path / "epoch-10")]
    assert epoch_dirs(tmp_path / "missing") == []


def test_collapse_table_has_the_base_model_as_epoch_0_and_each_epochs_loss_and_score():
    table = collapse_table(RUNS, SCORES.filter(pl.col("epoch") != 2))  # epoch 2 not scored
    expected = pl.DataFrame({
        "method": ["naive"] * 4 + ["rift"] * 4, "epoch": [0, 1, 2, 3] * 2,
        "loss": [None, 0.41, -1.2, -3.2, None, 0.5, 0.31, 0.3],
        "mean_at_k": [0.38, 0.30, None, 0.02, 0.38, 0.39, None, 0.41]})
    assert_frame_equal(table, expected)
    assert collapse_table({"rift": RUNS["rift"]}, SCORES)["method"].unique().to_list() == ["rift"]


def test_verdict_states_what_the_numbers_show():
    assert verdict(collapse_table(RUNS, SCORES), k=8) == (
        "naive: loss 0.41 -> -3.2 over 3 epoch(s) (falls every epoch, below 0 from epoch 2), "
        "validation Mean@8 38% (epoch 0) -> 2% (epoch 3); "
        "rift: loss 0.5 -> 0.3 over 3 epoch(s) (falls every epoch, never below 0), "
        "validation Mean@8 38% (epoch 0) -> 41% (epoch 3).")
    bumpy = collapse_table({"rift": {"epoch_loss": [0.5, 0.2, 0.4]}}, SCORES.head(0))
    assert verdict(bumpy) == "rift: loss 0.5 -> 0.4 over 3 epoch(s) (lowest 0.2 at epoch 2, never below 0)."


def response_logp(path, rows) -> float:
    """Mean per-token log-probability of the rows' responses under the model at `path` (prompt as trained)."""
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    means = []
    for row in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": row["question"]}], tokenize=False,
                                         add_generation_prompt=True)
        p, r = tok(prompt)["input_ids"], tok(row["response"] + tok.eos_token)["input_ids"]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logps = model(ids).logits[0, len(p) - 1:-1].log_softmax(-1)
        means.append(logps.gather(-1, ids[0, len(p):, None]).mean().item())
    return sum(means) / len(means)


def test_naive_loss_falls_without_bound_and_collapses_the_policy_while_rift_stays_bounded(tiny_model, tmp_path):
    """Theorem 3.2 at toy size: same buffer (half the rows right, r = +1; half wrong, r = -1), same constant rate.
    The naive loss -r log p is unbounded below once r < 0; RIFT's is >= 0 (-r log p >= 0 for r > 0, |r| p >= 0
    for r < 0). Measured (seeds 0-2): naive epoch loss -0.06 -> -2.2, the right responses' mean token log-prob
    -5.6 (base) -> -8 .. -15.7; rift loss 2.6 -> 1.5, log-prob -5.6 -> -2.6 .. -3.3."""
    data = buffer(16, negative=-1.0)
    right = data.filter(pl.col("reward") > 0).to_dicts()
    kw = dict(num_epochs=4, learning_rate=5e-2, lr_scheduler="constant", save_epochs=True)
    runs = {m: train(config(tiny_model, tmp_path / m, m, **kw), data) for m in ("naive", "rift")}
    base = response_logp(tiny_model, right)
    logp = {m: {n: response_logp(p, right) for n, p in epoch_dirs(tmp_path / m)} for m in runs}

    naive, rift = runs["naive"]["epoch_loss"], runs["rift"]["epoch_loss"]
    assert len(naive) == len(rift) == 4
    assert naive[-1] < min(naive[0], 0) - 1.5  # falls far below its start, and below 0
    assert min(runs["rift"]["loss_history"]) >= 0  # RIFT's lower bound
    assert logp["naive"][4] < base - 2 < base < logp["rift"][4]  # naive collapses; rift learns the right answers

    no_scores = pl.DataFrame({"method": [], "epoch": [], "mean_at_k": []})  # the toy policy is not scored
    text = verdict(collapse_table(runs, no_scores))
    assert "naive: loss" in text and "below 0 from epoch" in text and "never below 0" in text.split("; rift")[1]
