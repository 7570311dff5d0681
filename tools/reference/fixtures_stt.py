"""An STT-shaped tiny LM, built and run by Kyutai's own code: the structure of kyutai/stt-1b-en_fr
(`model_type: "stt"`, no depformer at all (`dep_q 0`), 32 audio codebooks that are all user
streams, 33 zero delays (configs/stt_1b_enfr.json), four semantic-VAD heads `extra_heads.{0..3}`
of width 6, RMSNorm f32, SiLU gating, RoPE, `fuser: null`, its `stt_config` and greedy
`lm_gen_config`) at tiny widths with a context of 8. The checkpoint is loaded through
`CheckpointInfo.from_hf_repo(config_path=...)` + `get_moshi` (the repo keys popped there) and run
with a greedy `LMGen.step_with_extra_heads` for 30 calls (3.75x the context).

User codes are seeded; frame 7 is all -1 ("no input": zero embeddings), frame 13 is all `card`
(the initial token). Each call is given one frame (column t at call t). With all delays 0, the
first call's input is replaced by the initial tokens (`offsets <= delays`), so column 0 is never
seen; run_inference.py therefore feeds the first frame twice, and column 0 here equals column 1
so this run is exactly that input sequence (run_inference drops call 0's result; this records it).

With dep_q 0 and max(delays) = 0 every call returns, from the first on: a frame of one entry,
the text token that call sampled. The extra heads are softmax(extra_heads[i](transformer_out)),
`transformer_out` being the temporal transformer's output after `out_norm` (what text_linear
reads).

Recorded: the weights (bf16, checkpoint names, incl. `extra_heads.{i}.weight`), the config (the
config.json keys, in the metadata; `stt_config` also as separate metadata keys), and
  fixture.user_codes   int32 [32, CALLS]   what call t was given (column t)
  fixture.returned     int32 [CALLS, 1]    what every call returned (the text token)
  fixture.text_logits  f32 [CALLS, text_card]
  fixture.extra_heads  f32 [CALLS, 4, 6]   the extra heads' softmaxes per call"""
import json

import torch

from lm_reference import greedy_lmgen, greedy_run, kyutai_model, random_checkpoint, shrunk

SEED = 2025
CALLS = 30
STT_CONFIG = {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0}  # stt-1b-en_fr


def stt_tiny():
    config = shrunk(dim=64, num_heads=4, num_layers=2, text_card=128, card=32, context=8,
                    depformer_dim=32, depformer_num_heads=2, depformer_num_layers=2)
    config.update(n_q=32, dep_q=0, delays=[0] * 33, max_period=100000.0,
                  extra_heads_num_heads=4, extra_heads_dim=6, fuser=None)
    # Repo keys, popped by CheckpointInfo (configs/stt_1b_enfr.json).
    config.update(model_type="stt", stt_config=dict(STT_CONFIG),
                  lm_gen_config={"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50})
    return config


def generate(save):
    config = stt_tiny()
    torch.manual_seed(SEED)
    checkpoint = random_checkpoint(config, SEED)
    assert not any(k.startswith(("depformer", "linears.")) for k in checkpoint), "dep_q 0 has no depformer"
    assert [k for k in checkpoint if k.startswith("extra_heads.")] == [f"extra_heads.{i}.weight" for i in range(4)]
    info, model = kyutai_model(config, checkpoint)
    assert info.model_type == "stt" and info.stt_config == STT_CONFIG
    assert model.depformer is None and model.dep_q == 0
    card, n_q = config["card"], config["n_q"]
    g = torch.Generator().manual_seed(SEED + 1)
    user = torch.randint(0, card, (n_q, CALLS), generator=g)
    user[:, 0] = user[:, 1]  # run_inference's doubled first frame (column 0 is never seen)
    user[:, 7] = -1          # a frame of "no input" (zero embeddings)
    user[:, 13] = card       # a frame of the initial token
    run = greedy_run(greedy_lmgen(model), user, extra_heads=True)
    assert all(o is not None and o.shape == (1,) for o in run["returned"]), "dep_q 0: every call returns [text]"
    returned = torch.stack(run["returned"]).to(torch.int32)       # [CALLS, 1]
    assert torch.equal(returned[:, 0].long(), run["text_logits"].argmax(-1))
    text = returned[:, 0].tolist()
    assert len(set(text)) > 5, f"degenerate text stream {text}"
    heads = torch.stack(run["extra_heads"])                       # [CALLS, 4, 6]
    assert heads.shape == (CALLS, 4, 6)
    assert torch.allclose(heads.sum(-1), torch.ones(CALLS, 4))
    other = user.clone()
    other[:, 0] = (other[:, 0] + 1) % card
    again = greedy_run(greedy_lmgen(model), other, extra_heads=True)
    assert torch.equal(again["text_logits"], run["text_logits"]), "the first frame is never seen"
    tensors = dict(checkpoint)
    tensors["fixture.user_codes"] = user.to(torch.int32)
    tensors["fixture.returned"] = returned
    tensors["fixture.text_logits"] = run["text_logits"]           # [CALLS, text_card]
    tensors["fixture.extra_heads"] = heads
    save("stt_tiny", tensors, SEED, config=json.dumps(config), calls=CALLS, first_call_returns="text",
         audio_delay_seconds=STT_CONFIG["audio_delay_seconds"],
         audio_silence_prefix_seconds=STT_CONFIG["audio_silence_prefix_seconds"])
