"""Asset checks. Each asset yields its own checks right after it materialises (check_specs), so the
checks sit beside the asset in the UI and run for every partition."""
import math

import dagster as dg

MAX_EXTRACTION_FAILURE_RATE = 0.2


def labels_complete(rollouts, labels) -> dg.AssetCheckResult:
    """One label per rollout, every reward a finite number, and pos + neg + zero = total."""
    key = ["problem_id", "sample_idx"]
    missing = rollouts.select(key).join(labels.select(key), on=key, how="anti").height
    extra = labels.select(key).join(rollouts.select(key), on=key, how="anti").height
    rewards = labels["reward"]
    n_bad = int(rewards.is_null().sum() + rewards.is_nan().fill_null(False).sum() + rewards.is_infinite().fill_null(False).sum())
    pos, neg, zero = int((rewards > 0).sum()), int((rewards < 0).sum()), int((rewards == 0).sum())
    ok = missing == 0 and extra == 0 and n_bad == 0 and pos + neg + zero == len(labels)
    return dg.AssetCheckResult(
        check_name="labels_complete", passed=ok,
        metadata={"unlabelled_rollouts": missing, "labels_without_rollout": extra, "bad_rewards": n_bad,
                  "pos": pos, "neg": neg, "zero": zero, "total": len(labels)},
    )


def extraction_failure_rate(labels, threshold: float = MAX_EXTRACTION_FAILURE_RATE) -> dg.AssetCheckResult:
    """Share of responses with no gradable answer (status other than `ok`); a warning above threshold."""
    rate = float((labels["status"] != "ok").mean() or 0.0) if len(labels) else 0.0
    return dg.AssetCheckResult(
        check_name="extraction_failure_rate", passed=rate <= threshold, severity=dg.AssetCheckSeverity.WARN,
        metadata={"rate": round(rate, 4), "threshold": threshold},
    )


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


def stats_match_labels(labels, table1, table4, labels_path) -> dg.AssetCheckResult:
    """The polars statistics equal the README's SQL queries run on the stored labels."""
    import duckdb
    from rift_core.stats import TABLE1_SQL, TABLE4_SQL

    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet('{str(labels_path).replace(chr(39), chr(39) * 2)}')")
        sql1, sql4 = con.execute(TABLE1_SQL).pl(), con.execute(TABLE4_SQL).pl()
    finally:
        con.close()
    same1, same4 = _same(table1, sql1), _same(table4, sql4)
    return dg.AssetCheckResult(
        check_name="stats_match_labels", passed=same1 and same4,
        metadata={"table1_matches_sql": same1, "table4_matches_sql": same4, "labels": len(labels)},
    )


def loss_finite(run: dict) -> dg.AssetCheckResult:
    loss = run.get("final_loss")
    ok = isinstance(loss, (int, float)) and math.isfinite(loss)
    return dg.AssetCheckResult(check_name="loss_finite", passed=ok, metadata={"final_loss": str(loss)})


def checkpoint_loadable(path) -> dg.AssetCheckResult:
    """The checkpoint loads with from_pretrained (model and tokenizer), as any user would load it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
        n = sum(t.numel() for t in model.parameters())
        return dg.AssetCheckResult(check_name="checkpoint_loadable", passed=True, metadata={"parameters": n})
    except Exception as e:  # the check reports the failure instead of failing the run
        return dg.AssetCheckResult(check_name="checkpoint_loadable", passed=False, metadata={"error": repr(e)[:500]})


def scores_valid(scores, benchmarks: list[str]) -> dg.AssetCheckResult:
    """Every benchmark scored; Mean@k and Pass@k in [0, 1] with Pass@k >= Mean@k."""
    present = set(scores["benchmark"].to_list())
    missing = sorted(set(benchmarks) - present)
    mean, pas = scores["mean_at_k"], scores["pass_at_k"]
    in_range = bool(((mean >= 0) & (mean <= 1) & (pas >= 0) & (pas <= 1) & (pas >= mean - 1e-9)).all())
    return dg.AssetCheckResult(
        check_name="scores_valid", passed=in_range and not missing,
        metadata={"missing_benchmarks": ", ".join(missing) or "none", "in_range": in_range},
    )
