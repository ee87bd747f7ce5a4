"""Jobs and the regeneration schedule (stopped by default: a user turns it on in the UI)."""
import dagster as dg

from rift_dagster.defs import evaluation, generation, iteration, problems, rewards

buffer_job = dg.define_asset_job(
    "buffer_job", selection=[problems.seed_problems, problems.base_model, generation.rollouts, rewards.reward_labels,
               rewards.buffer_stats, evaluation.benchmarks],
    description="Seed problems to buffer statistics, and the benchmark sets (everything unpartitioned).",
)
regeneration_job = dg.define_asset_job(
    "regeneration_job", selection=[iteration.round_rollouts, iteration.round_labels, iteration.round_checkpoint],
    description="One round of the iterative protocol: sample from the latest RIFT checkpoint, label, retrain.",
)


def next_round(instance) -> str:
    """The round to run: the newest one if it has no checkpoint yet (a failed or unfinished round is
    retried, never skipped), else a new one."""
    keys = sorted((int(k) for k in instance.get_dynamic_partitions(iteration.round_partitions.name)), reverse=True)
    if keys:
        done = instance.get_materialized_partitions(iteration.round_checkpoint.key)
        if str(keys[0]) not in done:
            return str(keys[0])
    key = str((keys[0] if keys else 0) + 1)
    instance.add_dynamic_partitions(iteration.round_partitions.name, [key])
    return key


@dg.schedule(job=regeneration_job, cron_schedule="0 3 * * 0", default_status=dg.DefaultScheduleStatus.STOPPED)
def regeneration_schedule(context: dg.ScheduleEvaluationContext):
    """Weekly: a new round of rollouts from the latest RIFT checkpoint, then RIFT retrained on it."""
    key = next_round(context.instance)
    return dg.RunRequest(run_key=f"round-{key}-{context.scheduled_execution_time:%Y%m%d%H%M}", partition_key=key)
