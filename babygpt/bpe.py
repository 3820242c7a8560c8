"""
Train a byte-level BPE (byte-pair encoding) tokenizer, in plain Python. The idea fits in one sentence:
start from the 256 possible bytes, then repeatedly find the pair of neighbouring tokens that occurs most
often in the training text and make it a new token -- until the vocabulary has the size you asked for.

Two details make it usable:
  * Pre-splitting. The text is first cut into chunks with GPT-2's regular expression (words with their leading
    space, numbers, punctuation runs, whitespace), and merges never cross a chunk boundary. Without it you
    get tokens like "d the" that glue the end of one word to the next.
  * Counting unique chunks. " the" occurs ~20,000 times in Tiny Shakespeare; we store it once with its count,
    so each pass over the data touches ~14,000 distinct chunks instead of ~250,000.

The result is a list of token byte strings in rank order (rank = token id): the 256 single bytes, then one
new token per merge. tiktoken uses exactly this (bytes -> rank) table to encode, so we save it in tiktoken's
rank-file format (one "base64(token bytes) rank" line per token) and let tiktoken's fast core do the encoding.
"""

import base64
import binascii
from collections import Counter
from pathlib import Path

import regex  # like `re`, plus \p{L} (any letter) and possessive quantifiers, which GPT-2's pattern uses

# tiktoken's r50k_base (GPT-2) pre-split pattern: 's 't 're 've 'm 'll 'd, ' word', ' 123', ' ?!', whitespace.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
SPLIT_PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN}  # meta.json names the pattern; a name cannot smuggle in a regex


def merge_pair(ids, pair, new_id):
    """Replace every occurrence of `pair` (left to right, non-overlapping) in the list `ids` by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


MAX_PIECE = 256  # characters: a longer chunk (text without spaces is one chunk) is learned from in pieces
MAX_DISTINCT_BYTES = 1 << 18  # learn from the most frequent distinct chunks, up to 256 KB of them


def learning_pieces(chunks):
    """What the merges are learned from. Each merge costs Python time in proportion to the bytes of the distinct
    chunks, and the split pattern cuts text at spaces: Tiny Shakespeare has 100 KB of distinct words, but a text
    without spaces is one distinct chunk of its whole size (1 MB took 115 s). So long chunks are cut in pieces,
    and only the most frequent 256 KB of distinct pieces are kept (all of them for Tiny Shakespeare)."""
    pieces = Counter()
    for chunk in chunks:
        pieces.update([chunk[i:i + MAX_PIECE] for i in range(0, len(chunk), MAX_PIECE)])
    kept, size = Counter(), 0
    for piece, count in pieces.most_common():
        size += len(piece.encode("utf-8"))
        if size > MAX_DISTINCT_BYTES:
            break
        kept[piece] = count
    return kept


def train_bpe(text, vocab_size, pattern=GPT2_SPLIT_PATTERN, verbose=False):
    """Learn vocab_size - 256 merges from `text`. Returns (ranks, merges):
    ranks  -- list of token byte strings, token id = index (the first 256 are the single bytes 0..255)
    merges -- list of (left id, right id) pairs, in the order they were learned (merge i made token 256 + i)
    Ties between equally frequent pairs go to the smallest (left id, right id), so training is deterministic.
    Stops early if no pair is left to merge (a text too small for the vocabulary asked for)."""
    if vocab_size < 256:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 256 (one token per byte), got {vocab_size}")
    chunk_counts = learning_pieces(regex.findall(pattern, text))  # chunk -> how often it occurs
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each chunk as a list of token ids
    counts = list(chunk_counts.values())
    # 1. count every pair of neighbouring tokens, each chunk weighted by how often it occurs
    pair_counts = Counter()
    for ids, count in zip(words, counts):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += count
    ranks = [bytes([b]) for b in range(256)]
    merges = []
    for new_id in range(256, vocab_size):
        if not pair_counts:
            break
        # 2. the most frequent pair becomes a new token
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        ranks.append(ranks[best[0]] + ranks[best[1]])
        if verbose and (new_id - 255) % 64 == 0:
            print(f"  merge {new_id - 255}/{vocab_size - 256}: {ranks[new_id]!r} ({pair_counts[best]:,} times)")
        # 3. rewrite the chunks that contain it, and update the pair counts for just those chunks (recounting
        #    everything after each merge gives the same merges, but was 6x slower on Tiny Shakespeare)
        for i, ids in enumerate(words):
            if best[0] in ids and best[1] in ids:
                merged = merge_pair(ids, best, new_id)
                if len(merged) < len(ids):
                    for pair in zip(ids, ids[1:]):
                        pair_counts[pair] -= counts[i]
                    for pair in zip(merged, merged[1:]):
                        pair_counts[pair] += counts[i]
                    words[i] = merged
        pair_counts = +pair_counts  # drop pairs whose count fell to zero
    return ranks, merges


def encode_with_merges(text, merges, pattern=GPT2_SPLIT_PATTERN):
    """Encode by replaying the learned merges in order on each chunk: slow, but it is the definition.
    tiktoken's encoder (which merges the lowest-ranked pair first) must give the same ids -- a test checks it."""
    ids = []
    for chunk in regex.findall(pattern, text):
        chunk_ids = list(chunk.encode("utf-8"))
        for i, pair in enumerate(merges):
            if len(chunk_ids) < 2:
                break
            chunk_ids = merge_pair(chunk_ids, pair, 256 + i)
        ids.extend(chunk_ids)
    return ids


def ranks_to_base64(ranks):
    """Token byte strings as base64 text: arbitrary bytes (half of a UTF-8 character, say) as plain ASCII."""
    return [base64.b64encode(token).decode("ascii") for token in ranks]


def rank_file(ranks):
    """tiktoken's rank-file format, as bytes: one 'base64(token bytes) rank' line per token."""
    return "".join(f"{token} {rank}\n" for rank, token in enumerate(ranks_to_base64(ranks))).encode("ascii")


def save_ranks(ranks, path):
    """Write the rank file of `ranks` to `path`."""
    Path(path).write_bytes(rank_file(ranks))


def ranks_from_base64(strings):
    """Token byte strings from their base64 text (as stored in meta.json). Raises ValueError if malformed."""
    try:
        return [base64.b64decode(s, validate=True) for s in strings]
    except (binascii.Error, TypeError, ValueError):
        raise ValueError("'ranks' must hold base64 strings") from None

