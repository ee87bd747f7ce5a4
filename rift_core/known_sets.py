"""The known data sets, one record each: name, split, local path, hub sources and the converter from a hub row
to a row of the local file (the Qwen2.5-Math evaluation format, as in ../shared/data).

`load_problems` (rift_core.data) reads a known set from its local copy under `data_root`, then from the download
folder (`$RIFT_DATA_CACHE`, default `~/.cache/rift/data`), then from these sources; `download` (rift_core.download)
writes the local copies.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rift_core.boxed import last_boxed

DATA_CACHE_ENV = "RIFT_DATA_CACHE"

QWEN = "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/main/evaluation/data/{}/test.jsonl"
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")


@dataclass(frozen=True)
class Source:
    """A hub data set (id, split, configs concatenated in order) or the URL of a JSONL file."""

    dataset: str
    split: str = "train"
    configs: tuple[str | None, ...] = (None,)
    guess: bool = False  # matched by name, size and fields from the outside; checked at download time

    @property
    def is_url(self) -> bool:
        return "://" in self.dataset

    def __str__(self) -> str:
        if self.is_url:
            return self.dataset
        configs = "" if self.configs == (None,) else f" ({'+'.join(self.configs)})"
        return f"{self.dataset}{configs} [{self.split}]"


@dataclass(frozen=True)
class KnownSet:
    """A data set `load_problems` knows by name: where its local copy lies and where the hub has it."""

    name: str
    split: str
    sources: tuple[Source, ...]
    convert: Callable[[dict, int], dict]  # hub row (and its index) -> a row of the local file
    rows: int | None  # rows of the Qwen2.5-Math / ../shared/data file, None if not fixed
    first: str | None  # how the first problem of that file begins (None: order not fixed)
    about: str

    @property
    def path(self) -> str:
        """Where its local copy lies, under data_root or the download folder."""
        return f"{'seeds' if self.split == 'train' else 'benchmarks'}/{self.name}/{self.split}.jsonl"

    @property
    def source_name(self) -> str:
        """The load_problems source that names it: the name alone for the name's default split."""
        return self.name if self.split == default_split(self.name) else f"{self.name}:{self.split}"


def _same(row: dict, i: int) -> dict:
    return dict(row)


def _gsm8k(row: dict, i: int) -> dict:
    return {"question": row["question"], "answer": row["answer"]}


def _gsm8k_test(row: dict, i: int) -> dict:
    return {"question": row["question"], "answer": row["answer"], "idx": row.get("idx", i)}


def _math_train(row: dict, i: int) -> dict:
    """MATH train as in ../shared/data: `answer` is the last \\boxed{} of the solution ("" when it is empty)."""
    solution = row["solution"]
    return {"problem": row["problem"], "solution": solution,
            "answer": row.get("answer") or last_boxed(solution) or "",
            "level": row.get("level"), "subject": row.get("type") or row.get("subject")}


def _numina(row: dict, i: int) -> dict:
    return {"source": row.get("source"), "problem": row["problem"], "solution": row["solution"]}


SETS: dict[tuple[str, str], KnownSet] = {(s.name, s.split): s for s in (
    KnownSet("gsm8k", "train", (Source("openai/gsm8k", "train", ("main",)),), _gsm8k, 7473,
           "Natalia sold clips", "GSM8K train (seed set)"),
    KnownSet("math", "train", (Source("EleutherAI/hendrycks_math", "train", MATH_SUBJECTS, guess=True),
                             Source("DigitalLearningGmbH/MATH-lighteval", "train", ("default",), guess=True)),
           _math_train, 7500, None,
           "MATH train with worked solutions (the paper's seed set); rows in another order than ../shared/data"),
    KnownSet("numina_cot", "train", (Source("AI-MO/NuminaMath-CoT", "train"),), _numina, None, None,
           "NuminaMath-CoT (the paper's second seed set), ~860k problems, a few GB"),
    KnownSet("gsm8k", "test", (Source("openai/gsm8k", "test", ("main",)), Source(QWEN.format("gsm8k"))),
           _gsm8k_test, 1319, "Janet", "GSM8K test"),
    KnownSet("math500", "test", (Source("HuggingFaceH4/MATH-500", "test"), Source(QWEN.format("math500"))),
           _same, 500, "Convert the point $(0,3)$", "MATH-500 (PRM800K test subset)"),
    KnownSet("minerva_math", "test", (Source("svc-huggingface/minerva-math", "test", guess=True),
                                    Source(QWEN.format("minerva_math"))),
           _same, 272, "Each of the two Magellan telescopes", "Minerva math (OCW)"),
    KnownSet("olympiadbench", "test", (Source("math-ai/olympiadbench", "test", guess=True),
                                     Source(QWEN.format("olympiadbench"))),
           _same, 675, "Xenia and Sergey play", "OlympiadBench, English text-only maths (OE_TO_maths_en_COMP)"),
    KnownSet("aime24", "test", (Source("HuggingFaceH4/aime_2024", "train"), Source(QWEN.format("aime24"))),
           _same, 30, "Every morning Aya goes", "AIME 2024 I and II"),
    KnownSet("amc23", "test", (Source("math-ai/amc23", "test", guess=True), Source(QWEN.format("amc23"))),
           _same, 40, "Cities $A$ and $B$ are $45$ miles apart", "AMC 2023 (integer answers)"),
    KnownSet("college_math", "test", (Source(QWEN.format("college_math")),), _same, 2818,
           "Simplify: $-10-4(n-5)$", "CollegeMath (no hub copy known: the Qwen2.5-Math file)"),
)}


SEED_SETS = tuple(s.name for s in SETS.values() if s.split == "train")
BENCHMARKS = tuple(s.name for s in SETS.values() if s.split == "test")
KNOWN = tuple(dict.fromkeys(SEED_SETS + BENCHMARKS))


def default_split(name: str) -> str:
    """The split a known name alone stands for: `test` for a benchmark (gsm8k is both), else `train`."""
    return "test" if name in BENCHMARKS else "train"


def data_cache() -> Path:
    """The download folder: `$RIFT_DATA_CACHE`, default `~/.cache/rift/data`."""
    return Path(os.environ.get(DATA_CACHE_ENV) or Path.home() / ".cache" / "rift" / "data").expanduser()


def local_copy(name: str, split: str, data_root: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The first copy of a known set under data_root, then the download folder; and every path tried."""
    rel = SETS[name, split].path
    tried = [Path(data_root) / rel, data_cache() / rel]
    return next((p for p in tried if p.is_file()), None), tried
