"""`python -m rift_core data download [--to DIR]`: the paper's data sets, from the Hugging Face hub, as local files.

Each set is written as one JSONL file in the Qwen2.5-Math evaluation format at the path `data.load_problems`
looks for (`benchmarks/<name>/test.jsonl`, `seeds/<name>/train.jsonl`, as in ../shared/data), with a
`manifest.json` of source id, revision, split and row counts. The default folder is the download folder
that `load_problems` reads after `data_root` (`$RIFT_DATA_CACHE`, default `~/.cache/rift/data`).

A set lists its sources in order: the hub copy first, then (for the Qwen2.5-Math benchmarks) the suite's own
file on GitHub. A source is taken only if its rows are in the set's format; one whose row count or first
problem differs from the Qwen2.5-Math file (so problem ids would differ from ../shared/data) is passed over
while another is left. `load_problems` uses the same sources when a known set has no local copy.
"""
import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rift_core import data
from rift_core.io import tmp_beside

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
class HubSet:
    name: str  # the known name in rift_core.data
    split: str
    sources: tuple[Source, ...]
    convert: Callable[[dict, int], dict]  # hub row (and its index) -> a row of the local file
    rows: int | None  # rows of the Qwen2.5-Math / ../shared/data file, None if not fixed
    first: str | None  # how the first problem of that file begins (None: order not fixed)
    about: str

    @property
    def path(self) -> str:
        return f"{'seeds' if self.split == 'train' else 'benchmarks'}/{self.name}/{self.split}.jsonl"

    @property
    def source_name(self) -> str:
        default = "test" if self.name in data.BENCHMARKS else "train"
        return self.name if self.split == default else f"{self.name}:{self.split}"


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
            "answer": row.get("answer") or data.last_boxed(solution) or "",
            "level": row.get("level"), "subject": row.get("type") or row.get("subject")}


def _numina(row: dict, i: int) -> dict:
    return {"source": row.get("source"), "problem": row["problem"], "solution": row["solution"]}


SETS: dict[tuple[str, str], HubSet] = {(s.name, s.split): s for s in (
    HubSet("gsm8k", "train", (Source("openai/gsm8k", "train", ("main",)),), _gsm8k, 7473,
           "Natalia sold clips", "GSM8K train (seed set)"),
    HubSet("math", "train", (Source("EleutherAI/hendrycks_math", "train", MATH_SUBJECTS, guess=True),
                             Source("DigitalLearningGmbH/MATH-lighteval", "train", ("default",), guess=True)),
           _math_train, 7500, None,
           "MATH train with worked solutions (the paper's seed set); rows in another order than ../shared/data"),
    HubSet("numina_cot", "train", (Source("AI-MO/NuminaMath-CoT", "train"),), _numina, None, None,
           "NuminaMath-CoT (the paper's second seed set), ~860k problems, a few GB"),
    HubSet("gsm8k", "test", (Source("openai/gsm8k", "test", ("main",)), Source(QWEN.format("gsm8k"))),
           _gsm8k_test, 1319, "Janet", "GSM8K test"),
    HubSet("math500", "test", (Source("HuggingFaceH4/MATH-500", "test"), Source(QWEN.format("math500"))),
           _same, 500, "Convert the point $(0,3)$", "MATH-500 (PRM800K test subset)"),
    HubSet("minerva_math", "test", (Source("svc-huggingface/minerva-math", "test", guess=True),
                                    Source(QWEN.format("minerva_math"))),
           _same, 272, "Each of the two Magellan telescopes", "Minerva math (OCW)"),
    HubSet("olympiadbench", "test", (Source("math-ai/olympiadbench", "test", guess=True),
                                     Source(QWEN.format("olympiadbench"))),
           _same, 675, "Xenia and Sergey play", "OlympiadBench, English text-only maths (OE_TO_maths_en_COMP)"),
    HubSet("aime24", "test", (Source("HuggingFaceH4/aime_2024", "train"), Source(QWEN.format("aime24"))),
           _same, 30, "Every morning Aya goes", "AIME 2024 I and II"),
    HubSet("amc23", "test", (Source("math-ai/amc23", "test", guess=True), Source(QWEN.format("amc23"))),
           _same, 40, "Cities $A$ and $B$ are $45$ miles apart", "AMC 2023 (integer answers)"),
    HubSet("college_math", "test", (Source(QWEN.format("college_math")),), _same, 2818,
           "Simplify: $-10-4(n-5)$", "CollegeMath (no hub copy known: the Qwen2.5-Math file)"),
)}


def _load(source: Source) -> list:
    import datasets

    if source.is_url:
        return [datasets.load_dataset("json", data_files=source.dataset, split="train")]
    return [datasets.load_dataset(source.dataset, config, split=source.split) for config in source.configs]


def _rows(spec: HubSet, parts: list):
    """The converted rows of every part, in order."""
    return (spec.convert(row, i) for i, row in enumerate(itertools.chain.from_iterable(parts)))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _open(spec: HubSet) -> tuple[Source, list, list[str]]:
    """The source to read this set from: (source, its loaded parts, notes on the sources passed over).

    The first source whose rows match the Qwen2.5-Math file (row count, first problem) wins; failing that,
    the first whose rows are at least in this set's format."""
    extract = data.EXTRACTORS[spec.name, spec.split]
    notes, fallback = [], None
    for source in spec.sources:
        try:
            parts = _load(source)
            n = sum(len(p) for p in parts)
            first = next(_rows(spec, parts), None)
            if first is None:
                raise ValueError("no rows")
            question = extract(first)[0]
        except data.BadRow as e:
            notes.append(f"{source}: rows not in this set's format (first row: {e})")
            continue
        except (KeyError, TypeError) as e:
            notes.append(f"{source}: rows not in this set's format (no field {e})")
            continue
        except Exception as e:  # not found, no network, bad file: try the next source
            notes.append(f"{source}: {_first_line(e)}")
            continue
        differs = []
        if spec.rows is not None and n != spec.rows:
            differs.append(f"{n} rows, expected {spec.rows}")
        if spec.first and not question.startswith(spec.first):
            differs.append(f"first problem {question[:40]!r}, expected {spec.first!r}...")
        if not differs:
            return source, parts, notes
        notes.append(f"{source}: {'; '.join(differs)}")
        fallback = fallback or (source, parts)
    if fallback:
        return *fallback, notes
    raise data.DataNotFoundError(f"{spec.source_name}: no source could be read ({'; '.join(notes)})")


def hub_records(name: str, split: str):
    """(where, numbered rows) of a known set read from its first readable source, in its local format."""
    spec = SETS[name, split]
    source, parts, _ = _open(spec)
    return f"hub:{source}", enumerate(_rows(spec, parts), 1)


def _revision(source: Source) -> str | None:
    if source.is_url:
        return source.dataset.split("/evaluation/")[0].rsplit("/", 1)[-1]  # the branch named in the URL
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.dataset).sha
    except Exception:
        return None


def _write_json(path: Path, obj) -> None:
    tmp = tmp_beside(path)
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def download_set(spec: HubSet, to: Path) -> dict:
    """Fetch one set and write it under `to`; its manifest entry."""
    source, parts, notes = _open(spec)
    extract = data.EXTRACTORS[spec.name, spec.split]
    path = to / spec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    n = bad = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in _rows(spec, parts):
                try:
                    extract(row)
                except data.BadRow:
                    bad += 1  # kept, as in the source: load_problems reports it (MATH has two empty answers)
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": spec.name, "split": spec.split, "source": source.dataset,
            "configs": [c for c in source.configs if c], "source_split": None if source.is_url else source.split,
            "revision": _revision(source), "rows": n, "expected_rows": spec.rows, "bad_rows": bad,
            "best_guess": source.guess, "passed_over": notes,
            "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def download(to: str | os.PathLike, sets: list[str] | None = None) -> dict:
    """Write the chosen sets (known names as in load_problems, e.g. `math500`, `gsm8k:train`; default all)
    under `to`, with `manifest.json`. Raises ConnectionError when the hub is unreachable, before writing;
    a set no source could give is left out of the manifest and listed under its "failed"."""
    specs = _choose(sets)
    reason = data.hub_unreachable()
    if reason:
        raise ConnectionError(f"the Hugging Face hub is unreachable ({reason})")
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    manifest_path = to / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("sets", {})
    manifest["failed"] = {}
    for spec in specs:
        try:
            entry = download_set(spec, to)
        except Exception as e:
            manifest["failed"][spec.path] = _first_line(e)
            print(f"{spec.source_name}: FAILED: {_first_line(e)}", file=sys.stderr)
            continue
        manifest["sets"][spec.path] = entry
        _write_json(manifest_path, manifest)
        warn = "" if entry["expected_rows"] in (None, entry["rows"]) else f" (expected {entry['expected_rows']})"
        print(f"{spec.source_name}: {entry['rows']} rows{warn} from {entry['source']} -> {to / spec.path}")
    _write_json(manifest_path, manifest)
    return manifest


def _choose(sets: list[str] | None) -> list[HubSet]:
    if not sets:
        return list(SETS.values())
    chosen = []
    for s in sets:
        name, _, split = s.partition(":")
        key = (name, split or ("test" if name in data.BENCHMARKS else "train"))
        if key not in SETS:
            raise ValueError(f"unknown set {s!r}: expected one of {', '.join(x.source_name for x in SETS.values())}")
        chosen.append(SETS[key])
    return chosen


def _sets_help() -> str:
    lines = ["sets (name: local path <- sources, in the order tried; * = a best-guess hub copy, checked on download):"]
    for s in SETS.values():
        sources = " | ".join(f"{x}{'*' if x.guess else ''}" for x in s.sources)
        rows = f", {s.rows} rows" if s.rows else ""
        lines.append(f"  {s.source_name}: {s.path} <- {sources}\n      {s.about}{rows}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rift_core data",
                                description="The data sets the paper profiles use, kept outside the repository.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "download", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fetch the paper's sets from the Hugging Face hub into local JSONL files",
        description=("Fetch every set the paper profiles use from the Hugging Face hub (with `datasets`) and "
                     "write each as JSONL in the Qwen2.5-Math format at the paths of ../shared/data, plus "
                     "manifest.json (source id, revision, split, row counts). load_problems reads a known "
                     "name from data_root, then from this folder, then from the hub."),
        epilog=_sets_help())
    d.add_argument("--to", default=None, help=f"destination folder (default ${data.DATA_CACHE_ENV} or "
                                               f"~/.cache/rift/data; now {data.data_cache()})")
    d.add_argument("--sets", default=None, help="comma-separated names (default: all), e.g. math500,gsm8k:train")
    w = sub.add_parser("where", help="where load_problems finds each known set (data_root, download folder, hub)")
    w.add_argument("--data-root", default="../shared/data")
    a = p.parse_args(argv)
    if a.command == "where":
        for s in SETS.values():
            path, tried = data._known_file(s.name, s.split, a.data_root)
            place = {tried[0]: "data_root", tried[1]: "download folder"}.get(path)
            print(f"{s.source_name}: " + (f"{path} ({place})" if path else f"hub: {' | '.join(map(str, s.sources))}"))
        return
    to = Path(a.to).expanduser() if a.to else data.data_cache()
    try:
        manifest = download(to, a.sets.split(",") if a.sets else None)
    except ValueError as e:
        raise SystemExit(f"data download: {e}") from None
    except ConnectionError as e:
        raise SystemExit(f"data download: {e}. Run it where the hub is reachable and copy the folder here, "
                         f"or point data_root at a folder holding seeds/ and benchmarks/.") from None
    if manifest["failed"]:
        raise SystemExit(f"data download: {len(manifest['failed'])} set(s) failed: {', '.join(manifest['failed'])} "
                         f"(see {to / 'manifest.json'})")


if __name__ == "__main__":
    main(sys.argv[1:])
