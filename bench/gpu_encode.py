"""Embedding throughput of one GPU for ingestion sizing (`spec.ingestion.gpusPerWorker`): chunks/s of an
all-MiniLM-L6-v2-shaped encoder (BERT, 6 layers, 384 wide, 12 heads; the weights' values do not change the
cost, so a randomly initialised model of the same configuration stands in where the packaged weights cannot be
carried), at the chunk length Raylight's default chunking gives (about 214 tokens), for several batch sizes, in
float32 and float16, with mean pooling and normalisation as sentence-transformers does.

    python bench/gpu_encode.py [--tokens 214] [--chunks 8192] [--json]

Needs PyTorch with CUDA and transformers; prints one line per (dtype, batch) with chunks/s, or JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import BertConfig, BertModel

MINILM_L6 = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                       intermediate_size=1536, max_position_embeddings=512)


def encode_rate(model: BertModel, tokens: int, chunks: int, batch: int, device: str) -> float:
    """Chunks per second: `chunks` inputs of `tokens` token ids each, in batches, pooled and normalised."""
    ids = torch.randint(1000, 30000, (batch, tokens), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: kernels, allocator
            model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        started = time.perf_counter()
        done = 0
        while done < chunks:
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (out * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            torch.nn.functional.normalize(pooled, dim=-1).cpu()
            done += batch
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=214)
    parser.add_argument("--chunks", type=int, default=8192)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = "cuda"
    rows = []
    for dtype in (torch.float32, torch.float16):
        model = BertModel(MINILM_L6).to(device=device, dtype=dtype).eval()
        for batch in (32, 128, 512):
            rate = encode_rate(model, args.tokens, args.chunks, batch, device)
            rows.append({"dtype": str(dtype).removeprefix("torch."), "batch": batch, "chunks_per_s": round(rate, 1)})
            if not args.json:
                print(f"{rows[-1]['dtype']:8} batch {batch:4}: {rate:9.1f} chunks/s")
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "tokens": args.tokens, "rows": rows}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"({info['gpu']}, torch {info['torch']}, {args.tokens} tokens per chunk)")


if __name__ == "__main__":
    main()
