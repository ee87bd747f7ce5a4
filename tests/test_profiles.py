import pytest

import subprocess
import sys

from rift_core import base_policy, data, known_sets, schemes, toy_task
from rift_core.methods import METHODS
from rift_core.profiles import load_profile

PROFILES = ("tiny", "smoke", "paper", "demo")


@pytest.mark.parametrize("name", PROFILES)
def test_profile_loads_and_every_section_builds_its_config(name):
    prof = load_profile(name)
    assert prof.name == name and prof.source.endswith(f"rift_core/configs/{name}.yaml")
    assert prof.run_methods and set(prof.run_methods) <= set(METHODS)
    for source in [prof.seeds, *prof.benchmarks]:
        if source.startswith("toy:"):
            assert source[4:] in toy_task.SPLITS, source
        else:
            assert source.partition(":")[0] in known_sets.KNOWN, source
    if prof.base_model == "toy":
        assert isinstance(prof.toy_config(), base_policy.ToyConfig)
    assert prof.rewards.scheme in schemes.SCHEMES and prof.rewards.r_neg < 0 < prof.rewards.r_pos
    for method in METHODS:
        cfg = prof.train_config(method, "m", "o")
        assert cfg.global_batch_size % cfg.per_device_batch_size == 0
        assert isinstance(cfg.learning_rate, float)
    assert prof.generation_config().k == prof.evaluation_config().k


def test_paper_profile_holds_the_papers_setting():
    prof = load_profile("paper")
    assert prof.base_model == "Qwen/Qwen2.5-Math-1.5B" and prof.seeds == "math" and prof.n_seeds == 3000
    assert sorted(prof.benchmarks) == sorted(known_sets.BENCHMARKS)
    g = prof.generation_config()
    assert (g.backend, g.k, g.temperature, g.top_p, g.max_new_tokens) == ("vllm", 8, 0.7, 0.8, 4096)
    assert prof.rewards.model_dump() == {"scheme": "constant", "r_pos": 1.0, "r_neg": -0.2}
    lrs = {m: prof.train_config(m, "m", "o").learning_rate for m in METHODS}
    assert lrs == {"sft": 1e-5, "dft": 1e-5, "rft": 1e-5, "dpo": 2e-6, "rift": 2e-6, "naive": 2e-6, "kto": 2e-6}
    t = prof.train_config("rift", "m", "o")
    assert (t.num_epochs, t.global_batch_size, t.warmup_ratio) == (3, 64, 0.05)


def test_tiny_and_smoke_run_the_toy_task_on_every_benchmark_split():
    for name in ("tiny", "smoke"):
        prof = load_profile(name)
        assert prof.base_model == "toy" and prof.seeds == "toy:seed"
        assert prof.benchmarks == ["toy:id", "toy:ood_steps", "toy:ood_numbers"]
        assert prof.generation_config().backend == "transformers"
    seeds = data.load_problems("toy:seed", limit=load_profile("tiny").n_seeds)
    assert seeds.height == load_profile("tiny").n_seeds


def test_demo_is_tiny_at_one_seed_with_a_smaller_evaluation():
    """`make demo` (the demo profile) shares tiny's base policy and buffer: only the seeds, the evaluation size
    and the methods its graph runs differ."""
    from rift_dagster.demo import all_steps

    demo, tiny = load_profile("demo"), load_profile("tiny")
    assert demo.replicates == [0] and demo.evaluation.limit < tiny.evaluation.limit
    assert demo.toy_config() == tiny.toy_config() and demo.generation_config() == tiny.generation_config()
    assert demo.rewards == tiny.rewards and demo.methods == tiny.methods
    assert tiny.run_methods == list(METHODS) and demo.run_methods == [m for m in METHODS if m != "kto"]
    _, (_, checkpoints), (_, scores), _ = all_steps(demo.replicates, demo.run_methods)
    assert [k["method"] for k in checkpoints] == demo.run_methods
    assert [k["model"] for k in scores] == ["base", *demo.run_methods]


@pytest.mark.parametrize(
    "text, message",
    [
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nsampling: {k: 8}\n", "field 'sampling' is unknown"),
        ("base_model: toy\nbenchmarks: []\n", "required field 'seeds' is missing"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nmethods: {grpo: {}}\n", "section 'methods', key 'grpo'"),
        ("- base_model\n", "must be a YAML mapping"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\ngeneration: {tempreature: 0.7}\n",
         "section 'generation', key 'tempreature' is unknown; known: backend"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nmethods: {rift: {lr: 1.0}}\n",
         "section 'methods.rift', key 'lr' is unknown; known: .*learning_rate"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\ntrain: 3\n", "field 'train'"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\ntrain: {learning_rate: fast}\n",
         "section 'train', key 'learning_rate'.*number.*'fast'"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nmethods: {rift: {num_epochs: many}}\n",
         "section 'methods.rift', key 'num_epochs'"),
        ("base_model: toy\nseeds: toy:seed\nbenchmarks: []\nrewards: {scheme: best}\n", "section 'rewards', key 'scheme'"),
        ("extends: tinyy\n", "tinyy"),
        ("extends: smoke\nseed_format: {question: Body}\n", "section 'seed_format', key 'question' is unknown; known: .*question_field"),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_profile(str(path))
    assert str(path) in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="paper, .*smoke, tiny"):
        load_profile("tinyy")


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # PyYAML reads `1e-5` (no dot) as a string; the typed profile makes it the float every process gets
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\ntrain: {max_grad_norm: 5e-1}\nmethods: {sft: {learning_rate: 1e-5}, rift: {learning_rate: 3e-4}}\n")
    prof = load_profile(str(path))
    assert prof.train_config("sft", "m", "o").learning_rate == 1e-5
    assert prof.train_config("dft", "m", "o").max_grad_norm == 0.5
    assert prof.train_config("rift", "m", "o").learning_rate == 3e-4


def test_extends_merges_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: tiny\ngeneration: {k: 4}\n")
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\nrewards: {r_neg: -0.5}\ngeneration: {temperature: 1.0}\n")
    prof, tiny = load_profile(str(tmp_path / "mine.yaml")), load_profile("tiny")
    assert prof.name == "mine" and prof.rewards.r_neg == -0.5 and prof.rewards.r_pos == tiny.rewards.r_pos
    g = prof.generation_config()
    assert (g.k, g.temperature, g.max_new_tokens) == (4, 1.0, tiny.generation_config().max_new_tokens)
    assert prof.benchmarks == tiny.benchmarks
    # the base policy's calibration samples as the rollouts do: K and temperature follow `generation`
    toy_cfg = prof.toy_config()
    assert (toy_cfg.check_k, toy_cfg.check_temperature, toy_cfg.hidden) == (4, 1.0, tiny.toy_config().hidden)


def test_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_profile(str(tmp_path / "a.yaml"))


def test_no_rift_core_module_imports_the_profiles():
    """profiles builds on base_policy, generation, trainer, ...; none of them may import it back (an import circle)."""
    code = ("import importlib, pkgutil, sys, rift_core\n"
            "for m in pkgutil.iter_modules(rift_core.__path__):\n"
            "    if m.name not in ('profiles', '__main__'):\n"
            "        importlib.import_module('rift_core.' + m.name)\n"
            "print('rift_core.profiles' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
