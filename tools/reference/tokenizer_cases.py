#!/usr/bin/env python3
"""Generates the tokenizer test inputs: tests/fixtures/tokenizer/cases.jsonl.

Deterministic (fixed seed, Python standard library only): running it twice gives the same
file, so the reference outputs made from it (tokenizer_reference.py with HF tokenizers,
tokenizer_reference.mjs with @lenml/tokenizers) can be regenerated at any time and diffed.

The strings aim at the places where a re-implementation of HF's byte-level BPE goes wrong:
regex edge cases (contractions, whitespace runs and the \\s+(?!\\S) lookahead, digits,
punctuation runs), Unicode classes (letters/numbers of many scripts, exotic spaces),
NFC normalisation (NFD input, singletons, canonical reordering), multi-byte characters
(CJK, emoji with ZWJ / skin tones / flags), and added tokens inside text (whole, partial,
adjacent, glued to words). Characters are limited to those assigned in Unicode 14 (what
Python 3.11's unicodedata knows), so that every engine involved agrees on their classes.

Usage: tokenizer_cases.py [--out PATH] [--seed N]
Output: one JSON object per line, {"text": ...}, UTF-8, lines separated by "\\n" only
(readers must split on "\\n", not on Unicode line breaks such as U+2028 that appear raw).
"""

import argparse
import json
import pathlib
import random
import unicodedata

SEED = 20250521
REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "tokenizer" / "cases.jsonl"

# --- building blocks ---------------------------------------------------------------------

ENGLISH_WORDS = (
    "the of and to in is it that was for on are as with his they at be this from have or by "
    "one had not but what all were when we there can an your which their said if do will each "
    "about how up out them then she many some so these would other into has more her two like "
    "him see time could no make than first been its who now people my made over did down only "
    "way find use may water long little very after words called just where most know get through "
    "back much before go good new write our used me man too any day same right look think also "
    "around another came come work three word must because does part even place well such here "
    "take why things help put years different away again off went old number great tell men say "
    "small every found still between name should home big give air line set own under read last "
    "never us left end along while might next sound below saw something thought both few those "
    "always looked show large often together asked house don't world going want school important "
    "until form food keep children feet land side without boy once animals life enough took "
    "tokenizer transformer inference latency throughput kernel attention quantization gradient "
    "Hugging Face PyTorch CUDA GPU NVIDIA H100 OpenAI Qwen Llama ByteLevel BPE JSON HTTP"
).split()

CONTRACTIONS = [
    "don't", "DON'T", "Don't", "it's", "IT'S", "It'S", "we're", "WE'RE", "We'Re", "they've",
    "THEY'VE", "I'm", "I'M", "you'll", "YOU'LL", "You'Ll", "she'd", "SHE'D", "can't", "won't",
    "isn't", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL",
    "'D", "rock'n'roll", "o'clock", "y'all", "'tis", "''s", "'''", "it’s", "don’t", "James's",
    "the '90s", "'123", "' s", "l'amour", "aujourd'hui",
]

CODE_SNIPPETS = [
    'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
    'class Foo:\n\tdef __init__(self, x):\n\t\tself.x = x  # tab-indented\n\n\tdef __repr__(self):\n\t\treturn f"Foo({self.x!r})"\n',
    '#include <vector>\n\nint main() {\n  std::vector<int> v{1, 2, 3};\n  for (auto& x : v) x *= 2;\n  return v.size() > 2 ? 0 : 1;\n}\n',
    'template <typename T>\nconstexpr T clamp(T v, T lo, T hi) noexcept {\n    return v < lo ? lo : (hi < v ? hi : v);\n}\n',
    'fn main() {\n    let xs: Vec<u32> = (0..10).map(|i| i * i).collect();\n    println!("{:?}", xs);\n}\n',
    'function debounce(fn, ms) {\n  let t;\n  return (...args) => {\n    clearTimeout(t);\n    t = setTimeout(() => fn(...args), ms);\n  };\n}\n',
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tch <- 42\n\tfmt.Println(<-ch)\n}\n',
    'SELECT u.id, COUNT(*) AS n\nFROM users u\nJOIN orders o ON o.user_id = u.id\nWHERE o.total >= 100.50\nGROUP BY u.id\nORDER BY n DESC;\n',
    '#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l "$f" | awk \'{print $1}\'\ndone\n',
    '<!DOCTYPE html>\n<html lang="en">\n  <body>\n    <div class="x" id=\'y\'>&amp;&lt;&gt;</div>\n  </body>\n</html>\n',
    '{\n  "name": "ultraserve",\n  "version": "0.1.0",\n  "tags": ["llm", "serving"],\n  "nested": {"a": null, "b": true, "c": -1.5e-3}\n}\n',
    'x = [i**2 for i in range(10) if i % 2 == 0]\nprint(x[::-1], sum(x) / len(x))\n',
    '    \t  mixed_indent = True\n\t    also_mixed = False\n',
    'if (a&&b||!c) { y+=1; z-=2; w*=3; q/=4; r%=5; s<<=1; t>>=2; u^=v; }\n',
    '// TODO(alice): fix\n/* block\n   comment */\nint x = 0x1F; long y = 1234567890123L; float z = 3.14f;\n',
    'impl<T: Clone + Send + \'static> Drop for Pool<T> {\n    fn drop(&mut self) { self.inner.lock().unwrap().clear(); }\n}\n',
    'const re = /^(?:[a-z0-9!#$%&\'*+/=?^_`{|}~-]+)@example\\.com$/i;\n',
    'git diff --stat HEAD~3..HEAD -- src/ | tail -n 1\r\n',
    'CREATE TABLE t (\r\n\tid INTEGER PRIMARY KEY,\r\n\tname TEXT NOT NULL\r\n);\r\n',
    'matrix = [[1, 2, 3],\n          [4, 5, 6]]\n\n\n\nassert matrix[1][2] == 6\n',
    '\\begin{equation}\n  E = mc^2 \\quad \\forall x \\in \\mathbb{R}\n\\end{equation}\n',
    '- [ ] item one\n- [x] item **two** with `code`\n\n```python\nprint("hi")\n```\n',
]

CHINESE = [
    "我们今天去公园散步，天气非常好。", "机器学习模型需要大量的数据进行训练。",
    "这是一个测试句子，包含标点符号：逗号、句号。", "北京是中华人民共和国的首都。",
    "大语言模型的推理速度取决于显存带宽。", "你好，世界！", "《红楼梦》是中国古典小说。",
    "请把这段文字翻译成英文。", "人工智能正在改变我们的生活方式。", "他说：“明天见。”",
]
JAPANESE = [
    "今日はいい天気ですね。", "私はラーメンが大好きです。", "トークナイザーのテストを書いています。",
    "東京タワーは333メートルです。", "ひらがなとカタカナと漢字を混ぜた文章。", "ｶﾀｶﾅ（半角）とカタカナ（全角）",
    "「こんにちは」と彼女は言った。", "機械学習エンジニアの仕事",
]
KOREAN = [
    "안녕하세요, 만나서 반갑습니다.", "한국어 토크나이저 테스트 문장입니다.", "서울은 대한민국의 수도입니다.",
    "오늘 날씨가 정말 좋네요!", "대규모 언어 모델 추론 서버",
]
OTHER_SCRIPTS = [
    "مرحبا بالعالم، هذا اختبار.", "اللغة العربية جميلة ١٢٣ ٤٥٦", "كتب الطالبُ الدرسَ",
    "שלום עולם, זה מבחן.", "בְּרֵאשִׁית בָּרָא אֱלֹהִים", "नमस्ते दुनिया, यह एक परीक्षण है।",
    "हिन्दी में संख्याएँ: ० १ २ ३ ४", "क्षत्रिय ज्ञान श्री", "สวัสดีชาวโลก นี่คือการทดสอบ",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ", "Привет, мир! Это тест.", "ЁЛКИ-ПАЛКИ, ёжик", "Съешь же ещё этих мягких французских булок",
    "Γειά σου Κόσμε, αυτό είναι ένα τεστ.", "Ελληνικά: άέήίόύώ ΐΰ", "Բարեւ աշխարհ", "გამარჯობა მსოფლიო",
    "হ্যালো বিশ্ব", "வணக்கம் உலகம்", "Xin chào thế giới, đây là một bài kiểm tra.",
    "Türkçe: İstanbul ılık ışık ĞÜŞÖÇ", "Polski: zażółć gęślą jaźń", "Deutsch: Straße, Größe, Übermaß",
    "Français : « déjà vu », où, garçon, cœur", "Español: ¿Qué tal? ¡Mañana!", "Ελληνικό ερωτηματικό;",
    "ᚠᛇᚻ᛫ᛒᛦᚦ", "ꦲꦏ꧀ꦱꦫꦗꦮ", "ᐊᐃᑦᑐᖅ", "አማርኛ ቋንቋ", "ພາສາລາວ", "မြန်မာဘာသာ", "ខ្មែរ", "ᠮᠣᠩᠭᠣᠯ",
]
EMOJI = [
    "😀", "😂", "🥲", "👍", "👍🏻", "👍🏽", "👍🏿", "👋🏾", "❤️", "❤", "♥️", "✨", "🔥", "🚀", "🤖",
    "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏽‍🚀", "🏳️‍🌈", "🏴‍☠️", "👁️‍🗨️", "🧔‍♂️", "👩🏻‍❤️‍💋‍👨🏼",
    "🇺🇸", "🇯🇵", "🇩🇪", "🇨🇳", "🇧🇷", "🇺🇦", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "1️⃣", "#️⃣", "©️", "™", "☺", "☺️",
    "🫠", "🫶🏼", "🐈‍⬛", "🧑‍🤝‍🧑",
]
# NFD / combining-mark material: decomposed letters, singletons that NFC rewrites,
# marks in non-canonical order, stacked marks, Hangul jamo.
COMBINING = [
    "e\u0301", "cafe\u0301", "re\u0301sume\u0301", "A\u030a", "\u212b", "\u2126", "\u1e9b\u0323",
    "a\u0323\u0302", "a\u0302\u0323", "o\u0308\u0304", "n\u0303", "u\u0308ber", "Zu\u0308rich",
    "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "\u0915\u093c", "\u05d1\u05bc",
    "x\u0300\u0301\u0302\u0303\u0304", "\u0301leading mark", "Z\u0351\u036b\u0343\u036a\u0302\u036b",
    "\u00e9 vs e\u0301", "\u0041\u030a\u0301", "\u03b1\u0313\u0301", "i\u0307", "\u0069\u0307\u0301",
    "\u304b\u3099", "\u30cf\u309a", "\uff76\uff9e", "\u2fa1", "\uf900", "\u0958", "\u2000",
    "\u01c4 \u01c5 \u01c6", "\ufb01 ligature", "\u00bd \u2153 \u00b2 \u2075", "\u2460\u2461\u2462",
]
# Exotic white space and invisible characters (the \s class differs between engines).
SPACES = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\n\r\n", " \n", "\n ",
    "\t \n", "\u00a0", "\u3000", "\u2003", "\u2009", "\u202f", "\u205f", "\u1680", "\u2028",
    "\u2029", "\u000b", "\u000c", "\u200b", "\u200d", "\u2060", "\u180e",
]
# \s differs here between Oniguruma (HF) and JavaScript: see tokenizer_reference.mjs.
JS_QUIRK_SPACES = ["\u0085", "\ufeff"]

PUNCT = list(".,;:!?-–—_()[]{}<>/\\|@#$%^&*+=~`\"'…·•«»“”‘’¿¡§¶†‡°′″‰")

ADDED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
NEAR_ADDED = [
    "<|im_sta", "<|im_start", "<|im_start|", "|im_start|>", "<|IM_START|>", "<| im_start |>",
    "<|im_start|>>", "<<|im_end|>", "<|endoftext", "<|endoftext|", "<think", "<think >", "think>",
    "</think", "<THINK>", "<|>", "<||>", "<|im_end|\u200b>", "<tool_call", "<|fim_", "<|",
    "|>", "<|im_start|><", "<|<|im_start|>|>",
]

# --- generators per category -------------------------------------------------------------


def sentence(rng, n_min=4, n_max=18):
    words = [rng.choice(ENGLISH_WORDS) for _ in range(rng.randint(n_min, n_max))]
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = rng.choice(CONTRACTIONS)
    text = " ".join(words)
    text = text[0].upper() + text[1:]
    return text + rng.choice([".", ".", ".", "!", "?", "...", ";", ":", ""])


def prose(rng):
    parts = [sentence(rng) for _ in range(rng.randint(1, 5))]
    sep = rng.choice([" ", " ", "  ", "\n", "\n\n", "\r\n"])
    text = sep.join(parts)
    r = rng.random()
    if r < 0.1:
        text = text.upper()
    elif r < 0.2:
        text = text.lower()
    elif r < 0.25:
        text = text.title()
    return text


def code(rng):
    snippet = rng.choice(CODE_SNIPPETS)
    r = rng.random()
    if r < 0.25:  # re-indent with tabs, or with a different number of spaces
        snippet = snippet.replace("    ", "\t")
    elif r < 0.4:
        snippet = snippet.replace("    ", "  ")
    elif r < 0.5:
        snippet = snippet.replace("\n", "\r\n")
    if rng.random() < 0.3:
        snippet = snippet[: rng.randint(1, len(snippet))]  # cut anywhere
    if rng.random() < 0.2:
        snippet = "    " * rng.randint(1, 3) + snippet
    return snippet


def cjk(rng):
    pool = rng.choice([CHINESE, JAPANESE, KOREAN, CHINESE + JAPANESE + KOREAN])
    parts = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
    text = rng.choice(["", " ", "\n"]).join(parts)
    if rng.random() < 0.3:
        text += " " + sentence(rng, 2, 6)
    return text


def emoji(rng):
    items = [rng.choice(EMOJI) for _ in range(rng.randint(1, 8))]
    joiner = rng.choice(["", " ", "", "  ", "\n"])
    text = joiner.join(items)
    if rng.random() < 0.5:
        text = rng.choice([sentence(rng, 2, 8) + " ", "", "ok"]) + text + rng.choice(["", "!", " end", "123"])
    return text


def combining(rng):
    items = [rng.choice(COMBINING) for _ in range(rng.randint(1, 4))]
    text = rng.choice([" ", "", "-"]).join(items)
    if rng.random() < 0.3:
        text = unicodedata.normalize(rng.choice(["NFD", "NFKD"]), rng.choice(OTHER_SCRIPTS + CHINESE)) + " " + text
    return text


def whitespace(rng):
    pieces = []
    for _ in range(rng.randint(1, 10)):
        r = rng.random()
        if r < 0.45:
            pieces.append(rng.choice(SPACES) * rng.randint(1, 6))
        elif r < 0.75:
            pieces.append(rng.choice(ENGLISH_WORDS))
        elif r < 0.85:
            pieces.append(rng.choice(PUNCT) * rng.randint(1, 3))
        else:
            pieces.append(str(rng.randint(0, 10**6)))
    return "".join(pieces)


def digits(rng):
    r = rng.random()
    if r < 0.25:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 80)))
    if r < 0.4:
        return f"{rng.randint(0, 10**9):,}" + rng.choice(["", " USD", "€", "%", "kg"])
    if r < 0.55:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if r < 0.65:
        return f"{rng.uniform(1e-9, 1e9):.3e}"
    if r < 0.75:
        return "+1 (555) 123-4567, ext. 89; ISBN 978-3-16-148410-0; 2024-05-21T13:45:00Z"
    if r < 0.85:
        return rng.choice(["٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "①②③", "ⅠⅡⅢⅣ", "½¼¾", "x²+y³=z⁴", "一二三"]) + " " + str(rng.randint(0, 999))
    return " ".join(str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(rng.randint(2, 10)))


def contractions(rng):
    words = []
    for _ in range(rng.randint(2, 10)):
        words.append(rng.choice(CONTRACTIONS) if rng.random() < 0.6 else rng.choice(ENGLISH_WORDS))
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text.upper()
    return text


def scripts(rng):
    parts = [rng.choice(OTHER_SCRIPTS) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.4:
        parts.append(sentence(rng, 2, 6))
    rng.shuffle(parts)
    return rng.choice([" ", "\n", " — "]).join(parts)


def added_tokens(rng):
    pieces = []
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.35:
            pieces.append(rng.choice(ADDED))
        elif r < 0.5:
            pieces.append(rng.choice(NEAR_ADDED))
        elif r < 0.75:
            pieces.append(sentence(rng, 1, 5))
        elif r < 0.85:
            pieces.append(rng.choice(SPACES))
        else:
            pieces.append(rng.choice(CHINESE + EMOJI + CONTRACTIONS))
    return rng.choice(["", "", " ", "\n"]).join(pieces)


def chat(rng):
    roles = ["system", "user", "assistant", "tool"]
    out = []
    for _ in range(rng.randint(1, 4)):
        role = rng.choice(roles)
        content = rng.choice([prose, code, cjk, emoji, contractions])(rng)
        if role == "assistant" and rng.random() < 0.5:
            content = "<think>\n" + sentence(rng) + "\n</think>\n\n" + content
        out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    if rng.random() < 0.7:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def unicode_fuzz(rng):
    # Random assigned characters from a spread of blocks (no surrogates, no unassigned
    # code points: their classes depend on the Unicode version of each engine).
    ranges = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x36F), (0x370, 0x52F), (0x590, 0x6FF),
        (0x900, 0xDFF), (0xE00, 0xEFF), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF),
        (0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xF900, 0xFAFF),
        (0xFB00, 0xFFEF), (0x10000, 0x1034F), (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF),
        (0x0, 0x1F), (0x7F, 0x9F), (0xE000, 0xE0FF),
    ]
    chars, n = [], rng.randint(1, 40)
    while len(chars) < n:
        lo, hi = rng.choice(ranges)
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) == "Cn" or c in "\u0085\ufeff":
            continue
        chars.append(c)
    return "".join(chars)


def edge_cases():
    fixed = [
        "", " ", "  ", "a", "A", "1", "\n", "\t", "\r\n", "\r", "\x00", "a\x00b", "\x01\x02\x7f",
        "Hello world", "Hello, my dog is cute", " leading space", "trailing space ", "  both  ",
        "a  b", "a   b", "a \n b", "a\n\n\nb", "a \t\n b", "word\n", "word \n", "word  \n\n",
        "   \n", "\n   ", "  \r\n  ", "x" * 300, "ab" * 200, " " * 257, "\n" * 100, "\t" * 50,
        "1" * 1000, "é" * 100, "中" * 200, "😀" * 50, "👨‍👩‍👧‍👦" * 20,
        "!!!", "...", "?!?!", "---", "___", "***", "@@@", "$$$", "a.b.c", "e.g.", "i.e.,",
        "http://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Users\\me\\file.txt",
        "'s", "'S", "'ſ", "x'ſ", "it'ſ", "''", "'", " '", "' ", "'s'", "''s", "'\n's",
        "\u0085", "a\u0085b", "a \u0085 b", "\ufeff", "\ufeffhello", "x\ufeff y", "\u0085\u0085  x",
        "\uac00\u11a7", "e\u0301 \uac00\u11a7", "\u1100\u1161\u11a7", "\uac00\u11a8", "\u1100\u1161\u11a8",
        "\ufffd", "a\ufffdb", "a\ufffeb\uffff", "\U0010ffff", "x\U000e0041\U000e007f", "<|im_start|im_end|>",
        " \u0085hello", " \ufeffhello", "x \u0085y", "\t\ufeffword", " \u180ehello", "it'\u017felf",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<think></think>",
        "<|im_start|><|im_end|>", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|><|im_start|><|im_start|>", "a<|im_end|>b", "<|endoftext|>\n\n", "\n<|endoftext|>",
        " <|im_start|> ", "e<|im_end|>\u0301", "\u0301<think>", "<|im_sta", "<|im_start|",
        "<<|im_start|>>", "<|im_start|>user", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
        "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>", "<|repo_name|>x<|file_sep|>y.py\n",
        "\u00a0\u00a0", "\u3000\u3000text", "a\u2028b", "a\u2029b", "\u200b", "a\u200bb", "\u180e",
        "a\u180eb", "a \u180e b", "x\u000by", "x\u000cy", "\u2000\u2001\u2002", "tab\tand space ",
        "ﬁ", "Å", "Ω", "K", "ℌ", "①", "⁵", "½", "㍿", "ｶﾞ", "ǅ",
        "don't DON'T Don'T dOn't", "I'M YOU'RE WE'VE THEY'LL HE'D", "rock'n'roll", "'s's's",
        "x = 1\n\n\n\ny = 2", "\tindented\n\t\tmore\n\t\t\teven more", "    def f():\n        pass\n",
        "\r\n\r\n\r\n", " \r\n \r\n", "a\r\r\rb", "  \t  \t  ", "\t\n\t\n",
        "12 345 6789", "3.14159265358979323846", "1e10", "-0.0", "٣٤٥", "१२३", "１２３",
        "𝕳𝖊𝖑𝖑𝖔", "𝐀𝐁𝐂", "𐍈", "\U0001F600\U0001F601", "\U00020000\U0002A6D6", "\ue000\uf8ff",
    ]
    return fixed


CATEGORIES = [
    ("prose", prose, 260),
    ("code", code, 240),
    ("cjk", cjk, 200),
    ("emoji", emoji, 180),
    ("combining", combining, 180),
    ("whitespace", whitespace, 200),
    ("digits", digits, 150),
    ("contractions", contractions, 150),
    ("scripts", scripts, 200),
    ("added_tokens", added_tokens, 220),
    ("chat", chat, 80),
    ("unicode_fuzz", unicode_fuzz, 200),
]


def mixed(rng):
    fns = [f for _, f, _ in CATEGORIES]
    parts = [rng.choice(fns)(rng) for _ in range(rng.randint(2, 4))]
    glue = rng.choice(["", " ", "\n", "  ", "\t"])
    return glue.join(parts)


def long_document(rng):
    fns = [f for _, f, _ in CATEGORIES]
    return "\n\n".join(rng.choice(fns)(rng) for _ in range(rng.randint(15, 30)))


def generate(seed):
    rng = random.Random(seed)
    cases = list(edge_cases())
    for _, fn, count in CATEGORIES:
        cases.extend(fn(rng) for _ in range(count))
    cases.extend(mixed(rng) for _ in range(150))
    cases.extend(long_document(rng) for _ in range(6))
    # A space before the character and a letter after it is where the engines' \s
    # disagreement changes the pieces (" " + "\x85hello" vs " \x85" + "hello").
    cases.extend(sentence(rng, 2, 5) + " " + rng.choice(JS_QUIRK_SPACES) + sentence(rng, 2, 5) for _ in range(6))
    # Duplicates carry no information; keep the first occurrence, in order.
    seen, unique = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    cases = generate(args.seed)
    for c in cases:  # every case must be encodable as UTF-8 (no lone surrogates)
        c.encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for c in cases:
            f.write(json.dumps({"text": c}, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases ({args.out.stat().st_size} bytes) to {args.out}")


if __name__ == "__main__":
    main()
