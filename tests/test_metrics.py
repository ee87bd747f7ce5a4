import random

import pytest

from rift_core.metrics import mean_at_k, pass_at_k

T, F = True, False


def test_mean_at_k_hand_computed():
    # problem 1: 2/4, problem 2: 4/4, problem 3: 0/4 -> (0.5 + 1 + 0) / 3
    assert mean_at_k([[T, F, T, F], [T, T, T, T], [F, F, F, F]]) == pytest.approx(0.5)
    assert mean_at_k([[T], [F]]) == 0.5


def test_pass_at_k_equals_any_correct_when_k_is_n():
    scores = [[T, F, F, F], [F, F, F, F], [F, F, F, T], [T, T, T, T]]
    assert pass_at_k(scores, 4) == 0.75


def test_pass_at_k_unbiased_estimator_hand_computed():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5;  n=4, c=2, k=2: 1 - C(2,2)/C(4,2) = 5/6
    assert pass_at_k([[T, F, F, F]], 2) == pytest.approx(0.5)
    assert pass_at_k([[T, T, F, F]], 2) == pytest.approx(5 / 6)
    assert pass_at_k([[T, F, F, F], [T, T, F, F]], 2) == pytest.approx((0.5 + 5 / 6) / 2)
    # k=1 is the per-sample accuracy, i.e. Mean@n
    assert pass_at_k([[T, T, F, F], [T, F, F, F]], 1) == pytest.approx(mean_at_k([[T, T, F, F], [T, F, F, F]]))
    # n - c < k: every draw of k holds a correct sample
    assert pass_at_k([[T, T, T, F]], 2) == 1.0


def test_pass_at_k_matches_enumeration_of_subsets():
    from itertools import combinations

    rng = random.Random(0)
    for _ in range(20):
        s = [rng.random() < 0.3 for _ in range(8)]
        for k in (1, 3, 8):
            subsets = list(combinations(s, k))
            assert pass_at_k([s], k) == pytest.approx(sum(any(c) for c in subsets) / len(subsets))


def test_bad_inputs():
    with pytest.raises(ValueError, match="k=9"):
        pass_at_k([[T] * 8], 9)
    with pytest.raises(ValueError):
        mean_at_k([])
    with pytest.raises(ValueError):
        pass_at_k([], 1)
