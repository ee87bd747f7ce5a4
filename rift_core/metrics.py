"""Mean@k and Pass@k from per-sample correctness: `scores[i][j]` is whether sample j of problem i is right."""
from math import comb


def mean_at_k(scores: list[list[bool]]) -> float:
    """Mean over problems of the fraction of correct samples (the expected accuracy of one sample)."""
    if not scores or any(len(s) == 0 for s in scores):
        raise ValueError("mean_at_k needs at least one problem, each with at least one sample")
    return sum(sum(map(bool, s)) / len(s) for s in scores) / len(scores)


def pass_at_k(scores: list[list[bool]], k: int) -> float:
    """Mean over problems of the chance that k of its n samples, drawn without replacement, hold a
    correct one: 1 - C(n-c, k) / C(n, k) (the unbiased estimator); with k = n, "any sample correct"."""
    if not scores:
        raise ValueError("pass_at_k needs at least one problem")
    total = 0.0
    for s in scores:
        n, c = len(s), sum(map(bool, s))
        if not 1 <= k <= n:
            raise ValueError(f"pass_at_k: k={k} must be between 1 and the number of samples per problem ({n})")
        total += 1.0 - comb(n - c, k) / comb(n, k)
    return total / len(scores)
