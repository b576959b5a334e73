"""LoRA training steps per second on one GPU, for sizing a FineTune's `resources.gpus`: a SmolLM2-135M-shaped
Llama (30 layers, 576 wide, 9 heads, 3 KV heads; random weights: the values do not change the cost) with PEFT
LoRA r=8 on q/k/v/o as Raylight's default for Llama-family bases, AdamW, bf16 autocast, loss on every token, at
a few batch sizes and sequence lengths; QLoRA (the base in 4 bits, bitsandbytes) as well where bitsandbytes is
installed. Also checks that a non-finite loss is what the training loop would see when the learning rate blows
up (the guard `raylight_pipelines.training` applies stops such a run).

    python bench/gpu_lora.py [--steps 20] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SMOLLM2_135M = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                           tie_word_embeddings=True)


def model(quantized: bool) -> Any:
    if quantized:
        from transformers import BitsAndBytesConfig

        base = LlamaForCausalLM(SMOLLM2_135M)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            base.save_pretrained(tmp)
            base = LlamaForCausalLM.from_pretrained(tmp, quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4"),
                device_map={"": 0})
    else:
        base = LlamaForCausalLM(SMOLLM2_135M).to("cuda")
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def steps_per_second(net: Any, batch: int, length: int, steps: int, lr: float = 2e-4) -> tuple[float, float]:
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)
    ids = torch.randint(100, 49000, (batch, length), device="cuda")
    loss = torch.tensor(0.0)
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = net(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - started), float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    variants = [False] + ([True] if importlib.util.find_spec("bitsandbytes") else [])
    for quantized in variants:
        net = model(quantized)
        for batch, length in ((4, 512), (8, 1024), (16, 2048)):
            rate, loss = steps_per_second(net, batch, length, args.steps)
            rows.append({"method": "qlora" if quantized else "lora", "batch": batch, "tokens": length,
                         "steps_per_s": round(rate, 2), "tokens_per_s": round(rate * batch * length),
                         "final_loss": round(loss, 3)})
            if not args.json:
                print(rows[-1])
        del net
        torch.cuda.empty_cache()
    blown = model(False)
    _, loss = steps_per_second(blown, 4, 512, 5, lr=1e6)  # a learning rate no run survives
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "bitsandbytes": bool(importlib.util.find_spec("bitsandbytes")), "rows": rows,
            "loss_after_lr_1e6": loss, "non_finite": not torch.isfinite(torch.tensor(loss)).item()}
    print(json.dumps(info, indent=2) if args.json else info)


if __name__ == "__main__":
    main()
