"""The paper's data sets, from the Hugging Face hub, as local files.

Each set is written as one JSONL file in the Qwen2.5-Math evaluation format at the path `data.load_problems`
looks for (`benchmarks/<name>/test.jsonl`, `seeds/<name>/train.jsonl`, as in ../shared/data), with a
`manifest.json` of source id, revision, split and row counts. The default folder is the download folder
that `load_problems` reads after `data_root` (`$RIFT_DATA_CACHE`, default `~/.cache/rift/data`);
`python -m rift_core data download [--to DIR]` runs it.

A set (rift_core.known_sets) lists its sources in order: the hub copy first, then (for the Qwen2.5-Math
benchmarks) the suite's own file on GitHub. A source is taken only if its rows are in the set's format; one whose
row count or first problem differs from the Qwen2.5-Math file (so problem ids would differ from ../shared/data)
is passed over while another is left. `load_problems` uses the same sources when a known set has no local copy.
"""
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from rift_core import data
from rift_core.io import tmp_beside
from rift_core.known_sets import SETS, KnownSet, Source, default_split


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


def download_set(spec: KnownSet, to: Path) -> dict:
    """Fetch one set and write it under `to`; its manifest entry."""
    source, parts, notes = data.open_known(spec)
    extract = data.EXTRACTORS[spec.name, spec.split]
    path = to / spec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    n = bad = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in data.converted_rows(spec, parts):
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
            manifest["failed"][spec.path] = data.short_error(e)
            print(f"{spec.source_name}: FAILED: {data.short_error(e)}", file=sys.stderr)
            continue
        manifest["sets"][spec.path] = entry
        _write_json(manifest_path, manifest)
        warn = "" if entry["expected_rows"] in (None, entry["rows"]) else f" (expected {entry['expected_rows']})"
        print(f"{spec.source_name}: {entry['rows']} rows{warn} from {entry['source']} -> {to / spec.path}")
    _write_json(manifest_path, manifest)
    return manifest


def _choose(sets: list[str] | None) -> list[KnownSet]:
    if not sets:
        return list(SETS.values())
    chosen = []
    for s in sets:
        name, _, split = s.partition(":")
        key = (name, split or default_split(name))
        if key not in SETS:
            raise ValueError(f"unknown set {s!r}: expected one of {', '.join(x.source_name for x in SETS.values())}")
        chosen.append(SETS[key])
    return chosen
