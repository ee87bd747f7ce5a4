"""Problems: seed sets and benchmarks as one frame (problem_id, question, answer, solution, source).

Sources:
- a known name, optionally with a split: the benchmarks `gsm8k`, `math500`, `minerva_math`,
  `olympiadbench`, `aime24`, `amc23`, `college_math` (split `test`) and the seed sets `math`,
  `gsm8k:train` and `numina_cot` (split `train`). Each is one JSONL file in the Qwen2.5-Math evaluation
  format at `seeds/<name>/train.jsonl` or `benchmarks/<name>/test.jsonl`, looked up in this order:
  under `data_root`, under the download folder (`$RIFT_DATA_CACHE`, default `~/.cache/rift/data`, filled
  by `python -m rift_core data download`), then read from the Hugging Face hub (rift_core.known_sets);
- `toy:<split>`: the embedded arithmetic task (rift_core.toy_task);
- a local .jsonl / .json / .parquet / .csv file;
- a Hugging Face dataset id, `org/name` or `org/name:split` (online only; a hub id that `data download`
  fetches is read from its downloaded copy first).

Files in other formats are described by a `ProblemFormat`: field names may be dotted paths into
nested objects (`meta.gold.value`, `final_answer.0`) and the question (or solution) may be a template
over several fields (`"{Body}\n{Query}"`). Numbers read as text, integral floats without `.0` (27.0 -> "27").

Reference answers are taken the way the Qwen2.5-Math suite takes them (parser.parse_ground_truth),
without its lossy string normalisation: grading with math-verify does that job.

Bad rows (malformed JSON, missing or empty fields, duplicate ids) raise a ValueError naming the file,
the line (JSONL, CSV; the record number otherwise) and the field. With `skip_bad=True` they are dropped
and reported instead through a `SkippedRowsWarning`, whose `.rows` lists one message per row.
"""
import csv
import dataclasses
import itertools
import json
import os
import random
import re
import socket
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import polars as pl

from rift_core import toy_task
from rift_core.boxed import last_boxed
from rift_core.known_sets import (DATA_CACHE_ENV, KNOWN, SETS, KnownSet, Source, data_cache, default_split,
                                  local_copy)

SCHEMA = {"problem_id": pl.String, "question": pl.String, "answer": pl.String, "solution": pl.String,
          "source": pl.String}
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?$")


@dataclass(frozen=True)
class ProblemFormat:
    """How to read a problem file that is not in a known format (every field None: the known format,
    or the common names `question`/`problem`, `answer`, `solution`)."""

    question_field: str | None = field(default=None, metadata={"help": (
        "field holding the question: a name, a dotted path into nested objects (meta.prompt, turns.0) or a "
        "template over several fields ('{Body} {Question}', fields may be dotted, {{ }} for literal braces); "
        "default question, else problem")})
    answer_field: str | None = field(default=None, metadata={"help": (
        "field holding the reference final answer (name or dotted path, e.g. final_answer.0; numbers read "
        "as text, 27.0 as 27); default answer, else the last \\boxed{} of solution")})
    solution_field: str | None = field(default=None, metadata={"help": (
        "field holding a worked solution (name, dotted path or template); default solution when present")})
    answer_from_boxed: str | None = field(default=None, metadata={"help": (
        "take the reference answer from the last \\boxed{} of this field (name or dotted path) instead "
        "of answer_field")})
    id_field: str | None = field(default=None, metadata={"help": (
        "field whose value names each problem (problem_id <file stem>-<value>); default the record index")})

    def __post_init__(self):
        if self.answer_field and self.answer_from_boxed:
            raise ValueError("give answer_field or answer_from_boxed, not both")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{f.name}: expected a field name, got {value!r}")
            if value is not None and _is_template(value):
                _template_parts(value, f.name)  # a malformed template fails here, before any row is read

    def extraction(self) -> dict[str, str | None]:
        """The fields that say where question, answer and solution are (all but id_field)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "id_field"}


def hub_unreachable() -> str | None:
    """None when the Hugging Face hub looks reachable, else why not. Fails fast (a few seconds), where the
    hub client would retry for half a minute."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connection says nothing; let the hub client try
    host = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        port = host.port or (80 if host.scheme == "http" else 443)
        socket.create_connection((host.hostname, port), timeout=5).close()
    except OSError as e:
        return f"no connection to {host.hostname}: {e.strerror or e}"
    return None


class DataNotFoundError(FileNotFoundError, ConnectionError):
    """A known set is neither under data_root nor in the download folder, and the hub is unreachable."""


class BadRow(ValueError):
    def __init__(self, field: str | None, reason: str):
        super().__init__(f"field {field!r}: {reason}" if field else reason)


class SkippedRowsWarning(UserWarning):
    """Rows dropped by `skip_bad=True`; `.rows` holds one 'file:line N: field: reason' message per row."""

    def __init__(self, where: str, rows: list[str]):
        self.rows = rows
        shown = "\n  ".join(rows[:5]) + (f"\n  ... and {len(rows) - 5} more" if len(rows) > 5 else "")
        super().__init__(f"{where}: skipped {len(rows)} bad row(s):\n  {shown}")


def _is_template(spec: str) -> bool:
    return "{" in spec or "}" in spec


def _template_parts(template: str, option: str = "template") -> list[tuple[str, str | None]]:
    """(literal text, field path or None) pairs of a '{a}\n{b.c}' template; only plain field paths,
    never a format spec, conversion or expression (nothing from the data is ever evaluated)."""
    parts = []
    try:
        for literal, name, spec, conversion in string.Formatter().parse(template):
            if name is not None and (not name.strip() or spec or conversion):
                raise ValueError("each {} must hold a field name or dotted path, with no ':' or '!'")
            parts.append((literal, name))
    except ValueError as e:
        raise ValueError(f"{option}: bad template {template!r}: {e} (write {{{{ and }}}} for literal braces)") from None
    return parts


def _missing(path: str, at: list[str], value) -> BadRow:
    if not at:
        return BadRow(path, f"missing (row has {', '.join(map(repr, value)) or 'no fields'})")
    where = ".".join(at)
    if isinstance(value, dict):
        return BadRow(path, f"missing ({where!r} has {', '.join(map(repr, value)) or 'no fields'})")
    if isinstance(value, (list, tuple)):
        return BadRow(path, f"missing ({where!r} is a list of {len(value)} item(s))")
    return BadRow(path, f"missing ({where!r} is {type(value).__name__}, not an object)")


def _lookup(row: dict, path: str):
    """The value at `path`: a field name, or a dotted path into nested objects and lists (`a.b.0`)."""
    if path in row:
        return row[path]
    value, at = row, []
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (isinstance(value, (list, tuple)) and re.fullmatch(r"-?\d+", part)
              and -len(value) <= int(part) < len(value)):
            value = value[int(part)]
        else:
            raise _missing(path, at, value)
        at.append(part)
    return value


def _as_text(value, path: str) -> str:
    if isinstance(value, float) and value != value:
        value = None  # NaN: an empty cell of a pandas-written file
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) and value is not None:
        raise BadRow(path, f"expected text, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # amc23 stores 27.0; the answer is "27"
    return "" if value is None else str(value).strip()


def _text(row: dict, field: str, *, required: bool = True) -> str | None:
    """The text of `field` (a name, dotted path or template) in `row`; None if optional and absent/empty."""
    if _is_template(field):
        value = "".join(literal + (_as_text(_lookup(row, name), name) if name is not None else "")
                        for literal, name in _template_parts(field)).strip()
    else:
        try:
            found = _lookup(row, field)
        except BadRow:
            if required:
                raise
            return None
        value = _as_text(found, field)
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
    ProblemFormat(question_field, answer_field, solution_field, answer_from_boxed)  # validates

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
    # NuminaMath-CoT (the paper's second seed set): the answer is the last \\boxed{} of the solution
    ("numina_cot", "train"): _fields("problem", None, "solution", "solution"),
}
# A hub id whose downloaded copy is a known set: read that copy first (rift_core.known_sets.SETS).
HUB_PRESETS = {"AI-MO/NuminaMath-CoT": {"question_field": "problem", "solution_field": "solution",
                                        "answer_from_boxed": "solution"}}
HUB_ALIASES = {"AI-MO/NuminaMath-CoT": ("numina_cot", "train")}


def _not_object(value) -> BadRow:
    return BadRow(None, f"expected a JSON object, got {type(value).__name__}")


def _read_records(path: Path):
    """Yield (line or record number, row dict or a BadRow) from a JSONL / JSON / Parquet / CSV file."""
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
    elif path.suffix == ".csv":
        # A header line, then one record per line (quoted cells may span lines); every cell is text,
        # so "025" stays "025". Numbers are the line each record starts on.
        csv.field_size_limit(2**31 - 1)
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:  # reads the header line
                return
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    raise ValueError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
                if None in row:
                    yield start, BadRow(None, f"{len(row[None])} cell(s) beyond the header's {len(reader.fieldnames)}")
                    continue
                yield start, {k: (v if v != "" else None) for k, v in row.items()}
    else:
        raise ValueError(f"{path}: unsupported problem file format (expected {', '.join(FILE_TYPES)})")


def _hub_records(dataset_id: str, split: str):
    reason = hub_unreachable()
    try:
        if reason:
            raise ConnectionError(reason)
        import datasets

        ds = datasets.load_dataset(dataset_id, split=split)
    except (ConnectionError, OSError) as e:
        raise ConnectionError(
            f"could not load {dataset_id!r} (split {split!r}) from the Hugging Face hub: {e}. The hub is "
            "reachable only online; offline, download the data set elsewhere and pass a local "
            ".jsonl/.json/.parquet path instead (or a .csv; `python -m rift_core data download` fetches "
            "the paper's sets)."
        ) from e
    return enumerate(ds, 1)


def _load(source: Source) -> list:
    import datasets

    if source.is_url:
        return [datasets.load_dataset("json", data_files=source.dataset, split="train")]
    return [datasets.load_dataset(source.dataset, config, split=source.split) for config in source.configs]


def converted_rows(spec: KnownSet, parts: list):
    """The converted rows of every part, in order."""
    return (spec.convert(row, i) for i, row in enumerate(itertools.chain.from_iterable(parts)))


def short_error(e: BaseException) -> str:
    """The exception's type and first line, for one-line notes on a source passed over."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def open_known(spec: KnownSet) -> tuple[Source, list, list[str]]:
    """The source to read this set from: (source, its loaded parts, notes on the sources passed over).

    The first source whose rows match the Qwen2.5-Math file (row count, first problem) wins; failing that,
    the first whose rows are at least in this set's format."""
    extract = EXTRACTORS[spec.name, spec.split]
    notes, fallback = [], None
    for source in spec.sources:
        try:
            parts = _load(source)
            n = sum(len(p) for p in parts)
            first = next(converted_rows(spec, parts), None)
            if first is None:
                raise ValueError("no rows")
            question = extract(first)[0]
        except BadRow as e:
            notes.append(f"{source}: rows not in this set's format (first row: {e})")
            continue
        except (KeyError, TypeError) as e:
            notes.append(f"{source}: rows not in this set's format (no field {e})")
            continue
        except Exception as e:  # not found, no network, bad file: try the next source
            notes.append(f"{source}: {short_error(e)}")
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
    raise DataNotFoundError(f"{spec.source_name}: no source could be read ({'; '.join(notes)})")


def hub_records(name: str, split: str):
    """(where, numbered rows) of a known set read from its first readable source, in its local format."""
    spec = SETS[name, split]
    source, parts, _ = open_known(spec)
    return f"hub:{source}", enumerate(converted_rows(spec, parts), 1)


def _known_from_hub(source: str, name: str, split: str, tried: list[Path]):
    reason = hub_unreachable()
    if reason:
        raise DataNotFoundError(
            f"{source!r}: not found at {tried[0]} nor {tried[1]}, and the Hugging Face hub is unreachable "
            f"({reason}): set data_root to the folder holding seeds/ and benchmarks/, or run "
            f"`python -m rift_core data download` where there is a network (it writes {data_cache()}; "
            f"set ${DATA_CACHE_ENV} to read it from elsewhere)")
    return hub_records(name, split)


def _resolve(source: str, data_root: str):
    """(label for ids, where for messages, line-numbered records, per-row extractor or None)."""
    name, _, split = source.partition(":")
    if name in KNOWN:
        split = split or default_split(name)
        if (name, split) not in EXTRACTORS:
            raise ValueError(f"{source!r}: {name} has no split {split!r} (known: "
                             f"{', '.join(s for n, s in EXTRACTORS if n == name)})")
        path, tried = local_copy(name, split, data_root)
        if path is None:
            where, records = _known_from_hub(source, name, split, tried)
            return f"{name}-{split}", where, records, EXTRACTORS[name, split]
        return f"{name}-{split}", str(path), _read_records(path), EXTRACTORS[name, split]
    path = Path(source)
    if path.exists() or path.suffix in FILE_TYPES:
        if not path.is_file():
            raise FileNotFoundError(f"problem file {path} not found")
        return path.stem, str(path), _read_records(path), None
    if HUB_ID.match(source):
        split = split or "train"
        label = f"{name.split('/')[-1]}-{split}"
        alias = HUB_ALIASES.get(name)
        if alias and alias[1] == split:
            local, _ = local_copy(*alias, data_root)
            if local is not None:  # its downloaded copy, rows in the hub's order
                return label, str(local), _read_records(local), None
        return label, f"hub:{name}[{split}]", _hub_records(name, split), None
    raise ValueError(f"unknown problem source {source!r}: expected one of {', '.join(KNOWN)} (optionally "
                     f"':train'/':test'), 'toy:<split>', a {'/'.join(FILE_TYPES)} path, or a hub id 'org/name'")


def load_problems(source: str, *, data_root: str = "../shared/data", limit: int | None = None, seed: int = 0,
                  fmt: ProblemFormat | None = None, question_field: str | None = None,
                  answer_field: str | None = None, solution_field: str | None = None,
                  answer_from_boxed: str | None = None, id_field: str | None = None,
                  skip_bad: bool = False) -> pl.DataFrame:
    """The problems frame for `source` (see the module doc), every row validated.

    `limit` keeps a random subset of that many problems, drawn with `seed` (file order is kept).
    `problem_id` is `<label>-<record index>` (e.g. `gsm8k-train-17`), `<label>-<value of id_field>`, or
    the file's own `problem_id` (a problems frame written to Parquet/JSONL reads back unchanged).
    `fmt` (or the same-named keyword arguments, which win over its fields) overrides a known format or
    describes an unknown one: see `ProblemFormat`.
    """
    keywords = {"question_field": question_field, "answer_field": answer_field, "solution_field": solution_field,
                "answer_from_boxed": answer_from_boxed, "id_field": id_field}
    fmt = fmt or ProblemFormat()
    if any(v is not None for v in keywords.values()):
        fmt = dataclasses.replace(fmt, **{k: v for k, v in keywords.items() if v is not None})
    if source.startswith("toy:"):
        return toy_task.problems(source[4:], n=limit, seed=seed)
    label, where, records, extract = _resolve(source, data_root)
    overrides = fmt.extraction()
    if any(overrides.values()) or extract is None:
        preset = HUB_PRESETS.get(source.partition(":")[0], {}) if not any(overrides.values()) else {}
        extract = _fields(**{k: v or preset.get(k) for k, v in overrides.items()})
    id_field = fmt.id_field
    line_word = "line" if where.endswith((".jsonl", ".csv")) else "record"

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
        raise ValueError(f"{where}: no usable problems" + (f" (every row was bad; the first: {bad[0]})" if bad else ""))
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
        rows = [rows[i] for i in keep]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")
