"""Asset checks. Each asset yields its own checks right after it materialises (check_specs), so the
checks sit beside the asset in the UI and run for every partition.

Each check returns a plain dict (check_name, passed, severity, metadata) and imports no dagster, because the
Pipes child (rift_dagster.worker) reports the checks of the steps it runs itself; `as_result` turns one into
a `dg.AssetCheckResult` where the asset's own process reports it.
"""
import math

from rift_core.stats import TABLE1_SQL, TABLE4_SQL


def check(check_name: str, passed: bool, metadata: dict, severity: str = "ERROR") -> dict:
    return {"check_name": check_name, "passed": bool(passed), "severity": severity, "metadata": metadata}


def as_result(result: dict):
    import dagster as dg  # here only: the Pipes child imports this module and never dagster

    return dg.AssetCheckResult(check_name=result["check_name"], passed=result["passed"],
                               severity=dg.AssetCheckSeverity(result["severity"]), metadata=result["metadata"])

MAX_EXTRACTION_FAILURE_RATE = 0.2


def labels_complete(rollouts, labels) -> dict:
    """One label per rollout, every reward a finite number, and pos + neg + zero = total."""
    key = ["problem_id", "sample_idx"]
    missing = rollouts.select(key).join(labels.select(key), on=key, how="anti").height
    extra = labels.select(key).join(rollouts.select(key), on=key, how="anti").height
    rewards = labels["reward"]
    n_bad = int(rewards.is_null().sum() + rewards.is_nan().fill_null(False).sum() + rewards.is_infinite().fill_null(False).sum())
    pos, neg, zero = int((rewards > 0).sum()), int((rewards < 0).sum()), int((rewards == 0).sum())
    ok = missing == 0 and extra == 0 and n_bad == 0 and pos + neg + zero == len(labels)
    return check("labels_complete", ok, {"unlabelled_rollouts": missing, "labels_without_rollout": extra,
                                         "bad_rewards": n_bad, "pos": pos, "neg": neg, "zero": zero,
                                         "total": len(labels)})


def extraction_failure_rate(labels, threshold: float = MAX_EXTRACTION_FAILURE_RATE) -> dict:
    """Share of responses with no gradable answer (status other than `ok`); a warning above threshold."""
    rate = float((labels["status"] != "ok").mean() or 0.0) if len(labels) else 0.0
    return check("extraction_failure_rate", rate <= threshold, {"rate": round(rate, 4), "threshold": threshold},
                 severity="WARN")


def _same(a, b) -> bool:
    """Two stats frames agree: same rows, integers equal, floats within rounding."""
    if a.shape != b.shape or a.columns != b.columns:
        return False
    a, b = a.sort(a.columns), b.sort(b.columns)
    for col in a.columns:
        x, y = a[col].to_list(), b[col].to_list()
        for u, v in zip(x, y):
            if isinstance(u, float) or isinstance(v, float):
                if u is None or v is None or abs(float(u) - float(v)) > 0.051:
                    return False
            elif u != v:
                return False
    return True


def stats_match_labels(labels, table1, table4, labels_path) -> dict:
    """The polars statistics equal the README's SQL queries run on the stored labels."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet('{str(labels_path).replace(chr(39), chr(39) * 2)}')")
        sql1, sql4 = con.execute(TABLE1_SQL).pl(), con.execute(TABLE4_SQL).pl()
    finally:
        con.close()
    same1, same4 = _same(table1, sql1), _same(table4, sql4)
    return check("stats_match_labels", same1 and same4,
                 {"table1_matches_sql": same1, "table4_matches_sql": same4, "labels": len(labels)})


def loss_finite(run: dict) -> dict:
    loss = run.get("final_loss")
    ok = isinstance(loss, (int, float)) and math.isfinite(loss)
    return check("loss_finite", ok, {"final_loss": loss if ok else str(loss)})


def checkpoint_loadable(path) -> dict:
    """The checkpoint loads with from_pretrained (model and tokenizer), as any user would load it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only where a checkpoint is checked

    try:
        model = AutoModelForCausalLM.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
        n = sum(t.numel() for t in model.parameters())
        return check("checkpoint_loadable", True, {"parameters": n})
    except Exception as e:  # the check reports the failure instead of failing the run
        return check("checkpoint_loadable", False, {"error": repr(e)[:500]})


def scores_valid(scores, benchmarks: list[str]) -> dict:
    """Every benchmark scored; Mean@k and Pass@k in [0, 1] with Pass@k >= Mean@k."""
    present = set(scores["benchmark"].to_list())
    missing = sorted(set(benchmarks) - present)
    mean, pas = scores["mean_at_k"], scores["pass_at_k"]
    in_range = bool(((mean >= 0) & (mean <= 1) & (pas >= 0) & (pas <= 1) & (pas >= mean - 1e-9)).all())
    return check("scores_valid", in_range and not missing,
                 {"missing_benchmarks": ", ".join(missing) or "none", "in_range": in_range})
