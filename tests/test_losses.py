import math

import pytest
import torch

from rift_core.losses import divisor, naive_loss, rift_loss, token_logps


def batch(seed=0, B=4, T=6):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=g) * 3
    mask = torch.ones(B, T)
    mask[1, 4:] = 0
    mask[3, :2] = 0
    rewards = torch.tensor([1.0, -0.2, 0.0, -0.5])[:B]
    return logps, mask, rewards


def test_token_loss_is_the_design_formula():
    logps, mask, rewards = batch()
    expected = 0.0
    for i in range(logps.shape[0]):
        for t in range(logps.shape[1]):
            if mask[i, t]:
                r, lp = rewards[i].item(), logps[i, t].item()
                expected += r * lp if r > 0 else r * math.exp(lp) if r < 0 else 0.0
    expected = -expected / mask[rewards != 0].sum().item()  # sample 2's reward is 0: not in the divisor
    assert rift_loss(logps, mask, rewards).item() == pytest.approx(expected, rel=1e-6)


def test_all_positive_rewards_of_one_is_plain_nll():
    logps, mask, _ = batch()
    nll = -(logps * mask).sum() / mask.sum()
    assert torch.allclose(rift_loss(logps, mask, torch.ones(4)), nll)
    assert torch.allclose(naive_loss(logps, mask, torch.ones(4)), nll)


@pytest.mark.parametrize("granularity", ["token", "sequence", "sequence_geomean"])
def test_negative_term_is_bounded_whatever_the_probability(granularity):
    r = -0.8
    for logp in [0.0, -1e-3, -1.0, -10.0, -1e3, -1e6, float("-inf")]:
        logps = torch.full((1, 5), logp)
        loss = rift_loss(logps, torch.ones(1, 5), torch.tensor([r]), granularity)
        # per token w = r * p lies in [r, 0], so the loss -mean(w) lies in [0, |r|]
        assert 0.0 <= loss.item() <= abs(r) + 1e-7


def test_naive_loss_goes_to_minus_infinity_while_rift_stays_bounded():
    r = torch.tensor([-0.2])
    naive, rift = [], []
    for logp in [-1.0, -10.0, -100.0, -1e4]:
        logps = torch.full((1, 3), logp)
        naive.append(naive_loss(logps, torch.ones(1, 3), r).item())
        rift.append(rift_loss(logps, torch.ones(1, 3), r).item())
    assert naive == sorted(naive, reverse=True) and naive[-1] == pytest.approx(-0.2 * 1e4)
    assert all(0.0 <= x <= 0.2 for x in rift)


@pytest.mark.parametrize("granularity", ["token", "sequence"])
def test_negative_gradient_is_bounded_by_r_for_rift_and_grows_like_r_over_p_for_naive(granularity):
    r = -0.5
    for p_value in [0.9, 0.1, 1e-3, 1e-6]:
        p = torch.tensor([[p_value]], dtype=torch.float64, requires_grad=True)
        rift_loss(p.log(), torch.ones(1, 1), torch.tensor([r]), granularity).backward()
        rift_grad = p.grad.abs().item()
        p.grad = None
        naive_loss(p.log(), torch.ones(1, 1), torch.tensor([r]), granularity).backward()
        naive_grad = p.grad.abs().item()
        assert rift_grad == pytest.approx(abs(r))  # dL/dp = |r|, whatever p
        assert naive_grad == pytest.approx(abs(r) / p_value)


@pytest.mark.parametrize("loss_fn", [rift_loss, naive_loss])
@pytest.mark.parametrize("granularity", ["token", "sequence", "sequence_geomean"])
def test_zero_reward_samples_contribute_nothing_not_even_to_the_divisor(loss_fn, granularity):
    logps, mask, rewards = batch()  # sample 2 has reward 0
    logps.requires_grad_(True)
    loss = loss_fn(logps, mask, rewards, granularity)
    loss.backward()
    assert torch.all(logps.grad[2] == 0)
    other = logps.detach().clone()
    other[2] = -50.0
    assert torch.allclose(loss_fn(other, mask, rewards, granularity), loss.detach())
    # the loss is the one of the batch without that sample: reward 0 is in neither D+ nor D- (Eq. 5)
    keep = torch.tensor([0, 1, 3])
    assert torch.allclose(loss, loss_fn(logps[keep], mask[keep], rewards[keep], granularity))
    assert divisor(mask, rewards, granularity) == (mask[keep].sum() if granularity == "token" else 3)


def test_a_batch_of_zero_rewards_only_has_loss_zero_and_no_gradient():
    logps, mask, _ = batch()
    logps.requires_grad_(True)
    loss = rift_loss(logps, mask, torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logps.grad == 0)


@pytest.mark.parametrize("granularity", ["token", "sequence", "sequence_geomean"])
def test_masked_positions_are_ignored_even_when_non_finite(granularity):
    logps, mask, rewards = batch()
    dirty = logps.clone()
    dirty[mask == 0] = float("-inf")
    dirty.requires_grad_(True)
    loss = rift_loss(dirty, mask, rewards, granularity)
    loss.backward()
    assert torch.allclose(loss, rift_loss(logps, mask, rewards, granularity))
    assert torch.isfinite(dirty.grad).all() and torch.all(dirty.grad[mask == 0] == 0)


@pytest.mark.parametrize("loss_fn", [rift_loss, naive_loss])
@pytest.mark.parametrize("granularity", ["token", "sequence", "sequence_geomean"])
def test_gradient_accumulation_matches_one_big_batch(loss_fn, granularity):
    logps, mask, rewards = batch(B=4)
    full = logps.clone().requires_grad_(True)
    loss_fn(full, mask, rewards, granularity).backward()

    micro = logps.clone().requires_grad_(True)
    num_items = divisor(mask, rewards, granularity)  # summed over the micro-batches: the same number
    total = sum(
        loss_fn(micro[s], mask[s], rewards[s], granularity, num_items=num_items) for s in (slice(0, 1), slice(1, 4))
    )
    total.backward()
    assert torch.allclose(total, loss_fn(logps, mask, rewards, granularity))
    assert torch.allclose(micro.grad, full.grad)


def test_sequence_granularity_loses_negative_gradient_on_long_responses_geomean_keeps_it():
    logps = torch.full((1, 2000), -0.7, requires_grad=True)  # a 2,000-token response, p ~ 0.5 per token
    rift_loss(logps, torch.ones(1, 2000), torch.tensor([-0.2]), "sequence").backward()
    assert logps.grad.abs().max().item() == 0.0  # exp(-1400) underflows
    logps.grad = None
    rift_loss(logps, torch.ones(1, 2000), torch.tensor([-0.2]), "sequence_geomean").backward()
    assert logps.grad.abs().max().item() > 0.0


def test_unknown_granularity_is_rejected():
    logps, mask, rewards = batch()
    with pytest.raises(ValueError, match="granularity 'tokens'"):
        rift_loss(logps, mask, rewards, "tokens")


def test_token_logps_match_full_log_softmax_and_backpropagate(tiny_model):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (3, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :4] = -100  # the prompt
    with torch.no_grad():
        reference = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1], -1)
    reference = reference.gather(-1, input_ids[:, 1:, None]).squeeze(-1)

    add_fused_lm_head(model)
    logps, mask = token_logps(model, input_ids, attention_mask, labels)
    assert logps.shape == mask.shape == (3, 11)
    assert torch.equal(mask, labels[:, 1:] != -100)
    assert torch.allclose(logps[mask], reference[mask], atol=1e-5)
    assert torch.all(logps[~mask] == 0)
    rift_loss(logps, mask, torch.tensor([1.0, -0.2, 0.5])).backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_cpu_sized_tiles_give_the_same_log_probs_across_several_tiles(monkeypatch):
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from rift_core.losses import fit_fused_head_to_cpu

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=9000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    input_ids = torch.randint(0, 9000, (2, 400))  # 798 scored tokens: 2 token tiles x 3 vocabulary tiles
    logits = model(input_ids=input_ids).logits[:, :-1]
    reference = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    reference.sum().backward()
    reference_grad = model.get_output_embeddings().weight.grad.clone()
    model.zero_grad()
    # fit_fused_head_to_cpu sets TRL's process-wide tile sizes: put TRL's own back after this test
    monkeypatch.setattr(kernel, "TOKEN_CHUNK_SIZE", kernel.TOKEN_CHUNK_SIZE)
    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    fit_fused_head_to_cpu()
    assert kernel.TOKEN_CHUNK_SIZE == 512 and trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 4096
    add_fused_lm_head(model)
    logps, mask = token_logps(model, input_ids, torch.ones_like(input_ids), input_ids)
    logps.sum().backward()
    assert mask.all() and torch.allclose(logps, reference.detach(), atol=1e-4)
    assert torch.allclose(model.get_output_embeddings().weight.grad, reference_grad, atol=1e-4)
