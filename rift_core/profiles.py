"""Run profiles: plain YAML files (configs/<name>.yaml) that pick model, data, K, rewards and sizes.

Each section is a dict of keyword arguments for the config dataclass of the module that owns it
(generation.GenerationConfig, trainer.TrainConfig, ...), so a profile needs no code to add a knob.
"""
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
METHODS = ("sft", "dft", "rft", "dpo", "rift", "naive")


@dataclass
class Profile:
    name: str
    base_model: str  # local path, hub id, or "toy" (the project trains its own base policy)
    seeds: str  # a load_problems source
    benchmarks: list[str]
    n_seeds: int | None = None  # seeded random subset of the seed problems; None = all
    seed: int = 0
    skip_bad: bool = False  # skip (and report) seed rows with a missing or empty field instead of failing
    data_root: str = "../shared/data"
    toy: dict = field(default_factory=dict)  # base-policy settings when base_model == "toy"
    generation: dict = field(default_factory=dict)
    rewards: dict = field(default_factory=dict)  # scheme, r_pos, r_neg
    train: dict = field(default_factory=dict)  # shared TrainConfig overrides
    methods: dict = field(default_factory=dict)  # method -> TrainConfig overrides
    evaluation: dict = field(default_factory=dict)  # k, limit, generation overrides
    source: str = ""  # the file this profile was read from

    def train_kwargs(self, method: str) -> dict:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        return {**self.train, **(self.methods.get(method) or {})}


def load_profile(name_or_path: str) -> Profile:
    """Load `configs/<name>.yaml` or a YAML file path, failing with the file and field at fault."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"profile {name_or_path!r} not found at {path} (known profiles: {known})")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a profile must be a YAML mapping")
    fields = Profile.__dataclass_fields__
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [f for f in ("base_model", "seeds", "benchmarks") if f not in raw]
    if missing:
        raise ValueError(f"{path}: missing required field(s) {', '.join(missing)}")
    unknown_methods = sorted(set(raw.get("methods") or {}) - set(METHODS))
    if unknown_methods:
        raise ValueError(f"{path}: field 'methods' names unknown method(s) {', '.join(unknown_methods)}")
    profile = Profile(**{"name": path.stem, **raw, "source": str(path)})
    _check_section_keys(profile, path)
    return profile


def _check_section_keys(profile: Profile, path: Path) -> None:
    """A misspelt knob fails here, naming file and section, not later as a TypeError deep in a run."""
    from dataclasses import fields

    from rift_core.generation import GenerationConfig
    from rift_core.toy import ToyConfig
    from rift_core.trainer import TrainConfig

    names = lambda cls: {f.name for f in fields(cls)}  # noqa: E731
    known = {
        "toy": names(ToyConfig),
        "generation": names(GenerationConfig),
        "rewards": {"scheme", "r_pos", "r_neg"},
        "train": names(TrainConfig) - {"method", "model", "output_dir"},
        "evaluation": names(GenerationConfig) | {"limit"},
    }
    known.update({f"methods.{m}": known["train"] for m in METHODS})
    sections = {"toy": profile.toy, "generation": profile.generation, "rewards": profile.rewards,
                "train": profile.train, "evaluation": profile.evaluation,
                **{f"methods.{m}": v for m, v in profile.methods.items()}}
    for section, values in sections.items():
        if not isinstance(values or {}, dict):
            raise ValueError(f"{path}: field '{section}' must be a mapping, got {values!r}")
        unknown = sorted(set(values or {}) - known[section])
        if unknown:
            raise ValueError(f"{path}: field '{section}' has unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known[section]))}")
