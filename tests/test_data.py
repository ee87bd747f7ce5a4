import json
import os
import subprocess
import sys

import polars as pl
import pytest

from rift_core import data, known_sets, toy_task
from rift_core.boxed import last_boxed
from rift_core.data import SCHEMA, ProblemFormat, SkippedRowsWarning, load_problems

# Rows in ../shared/data (the formats in data/README.md); seeds/math has two rows with an empty answer.
REAL = {
    "gsm8k:train": 7473, "gsm8k": 1319, "math500": 500, "minerva_math": 272, "olympiadbench": 675,
    "aime24": 30, "amc23": 40, "college_math": 2818,
}


@pytest.mark.parametrize("source", sorted(REAL))
def test_every_real_file_loads_with_answers(shared_data, source):
    df = load_problems(source, data_root=str(shared_data))
    assert df.schema == pl.Schema(SCHEMA)
    assert df.height == REAL[source]
    assert df["problem_id"].n_unique() == df.height
    assert df["question"].str.len_chars().min() > 0 and df["answer"].str.len_chars().min() > 0
    if source != "minerva_math":  # one minerva box itself holds "$ $"; Qwen keeps minerva answers verbatim
        assert not df["answer"].str.contains(r"(^|[^\\])\$").any()  # no math-mode `$`; currency `\$` stays


def test_real_math_seed_set_reports_its_two_empty_answers(shared_data):
    with pytest.raises(ValueError, match=r"seeds/math/train.jsonl: line 7037: field 'answer': empty"):
        load_problems("math", data_root=str(shared_data))
    with pytest.warns(SkippedRowsWarning) as record:
        df = load_problems("math", data_root=str(shared_data), skip_bad=True)
    assert df.height == 7498
    [w] = record
    assert [r.split(": ", 1)[1] for r in w.message.rows] == ["line 7037: field 'answer': empty",
                                                          "line 7437: field 'answer': empty"]
    # ids keep the record index, so a skipped row never shifts the ids of the rows after it
    assert df["problem_id"][-1] == "math-train-7499"


def test_reference_answers_match_the_qwen_suite(shared_data):
    root = str(shared_data)
    gsm = load_problems("gsm8k:train", data_root=root)
    row = gsm.row(0, named=True)
    assert row["answer"] == "72"
    assert "<<" not in row["solution"] and row["solution"].endswith("$\\boxed{72}$.")
    assert last_boxed(row["solution"]) == row["answer"]
    assert "1080" in gsm["answer"].to_list()  # "#### 1,080": thousands separators dropped
    assert load_problems("amc23", data_root=root)["answer"][0] == "27"  # float 27.0 in the file
    assert load_problems("minerva_math", data_root=root)["answer"][:3].to_list() == ["1.6", "4.5e33", "41.8"]
    oly = load_problems("olympiadbench", data_root=root)
    assert oly["answer"][:3].to_list() == ["2", "\\frac{1}{2 n+2}", "2^{1009}"]
    assert oly["answer"][13] == "69,84"  # ["$69$,$84$"]
    assert load_problems("college_math", data_root=root)["answer"][0] == "10-4 n"  # "$10-4 n$"
    m500 = load_problems("math500", data_root=root)
    assert (m500["answer"] == m500["solution"].map_elements(last_boxed, return_dtype=pl.String)).mean() > 0.95
    assert load_problems("aime24", data_root=root)["answer"][7] == "025"


def test_seeded_subset_is_random_stable_and_seed_dependent(shared_data):
    a = load_problems("gsm8k:train", data_root=str(shared_data), limit=100, seed=0)
    b = load_problems("gsm8k:train", data_root=str(shared_data), limit=100, seed=0)
    c = load_problems("gsm8k:train", data_root=str(shared_data), limit=100, seed=1)
    assert a.equals(b) and not a.equals(c)
    ids = [int(i.rsplit("-", 1)[1]) for i in a["problem_id"]]
    assert ids == sorted(ids) and ids[-1] > 1000  # a sample across the file, not its head


def test_last_boxed():
    assert last_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed(r"$\boxed{\{1,2\}}$") == r"\{1,2\}"
    assert last_boxed(r"so \fbox{x+1}") == "x+1"
    assert last_boxed(r"the answer is $\boxed 5$.") == "5"
    assert last_boxed(r"\boxed{12") is None  # cut off
    assert last_boxed("no box") is None and last_boxed(r"\boxed{}") is None and last_boxed(None) is None
    assert last_boxed("{" * 100_000 + r"\boxed{" + "{" * 100_000) is None


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad, message", [
    ('{"question": "1+1?", "answer": ', "line 2: malformed JSON"),
    ({"question": "1+1?"}, "line 2: field 'answer': missing"),
    ({"question": "1+1?", "answer": "  "}, "line 2: field 'answer': empty"),
    ({"question": "", "answer": "2"}, "line 2: field 'question': empty"),
    ({"question": "1+1?", "answer": ["2"]}, "line 2: field 'answer': expected text, got list"),
    ("[1, 2]", "line 2: expected a JSON object"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "2+2?", "answer": "4"}, bad, {"question": "3+3?", "answer": 6}])
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        load_problems(str(path))
    with pytest.warns(SkippedRowsWarning, match="skipped 1 bad row") as record:
        df = load_problems(str(path), skip_bad=True)
    assert df["problem_id"].to_list() == ["p-0", "p-2"] and df["answer"].to_list() == ["4", "6"]
    assert record[0].message.rows[0].startswith(f"{path}: {message}")


def test_duplicate_ids_and_explicit_fields(tmp_path):
    rows = [{"uid": "a", "prompt": "Q1", "sol": "so \\boxed{7}"}, {"uid": "b", "prompt": "Q2", "sol": "\\boxed{8}"},
            {"uid": "a", "prompt": "Q3", "sol": "\\boxed{9}"}]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    kw = dict(question_field="prompt", answer_from_boxed="sol", solution_field="sol")
    with pytest.raises(ValueError, match=r"line 3: field 'uid': duplicate id 'mine-a' \(first at line 1\)"):
        load_problems(str(path), id_field="uid", **kw)
    with pytest.warns(SkippedRowsWarning):
        df = load_problems(str(path), id_field="uid", skip_bad=True, **kw)
    assert df.select("problem_id", "question", "answer").rows() == [("mine-a", "Q1", "7"), ("mine-b", "Q2", "8")]
    assert df["solution"][0] == "so \\boxed{7}"
    with pytest.raises(ValueError, match=r"line 1: field 'question': missing \(row has 'uid', 'prompt', 'sol'\)"):
        load_problems(str(path))


def test_json_and_parquet_files(tmp_path):
    rows = [{"problem": "Find x.", "solution": "x is \\boxed{3}."}, {"problem": "Find y.", "solution": "\\boxed{4}"}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pl.DataFrame(rows).write_parquet(tmp_path / "p.parquet")
    for name in ("p.json", "p.parquet"):  # no answer field: the last \boxed{} of the solution
        df = load_problems(str(tmp_path / name))
        assert df.select("problem_id", "answer").rows() == [("p-0", "3"), ("p-1", "4")]
    (tmp_path / "q.json").write_text(json.dumps([{"problem": "P", "solution": "no box"}]))
    with pytest.raises(ValueError, match=r"q.json: record 1: field 'solution': holds no \\boxed\{\} answer"):
        load_problems(str(tmp_path / "q.json"))


def test_a_saved_problems_frame_reads_back_unchanged(shared_data, tmp_path):
    df = load_problems("gsm8k", data_root=str(shared_data), limit=20)
    df.write_parquet(tmp_path / "subset.parquet")
    assert load_problems(str(tmp_path / "subset.parquet")).equals(df)
    pl.concat([df, df.head(1)]).write_ndjson(tmp_path / "dup.jsonl")
    with pytest.raises(ValueError, match=r"dup.jsonl: line 21: field 'problem_id': duplicate id 'gsm8k-test-\d+'"):
        load_problems(str(tmp_path / "dup.jsonl"))


def test_unknown_sources_say_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.setenv(known_sets.DATA_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "hub_unreachable", lambda: "offline (test)")
    with pytest.raises(FileNotFoundError, match="missing.jsonl not found"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown problem source 'nope'"):
        load_problems("nope")
    with pytest.raises(ValueError, match="math500 has no split 'train'"):
        load_problems("math500:train")
    with pytest.raises(FileNotFoundError, match="set data_root"):
        load_problems("gsm8k:train", data_root=str(tmp_path))


def test_hub_dataset_offline_error_is_clear():
    # HF_HUB_OFFLINE makes datasets fail at once instead of retrying the network for ~30 s.
    code = ("from rift_core.data import load_problems\n"
            "try:\n    load_problems('AI-MO/NuminaMath-CoT')\n"
            "except ConnectionError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    assert "ERR could not load 'AI-MO/NuminaMath-CoT' (split 'train') from the Hugging Face hub" in out
    assert "pass a local .jsonl/.json/.parquet path instead" in out


def test_toy_source_dispatches_to_the_toy_task():
    df = load_problems("toy:seed", limit=5, seed=3)
    assert df.height == 5 and {"problem_id", "question", "answer"} <= set(df.columns)
    assert df.equals(toy_task.problems("seed", n=5, seed=3))


# --- bring your own data: dotted paths, templates, CSV, ProblemFormat ---------------------------------------

NESTED = [
    {"Body": "A train leaves at 3.", "Query": "When does it arrive?", "meta": {"id": "q7", "gold": {"value": 27.0}},
     "final_answer": ["$5$", "6"], "work": {"steps": ["first", "so \\boxed{27}"]}},
    {"Body": "Two.", "Query": "Sum?", "meta": {"id": "q8", "gold": {"value": "1/2"}},
     "final_answer": ["7"], "work": {"steps": ["\\boxed{1/2}"]}},
]


def test_dotted_paths_and_templates_read_nested_rows(tmp_path):
    path = write_jsonl(tmp_path / "nested.jsonl", NESTED)
    fmt = ProblemFormat(question_field="{Body}\n{Query}", answer_field="meta.gold.value",
                        solution_field="work.steps.-1", id_field="meta.id")
    df = load_problems(str(path), fmt=fmt)
    assert df.rows() == [("nested-q7", "A train leaves at 3.\nWhen does it arrive?", "27", "so \\boxed{27}", str(path)),
                         ("nested-q8", "Two.\nSum?", "1/2", "\\boxed{1/2}", str(path))]
    # list indices, the boxed answer of a nested field, keyword arguments over fmt's fields
    df = load_problems(str(path), question_field="Query", answer_field="final_answer.0")
    assert df["answer"].to_list() == ["$5$", "7"]
    df = load_problems(str(path), fmt=ProblemFormat(question_field="Query", answer_field="meta.id"),
                       answer_field=None, answer_from_boxed=None, solution_field="Body")
    assert df["answer"].to_list() == ["q7", "q8"] and df["solution"].to_list() == ["A train leaves at 3.", "Two."]
    boxed = load_problems(str(path), fmt=ProblemFormat(question_field="Query", answer_from_boxed="work.steps.-1"))
    assert boxed["answer"].to_list() == ["27", "1/2"]
    with pytest.raises(ValueError, match="give answer_field or answer_from_boxed, not both"):
        load_problems(str(path), fmt=ProblemFormat(answer_field="meta.id"), answer_from_boxed="work.steps.0")


@pytest.mark.parametrize("fields, message", [
    ({"answer_field": "meta.gold.valu"}, r"line 1: field 'meta.gold.valu': missing \('meta.gold' has 'value'\)"),
    ({"answer_field": "final_answer.1"}, r"line 2: field 'final_answer.1': missing \('final_answer' is a list of 1 item"),
    ({"answer_field": "answer"}, r"line 1: field 'answer': missing \(row has 'Body', 'Query', 'meta', 'final_answer', 'work'\)"),
    ({"answer_field": "Body.x"}, r"line 1: field 'Body.x': missing \('Body' is str, not an object\)"),
    ({"question_field": "{Body} {query}"}, r"line 1: field 'query': missing \(row has 'Body', 'Query'"),
    ({"question_field": "{Body.__class__}"}, r"line 1: field 'Body.__class__': missing \('Body' is str"),  # never evaluated
    ({"answer_field": "meta"}, r"line 1: field 'meta': expected text, got dict"),
])
def test_unknown_fields_name_file_line_field_and_the_fields_there_are(tmp_path, fields, message):
    path = write_jsonl(tmp_path / "nested.jsonl", NESTED)
    fmt = ProblemFormat(**{"question_field": "Query", "answer_field": "meta.id", **fields})
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        load_problems(str(path), fmt=fmt)


@pytest.mark.parametrize("template", ["{Body:>9}", "{Body!r}", "{}", "{Body", "Body}", "{0[__class__]}x{"])
def test_malformed_templates_fail_before_reading(template):
    with pytest.raises(ValueError, match="question_field: bad template"):
        ProblemFormat(question_field=template)


def test_templates_keep_escaped_braces_and_numbers(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"a": 3, "b": 2.0, "ans": 1.5}])
    df = load_problems(str(path), question_field="{{x}} = {a} + {b}", answer_field="ans")
    assert df.select("question", "answer").row(0) == ("{x} = 3 + 2", "1.5")


def test_problem_format_fields_are_documented_options():
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(ProblemFormat)}
    assert list(fields) == ["question_field", "answer_field", "solution_field", "answer_from_boxed", "id_field"]
    for f in fields.values():
        assert f.default is None and f.type == (str | None) and f.metadata["help"]
    assert ProblemFormat().extraction() == dict.fromkeys(list(fields)[:4])
    with pytest.raises(ValueError, match="question_field: expected a field name"):
        ProblemFormat(question_field=" ")


def test_csv_files_read_every_cell_as_text_with_line_numbers(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('id,question,answer\nA,"Add 1 and 1,\nplease.",2\nB,Zero-padded?,025\nC,No answer?,\nD,"Q4",4\n',
                    encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}: line 5: field 'answer': empty"):  # the record on line 5
        load_problems(str(path))
    with pytest.warns(SkippedRowsWarning):
        df = load_problems(str(path), id_field="id", skip_bad=True)
    assert df.select("problem_id", "question", "answer").rows() == [
        ("mine-A", "Add 1 and 1,\nplease.", "2"), ("mine-B", "Zero-padded?", "025"), ("mine-D", "Q4", "4")]
    with pytest.raises(ValueError, match=r"mine.csv: line 2: field 'prompt': missing \(row has 'id', 'question', 'answer'\)"):
        load_problems(str(path), question_field="prompt")


def test_parquet_and_json_nested_fields(tmp_path):
    rows = [{"q": {"text": "Find x.", "lang": "en"}, "gold": [3, 4]}, {"q": {"text": "Find y.", "lang": "en"}, "gold": [5]}]
    pl.DataFrame(rows).write_parquet(tmp_path / "n.parquet")
    (tmp_path / "n.json").write_text(json.dumps({"data": rows}))
    for name in ("n.parquet", "n.json"):
        df = load_problems(str(tmp_path / name), question_field="q.text", answer_field="gold.0")
        assert df.select("question", "answer").rows() == [("Find x.", "3"), ("Find y.", "5")]


def test_every_bad_row_skipped_says_why(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "Q"}])
    with pytest.warns(SkippedRowsWarning), pytest.raises(ValueError, match=r"no usable problems \(every row was bad; "
                                                                          r"the first: .*field 'answer': missing"):
        load_problems(str(path), skip_bad=True)


# --- known names: data_root, then the download folder, then the hub -----------------------------------------

def amc_row(question, answer):
    return {"id": 0, "question": question, "answer": answer, "url": "u"}


def test_known_names_look_in_data_root_then_the_download_folder_then_the_hub(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    root, cache = tmp_path / "root", tmp_path / "cache"
    monkeypatch.setenv(known_sets.DATA_CACHE_ENV, str(cache))
    calls = []

    def load_dataset(path, name=None, split=None, data_files=None, **kwargs):
        calls.append((path, split))
        if path != "math-ai/amc23":
            raise datasets.exceptions.DatasetNotFoundError(f"{path} not found")
        return datasets.Dataset.from_list([amc_row("from the hub", 3.0)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "hub_unreachable", lambda: None)
    for folder, answer in ((root, "1"), (cache, "2")):
        write_jsonl((folder / "benchmarks/amc23").mkdir(parents=True) or folder / "benchmarks/amc23/test.jsonl",
                    [amc_row(f"in {folder.name}", answer)])
    assert load_problems("amc23", data_root=str(root))["answer"].to_list() == ["1"]
    (root / "benchmarks/amc23/test.jsonl").unlink()
    assert load_problems("amc23", data_root=str(root))["answer"].to_list() == ["2"]
    assert calls == []
    (cache / "benchmarks/amc23/test.jsonl").unlink()
    df = load_problems("amc23", data_root=str(root))  # the hub copy, converted on the fly
    assert df.select("problem_id", "question", "answer").row(0) == ("amc23-test-0", "from the hub", "3")
    assert calls[0] == ("math-ai/amc23", "test")

    monkeypatch.setattr(data, "hub_unreachable", lambda: "offline (test)")
    with pytest.raises(data.DataNotFoundError) as e:
        load_problems("amc23", data_root=str(root))
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ConnectionError)
    message = str(e.value)
    assert str(root / "benchmarks/amc23/test.jsonl") in message and str(cache / "benchmarks/amc23/test.jsonl") in message
    assert "offline (test)" in message and "set data_root" in message and "python -m rift_core data download" in message


def test_data_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(known_sets.DATA_CACHE_ENV, str(tmp_path))
    assert known_sets.data_cache() == tmp_path
    monkeypatch.delenv(known_sets.DATA_CACHE_ENV)
    assert str(known_sets.data_cache()).endswith(os.path.join(".cache", "rift", "data"))
