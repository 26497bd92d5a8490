"""The RDPO and LongPO losses as pure torch functions over summed log-probabilities
(docs/methods.md §5.3, §6.3); one value per pair, the caller takes the mean.

Checked against the known values: RDPO with β = γ = 0.1, policy (-10, -12), reference
(-11, -11), rationale log-prob -50 gives 5.604854; LongPO's DPO term with β = 0.01, policy
(-100, -120), reference (-90, -95) gives 0.620957.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """-log σ(β·[(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))])."""
    delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * delta)


def rationale_loss(rationale_logps: torch.Tensor, gamma: float) -> torch.Tensor:
    """RDPO's rationale term as the reference code computes it: -log σ(γ · log π(r | x_rat)),
    with the rationale's summed log-likelihood (the paper writes +γ·log π)."""
    return -F.logsigmoid(gamma * rationale_logps)


def rdpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
              ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
              rationale_logps: torch.Tensor, beta: float = 0.1,
              gamma: float = 0.1) -> torch.Tensor:
    """DPO on the pair plus the rationale term (reference config: β = γ = 0.1)."""
    return (dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
            + rationale_loss(rationale_logps, gamma))


def longpo_loss(nll_chosen: torch.Tensor, policy_chosen: torch.Tensor,
                policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                ref_rejected: torch.Tensor, beta: float = 0.01,
                dpo_lambda: float = 0.01) -> torch.Tensor:
    """NLL of the chosen long sequence + λ · DPO, where the policy's log-probs are of the long
    multi-turn conversation and the reference's are summed over the short single-turn ones
    (reference: β = λ = 0.01)."""
    return nll_chosen + dpo_lambda * dpo_loss(policy_chosen, policy_rejected, ref_chosen,
                                              ref_rejected, beta)


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's completion tokens, through the fused LM head TRL's
    DPOTrainer adds to its models (no full logits are built)."""
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                use_cache=False, fused_lm_head=True)
    return out.log_probs[:, -(input_ids.size(1) - 1):].sum(dim=1)
