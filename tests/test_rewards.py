import math
import time

import polars as pl
import pytest

from rift_core.io import write_parquet_atomic
from rift_core.cli.label import build_parser, main
from rift_core.rewards import STATUSES, assign_rewards, check_references, grade, group_rewards, label_rollouts


@pytest.mark.parametrize(
    "gold, response, expected",
    [
        ("16", "so the answer is $\\boxed{16}$", True),
        ("16", "so the answer is $\\boxed{17}$", False),
        ("(3, -1)", "The point is \\boxed{(3,-1)}.", True),  # bare gold would parse to -1 alone
        ("\\frac{1}{2}", "\\boxed{0.5}", True),
        ("\\$18.90", "It costs \\boxed{\\$18.90}.", True),  # escaped dollar is not a math delimiter
        ("$x^2+1$", "\\boxed{1 + x^2}", True),  # college_math style gold with $ signs
        ("x^2+1", "\\boxed{x^2-1}", False),
    ],
)
def test_grade(gold, response, expected):
    assert grade(gold, response) is expected


def test_grade_rejects_unparseable_gold():
    with pytest.raises(ValueError, match="reference answer does not parse"):
        grade("", "\\boxed{1}")


def rollouts(rows):
    return pl.DataFrame(
        [{"problem_id": p, "sample_idx": i, "answer": a, "response": r, "model": "m"} for p, i, a, r in rows]
    )


def test_label_rollouts_columns_and_statuses():
    df = rollouts([
        ("p1", 0, "16", "\\boxed{16}"),
        ("p1", 1, "16", "I think \\boxed{17}"),
        ("p1", 2, "16", "no idea"),
        ("p1", 3, "16", None),
        ("p2", 0, None, "\\boxed{3}"),  # missing reference answer
    ])
    out = label_rollouts(df, workers=2, timeout_s=10)
    assert out.columns == df.columns + ["correct", "extracted", "status"]
    assert out["correct"].to_list() == [True, False, False, False, False]
    assert out["extracted"].to_list()[:2] == ["16", "17"]
    assert out["status"].to_list() == ["ok", "ok", "no_answer", "no_answer", "error"]


def test_hostile_responses_are_never_executed_and_each_row_meets_its_deadline(tmp_path):
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('touch {marker}')"
    nested = "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}"  # takes math-verify ~40 s: must be killed
    df = rollouts([
        ("p", 0, "1", f"\\boxed{{{payload}}}"),
        ("p", 1, "1", f"${payload}$"),
        ("p", 2, "1", payload),
        ("p", 3, "1", nested),
        ("p", 4, "1", "x" * 100_000 + " so \\boxed{1}"),
        ("p", 5, "1", "{" * 50_000),
        ("p", 6, "1", "\\boxed{1}"),  # graded after the hung row, by the replacement worker
        ("q", 0, "2", "\\boxed{2}"),
        ("r", 0, nested, "\\boxed{1}"),  # a hostile reference answer: all its rows time out together
        ("r", 1, nested, "\\boxed{2}"),
    ])
    timeout_s = 2.0
    t0 = time.monotonic()
    out = label_rollouts(df, workers=2, timeout_s=timeout_s)
    elapsed = time.monotonic() - t0
    assert not marker.exists()
    assert out["status"].null_count() == 0
    assert set(out["status"]) <= set(STATUSES)
    assert [out["status"][i] for i in (3, 8, 9)] == ["timeout"] * 3
    assert out["correct"].to_list() == [False, False, False, False, True, False, True, True, False, False]
    # each hang costs one deadline, not the 40 s math-verify would take (generous slack for a busy machine)
    assert elapsed < 30, elapsed


def test_check_references():
    assert check_references(["16", "\\frac{1}{2}", None, ""]) == [True, True, False, False]


def test_group_rewards_constant():
    assert group_rewards([True, False, True]) == [1.0, -0.2, 1.0]
    assert group_rewards([True, False], "constant", r_pos=2.0, r_neg=-0.5) == [2.0, -0.5]
    assert group_rewards([]) == []


def test_group_rewards_gaussian_eq6():
    # r = [1, -0.2, -0.2, -0.2]: mean 0.1, population std sqrt(0.27)
    out = group_rewards([True, False, False, False], "gaussian")
    std = math.sqrt((0.9**2 + 3 * 0.3**2) / 4)
    assert out == pytest.approx([0.9 / std, -0.3 / std, -0.3 / std, -0.3 / std])
    assert sum(out) == pytest.approx(0.0)


def test_group_rewards_gpg_eq7_eq8():
    # N+ / N = 1/4
    assert group_rewards([True, False, False, False], "gpg_mean") == pytest.approx([0.25 * 0.9, -0.25 * 0.3, -0.25 * 0.3, -0.25 * 0.3])
    assert group_rewards([True, False, False, False], "gpg_scaled") == pytest.approx([0.25, -0.05, -0.05, -0.05])


@pytest.mark.parametrize(
    "scheme, all_correct, all_wrong",
    [("constant", 1.0, -0.2), ("gaussian", 0.0, 0.0), ("gpg_mean", 0.0, 0.0), ("gpg_scaled", 1.0, 0.0)],
)
def test_group_rewards_uniform_groups(scheme, all_correct, all_wrong):
    assert group_rewards([True] * 4, scheme) == [all_correct] * 4
    assert group_rewards([False] * 4, scheme) == [all_wrong] * 4


def test_group_rewards_unknown_scheme():
    with pytest.raises(ValueError, match="unknown reward scheme 'grpo'"):
        group_rewards([True], "grpo")


def test_assign_rewards_groups_per_problem_and_model():
    labels = pl.DataFrame({
        "model": ["a", "a", "a", "a", "b", "b"],
        "problem_id": ["p", "p", "q", "q", "p", "p"],
        "correct": [True, False, True, True, True, True],
    })
    out = assign_rewards(labels, "gaussian")
    assert out["reward"].to_list() == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    for (model, pid), grp in out.group_by(["model", "problem_id"], maintain_order=True):
        assert grp["reward"].to_list() == pytest.approx(group_rewards(grp["correct"].to_list(), "gaussian"))


def test_label_cli(tmp_path, capsys):
    src = write_parquet_atomic(rollouts([("p1", 0, "16", "\\boxed{16}"), ("p1", 1, "16", "\\boxed{15}")]), tmp_path / "r.parquet")
    main(["--rollouts", str(src), "--out", str(tmp_path / "labels.parquet"), "--scheme", "constant", "--r-neg", "-0.5"])
    out = pl.read_parquet(tmp_path / "labels.parquet")
    assert out["reward"].to_list() == [1.0, -0.5]
    assert out["status"].to_list() == ["ok", "ok"]
    assert "labelled 2 responses" in capsys.readouterr().err


def test_label_cli_names_the_missing_column(tmp_path):
    src = write_parquet_atomic(pl.DataFrame({"problem_id": ["p"], "answer": ["1"]}), tmp_path / "r.parquet")
    with pytest.raises(SystemExit, match="r.parquet: missing column.*response"):
        main(["--rollouts", str(src), "--out", str(tmp_path / "l.parquet")])


def test_on_progress_of_labelling_and_reference_checks():
    from rift_core.rewards import _jobs, grade_jobs

    calls = []
    df = rollouts([(f"p{i}", j, str(i), f"\\boxed{{{i + j % 2}}}") for i in range(70) for j in range(2)])
    out = label_rollouts(df, workers=2, timeout_s=10, on_progress=lambda **kw: calls.append(kw))
    assert out["correct"].sum() == 70
    assert {c["stage"] for c in calls} == {"label"} and {c["total"] for c in calls} == {140}
    done = [c["done"] for c in calls]
    assert len(done) >= 3 and done == sorted(done) and done[-1] == 140  # 64-row jobs: a call per job
    assert calls[-1]["timeouts"] == 0 and calls[-1]["rows_per_s"] > 0

    calls.clear()
    assert check_references(["16", None, "1/2"], on_progress=lambda **kw: calls.append(kw)) == [True, False, True]
    assert calls[-1]["stage"] == "references" and calls[-1]["done"] == calls[-1]["total"] == 3

    calls.clear()
    res = grade_jobs(_jobs(["1", "2"], ["\\boxed{1}", "\\boxed{3}"]), 2, workers=1, desc="label",
                     on_progress=lambda **kw: calls.append(kw))
    assert [r[0] for r in res] == [True, False] and calls[-1]["done"] == calls[-1]["total"] == 2


def test_one_default_deadline_everywhere():
    import inspect

    from rift_core import rewards

    assert rewards.DEFAULT_TIMEOUT_S == 10.0
    for fn in (rewards.grade_jobs, rewards.check_references, rewards.label_rollouts):
        assert inspect.signature(fn).parameters["timeout_s"].default == rewards.DEFAULT_TIMEOUT_S, fn.__name__
    assert build_parser().parse_args(["--rollouts", "r", "--out", "o"]).timeout_s == rewards.DEFAULT_TIMEOUT_S
