"""The corpus that build_corpus.py wrote, as documents and as one token stream."""
import json
from pathlib import Path

import numpy as np
import torch


def documents(path: Path):
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def token_stream(tokenizer, texts, separator_id):
    """All documents encoded (in parallel, by the tokenizers library) and joined by the separator."""
    ids = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(separator_id)
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def document_starts(tokenizer, texts, length):
    """The first `length` tokens of every document that has that many: prompts as a server sees them."""
    starts = [enc.ids[:length] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)
              if len(enc.ids) >= length]
    return torch.tensor(starts, dtype=torch.int64)


def random_windows(stream, count, length, generator):
    """`count` windows of `length` tokens at random offsets of the stream (on its device)."""
    starts = torch.randint(0, stream.numel() - length, (count,), generator=generator, device="cpu")
    offsets = starts[:, None] + torch.arange(length)[None, :]
    return stream[offsets.to(stream.device)]
