import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import polars as pl
import pytest
import torch

from rift_core.data import load_problems
from rift_core.generation import (ROLLOUT_SCHEMA, GenerationConfig, _sample_next, generate_rollouts, rows_from_vllm,
                                  sample_batch)
from rift_core.io import read_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Five people share two cores: two threads each thrash (measured 5x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def problems(n: int) -> pl.DataFrame:
    return pl.DataFrame({"problem_id": [f"p{i}" for i in range(n)], "question": [f"What is {i} + {i}?" for i in range(n)],
                         "answer": [str(2 * i) for i in range(n)]})


@pytest.fixture(scope="module")
def chaotic_model(tiny_model, tmp_path_factory):
    """The tiny model with large random weights, so its greedy outputs depend on context (the default init
    repeats one token forever), and with 6 extra EOS ids in its generation config (as Qwen lists two)
    so that samples stop at varied lengths."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("chaotic")
    config = AutoConfig.from_pretrained(tiny_model)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = [config.eos_token_id, *range(100, 106)]
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def test_greedy_batch_matches_uncached_greedy_per_prompt(chaotic_model):
    """Left padding, the preallocated KV cache and dropping finished rows change nothing: batched greedy
    decoding equals greedy decoding of each prompt alone by full forward passes without a cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chaotic_model)
    model = AutoModelForCausalLM.from_pretrained(chaotic_model, attn_implementation="eager").eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"]
               for t in ["Hello there, how", "2+2=", "A much longer prompt about arithmetic and numbers", "xyz"]]
    n = 30
    free = []
    with torch.inference_mode():
        for p in prompts:
            seq = list(p)
            for _ in range(n):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            free.append(seq[len(p):])
        # stop rows 0 and 1 at different steps, row 2 never
        eos = [next(t for t in f[start:] if t not in free[2]) for f, start in ((free[0], 3), (free[1], 10))]
        got, stopped = sample_batch(model, prompts, GenerationConfig(temperature=0, max_new_tokens=n), eos,
                                    tok.pad_token_id, None)
    ref = [f[:min((f.index(e) + 1 for e in eos if e in f), default=n)] for f in free]
    assert got == ref
    assert stopped == [len(r) < n or r[-1] in eos for r in ref] and stopped[0] and stopped[1] and not stopped[2]
    assert len(got[0]) != len(got[1])


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(20_000, 1)
    gen = torch.Generator().manual_seed(0)
    picks = _sample_next(logits, 1.0, 0.8, gen)
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).float().mean().item() - 0.5 / 0.8) < 0.02
    assert set(_sample_next(logits[:2000], 1.0, 1.0, gen).tolist()) == {0, 1, 2, 3}
    assert _sample_next(logits[:3], 0.0, 0.8, gen).tolist() == [0, 0, 0]


def test_rollouts_schema_eos_and_seeding(chaotic_model):
    cfg = GenerationConfig(k=8, temperature=1.0, top_p=1.0, max_new_tokens=40, chunk_problems=3, batch_size=16)
    a = generate_rollouts(problems(4), str(chaotic_model), cfg, progress=False)
    assert a.schema == pl.Schema(ROLLOUT_SCHEMA)
    assert a.height == 32
    assert a.group_by("problem_id").agg(pl.col("sample_idx").sort())["sample_idx"].to_list() == [list(range(8))] * 4
    # ~25% of samples run to the limit (the fixture's byte ids change per process, so the samples do too)
    assert set(a["finish_reason"]) == {"stop", "length"}
    assert (a.filter(pl.col("finish_reason") == "length")["num_tokens"] == 40).all()
    assert (a.filter(pl.col("finish_reason") == "stop")["num_tokens"] <= 40).all()  # EOS counted, as vLLM does
    assert not a["response"].str.contains("<|im_end|>", literal=True).any()
    assert a["prompt"][0].startswith("<|im_start|>system\nPlease reason step by step") and a["prompt"][0].endswith("assistant\n")
    assert a.select(pl.col("model").unique()).item() == str(chaotic_model)
    assert a.select("temperature", "top_p", "max_new_tokens", "seed").unique().rows() == [(1.0, 1.0, 40, 0)]
    assert a["source"].is_null().all()  # the problems had no source column
    tagged = generate_rollouts(problems(4).with_columns(source=pl.lit("math")), str(chaotic_model), cfg, progress=False)
    assert tagged["source"].unique().to_list() == ["math"] and tagged.drop("source").equals(a.drop("source"))
    assert a.equals(generate_rollouts(problems(4), str(chaotic_model), cfg, progress=False))
    other = generate_rollouts(problems(4), str(chaotic_model), GenerationConfig(**{**cfg.__dict__, "seed": 1}), progress=False)
    assert not a["response"].equals(other["response"])


def test_resume_reuses_chunks_and_refuses_other_settings(tiny_model, tmp_path):
    out = tmp_path / "run"
    cfg = GenerationConfig(k=2, max_new_tokens=8, chunk_problems=2, batch_size=4)
    full = generate_rollouts(problems(5), str(tiny_model), cfg, out_dir=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["chunk-00000.parquet", "chunk-00001.parquet", "chunk-00002.parquet",
                                                     "manifest.json"]
    (out / "chunk-00001.parquet").unlink()
    kept = (out / "chunk-00000.parquet").stat().st_mtime_ns
    assert generate_rollouts(problems(5), str(tiny_model), cfg, out_dir=out, progress=False).equals(full)
    assert (out / "chunk-00000.parquet").stat().st_mtime_ns == kept
    with pytest.raises(ValueError, match=r"holds rollouts from other settings \(k: 2 there, 3 now\)"):
        generate_rollouts(problems(5), str(tiny_model), GenerationConfig(**{**cfg.__dict__, "k": 3}), out_dir=out)
    with pytest.raises(ValueError, match=r"problems: '[0-9a-f]+' there"):
        generate_rollouts(problems(6), str(tiny_model), cfg, out_dir=out)
    (out / "manifest.json").unlink()
    with pytest.raises(ValueError, match="holds chunk files but no manifest.json"):
        generate_rollouts(problems(5), str(tiny_model), cfg, out_dir=out)


def test_retrained_model_at_the_same_path_is_refused(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out = tmp_path / "model", tmp_path / "run"
    AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(model_dir)
    cfg = GenerationConfig(k=1, max_new_tokens=4)
    generate_rollouts(problems(2), str(model_dir), cfg, out_dir=out, progress=False)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(model_dir)
    with pytest.raises(ValueError, match="model_fingerprint"):
        generate_rollouts(problems(2), str(model_dir), cfg, out_dir=out)


def test_a_tokenizer_that_loses_text_is_reported(tiny_model):
    from transformers import AutoTokenizer

    from rift_core.generation import check_round_trip

    tok = AutoTokenizer.from_pretrained(tiny_model)
    check_round_trip(tok, "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n")  # no warning
    tok.decode = lambda ids, **kw: "What is"  # what a word-level vocabulary loaded as Qwen2Tokenizer does
    with pytest.warns(UserWarning, match="does not round-trip the prompt"):
        check_round_trip(tok, "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"invalid GenerationConfig: backend='tgi', top_p=0"):
        GenerationConfig(backend="tgi", top_p=0)
    with pytest.raises(ValueError, match="lacks column"):
        generate_rollouts(problems(2).drop("answer"), "unused")
    with pytest.raises(ValueError, match="duplicate problem_id 'p0'"):
        generate_rollouts(pl.concat([problems(2), problems(1)]), "unused")


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_uninterrupted_rows(tiny_model, tmp_path):
    src = tmp_path / "problems.jsonl"
    src.write_text("".join(json.dumps({"question": f"What is {i} times 3?", "answer": str(3 * i)}) + "\n" for i in range(24)))

    def cli(out):
        return [sys.executable, "-m", "rift_core", "generate", "--model", str(tiny_model), "--problems", str(src),
                "--out", str(out), "--k", "2", "--max-new-tokens", "64", "--chunk-problems", "2", "--batch-size", "4",
                "--threads", "1"]

    env = {**os.environ, "PYTHONPATH": REPO}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "chunk-00000.parquet").exists():
        assert proc.poll() is None and time.time() < deadline, "generation ended before its first chunk"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sorted(p.name for p in killed.glob("chunk-*.parquet"))
    assert 1 <= len(before) < 12, before  # killed mid-way
    first = (killed / "chunk-00000.parquet").stat().st_mtime_ns
    subprocess.run(cli(killed), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    assert (killed / "chunk-00000.parquet").stat().st_mtime_ns == first  # not redone
    cfg = GenerationConfig(k=2, max_new_tokens=64, chunk_problems=2, batch_size=4)
    whole = generate_rollouts(load_problems(str(src)), str(tiny_model), cfg, progress=False)  # same 1 thread
    resumed = read_table(killed)
    assert resumed.height == 48 and resumed.equals(whole)


# vLLM cannot run here (no GPU). The mapping is tested against vLLM's own classes when vllm imports,
# otherwise against stand-ins with the attribute names of vLLM 0.31's vllm/outputs.py.
@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    cumulative_logprob: float | None
    logprobs: list | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list | None
    prompt_logprobs: list | None
    outputs: list = field(default_factory=list)
    finished: bool = True


def vllm_classes():
    try:
        from vllm.outputs import CompletionOutput as C, RequestOutput as R

        return C, R
    except ImportError:
        return CompletionOutput, RequestOutput


def test_vllm_outputs_map_to_rollout_rows():
    C, R = vllm_classes()
    req = lambda rid, outs: R(request_id=rid, prompt="p", prompt_token_ids=[1], prompt_logprobs=None,  # noqa: E731
                              outputs=outs, finished=True)
    outs = [req("0", [C(index=1, text="b", token_ids=[5, 6, 7], cumulative_logprob=None, logprobs=None, finish_reason="length"),
                      C(index=0, text="a", token_ids=[4, 2], cumulative_logprob=None, logprobs=None, finish_reason="stop")]),
            req("1", [C(index=0, text="c", token_ids=[9], cumulative_logprob=None, logprobs=None, finish_reason="stop",
                        stop_reason="\n\n"),
                      C(index=1, text="", token_ids=[], cumulative_logprob=None, logprobs=None, finish_reason="stop")])]
    assert rows_from_vllm(outs, k=2) == [("a", 2, "stop"), ("b", 3, "length"), ("c", 1, "stop"), ("", 0, "stop")]
    with pytest.raises(RuntimeError, match="expected 3 completions, got 2"):
        rows_from_vllm(outs, k=3)
    outs[1].outputs[0].finish_reason = "abort"
    with pytest.raises(RuntimeError, match=r"request 1: completion 0 ended with finish_reason='abort'"):
        rows_from_vllm(outs, k=2)


def test_vllm_sampling_params():
    pytest.importorskip("vllm")
    from rift_core.generation import vllm_sampling_params

    cfg = GenerationConfig(backend="vllm", k=8, temperature=0.7, top_p=0.8, max_new_tokens=4096)
    a, b = vllm_sampling_params(cfg, [11, 12])
    assert (a.n, a.temperature, a.top_p, a.max_tokens, a.seed, b.seed) == (8, 0.7, 0.8, 4096, 11, 12)


def test_on_progress_reports_samples_and_rates_and_counts_reused_chunks(tiny_model, tmp_path):
    cfg = GenerationConfig(k=2, max_new_tokens=8, chunk_problems=2, batch_size=2)
    calls = []
    out = generate_rollouts(problems(5), str(tiny_model), cfg, out_dir=tmp_path / "run", progress=False,
                            on_progress=lambda **kw: calls.append(kw))  # keywords only
    assert {c["stage"] for c in calls} == {"generate"} and {c["total"] for c in calls} == {10}
    done = [c["done"] for c in calls]
    assert done[0] == 0 and done[-1] == 10 and done == sorted(done) and len(done) == 6  # up front + one per batch
    assert calls[-1]["tokens_per_s"] > 0 and calls[-1]["samples_per_s"] > 0
    assert (calls[-1]["chunks_done"], calls[-1]["chunks_total"]) == (2, 3)  # the last chunk is written after it
    assert out["num_tokens"].sum() > 0
    (tmp_path / "run" / "chunk-00001.parquet").unlink()
    calls.clear()
    generate_rollouts(problems(5), str(tiny_model), cfg, out_dir=tmp_path / "run", progress=False,
                      on_progress=lambda **kw: calls.append(kw))
    assert [c["done"] for c in calls] == [6, 8, 10]  # the reused chunks count as done from the start
    assert calls[0]["chunks_done"] == 2


def test_generate_cli_reads_a_file_in_an_unseen_format(tiny_model, tmp_path, capsys):
    """Every GenerationConfig and ProblemFormat field is a flag: a question split over two fields and a nested
    numeric answer load without rewriting the file."""
    from rift_core.cli.generate import main

    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps({"Body": f"Tom has {i} pears.", "Query": "How many?", "meta": {"gold": i}}) + "\n"
                           for i in range(3)))
    out = tmp_path / "rollouts"
    main(["--model", str(tiny_model), "--problems", str(src), "--out", str(out), "--k", "1", "--max_new_tokens", "2",
          "--question_field", "{Body} {Query}", "--answer_field", "meta.gold", "--threads", "1"])
    rows = read_table(out).sort("problem_id")
    assert rows["question"].to_list() == [f"Tom has {i} pears. How many?" for i in range(3)]
    assert rows["answer"].to_list() == ["0", "1", "2"]
    assert "3 rollouts for 3 problems" in capsys.readouterr().out
