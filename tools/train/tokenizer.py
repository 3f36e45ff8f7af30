"""A byte-level BPE tokenizer of a few thousand tokens, in the same tokenizer.json format as Qwen3's.

Same normalizer (NFC), the same pre-tokenizer (Qwen3's Split regex, read from Qwen3's own file, then
ByteLevel without its regex) and the same decoder, so ultraserve's one tokenizer loader serves both.
"""
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]


def qwen3_split_pattern(qwen3_tokenizer_json: Path) -> str:
    pre = json.loads(qwen3_tokenizer_json.read_text())["pre_tokenizer"]
    return next(p["pattern"]["Regex"] for p in pre["pretokenizers"] if p["type"] == "Split")


def train_tokenizer(texts, vocab_size: int, qwen3_tokenizer_json: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(qwen3_split_pattern(qwen3_tokenizer_json)), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # The special tokens are added first, so the ChatML markers in the corpus are not learnt as merges.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_config(eos_token: str, pad_token: str) -> dict:
    """tokenizer_config.json for HF's AutoTokenizer (ultraserve itself reads only tokenizer.json)."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_token, "pad_token": pad_token,
            "bos_token": None, "unk_token": None, "model_max_length": 4096, "add_prefix_space": False,
            "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}
