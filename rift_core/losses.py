"""The RIFT loss family (docs/DESIGN.md, "The loss") and memory-lean per-token log-probabilities.

Every loss takes `logps` [B, T] (log-probability of each response token), `mask` [B, T] (1 = response token,
0 = prompt or padding) and `rewards` [B], and returns a scalar to minimise.

Granularity of the reward-weighted terms:
- "token" (default): each response token is a term; the sum is divided by the number of response tokens in the
  batch (`num_items`: pass the count over the whole accumulated batch, as TRL does for NLL). A negative token's
  term r * p is bounded in [r, 0] whatever the model does.
- "sequence": Eq. 5 read literally, one term per sample, log pi(y|x) = sum_t logp for positives and
  pi(y|x) = exp(sum_t logp) for negatives, divided by the number of samples. On long responses exp(sum logp)
  underflows to 0, so negatives stop contributing gradient: faithful to the equation, weak in practice.

Samples with reward 0 belong to neither D+ nor D- of Eq. 5: they add no term and are not counted in the divisor
(`divisor`). So the gaussian and gpg_mean schemes, which give every sample of an all-right or all-wrong problem
reward 0, do not shrink the other samples' gradient by the share of such problems in the batch.
- "sequence_geomean": the length-normalised variant, mean_t logp for positives and exp(mean_t logp) (the
  geometric-mean token probability) for negatives; negatives keep a gradient on long responses.
"""
import torch

GRANULARITIES = ("token", "sequence", "sequence_geomean")


def rift_loss(logps, mask, rewards, granularity: str = "token", num_items=None) -> torch.Tensor:
    """RIFT: -r * logp for r > 0, -r * exp(logp) for r < 0 (gradient flows through exp), nothing for r == 0."""
    return _reward_weighted(logps, mask, rewards, granularity, num_items, linear_negatives=True)


def naive_loss(logps, mask, rewards, granularity: str = "token", num_items=None) -> torch.Tensor:
    """Reward-weighted NLL, -r * logp for every sample: unbounded below once r < 0 (paper Theorem 3.2)."""
    return _reward_weighted(logps, mask, rewards, granularity, num_items, linear_negatives=False)


def divisor(mask, rewards, granularity: str = "token") -> torch.Tensor:
    """What the reward-weighted losses divide by: the response tokens ("token") or the samples (the sequence
    granularities) of the samples whose reward is not 0. Sum it over an accumulated batch to get `num_items`."""
    counted = rewards.reshape(-1) != 0
    if granularity == "token":
        return (mask.bool() & counted[:, None]).sum()
    return counted.sum()


def _reward_weighted(logps, mask, rewards, granularity, num_items, linear_negatives):
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown loss granularity {granularity!r}; expected one of {', '.join(GRANULARITIES)}")
    mask = mask.bool()
    logps = logps.masked_fill(~mask, 0.0)  # padding positions may hold anything, even -inf
    count = divisor(mask, rewards, granularity)
    if granularity == "token":
        terms = logps
    else:
        terms = logps.sum(-1)
        if granularity == "sequence_geomean":
            terms = terms / mask.sum(-1).clamp(min=1)
    r = rewards.to(logps.dtype).reshape(-1, *[1] * (terms.dim() - 1))
    if linear_negatives:
        terms = torch.where(r < 0, terms.exp(), terms)
    weighted = r * terms
    if granularity == "token":
        weighted = weighted * mask  # exp(0) = 1 on masked positions must not count
    denominator = count if num_items is None else num_items
    return -weighted.sum() / torch.as_tensor(denominator, device=logps.device).clamp(min=1)


def token_logps(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next-token label and the mask of scored positions, both [B, T-1].

    Goes through TRL's fused LM head, which projects and normalises the hidden states in tiles over the vocabulary
    and recomputes them in backward, so the [B, T, V] logits never exist. `labels` holds -100 where no loss is
    wanted (prompt, padding). The model must carry that head: SFTTrainer adds it; elsewhere call
    `trl.trainer.utils.add_fused_lm_head(model)` once (and `fit_fused_head_to_cpu()` on CPU).
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, use_cache=False)
    return out.log_probs, out.label_mask


def fit_fused_head_to_cpu() -> None:
    """Shrink the fused head's tiles for CPUs. TRL sizes them for GPUs, [4,096 tokens x 32,768 vocab]: its torch
    fallback then holds several float32 temporaries of that size, more memory than the full logits, and runs 2x
    slower. [512 x 4,096] tiles (8 MiB, cache-sized) measured ~7x less memory than the full logits at about their
    speed (benchmarks/results/memory.md). Process-wide; only call it where no GPU trains.
    """
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    kernel.TOKEN_CHUNK_SIZE = 512
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = 4096
