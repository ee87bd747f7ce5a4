"""Dagster definitions for RIFT: thin assets over `rift_core`, SQL over what they write."""
