import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

# One torch thread for the whole session: on a 2-core machine that also runs grading workers, servers and
# subprocesses, two contended intra-op threads made training ~10x slower (bench_base_policy.py on a smoke-sized
# policy while other jobs ran: 191 s with --threads 2, 19 s with --threads 1; one measurement).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

# ChatML, as Qwen2.5 writes it; enough for TRL's prompt/completion handling.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(path: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Qwen2 with a byte-level tokenizer (~260 tokens) saved as an HF model dir."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}  # sorted: set order varies per process
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHATML
    tok.save_pretrained(path)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a tiny random Qwen2 model dir, built once per test session. Treat it as read-only."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def session_base_policy(tmp_path_factory, profile: str = "smoke") -> Path | None:
    """The profile's toy base policy, trained once per test session into the session's cache (None: not a toy)."""
    from rift_core.base_policy import ensure_base_policy
    from rift_core.profiles import load_profile

    p = load_profile(profile)
    if p.base_model != "toy":
        return None
    return ensure_base_policy(tmp_path_factory.getbasetemp() / "toy_policies", progress=False,
                              **asdict(p.toy_config()))


def seed_base_policy(tmp_path_factory, data_dir: Path, profile: str = "smoke") -> None:
    """Put the profile's toy base policy into `data_dir` the way base_model leaves it (base_model then finds it and
    reuses it, as it does for a user's second run)."""
    policy = session_base_policy(tmp_path_factory, profile)
    if policy is not None:
        shutil.copytree(policy, data_dir / "toy_policies" / policy.name, dirs_exist_ok=True)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The whole `smoke` graph at both replicate seeds, materialised in process in lineage order, plus two rounds of
    the iterative protocol keyed as the regeneration schedule keys them: (profile folder, read-only SQL session,
    the runs' results). Shared by the graph's tests and the experiments' tests, which add their protocols to it."""
    import dagster as dg
    import duckdb

    from rift_dagster.defs.schedules import next_round
    from rift_dagster.demo import materialize_all

    data = tmp_path_factory.mktemp("smoke_data")
    seed_base_policy(tmp_path_factory, data, "smoke")
    with dg.instance_for_test() as instance:
        results = materialize_all("smoke", str(data), instance, out_of_process=False)
        for _ in range(2):
            rounds = [(["round_rollouts", "round_labels", "round_checkpoint"], [next_round(instance)])]
            results += materialize_all("smoke", str(data), instance, steps=rounds, out_of_process=False)
    con = duckdb.connect(str(data / "smoke" / "rift.duckdb"), read_only=True)
    yield data / "smoke", con, results
    con.close()


def pytest_collection_modifyitems(items):
    """The tests on the shared `dagster dev` run last, one after another, so that it never idles beside the rest."""
    items.sort(key=lambda item: "dagster_dev" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def dagster_dev(tmp_path_factory):
    """One `dagster dev` for test_dagster_dev.py and test_ui.py (test_ui.py launches only what it finds missing),
    with two compute steps at a time, one per core here: the UI test's experiments runs go in pairs."""
    from test_dagster_dev import PROFILE, DagsterDev

    root = tmp_path_factory.mktemp("dagster_dev")
    seed_base_policy(tmp_path_factory, root / "data", PROFILE)
    dev = DagsterDev(root, compute_slots=2)
    yield dev
    dev.stop()
