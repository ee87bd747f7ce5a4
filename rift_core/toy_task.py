"""The embedded task: seeded arithmetic word problems with worked solutions, in disjoint splits.

No pretrained math model is reachable offline, so the CPU miniature of the paper brings its own task and
trains its own imperfect policy on it (rift_core.base_policy, on the `warmup` split); RIFT and the baselines
then fine-tune that policy on its own rollouts on the disjoint `seed` split, and every model is scored on an
in-distribution and two out-of-distribution benchmark splits (more steps; larger numbers). A `validation`
split mixing the three benchmarks' difficulties, on problems of its own, is there to choose learning rates on.
"""
import hashlib
import random
import re
from dataclasses import dataclass

import polars as pl

NAMES = ["Tom", "Ann", "Ben", "Mia", "Sam", "Lily", "Max", "Zoe", "Leo", "Eva", "Jack", "Nora"]
ITEMS = ["apples", "pears", "books", "coins", "cards", "stamps", "shells", "marbles", "pencils", "cookies"]
START = "{name} has {n} {item}."
ADD = ["{name} buys {n} more {item}.", "{name} finds {n} more {item}.", "{other} gives {name} {n} more {item}."]
SUB = ["{name} gives {n} {item} to {other}.", "{name} sells {n} {item}.", "{name} loses {n} {item}."]
MUL = ["{name} then has {n} times as many {item}."]
DISTRACT = ["{other} has {n} {item}.", "{other} is {n} years old.", "The shop has {n} {item}."]
QUESTION = "How many {item} does {name} have now?"


@dataclass(frozen=True)
class Difficulty:
    steps: tuple[int, ...]  # number of operations, drawn uniformly from this tuple (repeat to weight)
    max_number: int  # operands (and the start) are drawn from 1..max_number
    max_value: int  # intermediate results stay in 0..max_value
    distractors: tuple[int, ...]  # irrelevant sentences per problem, drawn from this tuple
    mul: float = 0.15  # chance that a step multiplies (by 2 or 3) when the result stays in range


# The base policy learns on 1-3 step problems; rollouts and the in-distribution benchmark use the 2-3
# step ones, where a partly trained policy is unsure enough for its K samples to disagree. The two
# out-of-distribution benchmarks are set so the calibrated tiny policy scores inside 10-60% Mean@8 on each
# (benchmarks/results/splits.md): it writes at most 3 equations, so pure 4-step problems (and the 4-5 step
# ones used before) were right only by chance (4-9%) and could not tell methods apart.
_NUMBERS = dict(max_number=10, max_value=30, distractors=(0, 0, 1))
SPLITS: dict[str, "Difficulty | tuple[Difficulty, ...]"] = {
    "warmup": Difficulty(steps=(1, 2, 3), **_NUMBERS),  # trains the base policy
    "seed": Difficulty(steps=(2, 3), **_NUMBERS),  # the problems rollouts are sampled on
    "id": Difficulty(steps=(2, 3), **_NUMBERS),  # in-distribution benchmark
    # more steps: half the problems have 4, one more than any warm-up or seed problem
    "ood_steps": Difficulty(steps=(3, 4), **_NUMBERS),
    # larger numbers: operands up to 15 (seed: 10), results up to 45 (seed: 30)
    "ood_numbers": Difficulty(steps=(2, 3), max_number=15, max_value=45, distractors=(0, 0, 1)),
    # 2-3 step problems like `seed`, held out for the base policy's calibration (train_base_policy) only
    "calibration": Difficulty(steps=(2, 3), **_NUMBERS),
}
# Held out for choosing learning rates: the three benchmarks' difficulties in turn (a third each), on its
# own buckets, so no benchmark problem is tuned on.
SPLITS["validation"] = (SPLITS["id"], SPLITS["ood_steps"], SPLITS["ood_numbers"])
DEFAULT_SIZES = {"warmup": 50_000, "seed": 2_000, "id": 500, "ood_steps": 500, "ood_numbers": 500,
                 "calibration": 500, "validation": 500}
# Every question hashes to one of 100 buckets and each split owns a disjoint range of them, so no two
# splits can share a problem whatever their seeds or sizes. `calibration` took its 3 buckets from the end
# of `warmup` (0-60 before), so the seed and benchmark splits kept their problems; `validation` took its 4
# from the out-of-distribution benchmarks (85-93 and 93-100 before), so `seed` and `id` kept theirs.
BUCKETS = {"warmup": (0, 57), "calibration": (57, 60), "seed": (60, 75), "id": (75, 85), "ood_steps": (85, 91),
           "ood_numbers": (91, 96), "validation": (96, 100)}
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{} in `text` (the toy answers are integers: exact match grades them)."""
    found = BOXED.findall(text)
    return found[-1].strip() if found else None


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _bucket(question: str) -> int:
    return int(_digest(question)[:8], 16) % 100


def split_of(question: str) -> str:
    bucket = _bucket(question)
    return next(s for s, (lo, hi) in BUCKETS.items() if lo <= bucket < hi)


def make_problem(rng: random.Random, d: Difficulty) -> dict:
    """One word problem with its worked solution (one equation per step) ending in \\boxed{answer}."""
    name, other = rng.sample(NAMES, 2)
    item, item2 = rng.sample(ITEMS, 2)
    value = rng.randint(1, d.max_number)
    sentences, lines = [START.format(name=name, n=value, item=item)], [f"Start with {value}."]
    for _ in range(rng.choice(d.steps)):
        if value * 3 <= d.max_value and rng.random() < d.mul:
            n = rng.randint(2, 3)
            template, new, op = rng.choice(MUL), value * n, "*"
        elif value > 1 and (value + 1 > d.max_value or rng.random() < 0.5):
            n = rng.randint(1, min(value, d.max_number))
            template, new, op = rng.choice(SUB), value - n, "-"
        else:
            n = rng.randint(1, min(d.max_number, d.max_value - value))
            template, new, op = rng.choice(ADD), value + n, "+"
        sentences.append(template.format(name=name, other=other, n=n, item=item))
        lines.append(f"{value} {op} {n} = {new}.")
        value = new
    for _ in range(rng.choice(d.distractors)):
        at = rng.randint(1, len(sentences))
        sentences.insert(at, rng.choice(DISTRACT).format(other=other, n=rng.randint(1, d.max_number), item=item2))
    sentences.append(QUESTION.format(item=item, name=name))
    lines.append(f"The answer is \\boxed{{{value}}}")
    return {"question": " ".join(sentences), "answer": str(value), "solution": " ".join(lines)}


def problems(split: str, n: int | None = None, seed: int = 0) -> pl.DataFrame:
    """`n` distinct problems of `split` (default size per split), the same ones for the same seed."""
    if split not in SPLITS:
        raise ValueError(f"unknown toy split {split!r}; expected one of {', '.join(SPLITS)}")
    return draw(split, SPLITS[split], BUCKETS[split], DEFAULT_SIZES[split] if n is None else n, seed)


def draw(split: str, d: "Difficulty | tuple[Difficulty, ...]", buckets: tuple[int, int], n: int,
          seed: int) -> pl.DataFrame:
    """`n` distinct problems of difficulty `d` whose questions hash into `buckets`; a tuple of difficulties
    takes them in turn (problem i has d[i % len(d)])."""
    mix = d if isinstance(d, tuple) else (d,)
    lo, hi = buckets
    rng = random.Random(f"rift-toy:{seed}:{split}")  # str seeds hash with sha512: stable across runs
    rows, seen, draws = [], set(), 0
    while len(rows) < n:
        draws += 1
        if draws > 200 * n + 10_000:
            raise RuntimeError(f"toy split {split!r}: cannot draw {n} distinct problems (got {len(rows)})")
        p = make_problem(rng, mix[len(rows) % len(mix)])
        if p["question"] in seen or not lo <= _bucket(p["question"]) < hi:
            continue
        seen.add(p["question"])
        rows.append({"problem_id": "toy-" + _digest(p["question"])[:12], **p, "source": f"toy:{split}"})
    schema = {c: pl.String for c in ("problem_id", "question", "answer", "solution", "source")}
    return pl.DataFrame(rows, schema=schema)
