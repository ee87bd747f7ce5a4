"""RIFT core: data, generation, rewards, losses, trainer and metrics. Never imports dagster."""
