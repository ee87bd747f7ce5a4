import dataclasses
import json
import os
import subprocess
import sys

import pytest

from rift_core import data, download, known_sets
from rift_core.cli import data as data_command
from rift_core.data import load_problems

datasets = pytest.importorskip("datasets")
QWEN = known_sets.QWEN.format


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An in-memory hub: fill `tables[(id, config, split)]` (or `tables[url]` for a JSON file) with rows."""
    tables, calls = {}, []

    def load_dataset(path, name=None, split=None, data_files=None, **kwargs):
        key = data_files if path == "json" else (path, name, split)
        calls.append(key)
        if key not in tables:
            raise datasets.exceptions.DatasetNotFoundError(f"Dataset {key} doesn't exist on the Hub")
        return datasets.Dataset.from_list(tables[key])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "hub_unreachable", lambda: None)
    monkeypatch.setattr(download, "_revision", lambda source: "main" if source.is_url else "0123abc")
    monkeypatch.setenv(known_sets.DATA_CACHE_ENV, str(tmp_path / "empty-cache"))
    return tables, calls


def test_download_writes_hub_rows_in_the_local_format(hub, tmp_path):
    tables, calls = hub
    tables["openai/gsm8k", "main", "train"] = [
        {"question": "Natalia sold clips to 48 friends?", "answer": "48/2 = <<48/2=24>>24\n#### 72"},
        {"question": "Q2", "answer": "so #### 1,080"}]
    tables["EleutherAI/hendrycks_math", "algebra", "train"] = [
        {"problem": "Find x.", "level": "Level 2", "type": "Algebra", "solution": "So $x=\\boxed{\\frac12}$."}]
    tables["EleutherAI/hendrycks_math", "geometry", "train"] = [
        {"problem": "P2", "level": "Level 5", "type": "Geometry", "solution": "the answer is $\\boxed{}$."}]
    for subject in set(known_sets.MATH_SUBJECTS) - {"algebra", "geometry"}:
        tables["EleutherAI/hendrycks_math", subject, "train"] = [
            {"problem": f"{subject}?", "level": "Level 1", "type": subject, "solution": "\\boxed{1}"}]
    tables["AI-MO/NuminaMath-CoT", None, "train"] = [
        {"source": "olympiads", "problem": "N1", "solution": "thus \\boxed{5}", "messages": [{"role": "user", "content": "N1"}]}]
    tables["HuggingFaceH4/aime_2024", None, "train"] = [
        {"id": 60, "problem": "Every morning Aya goes for a walk.", "solution": "... \\boxed{204}", "answer": "204",
         "url": "u", "year": "2024"}]
    tables["openai/gsm8k", "main", "test"] = [{"question": "Janet's ducks?", "answer": "x\n#### 18"}]

    data_command.main(["download", "--to", str(tmp_path / "d"),
                   "--sets", "gsm8k:train,math,numina_cot,aime24,gsm8k"])
    root = tmp_path / "d"
    gsm = [json.loads(line) for line in (root / "seeds/gsm8k/train.jsonl").read_text().splitlines()]
    assert gsm[0] == {"question": "Natalia sold clips to 48 friends?", "answer": "48/2 = <<48/2=24>>24\n#### 72"}
    math = [json.loads(line) for line in (root / "seeds/math/train.jsonl").read_text().splitlines()]
    assert math[0] == {"problem": "Find x.", "solution": "So $x=\\boxed{\\frac12}$.", "answer": "\\frac12",
                       "level": "Level 2", "subject": "Algebra"}
    assert len(math) == 7 and math[2]["answer"] == ""  # an empty box stays empty, as in ../shared/data
    numina = json.loads((root / "seeds/numina_cot/train.jsonl").read_text())
    assert numina == {"source": "olympiads", "problem": "N1", "solution": "thus \\boxed{5}"}  # no `messages`
    assert (root / "benchmarks/aime24/test.jsonl").is_file() and (root / "benchmarks/gsm8k/test.jsonl").is_file()

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["failed"] == {}
    m = manifest["sets"]["seeds/math/train.jsonl"]
    assert (m["source"], m["source_split"], m["revision"], m["rows"], m["expected_rows"], m["bad_rows"]) == (
        "EleutherAI/hendrycks_math", "train", "0123abc", 7, 7500, 1)
    assert m["configs"] == list(known_sets.MATH_SUBJECTS) and m["best_guess"] is True
    assert manifest["sets"]["benchmarks/aime24/test.jsonl"]["rows"] == 1  # expected_rows 30: a warning, not an error

    # the written files are what load_problems reads for the known names
    df = load_problems("gsm8k:train", data_root=str(root))
    assert df["answer"].to_list() == ["72", "1080"] and df["problem_id"][0] == "gsm8k-train-0"
    assert df["solution"][0].endswith("$\\boxed{72}$.")
    with pytest.warns(data.SkippedRowsWarning, match="line 3: field 'answer': empty"):
        assert load_problems("math", data_root=str(root), skip_bad=True)["answer"][0] == "\\frac12"
    assert load_problems("aime24", data_root=str(root))["answer"].to_list() == ["204"]
    assert load_problems("gsm8k", data_root=str(root))["answer"].to_list() == ["18"]
    n = len(calls)
    for source in ("numina_cot", "AI-MO/NuminaMath-CoT"):  # the hub id reads its downloaded copy too
        df = load_problems(source, data_root=str(root))
        assert df.select("question", "answer", "source").rows() == [("N1", "5", "olympiads")]
    assert len(calls) == n


def test_sources_that_are_not_the_qwen_file_are_passed_over(hub, tmp_path, monkeypatch):
    tables, _ = hub
    spec = known_sets.SETS["amc23", "test"]
    monkeypatch.setitem(known_sets.SETS, ("amc23", "test"), dataclasses.replace(spec, rows=2))
    qwen = [{"id": 0, "question": "Cities $A$ and $B$ are $45$ miles apart.", "answer": 27.0, "url": "a"},
            {"id": 1, "question": "Q2", "answer": 3.0, "url": "b"}]
    tables["math-ai/amc23", None, "test"] = qwen[::-1]  # another order: other problem ids
    tables[QWEN("amc23")] = qwen
    # minerva: the hub copy has other fields, so it cannot be read as the set
    tables["svc-huggingface/minerva-math", None, "test"] = [{"question": "Q", "answer": "1"}]
    tables[QWEN("minerva_math")] = [{"problem": "Each of the two Magellan telescopes", "solution": "\\boxed{1.6}",
                                     "type": "astro", "idx": 0}]
    with pytest.raises(SystemExit, match="1 set\\(s\\) failed: benchmarks/college_math/test.jsonl"):
        data_command.main(["download", "--to", str(tmp_path), "--sets", "amc23,minerva_math,college_math"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    amc = manifest["sets"]["benchmarks/amc23/test.jsonl"]
    assert amc["source"] == QWEN("amc23") and amc["revision"] == "main" and amc["rows"] == 2
    assert amc["passed_over"] == ["math-ai/amc23 [test]: first problem 'Q2', expected "
                                  "'Cities $A$ and $B$ are $45$ miles apart'..."]
    minerva = manifest["sets"]["benchmarks/minerva_math/test.jsonl"]
    assert minerva["source"] == QWEN("minerva_math")
    assert "rows not in this set's format (first row: field 'solution': missing" in minerva["passed_over"][0]
    assert list(manifest["failed"]) == ["benchmarks/college_math/test.jsonl"]  # no stand-in for it
    assert load_problems("amc23", data_root=str(tmp_path))["answer"].to_list() == ["27", "3"]


def test_a_set_with_no_readable_source_fails_with_the_reasons(hub, tmp_path, capsys):
    with pytest.raises(SystemExit, match="1 set\\(s\\) failed: benchmarks/math500/test.jsonl"):
        data_command.main(["download", "--to", str(tmp_path), "--sets", "math500"])
    err = capsys.readouterr().err
    assert "math500: FAILED: DataNotFoundError: math500: no source could be read (HuggingFaceH4/MATH-500 [test]: " in err


def test_help_documents_every_set(capsys):
    with pytest.raises(SystemExit) as e:
        data_command.main(["download", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for spec in known_sets.SETS.values():
        assert spec.path in out and all(s.dataset in out for s in spec.sources)
    assert "AI-MO/NuminaMath-CoT" in out and "--to" in out and "manifest.json" in out


def test_unknown_set_names_are_refused(capsys):
    with pytest.raises(SystemExit, match="unknown set 'nope': expected one of gsm8k:train, math, numina_cot"):
        data_command.main(["download", "--sets", "nope"])


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_offline_download_fails_in_one_line(tmp_path, env):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy",
                                                             "ALL_PROXY", "all_proxy")} | env
    out = subprocess.run([sys.executable, "-m", "rift_core", "data", "download", "--to", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("data download: the Hugging Face hub is unreachable (")
    assert not (tmp_path / "d").exists()  # nothing written
