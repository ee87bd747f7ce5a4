"""The Pipes child of every out-of-process step: `python -m rift_dagster.worker`, started by the
`pipes_client` resource (a subprocess by default; a Kubernetes pod with rift_dagster.k8s).

Its parameters arrive as Pipes extras built from the typed profile, `{"step": "train" | "generate" |
"evaluate", ...}`; it streams progress to the run's log while it works and reports the materialisation's
metadata and asset checks itself. It imports `dagster_pipes` (dependency-free), never `dagster`, so it runs
wherever rift_core runs, `accelerate launch` included: there only rank 0 talks to Dagster.

Each step holds the lock of what it writes (rift_core.locks) for its whole length, in this process, so a child
whose Dagster run process was killed keeps it until it ends; the lock's owner record names the run, which rift_core
reads from $RIFT_RUN_ID (set here from the Pipes context). `wait_for_lock` in the extras queues behind a holder.
"""
import contextlib
import os
import time
from pathlib import Path

import polars as pl
from dagster_pipes import (PipesContext, PipesDefaultContextLoader, PipesDefaultMessageWriter,
                           PipesEnvVarParamsLoader, PipesMappingParamsLoader, open_dagster_pipes)
from rift_core import locks
from rift_core.evaluate import evaluate
from rift_core.figures import loss_curves, markdown_image, save_png
from rift_core.generation import GenerationConfig, generate_rollouts
from rift_core.io import write_parquet_atomic
from rift_core.stats import to_markdown

from rift_dagster import checks

PROGRESS_EVERY_S = 10.0


def progress_logger(log, every_s: float = PROGRESS_EVERY_S):
    """A rift_core `on_progress` callback writing one line to `log` at most every `every_s` seconds (and the last)."""
    last = {"at": -1e9}

    def on_progress(stage: str, done: int, total: int, **metrics) -> None:
        now = time.monotonic()
        if done < total and now - last["at"] < every_s:
            return
        last["at"] = now
        share = f" ({100 * done / total:.0f}%)" if total else ""
        extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in metrics.items() if v is not None)
        log(f"{stage}: {done}/{total}{share}  {extra}".rstrip())

    return on_progress


def md(text: str) -> dict:
    return {"raw_value": text, "type": "md"}


def path(p) -> dict:
    return {"raw_value": str(p), "type": "path"}


# ------------------------------------------------------------------------------------------------- steps


def writing(target, extras: dict, log):
    """Hold the lock of an output this step writes (rift_core.locks.hold); on rank 0 only, as the other ranks of
    an `accelerate launch` work for the same run."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return locks.hold(target, wait=extras.get("wait_for_lock", False), log=log)


@contextlib.contextmanager
def run_id_env(run_id: str | None):
    """$RIFT_RUN_ID = the Dagster run this step works for, while it runs: the locks' owner records name it."""
    previous = os.environ.get(locks.RUN_ID_ENV)
    if run_id:
        os.environ[locks.RUN_ID_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(locks.RUN_ID_ENV, None)
        else:
            os.environ[locks.RUN_ID_ENV] = previous


def train_step(extras: dict, log, report) -> None:
    from rift_core.trainer import TrainConfig, train  # imports torch: only in a training step

    cfg = TrainConfig(**extras["config"])
    with writing(cfg.output_dir, extras, log):  # its work dir, the checkpoint and the loss curve beside it
        log(f"training {cfg.method} on {extras['data']} -> {cfg.output_dir}")
        run = train(cfg, extras["data"], on_progress=progress_logger(log),
                    wait_for_lock=extras.get("wait_for_lock", False))
        if report is None:
            return
        fig = loss_curves({cfg.method: run.get("loss_history") or []}, f"{cfg.method}: loss per step")
        save_png(fig, Path(cfg.output_dir) / "loss_curve.png")  # beside the weights
    scalars = {k: v for k, v in run.items() if isinstance(v, (int, float, str, bool)) and v is not None}
    report.report_asset_materialization(metadata={
        "path": path(cfg.output_dir),
        "loss_curve": md(markdown_image(fig, "loss curve")),
        **{f"run/{k}": v for k, v in scalars.items()},
    })
    report.report_asset_check(**checks.loss_finite(run))
    report.report_asset_check(**checks.checkpoint_loadable(cfg.output_dir))


def rollout_metadata(df, output, seconds: float) -> dict:
    n = len(df)
    return {
        "dagster/row_count": n,
        "problems": df["problem_id"].n_unique(),
        "k": int(df["sample_idx"].max()) + 1 if n else 0,
        "mean_response_tokens": round(float(df["num_tokens"].mean() or 0), 1),
        "cut_at_length_pct": round(100 * float((df["finish_reason"] == "length").mean() or 0), 1),
        "tokens_per_s": round(float(df["num_tokens"].sum()) / max(seconds, 1e-9), 1),
        "path": path(output),
        "duration_s": round(seconds, 2),
    }


def generate_step(extras: dict, log, report) -> None:
    start = time.time()
    with writing(extras["output"], extras, log):  # the chunk folder: generate_rollouts holds it
        log(f"sampling from {extras['model']}; resumable chunks in {extras['chunks']}")
        out = generate_rollouts(pl.read_parquet(extras["problems"]), extras["model"],
                                GenerationConfig(**extras["config"]), out_dir=extras["chunks"],
                                on_progress=progress_logger(log), wait_for_lock=extras.get("wait_for_lock", False))
        write_parquet_atomic(out, extras["output"])
    if report is not None:
        report.report_asset_materialization(metadata=rollout_metadata(out, extras["output"], time.time() - start))


def evaluate_step(extras: dict, log, report) -> None:
    start = time.time()
    bench = {name: pl.read_parquet(f) for name, f in extras["benchmarks"].items()}
    gen = GenerationConfig(**extras["config"])
    with writing(extras["out_dir"], extras, log):  # its chunks, labels and the scores file in it
        scores = evaluate(extras["model"], bench, k=gen.k, seed=gen.seed, gen=gen, out_dir=extras["out_dir"],
                          workers=extras["workers"], timeout_s=extras["timeout_s"], on_progress=progress_logger(log),
                          wait_for_lock=extras.get("wait_for_lock", False))
        write_parquet_atomic(scores, extras["output"])
    if report is None:
        return
    summary = scores.select("benchmark", "k", "mean_at_k", "pass_at_k", "n_problems", "extraction_failure_rate")
    report.report_asset_materialization(metadata={
        "scores": md(to_markdown(summary)),
        "avg_mean_at_k": round(float(scores["mean_at_k"].mean()), 4),
        "avg_pass_at_k": round(float(scores["pass_at_k"].mean()), 4),
        "model_path": path(extras["model"]),
        "duration_s": round(time.time() - start, 2),
    })
    report.report_asset_check(**checks.scores_valid(scores, list(bench)))


STEPS = {"train": train_step, "generate": generate_step, "evaluate": evaluate_step}


def run(extras: dict, pipes=None) -> None:
    """Run the step named in `extras`; `pipes` (a PipesContext) receives logs, metadata and checks."""
    step = extras.get("step")
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    log = pipes.log.info if pipes is not None else (lambda line: print(line, flush=True))
    with run_id_env(pipes.run_id if pipes is not None else None):
        try:
            STEPS[step](extras, log, pipes)
        except locks.OutputLocked as e:  # in the run's log as an error, not only in the child's traceback
            if pipes is not None:
                pipes.log.error(str(e))
            raise


def run_in_process(bootstrap_env: dict) -> None:
    """The same child inside the caller's process (the in-process Pipes client of fast tests)."""
    with PipesContext(PipesMappingParamsLoader(bootstrap_env), PipesDefaultContextLoader(),
                      PipesDefaultMessageWriter()) as pipes:
        run(pipes.extras, pipes)


def _extras_only() -> dict:
    """The step's parameters without opening the message channel: ranks other than 0 read, never report."""
    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data["extras"])


def main() -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        run(_extras_only())
        return
    with open_dagster_pipes() as pipes:
        run(pipes.extras, pipes)


if __name__ == "__main__":
    main()
