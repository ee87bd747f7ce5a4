"""`python -m rift_core data {download,where}`: fetch the known sets, or say where load_problems finds each."""
import argparse
from pathlib import Path

from rift_core import download
from rift_core.known_sets import DATA_CACHE_ENV, SETS, data_cache, local_copy


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
    d.add_argument("--to", default=None, help=f"destination folder (default ${DATA_CACHE_ENV} or "
                                               f"~/.cache/rift/data; now {data_cache()})")
    d.add_argument("--sets", default=None, help="comma-separated names (default: all), e.g. math500,gsm8k:train")
    w = sub.add_parser("where", help="where load_problems finds each known set (data_root, download folder, hub)")
    w.add_argument("--data-root", default="../shared/data")
    a = p.parse_args(argv)
    if a.command == "where":
        for s in SETS.values():
            path, tried = local_copy(s.name, s.split, a.data_root)
            place = {tried[0]: "data_root", tried[1]: "download folder"}.get(path)
            print(f"{s.source_name}: " + (f"{path} ({place})" if path else f"hub: {' | '.join(map(str, s.sources))}"))
        return
    to = Path(a.to).expanduser() if a.to else data_cache()
    try:
        manifest = download.download(to, a.sets.split(",") if a.sets else None)
    except ValueError as e:
        raise SystemExit(f"data download: {e}") from None
    except ConnectionError as e:
        raise SystemExit(f"data download: {e}. Run it where the hub is reachable and copy the folder here, "
                         f"or point data_root at a folder holding seeds/ and benchmarks/.") from None
    if manifest["failed"]:
        raise SystemExit(f"data download: {len(manifest['failed'])} set(s) failed: {', '.join(manifest['failed'])} "
                         f"(see {to / 'manifest.json'})")
