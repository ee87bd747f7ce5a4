"""`python -m rift_core toy {problems,tokenizer,base-policy}`: the embedded task's splits, tokenizer and base policy."""
import argparse
import os
from dataclasses import asdict
from pathlib import Path

from rift_core import toy_task
from rift_core.base_policy import ensure_base_policy
from rift_core.io import tmp_beside
from rift_core.profiles import load_profile
from rift_core.toy_tokenizer import build_tokenizer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rift_core toy", description="The embedded arithmetic task.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("problems", help="write a split to JSONL")
    p.add_argument("split", choices=list(toy_task.SPLITS))
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    t = sub.add_parser("tokenizer", help="save the word-level tokenizer to a folder")
    t.add_argument("out")
    b = sub.add_parser("base-policy", help="train (or reuse) the base policy of a profile; prints its path")
    b.add_argument("--profile", default="tiny")
    b.add_argument("--out", default="data/toy_policies", help="folder of cached policies (the base_model asset's)")
    args = ap.parse_args(argv)

    if args.cmd == "problems":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_beside(out)
        toy_task.problems(args.split, args.n, args.seed).write_ndjson(tmp)
        os.replace(tmp, out)
        print(out)
    elif args.cmd == "tokenizer":
        build_tokenizer(args.out)
        print(args.out)
    else:
        prof = load_profile(args.profile)
        if prof.base_model != "toy":
            raise SystemExit(f"{prof.source}: base_model is {prof.base_model!r}, not 'toy'; nothing to train")
        print(ensure_base_policy(args.out, **asdict(prof.toy_config())))
