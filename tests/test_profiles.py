import pytest

from rift_core import data, rewards, toy
from rift_core.profiles import METHODS, load_profile
from rift_core.trainer import TrainConfig

PROFILES = ("tiny", "smoke", "paper")


@pytest.mark.parametrize("name", PROFILES)
def test_profile_loads_and_every_section_builds_its_config(name):
    prof = load_profile(name)
    assert prof.name == name and prof.source.endswith(f"configs/{name}.yaml")
    for source in [prof.seeds, *prof.benchmarks]:
        if source.startswith("toy:"):
            assert source[4:] in toy.SPLITS, source
        else:
            assert source.partition(":")[0] in data.KNOWN, source
    if prof.base_model == "toy":
        toy.ToyConfig(**prof.toy)
    assert prof.rewards["scheme"] in rewards.SCHEMES and prof.rewards["r_neg"] < 0 < prof.rewards["r_pos"]
    for method in METHODS:
        cfg = TrainConfig(method=method, model="m", output_dir="o", **prof.train_kwargs(method))
        assert cfg.global_batch_size % cfg.per_device_batch_size == 0
    assert prof.generation["k"] == prof.evaluation["k"]


@pytest.mark.parametrize("name", PROFILES)
def test_generation_and_evaluation_sections_build_generation_configs(name):
    from rift_core.generation import GenerationConfig

    prof = load_profile(name)
    GenerationConfig(**prof.generation)
    evaluation = {k: v for k, v in prof.evaluation.items() if k not in ("k", "limit", "seed", "workers", "timeout_s")}
    GenerationConfig(**{**prof.generation, **evaluation})


def test_paper_profile_holds_the_papers_setting():
    prof = load_profile("paper")
    assert prof.base_model == "Qwen/Qwen2.5-Math-1.5B" and prof.seeds == "math" and prof.n_seeds == 3000
    assert sorted(prof.benchmarks) == sorted(data.BENCHMARKS)
    g = prof.generation
    assert (g["backend"], g["k"], g["temperature"], g["top_p"], g["max_new_tokens"]) == ("vllm", 8, 0.7, 0.8, 4096)
    assert prof.rewards == {"scheme": "constant", "r_pos": 1.0, "r_neg": -0.2}
    lrs = {m: prof.train_kwargs(m)["learning_rate"] for m in METHODS}
    assert lrs == {"sft": 1e-5, "dft": 1e-5, "rft": 1e-5, "dpo": 2e-6, "rift": 2e-6, "naive": 2e-6}
    t = prof.train_kwargs("rift")
    assert (t["num_epochs"], t["global_batch_size"], t["warmup_ratio"]) == (3, 64, 0.05)


def test_tiny_and_smoke_run_the_toy_task_on_every_benchmark_split():
    for name in ("tiny", "smoke"):
        prof = load_profile(name)
        assert prof.base_model == "toy" and prof.seeds == "toy:seed"
        assert prof.benchmarks == ["toy:id", "toy:ood_steps", "toy:ood_numbers"]
        assert prof.generation["backend"] == "transformers"
    seeds = data.load_problems("toy:seed", limit=load_profile("tiny").n_seeds)
    assert seeds.height == load_profile("tiny").n_seeds


@pytest.mark.parametrize(
    "text, message",
    [
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nsampling: {k: 8}\n", "unknown field.*sampling"),
        ("base_model: toy\nbenchmarks: []\n", "missing required field.*seeds"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nmethods: {grpo: {}}\n", "methods.*grpo"),
        ("- base_model\n", "must be a YAML mapping"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\ngeneration: {tempreature: 0.7}\n", "'generation'.*tempreature"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nmethods: {rift: {lr: 1.0}}\n", "'methods.rift'.*unknown key.*lr"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\ntrain: 3\n", "'train' must be a mapping"),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_profile(str(path))
    assert str(path) in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="paper, smoke, tiny"):
        load_profile("tinyy")
