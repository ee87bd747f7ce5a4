"""Problems: seed sets and benchmarks as one frame (problem_id, question, answer, solution, source).

Sources:
- a known name, optionally with a split: the benchmarks `gsm8k`, `math500`, `minerva_math`,
  `olympiadbench`, `aime24`, `amc23`, `college_math` (split `test`) and the seed sets `math` and
  `gsm8k:train` (split `train`). Files live at `<data_root>/seeds/<name>/train.jsonl` and
  `<data_root>/benchmarks/<name>/test.jsonl` in the Qwen2.5-Math evaluation formats;
- `toy:<split>`: the embedded arithmetic task (rift_core.toy);
- a local .jsonl / .json / .parquet file;
- a Hugging Face dataset id, `org/name` or `org/name:split` (online only).

Reference answers are taken the way the Qwen2.5-Math suite takes them (parser.parse_ground_truth),
without its lossy string normalisation: grading with math-verify does that job.

Bad rows (malformed JSON, missing or empty fields, duplicate ids) raise a ValueError naming the file,
the line (JSONL; the record number otherwise) and the field. With `skip_bad=True` they are dropped
and reported instead through a `SkippedRowsWarning`, whose `.rows` lists one message per row.
"""
import json
import random
import re
import warnings
from pathlib import Path

import polars as pl

SCHEMA = {"problem_id": pl.String, "question": pl.String, "answer": pl.String, "solution": pl.String,
          "source": pl.String}
SEED_SETS = ("gsm8k", "math")
BENCHMARKS = ("gsm8k", "math500", "minerva_math", "olympiadbench", "aime24", "amc23", "college_math")
KNOWN = tuple(dict.fromkeys(SEED_SETS + BENCHMARKS))
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?$")
# The paper's second seed set lives only on the hub; its answer is the last \boxed{} of the solution.
HUB_PRESETS = {"AI-MO/NuminaMath-CoT": {"question_field": "problem", "solution_field": "solution",
                                        "answer_from_boxed": "solution"}}


class BadRow(ValueError):
    def __init__(self, field: str | None, reason: str):
        super().__init__(f"field {field!r}: {reason}" if field else reason)


class SkippedRowsWarning(UserWarning):
    """Rows dropped by `skip_bad=True`; `.rows` holds one 'file:line N: field: reason' message per row."""

    def __init__(self, where: str, rows: list[str]):
        self.rows = rows
        shown = "\n  ".join(rows[:5]) + (f"\n  ... and {len(rows) - 5} more" if len(rows) > 5 else "")
        super().__init__(f"{where}: skipped {len(rows)} bad row(s):\n  {shown}")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces matched; None if there is none.

    Like the Qwen2.5-Math parser it also reads "\\boxed 5"; an unclosed last box (a cut-off answer) gives None.
    """
    m = None
    for m in re.finditer(r"\\(?:boxed|fbox)\b", text if isinstance(text, str) else ""):
        pass
    if m is None:
        return None
    rest = text[m.end():]
    if not rest.lstrip().startswith("{"):
        word = rest.split("$")[0].split()
        return word[0] if word else None
    start = m.end() + rest.index("{") + 1
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start:j].strip() or None
    return None


def _text(row: dict, field: str, *, required: bool = True) -> str | None:
    if field not in row:
        if required:
            raise BadRow(field, f"missing (row has {', '.join(map(repr, row)) or 'no fields'})")
        return None
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) and value is not None:
        raise BadRow(field, f"expected text, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # amc23 stores 27.0; the answer is "27"
    value = "" if value is None else str(value).strip()
    if required and not value:
        raise BadRow(field, "empty")
    return value or None


def _gsm8k(row: dict) -> tuple[str, str, str]:
    """GSM8K: 'worked solution #### answer'; the solution drops <<calc>> annotations and ends boxed."""
    full = _text(row, "answer")
    if full.count("####") != 1:
        raise BadRow("answer", "expected exactly one '####' before the final answer")
    cot, answer = (s.strip() for s in full.split("####"))
    if not answer:
        raise BadRow("answer", "empty after '####'")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", answer):
        answer = answer.replace(",", "")  # "1,080" would read as a tuple
    cot = re.sub(r"<<[^<>]*>>", "", cot)
    return _text(row, "question"), answer, f"{cot}\nThe answer is $\\boxed{{{answer}}}$."


def _minerva(row: dict) -> tuple[str, str, str]:
    solution = _text(row, "solution")
    answer = last_boxed(solution)
    if not answer:
        raise BadRow("solution", "holds no \\boxed{} answer")
    return _text(row, "problem"), answer, solution


def _olympiadbench(row: dict) -> tuple[str, str, str | None]:
    final, solution = row.get("final_answer"), row.get("solution")
    if not isinstance(final, list) or not final or not isinstance(final[0], str) or not final[0].strip("$ "):
        raise BadRow("final_answer", "expected a non-empty list of answer strings")
    solution = solution[0] if isinstance(solution, list) and solution else None
    return _text(row, "question"), final[0].replace("$", "").strip(), solution


def _college_math(row: dict) -> tuple[str, str, None]:
    answer = _text(row, "answer").replace("$", "").strip()
    if not answer:
        raise BadRow("answer", "empty once '$' signs are removed")
    return _text(row, "question"), answer, None


def _fields(question_field=None, answer_field=None, solution_field=None, answer_from_boxed=None):
    """A row extractor for any format; defaults guess the common field names."""
    if answer_field and answer_from_boxed:
        raise ValueError("give answer_field or answer_from_boxed, not both")

    def extract(row: dict) -> tuple[str, str, str | None]:
        question = _text(row, question_field or next((f for f in ("question", "problem") if f in row), "question"))
        af, boxed = answer_field, answer_from_boxed
        if not af and not boxed:
            af = "answer" if "answer" in row or "solution" not in row else None
            boxed = None if af else "solution"
        sf = solution_field or ("solution" if "solution" in row else None)
        solution = _text(row, sf, required=solution_field is not None) if sf else None
        if boxed:
            answer = last_boxed(_text(row, boxed))
            if not answer:
                raise BadRow(boxed, "holds no \\boxed{} answer")
        else:
            answer = _text(row, af)
        return question, answer, solution

    return extract


EXTRACTORS = {
    ("gsm8k", "train"): _gsm8k, ("gsm8k", "test"): _gsm8k,
    ("math", "train"): _fields("problem", "answer"),
    ("math500", "test"): _fields("problem", "answer", "solution"),
    ("minerva_math", "test"): _minerva,
    ("olympiadbench", "test"): _olympiadbench,
    ("aime24", "test"): _fields("problem", "answer", "solution"),
    ("amc23", "test"): _fields("question", "answer"),
    ("college_math", "test"): _college_math,
}


def _not_object(value) -> BadRow:
    return BadRow(None, f"expected a JSON object, got {type(value).__name__}")


def _read_records(path: Path):
    """Yield (line or record number, row dict or a BadRow) from a JSONL / JSON / Parquet file."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, BadRow(None, f"malformed JSON ({e.msg} at column {e.colno})")
                    continue
                yield n, row if isinstance(row, dict) else BadRow(None, _not_object(row))
    elif path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})") from None
        if isinstance(rows, dict) and len(rows) == 1 and isinstance(next(iter(rows.values())), list):
            rows = next(iter(rows.values()))  # {"data": [...]}
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects (or JSON lines in a .jsonl file)")
        yield from ((n, r if isinstance(r, dict) else _not_object(r)) for n, r in enumerate(rows, 1))
    elif path.suffix == ".parquet":
        yield from enumerate(pl.read_parquet(path).iter_rows(named=True), 1)
    else:
        raise ValueError(f"{path}: unsupported problem file format (expected .jsonl, .json or .parquet)")


def _hub_records(dataset_id: str, split: str):
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, split=split)
    except (ConnectionError, OSError) as e:
        raise ConnectionError(
            f"could not load {dataset_id!r} (split {split!r}) from the Hugging Face hub: {e}. The hub is "
            "reachable only online; offline, download the data set elsewhere and pass a local "
            ".jsonl/.json/.parquet path instead."
        ) from e
    return enumerate(ds, 1)


def _resolve(source: str, data_root: str):
    """(label for ids, where for messages, line-numbered records, per-row extractor or None)."""
    name, _, split = source.partition(":")
    if name in KNOWN:
        split = split or ("test" if name in BENCHMARKS else "train")
        if (name, split) not in EXTRACTORS:
            raise ValueError(f"{source!r}: {name} has no split {split!r} (known: "
                             f"{', '.join(s for n, s in EXTRACTORS if n == name)})")
        path = Path(data_root) / ("seeds" if split == "train" else "benchmarks") / name / f"{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{source!r}: expected {path} (set data_root to the folder holding "
                                    "seeds/ and benchmarks/)")
        return f"{name}-{split}", str(path), _read_records(path), EXTRACTORS[name, split]
    path = Path(source)
    if path.exists() or path.suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise FileNotFoundError(f"problem file {path} not found")
        return path.stem, str(path), _read_records(path), None
    if HUB_ID.match(source):
        split = split or "train"
        return f"{name.split('/')[-1]}-{split}", f"hub:{name}[{split}]", _hub_records(name, split), None
    raise ValueError(f"unknown problem source {source!r}: expected one of {', '.join(KNOWN)} (optionally "
                     "':train'/':test'), 'toy:<split>', a .jsonl/.json/.parquet path, or a hub id 'org/name'")


def load_problems(source: str, *, data_root: str = "../shared/data", limit: int | None = None, seed: int = 0,
                  question_field: str | None = None, answer_field: str | None = None,
                  solution_field: str | None = None, answer_from_boxed: str | None = None,
                  id_field: str | None = None, skip_bad: bool = False) -> pl.DataFrame:
    """The problems frame for `source` (see the module doc), every row validated.

    `limit` keeps a random subset of that many problems, drawn with `seed` (file order is kept).
    `problem_id` is `<label>-<record index>` (e.g. `gsm8k-train-17`), `<label>-<value of id_field>`, or
    the file's own `problem_id` (a problems frame written to Parquet/JSONL reads back unchanged).
    The field arguments override a known format, or describe an unknown one; `answer_from_boxed=F`
    takes the answer from the last \\boxed{} of field F.
    """
    if source.startswith("toy:"):
        from rift_core import toy

        return toy.problems(source[4:], n=limit, seed=seed)
    label, where, records, extract = _resolve(source, data_root)
    overrides = {"question_field": question_field, "answer_field": answer_field,
                 "solution_field": solution_field, "answer_from_boxed": answer_from_boxed}
    if any(overrides.values()) or extract is None:
        preset = HUB_PRESETS.get(source.partition(":")[0], {}) if not any(overrides.values()) else {}
        extract = _fields(**{k: v or preset.get(k) for k, v in overrides.items()})
    line_word = "line" if where.endswith(".jsonl") else "record"

    rows, bad, seen = [], [], {}
    for index, (n, row) in enumerate(records):
        try:
            if isinstance(row, BadRow):
                raise row
            question, answer, solution = extract(row)
            if id_field:
                pid = f"{label}-{_text(row, id_field)}"
            elif "problem_id" in row:  # a problems frame saved by this project keeps its ids
                pid = _text(row, "problem_id")
            else:
                pid = f"{label}-{index}"
            if pid in seen:
                raise BadRow(id_field or "problem_id", f"duplicate id {pid!r} (first at {line_word} {seen[pid]})")
            seen[pid] = n
            origin = row.get("source")  # kept from a saved problems frame (or NuminaMath's competition name)
            rows.append((pid, question, answer, solution, origin if isinstance(origin, str) and origin else source))
        except BadRow as e:
            message = f"{where}: {line_word} {n}: {e}"
            if not skip_bad:
                raise ValueError(message + " (pass skip_bad=True to skip such rows)") from None
            bad.append(message)
    if bad:
        warnings.warn(SkippedRowsWarning(where, bad), stacklevel=2)
    if not rows:
        raise ValueError(f"{where}: no usable problems")
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
        rows = [rows[i] for i in keep]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")
