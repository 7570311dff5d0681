"""Kyutai's LMModel + LMGen at a tiny width with the 7B's structure (RMSNorm f32, SiLU gating,
RoPE, a context of 8, depformer with per-step weights, 8 + 8 audio streams, delays of the 7B),
run greedily for 40 calls (5x the context) on seeded user codes.

Recorded: the weights (bf16, checkpoint names), the config (Kyutai's config.json keys, in the
metadata), the user codes, what every call returned, and the logits of the temporal transformer's
text head and of every depformer step at every call."""
import json

import torch

from lm_reference import CONFIGS, greedy_generate, random_model

SEED = 2024
CALLS = 40


def generate(save):
    config = CONFIGS["tiny"]
    torch.manual_seed(SEED)
    model, state = random_model(config, SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    card = config["card"]
    user = torch.randint(0, card, (8, CALLS), generator=g)
    user[:, 5] = -1          # a frame of "no input" (zero embedding)
    user[3:, 11] = card      # the initial/pad token fed by a caller
    outputs, text_logits, depth_logits = greedy_generate(model, user)
    assert outputs[0] is None and all(o is not None for o in outputs[1:])
    returned = torch.stack(outputs[1:]).to(torch.int32)            # [CALLS-1, 9]
    text = returned[:, 0]
    assert len(set(text.tolist())) > 5, f"degenerate text stream {text.tolist()}"
    assert len(set(returned[:, 1:].flatten().tolist())) > 10, "degenerate audio streams"
    tensors = {name: value.to(torch.bfloat16) for name, value in state.items()}
    tensors["fixture.user_codes"] = user.to(torch.int32)
    tensors["fixture.returned"] = returned
    tensors["fixture.text_logits"] = torch.stack(text_logits)      # [CALLS, text_card]
    tensors["fixture.depth_logits"] = torch.stack(depth_logits)    # [CALLS, dep_q, card]
    save("lm_tiny", tensors, SEED, config=json.dumps(config), calls=CALLS, first_call_returns="None")
