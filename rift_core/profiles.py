"""Run profiles: YAML files that pick model, data, K, rewards and sizes. The project's own ship inside the package
(rift_core/configs/<name>.yaml, package data) and load by name from anywhere; a user's own loads by its path.

Each section is validated against the config dataclass of the module that owns it (base_policy.ToyConfig,
generation.GenerationConfig, trainer.TrainConfig): same field names, same types, so `learning_rate: 1e-5`
is a float wherever the profile goes, and a wrong type or unknown key fails at load naming the file,
section and key. A profile may start with `extends: <profile name or path>` and override any field of
that profile (mappings merge key by key), so an experiment is a five-line file:

    extends: tiny
    rewards: {r_neg: -0.5}
    methods:
      rift: {learning_rate: 3.0e-4}

Nothing in rift_core but its command lines (rift_core.cli) imports this module: it sits on top of the modules
whose configs it builds.
"""
import dataclasses
import os
import typing
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from rift_core.base_policy import ToyConfig
from rift_core.data import ProblemFormat
from rift_core.generation import GenerationConfig
from rift_core.methods import METHODS
from rift_core.schemes import PAPER_VARIANTS, SCHEMES
from rift_core.trainer import TrainConfig

# The packaged profiles (a name loads <name>.yaml from here) and, under accelerate/, the accelerate launch configs
CONFIG_DIR = files("rift_core") / "configs"
_STRICT = ConfigDict(extra="forbid")


def section_of(cls, exclude=(), extra: dict | None = None) -> type[BaseModel]:
    """A pydantic model with the fields, types and defaults of dataclass `cls` (minus `exclude`)."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = (Field(default_factory=f.default_factory) if f.default_factory is not dataclasses.MISSING
                   else f.default)
        fields[f.name] = (hints[f.name], default)
    return create_model(f"{cls.__name__}Section", __config__=_STRICT, **fields, **(extra or {}))


def _set(section: BaseModel) -> dict:
    """The keys a profile actually wrote, typed."""
    return section.model_dump(exclude_unset=True)


ToySection = section_of(ToyConfig)
GenerationSection = section_of(GenerationConfig)
EvaluationSection = section_of(GenerationConfig, extra={"limit": (int | None, None)})
TrainSection = section_of(TrainConfig, exclude=("method", "model", "output_dir"))
FormatSection = section_of(ProblemFormat)


class RewardsSection(BaseModel):
    model_config = _STRICT
    scheme: Literal[SCHEMES] = "constant"
    r_pos: float = 1.0
    r_neg: float = -0.2


class ExperimentsSection(BaseModel):
    """The paper's further protocols (the `experiments` asset group): which variants, sizes and seeds."""
    model_config = _STRICT
    seeds: list[int] | None = None  # replicate seeds of every protocol; None = the profile's `replicates`
    # problems for choosing learning rates and for the collapse curve: disjoint from every benchmark
    validation: str | None = None
    validation_limit: int | None = None
    lr_factors: list[float] = [0.3, 1.0, 3.0]  # the sweep: each method's profile rate times these
    lr_sweep_methods: list[Literal[METHODS]] = ["sft", "dft", "rft", "dpo", "rift", "naive"]
    collapse_epochs: int = Field(default=4, ge=1)
    collapse_learning_rate: float | None = None  # naive and RIFT trained at this one rate; None = RIFT's rate
    reward_variants: list[Literal[tuple(PAPER_VARIANTS)]] = list(PAPER_VARIANTS)  # Table 6
    ks: list[int] = [2, 4, 8, 16]  # Tables 8-10: one generation at the largest, smaller K its first samples
    small_k: int = Field(default=3, ge=1)  # Tables 8 and 11 report Mean@3 / Pass@3
    second_round_from: list[Literal[METHODS]] = ["sft", "dft", "rift"]  # Tables 11-13


class Profile(BaseModel):
    model_config = _STRICT

    name: str
    source: str  # the file this profile was read from
    base_model: str  # local path, hub id, or "toy" (the project trains its own base policy)
    seeds: str  # a load_problems source
    benchmarks: list[str]
    n_seeds: int | None = None  # seeded random subset of the seed problems; None = all
    seed: int = 0
    # replicate seeds of training and evaluation (one rollout buffer per profile, as in the paper): each changes
    # the training data order and initialisation noise and the evaluation sampling stream
    replicates: list[int] = Field(default_factory=lambda: [0], min_length=1)
    skip_bad: bool = False  # skip (and report) seed rows with a missing or empty field instead of failing
    data_root: str = "../shared/data"
    seed_format: FormatSection = Field(default_factory=FormatSection)  # a seed file in another format
    benchmark_formats: dict[str, FormatSection] = Field(default_factory=dict)  # benchmark source -> its format
    toy: ToySection = Field(default_factory=ToySection)  # base-policy settings when base_model == "toy"
    generation: GenerationSection = Field(default_factory=GenerationSection)
    rewards: RewardsSection = Field(default_factory=RewardsSection)
    train: TrainSection = Field(default_factory=TrainSection)  # shared by every method
    methods: dict[Literal[METHODS], TrainSection] = Field(default_factory=dict)  # per-method overrides
    # the methods the main graph trains and scores when run whole (rift_dagster.demo: make demo / results / report)
    run_methods: list[Literal[METHODS]] = Field(default_factory=lambda: list(METHODS), min_length=1)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)  # overrides of `generation`
    experiments: ExperimentsSection = Field(default_factory=ExperimentsSection)

    @property
    def experiment_seeds(self) -> list[int]:
        return self.experiments.seeds if self.experiments.seeds is not None else self.replicates

    def problem_format(self, source: str) -> ProblemFormat:
        """How to read `source`: the seed file's or a benchmark's format section (all None: a known format)."""
        section = self.seed_format if source == self.seeds else self.benchmark_formats.get(source)
        return ProblemFormat(**(_set(section) if section else {}))

    def toy_config(self) -> ToyConfig:
        """The base-policy settings; its calibration samples as the rollouts do unless the section says otherwise."""
        gen = self.generation_config()
        sampling = {"check_k": gen.k, "check_temperature": gen.temperature, "check_top_p": gen.top_p,
                    "check_max_new_tokens": gen.max_new_tokens}
        return ToyConfig(**{**sampling, **_set(self.toy)})

    def generation_config(self, seed_offset: int = 0) -> GenerationConfig:
        """Rollout sampling; the profile's seed unless the section sets its own."""
        settings = {"seed": self.seed, **_set(self.generation)}
        return GenerationConfig(**{**settings, "seed": settings["seed"] + seed_offset})

    def evaluation_config(self, seed: int | None = None) -> GenerationConfig:
        """Benchmark sampling: the generation section with the evaluation section's overrides; `seed` (a
        replicate) sets the sampling stream."""
        overrides = {k: v for k, v in _set(self.evaluation).items() if k != "limit"}
        settings = {"seed": self.seed, **_set(self.generation), **overrides}
        return GenerationConfig(**{**settings, **({} if seed is None else {"seed": seed})})

    def train_config(self, method: str, model: str, output_dir: str, seed: int | None = None,
                     **overrides) -> TrainConfig:
        """One method's training settings: `train`, then `methods.<method>`, then `overrides`; `seed` (a replicate)
        sets the data order and initialisation noise."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        per_method = self.methods.get(method)
        settings = {"reward_scheme": self.rewards.scheme, "seed": self.seed, **_set(self.train),
                    **(_set(per_method) if per_method else {}), **overrides}
        if seed is not None:
            settings["seed"] = seed
        return TrainConfig(method=method, model=model, output_dir=output_dir, **settings)


def known_profiles() -> list[str]:
    """The names of the packaged profiles."""
    return sorted(p.name.removesuffix(".yaml") for p in CONFIG_DIR.iterdir() if p.name.endswith(".yaml"))


def profile_path(name_or_path: str, relative_to=None):
    """The packaged `<name>.yaml` for a bare name, else the path (relative to the extending file, if any)."""
    path = Path(name_or_path)
    if not path.suffix:
        return CONFIG_DIR / f"{name_or_path}.yaml"
    if relative_to is not None and not path.is_absolute() and not path.exists():
        return relative_to.parent / path
    return path


def _raw(path, seen: tuple[str, ...] = ()) -> dict:
    """The profile's YAML mapping with its `extends:` chain merged in."""
    if not path.is_file():
        raise FileNotFoundError(f"profile {str(path)!r} not found (known profiles: {', '.join(known_profiles())}; "
                                f"or the path of a YAML file)")
    key = os.path.realpath(str(path))
    if key in seen:
        raise ValueError(f"{path}: `extends` makes a cycle: {' -> '.join(seen)} -> {key}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a profile must be a YAML mapping")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ValueError(f"{path}: `extends` names one profile (a name or a path), got {parent!r}")
    try:
        return deep_merge(_raw(profile_path(parent, path), (*seen, key)), raw)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: extends {parent!r}: {e}") from None


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_profile(name_or_path: str) -> Profile:
    """Load a packaged profile by name or a YAML file by path, failing with the file, section and key at fault."""
    path = profile_path(name_or_path)
    raw = _raw(path)
    try:
        return Profile(**{**raw, "name": Path(name_or_path).stem, "source": str(path)})
    except ValidationError as e:
        raise ValueError(f"{path}: " + "; ".join(_explain(err) for err in e.errors())) from None


def _explain(err: dict) -> str:
    *section, key = [str(part) for part in err["loc"]] or ["?"]
    if key == "[key]":  # a bad mapping key, e.g. an unknown method under `methods`
        *section, key = section
    where = f"section '{'.'.join(section)}', key '{key}'" if section else f"field '{key}'"
    if err["type"] == "extra_forbidden":
        return f"{where} is unknown; known: {', '.join(_known_keys(err['loc'][:-1]))}"
    if err["type"] == "missing":
        return f"required {where} is missing"
    return f"{where}: {err['msg']} (got {err['input']!r})"


def _known_keys(loc: tuple) -> list[str]:
    model = Profile
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else model
        model = typing.get_args(annotation)[-1] if typing.get_origin(annotation) is dict else annotation
    return sorted(set(model.model_fields) - {"name", "source"})
