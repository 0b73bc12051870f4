"""
bpe.py: a byte-level BPE tokenizer, trained from text, wrapped in a real tiktoken.Encoding.

    ranks = train_bpe(text, vocab_size=320)
    enc = tokenizer_from_ranks(ranks)             # encode_ordinary, decode, special tokens
    state = tokenizer_state(enc)                  # what a checkpoint stores (plain bytes)

Deterministic: ties between pairs go to the smallest pair in byte order, so the same text always
gives the same merges, and nothing is downloaded. The pre-tokenizer splits every digit into its own
token, so a list of digits is always one token per digit. tasks.py trains it on the world's text.
"""

import re
from collections import Counter

import tiktoken

# digits always split: every digit is its own token
PAT_STR = r"\n| ?[a-z]+| ?[0-9]| ?[^\sa-z0-9]+| +|\s"
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]


def train_bpe(text, vocab_size=320):
    """Byte-level BPE over unique pre-tokenized words -> mergeable ranks {bytes: rank}.

    Starts from all 256 bytes (so any string encodes), then repeatedly merges the most frequent
    adjacent pair; ties go to the smallest pair in byte order, which makes the result deterministic.
    """
    words = Counter(re.findall(PAT_STR, text))
    seqs = {w: [bytes([b]) for b in w.encode()] for w in words}
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < vocab_size:
        pairs = Counter()
        for w, parts in seqs.items():
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        ranks[a + b] = len(ranks)
        for w, parts in seqs.items():  # apply the merge to every word
            i, out = 0, []
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            seqs[w] = out
    return ranks


def tokenizer_from_ranks(ranks):
    specials = {s: len(ranks) + i for i, s in enumerate(SPECIALS)}
    return tiktoken.Encoding(name="fastslow", pat_str=PAT_STR, mergeable_ranks=dict(ranks),
                             special_tokens=specials)


def tokenizer_state(enc):
    """What a checkpoint stores: the merges in rank order (plain bytes, no pickled objects)."""
    return {"pat_str": enc._pat_str,
            "ranks": sorted(enc._mergeable_ranks, key=enc._mergeable_ranks.get)}


def tokenizer_from_state(state):
    return tokenizer_from_ranks({b: i for i, b in enumerate(state["ranks"])})
