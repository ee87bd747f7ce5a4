"""One module per domain; `rift_dagster.definitions` gathers them."""
