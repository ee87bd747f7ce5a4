"""Out-of-process steps that Pipes launches: `python -m rift_dagster.worker generate|evaluate SPEC.json`.

Training runs `python -m rift_core train` directly; generation and evaluation come here because their
inputs are the frames the graph already wrote (stable problem ids, benchmark subsets), which the
`rift_core` CLIs would reload from sources. Imports no dagster: it runs wherever rift_core runs.
"""
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import polars as pl

    from rift_core.io import write_parquet_atomic

    step, spec_path = (argv if argv is not None else sys.argv[1:])
    spec = json.loads(Path(spec_path).read_text())
    if step == "generate":
        from rift_core.generation import GenerationConfig, generate_rollouts

        out = generate_rollouts(pl.read_parquet(spec["problems"]), spec["model"], GenerationConfig(**spec["config"]),
                                out_dir=spec["chunks"])
    elif step == "evaluate":
        from rift_core.evaluate import evaluate

        bench = {Path(f).stem: pl.read_parquet(f) for f in spec["benchmarks"]}
        out = evaluate(spec["model"], bench, **spec["kwargs"])
    else:
        raise SystemExit(f"unknown step {step!r}; expected generate or evaluate")
    write_parquet_atomic(out, spec["output"])


if __name__ == "__main__":
    main()
