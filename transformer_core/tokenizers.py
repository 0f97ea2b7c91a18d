"""Tokenizers: text <-> lists of integer ids, the only thing a Transformer can read.

Four tokenizers, from simplest to the one GPT-2 uses:

* :class:`CharTokenizer` -- one id per character. The vocabulary is the set of characters of a
  training text: about 30 ids for the book's corpus. Nothing to learn, long sequences.
* :class:`WordTokenizer` -- one id per word, with BERT's special tokens ``[PAD] [UNK] [CLS] [SEP]
  [MASK]`` first (chapter 13's masked-language model reads it).
* :class:`SyntheticVocab` -- the fixed vocabulary of the synthetic encoder-decoder tasks of
  :mod:`transformer_core.data`: ``<pad> <bos> <eos>``, ten digits and ``+`` (chapter 09).
* :class:`ByteBPETokenizer` -- byte-level byte-pair encoding, trained from scratch. It starts from
  the 256 byte values (so *any* string can be encoded, with no "unknown" token) and repeatedly
  merges the most frequent adjacent pair into a new token. Frequent words become one token, so
  sequences get shorter: compare :meth:`CharTokenizer.compression_ratio` with
  :meth:`ByteBPETokenizer.compression_ratio` on the same text.

All share one small interface (:class:`Tokenizer`): ``encode``, ``decode``, ``vocab_size``, and
``compression_ratio``, ``to_dict``, ``save`` and ``load``; :func:`load_tokenizer` reads a file of any
kind. :func:`pad_sequences` makes one batch of id lists of different lengths.
"""

from __future__ import annotations

import heapq
import json
import operator
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "SPECIAL_TOKENS",
    "SYNTHETIC_VOCAB",
    "ByteBPETokenizer",
    "CharTokenizer",
    "SyntheticVocab",
    "Tokenizer",
    "WordTokenizer",
    "load_tokenizer",
    "pad_sequences",
]

_FORMAT_VERSION = 1

# GPT-2 cuts text into "words" before BPE so that merges never cross a word boundary ("dog." and
# "dog!" share the token " dog"). GPT-2's pattern uses \p{L} and \p{N} from the third-party `regex`
# package; this is the same pattern in the standard library's `re`: [^\W\d_] is "a letter", \d "a
# digit", and (?:[^\s\w]|_) "anything else that is not whitespace". Every character falls in one
# class, so the pieces always join back to the input text.
GPT2_SPLIT_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+|[\s\S]"

IdSequence = Sequence[int] | torch.Tensor


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of the book needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: IdSequence) -> str: ...


def _as_id_list(ids: Any, vocab_size: int) -> list[int]:
    """Turn a list / 1-D tensor / array of ids into a list of Python ints, checking the range."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(
                f"decode takes one sequence of ids (a 1-D tensor), got shape {tuple(ids.shape)}; "
                "for a batch use [tokenizer.decode(row) for row in ids]"
            )
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"token ids must be integers, got a tensor of {ids.dtype}")
        ids = ids.tolist()
    elif hasattr(ids, "tolist"):  # numpy arrays
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)):
        raise TypeError("decode takes a sequence of token ids, not text; call encode(text) first")
    out: list[int] = []
    for i in ids:
        if isinstance(i, bool):
            raise TypeError(f"token ids must be integers, got {i!r}")
        try:
            i = operator.index(i)  # ints, and integer scalars such as numpy.int64
        except TypeError:
            raise TypeError(f"token ids must be integers, got {i!r} ({type(i).__name__})") from None
        out.append(i)
        if not 0 <= i < vocab_size:
            raise ValueError(
                f"token id {i} is outside this tokenizer's vocabulary [0, {vocab_size - 1}]; "
                "were these ids made by a different tokenizer?"
            )
    return out


def _read_json(path: str | Path, expected_type: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a tokenizer file (damaged or not JSON): {err}") from err
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"{path} is not a tokenizer file (no 'type' field)")
    if not isinstance(data["type"], str):
        raise ValueError(f"{path} is not a tokenizer file (its 'type' is {data['type']!r})")
    if expected_type is not None and data["type"] != expected_type:
        raise ValueError(
            f"{path} holds a {data['type']}, not a {expected_type}; "
            "use transformer_core.tokenizers.load_tokenizer(path) to load any kind"
        )
    if data.get("version") != _FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {data.get('version')}, expected {_FORMAT_VERSION}"
        )
    return data


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        hint = "; decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, bytes) else ""
        raise TypeError(f"expected text (str), got {type(text).__name__}{hint}")
    return text


def _check_vocabulary(tokens: list, is_token: Callable[[object], bool], what: str) -> None:
    """Every entry is a token (``what`` says what a token is) and none appears twice."""
    bad = [t for t in tokens if not is_token(t)]
    if bad:
        raise ValueError(f"{what}, got {bad[:5]!r}")
    dupes = sorted(t for t, n in Counter(tokens).items() if n > 1)
    if dupes:
        raise ValueError(f"tokens appear twice in the vocabulary: {dupes!r}")


class _Tokenizer:
    """What every tokenizer of this module shares: its length, comparison, saving and loading.

    A subclass holds its tokens in ``_itos`` (or gives its own ``vocab_size``) and gives ``encode``,
    ``to_dict`` (a JSON-ready dict with its ``type``) and ``from_dict`` (which raises ValueError or
    TypeError for a damaged dict).
    """

    _itos: list[str]
    encode: Callable[[str], list[int]]

    @property
    def vocab_size(self) -> int:
        """How many ids there are: the size of the model's embedding table and output layer."""
        return len(self._itos)

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    __hash__ = None  # type: ignore[assignment]  # compared by value

    def compression_ratio(self, text: str) -> float:
        """UTF-8 bytes per token on ``text``: how many bytes one token carries on average.

        1.0 means no compression (a byte or a character per token); the higher, the shorter the
        sequences a model sees.
        """
        n_tokens = len(self.encode(text))
        if n_tokens == 0:
            raise ValueError("compression_ratio needs a non-empty text")
        return len(text.encode("utf-8", "surrogatepass")) / n_tokens

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON, so a trained model can be used with the same ids later."""
        # ensure_ascii keeps the file valid UTF-8 whatever it holds (even a lone surrogate character)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a tokenizer written by :meth:`save`."""
        return cls._from_file_data(_read_json(path, cls.__name__), path)

    @classmethod
    def _from_file_data(cls, data: dict[str, Any], path: str | Path) -> Any:
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, re.error) as err:
            raise ValueError(f"{path} is damaged: {err}") from err


class CharTokenizer(_Tokenizer):
    """One token per character; the vocabulary is a fixed list of characters.

    >>> tok = CharTokenizer.from_text("hello world")
    >>> tok.vocab_size, tok.encode("hello")
    (8, [3, 2, 4, 4, 5])
    >>> tok.decode([3, 2, 4, 4, 5])
    'hello'

    Ids are given in sorted character order, so the same text always gives the same ids (sorting
    also puts "\\n" and " " first, which makes printed vocabularies easy to read).
    """

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        _check_vocabulary(chars, lambda c: isinstance(c, str) and len(c) == 1,
                          "a character vocabulary holds single characters")
        if not chars:
            raise ValueError("the vocabulary is empty: build it from a non-empty text")
        self._itos: list[str] = chars
        self._stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is every distinct character of ``text``, sorted."""
        text = _check_text(text)
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def chars(self) -> tuple[str, ...]:
        """The vocabulary: ``chars[i]`` is the character of id ``i``."""
        return tuple(self._itos)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, chars={''.join(self._itos)!r})"

    def encode(self, text: str) -> list[int]:
        """``text`` -> one id per character. Unknown characters raise a ValueError naming them."""
        stoi = self._stoi
        try:
            return [stoi[c] for c in _check_text(text)]
        except KeyError:
            pass
        unknown: dict[str, int] = {}
        for pos, c in enumerate(text):
            if c not in stoi and c not in unknown:
                unknown[c] = pos
        shown = ", ".join(f"{c!r} (first at index {p})" for c, p in list(unknown.items())[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ValueError(
            f"cannot encode {len(unknown)} character(s) that are not in the vocabulary: {shown}{more}. "
            "A character tokenizer only knows the characters of the text it was built from: build it "
            "with CharTokenizer.from_text(text) on a text that includes them (or clean the input)."
        )

    def decode(self, ids: IdSequence) -> str:
        """A list or 1-D tensor of ids -> the text."""
        return "".join(self._itos[i] for i in _as_id_list(ids, self.vocab_size))

    def tokens(self, text: str) -> list[str]:
        """``text`` cut into its tokens, shown as strings (for a character tokenizer: its characters)."""
        return [self._itos[i] for i in self.encode(text)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "CharTokenizer", "version": _FORMAT_VERSION, "chars": self._itos}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        chars = data.get("chars")
        if not isinstance(chars, list):
            raise ValueError(f"'chars' should be a list of characters, got {chars!r}")
        return cls(chars)


# A special token is written in brackets ("[MASK]"); a word is a run of letters/digits; any other
# non-space character (",", ".") is a token of its own.
_WORD_PATTERN = re.compile(r"\[[A-Z]+\]|\w+|[^\w\s]")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's, in BERT's roles


class WordTokenizer(_Tokenizer):
    """One id per word, with special tokens first: ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``.

    >>> tok = WordTokenizer.from_text("the dog ran. the cat sat.")
    >>> tok.encode("the cat ran.")
    [10, 6, 8, 5]
    >>> tok.encode("the [MASK] ran.", add_special_tokens=True)
    [2, 10, 4, 8, 5, 3]
    >>> tok.decode([2, 10, 4, 8, 5, 3], skip_special_tokens=False)
    '[CLS] the [MASK] ran. [SEP]'

    Words are sorted, so the same text always gives the same ids. Text is cut into words by
    :data:`_WORD_PATTERN`; ``decode`` joins them with spaces and attaches punctuation to the word
    before it, which is how the book's corpus is written. A word not in the vocabulary becomes
    ``[UNK]`` (or raises a ValueError if the tokenizer has no ``[UNK]``).
    """

    def __init__(self, words: Iterable[str], specials: Sequence[str] = SPECIAL_TOKENS) -> None:
        specials = list(specials)
        words = [w for w in words if w not in specials]
        vocab = specials + words
        _check_vocabulary(vocab, lambda t: isinstance(t, str) and bool(t) and not any(c.isspace() for c in t),
                          "tokens must be non-empty strings without spaces")
        if not words:
            raise ValueError("the vocabulary has no words besides the special tokens: build it from a text")
        self._itos: list[str] = vocab
        self._stoi: dict[str, int] = {t: i for i, t in enumerate(vocab)}
        self._specials: tuple[str, ...] = tuple(specials)

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = SPECIAL_TOKENS, min_count: int = 1) -> WordTokenizer:
        """The tokenizer of every word of ``text`` that occurs at least ``min_count`` times, sorted."""
        counts = Counter(t for t in _WORD_PATTERN.findall(_check_text(text)) if t not in specials)
        return cls(sorted(w for w, n in counts.items() if n >= min_count), specials)

    # -- the vocabulary ---------------------------------------------------------------------------
    @property
    def vocab(self) -> tuple[str, ...]:
        """``vocab[i]`` is the token of id ``i``."""
        return tuple(self._itos)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The ids of the special tokens: never masked, never a word."""
        return tuple(self._stoi[t] for t in self._specials)

    def _special(self, token: str) -> int | None:
        return self._stoi.get(token) if token in self._specials else None

    pad_id = property(lambda self: self._special("[PAD]"), doc="id of ``[PAD]`` (None if absent)")
    unk_id = property(lambda self: self._special("[UNK]"), doc="id of ``[UNK]`` (None if absent)")
    cls_id = property(lambda self: self._special("[CLS]"), doc="id of ``[CLS]`` (None if absent)")
    sep_id = property(lambda self: self._special("[SEP]"), doc="id of ``[SEP]`` (None if absent)")
    mask_id = property(lambda self: self._special("[MASK]"), doc="id of ``[MASK]`` (None if absent)")

    def token_to_id(self, token: str) -> int:
        if token not in self._stoi:
            raise ValueError(f"{token!r} is not in the vocabulary of {self.vocab_size} tokens")
        return self._stoi[token]

    def id_to_token(self, token_id: int) -> str:
        (i,) = _as_id_list([token_id], self.vocab_size)
        return self._itos[i]

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, specials={list(self._specials)})"

    # -- encode / decode --------------------------------------------------------------------------
    def tokens(self, text: str) -> list[str]:
        """``text`` cut into tokens (words, punctuation, bracketed special tokens)."""
        return _WORD_PATTERN.findall(_check_text(text))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """``text`` -> ids; with ``add_special_tokens`` wrapped as BERT's input: ``[CLS] ... [SEP]``."""
        ids: list[int] = []
        unknown: list[str] = []
        for t in self.tokens(text):
            i = self._stoi.get(t, self.unk_id)
            if i is None:
                unknown.append(t)
            else:
                ids.append(i)
        if unknown:
            raise ValueError(
                f"words not in the vocabulary and no [UNK] token to stand for them: {sorted(set(unknown))[:10]}"
            )
        if add_special_tokens:
            if self.cls_id is None or self.sep_id is None:
                raise ValueError("add_special_tokens needs [CLS] and [SEP] in the tokenizer's specials")
            ids = [self.cls_id, *ids, self.sep_id]
        return ids

    def decode(self, ids: IdSequence, skip_special_tokens: bool = False) -> str:
        """Ids -> text: words joined by spaces, punctuation attached to the word before it."""
        special = set(self.special_ids) if skip_special_tokens else set()
        words = [self._itos[i] for i in _as_id_list(ids, self.vocab_size) if i not in special]
        return re.sub(r" ([^\w\s\[])(?=\s|$)", r"\1", " ".join(words))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "WordTokenizer", "version": _FORMAT_VERSION, "specials": list(self._specials),
                "words": self._itos[len(self._specials):]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        words, specials = data.get("words"), data.get("specials")
        if not isinstance(words, list) or not isinstance(specials, list):
            raise ValueError("'words' and 'specials' should be lists of tokens")
        return cls(words, specials)


class SyntheticVocab(_Tokenizer):
    """The vocabulary of the synthetic encoder-decoder tasks: three special tokens, ten digits, "+".

    ====  ======  =========================================================
    id    token   role
    ====  ======  =========================================================
    0     <pad>   fills sequences up to the batch width; masked out of attention and loss
    1     <bos>   begin-of-sequence: the decoder's first input
    2     <eos>   end-of-sequence: ends the source, and tells the decoder to stop
    3-12  0-9     the digits
    13    +       the plus sign of the addition task
    ====  ======  =========================================================
    """

    PAD = 0
    BOS = 1
    EOS = 2
    FIRST_DIGIT = 3
    PLUS = 13
    tokens: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", *"0123456789", "+")

    def __init__(self) -> None:
        self._itos = list(self.tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def __repr__(self) -> str:
        return f"SyntheticVocab({', '.join(f'{i}:{t}' for i, t in enumerate(self.tokens))})"

    def encode(self, text: str) -> list[int]:
        """Digits and "+" -> ids (no special tokens added)."""
        unknown = sorted(set(_check_text(text)) - set(self.tokens[self.FIRST_DIGIT :]))
        if unknown:
            raise ValueError(f"the synthetic vocabulary has only digits and '+', not {unknown}")
        return [self._ids[c] for c in text]

    def decode(self, ids: IdSequence, skip_special: bool = True, stop_at_eos: bool = True) -> str:
        """Ids -> text. By default it stops at the first ``<eos>`` and drops ``<pad>``/``<bos>``, which
        is what you want for a model's output; ``skip_special=False`` shows them, e.g. ``<bos>12<eos>``.
        """
        out: list[str] = []
        for i in _as_id_list(ids, self.vocab_size):
            if i == self.EOS and stop_at_eos:
                if not skip_special:
                    out.append(self.tokens[i])
                break
            if i < self.FIRST_DIGIT and skip_special:
                continue
            out.append(self.tokens[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "SyntheticVocab", "version": _FORMAT_VERSION, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticVocab:
        if data.get("tokens") != list(cls.tokens):
            raise ValueError(f"'tokens' should be the synthetic vocabulary {list(cls.tokens)}")
        return cls()


SYNTHETIC_VOCAB = SyntheticVocab()


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> torch.Tensor:
    """Lists of ids of different lengths -> one ``(B, T)`` int64 tensor, padded on the right with ``pad_id``.

    ``T`` is the longest sequence, or ``length`` (which must fit them all).
    """
    seqs = [list(s) for s in sequences]
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("pad_sequences needs at least one sequence, and no empty sequence")
    longest = max(map(len, seqs))
    T = longest if length is None else length
    if T < longest:
        raise ValueError(f"a sequence has {longest} tokens, more than length={length}; truncate it first")
    out = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids`` (left to right) by ``new_id``."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class ByteBPETokenizer(_Tokenizer):
    """Byte-level byte-pair encoding (BPE), trained from scratch: the GPT-2 tokenizer's recipe.

    * ids 0-255 are the raw bytes of the UTF-8 encoding, so every string can be encoded;
    * id ``256 + k`` is the k-th merge: ``merges[k] = (a, b)`` means "the token for a's bytes
      followed by b's bytes";
    * before merging, text is cut into pieces by :data:`GPT2_SPLIT_PATTERN` (words with their
      leading space, numbers, punctuation, whitespace): no token spans two words.

    Train with :meth:`train`; rebuild from saved merges with the constructor or :meth:`load`.

    >>> tok = ByteBPETokenizer.train("the cat sat on the mat. the cat ate.", vocab_size=262)
    >>> [tok.token_str(i) for i in range(256, 262)]  # the merges, in the order they were learned
    ['at', 'he', 'the', ' c', ' the', ' cat']
    >>> tok.tokens("the cat sat")
    ['the', ' cat', ' ', 's', 'at']
    """

    def __init__(
        self, merges: Iterable[tuple[int, int]] = (), pattern: str = GPT2_SPLIT_PATTERN
    ) -> None:
        self._merges: list[tuple[int, int]] = []
        self._vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for k, pair in enumerate(merges):
            a, b = (int(x) for x in pair)
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(
                    f"merge {k} = {pair} uses an id that does not exist yet (ids so far: 0-{255 + k})"
                )
            self._merges.append((a, b))
            self._vocab.append(self._vocab[a] + self._vocab[b])
        # rank of a pair = when it was merged; encoding always applies the earliest merge first
        self._ranks: dict[tuple[int, int], int] = {p: k for k, p in enumerate(self._merges)}
        self.pattern = pattern
        self._split = re.compile(pattern)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls, text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN
    ) -> ByteBPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text``.

        Each step merges the adjacent pair of tokens that occurs most often (counted over the text,
        inside pieces only). Ties go to the pair with the smallest ids (compare ``a``, then ``b``),
        so training is deterministic. If the text runs out of pairs first (every piece is already a
        single token), training stops early with a warning and ``vocab_size`` is smaller.

        Why it is fast: text repeats its words, so the pair counts are kept per *distinct* piece,
        weighted by how often the piece occurs, and after each merge only the pieces that contained
        the merged pair are recounted. A heap finds the most frequent pair without a full scan.
        """
        text = _check_text(text)
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(
                f"vocab_size must be an int >= 256 (the 256 byte tokens come first), got {vocab_size!r}"
            )
        split = re.compile(pattern)
        piece_counts = Counter(split.findall(text))
        words: list[list[int]] = [list(p.encode("utf-8", "surrogatepass")) for p in piece_counts]
        freqs: list[int] = list(piece_counts.values())

        counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> pieces that hold it
        for w, (word, f) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(word):
                counts[pair] += f
                where[pair].add(w)
        # max-heap of (count, pair) via negated counts; entries go stale when a count changes and are
        # skipped when popped (a "lazy deletion" heap). Ties: smallest pair first, by tuple order.
        heap = [(-c, pair) for pair, c in counts.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int]] = []
        while 256 + len(merges) < vocab_size:
            while heap and counts.get(heap[0][1], 0) != -heap[0][0]:
                heapq.heappop(heap)
            if not heap:
                warnings.warn(
                    f"the text ran out of pairs to merge after {len(merges)} merges: "
                    f"vocab_size is {256 + len(merges)}, not {vocab_size}; train on more text",
                    stacklevel=2,
                )
                break
            _, best = heapq.heappop(heap)
            new_id = 256 + len(merges)
            merges.append(best)
            changed: set[tuple[int, int]] = set()
            for w in where.pop(best):
                old = words[w]
                new = _merge(old, best, new_id)
                if len(new) == len(old):
                    continue
                f = freqs[w]
                for pair in pairwise(old):
                    counts[pair] -= f
                    changed.add(pair)
                for pair in pairwise(new):
                    counts[pair] += f
                    where[pair].add(w)
                    changed.add(pair)
                words[w] = new
            for pair in changed:
                c = counts[pair]
                if c > 0:
                    heapq.heappush(heap, (-c, pair))
                else:
                    del counts[pair]
        return cls(merges, pattern)

    # ------------------------------------------------------------------ the vocabulary
    @property
    def vocab_size(self) -> int:
        """256 byte tokens + one token per merge."""
        return len(self._vocab)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The merges in the order they were learned: id ``256 + k`` is ``merges[k]`` glued together."""
        return list(self._merges)

    @property
    def vocab(self) -> list[bytes]:
        """``vocab[i]`` is the bytes of token ``i``."""
        return list(self._vocab)

    def __repr__(self) -> str:
        return f"ByteBPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)})"

    def token_str(self, token_id: int) -> str:
        """Token ``token_id`` as readable text. A token that holds only part of a multi-byte
        character shows its bytes escaped, e.g. ``'\\xc3'`` -- a reminder that BPE works on bytes."""
        (i,) = _as_id_list([token_id], self.vocab_size)
        return self._vocab[i].decode("utf-8", "backslashreplace")

    # ------------------------------------------------------------------ encode / decode
    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = list(piece.encode("utf-8", "surrogatepass"))
        ranks = self._ranks
        while len(ids) >= 2:
            # apply the earliest-learned merge available; this reproduces the training order
            pair = min(pairwise(ids), key=lambda p: ranks.get(p, 1 << 62))
            rank = ranks.get(pair)
            if rank is None:
                break
            ids = _merge(ids, pair, 256 + rank)
        result = tuple(ids)
        if len(self._cache) >= 1 << 16:  # words repeat, so a cache pays; cap it for huge texts
            self._cache.clear()
        self._cache[piece] = result
        return result

    def encode(self, text: str) -> list[int]:
        """``text`` -> token ids. Works for any string: nothing is ever unknown at the byte level."""
        out: list[int] = []
        for piece in self._split.findall(_check_text(text)):
            out.extend(self._encode_piece(piece))
        return out

    def decode(self, ids: IdSequence, errors: str = "replace") -> str:
        """Token ids -> text. ``decode(encode(s)) == s`` for every string ``s``.

        Ids that a model samples need not form valid UTF-8 (a token may end in the middle of a
        character): such bytes become "\\ufffd" with ``errors="replace"`` (the default); pass
        ``errors="strict"`` to get an exception instead.
        """
        data = b"".join(self._vocab[i] for i in _as_id_list(ids, self.vocab_size))
        try:
            # "surrogatepass" so even a lone surrogate, which encode let through, comes back
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return data.decode("utf-8", errors)

    def tokens(self, text: str) -> list[str]:
        """``text`` cut into its tokens, each shown as a string (see :meth:`token_str`)."""
        return [self.token_str(i) for i in self.encode(text)]

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ByteBPETokenizer",
            "version": _FORMAT_VERSION,
            "pattern": self.pattern,
            "merges": [list(p) for p in self._merges],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ByteBPETokenizer:
        merges, pattern = data.get("merges"), data.get("pattern")
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in m) for m in merges
        ):
            raise ValueError("'merges' should be a list of [id, id] pairs")
        if not isinstance(pattern, str):
            raise ValueError(f"'pattern' should be a regular expression, got {pattern!r}")
        return cls([tuple(m) for m in merges], pattern)


TOKENIZER_KINDS = {cls.__name__: cls for cls in (CharTokenizer, WordTokenizer, SyntheticVocab, ByteBPETokenizer)}


def load_tokenizer(path: str | Path) -> CharTokenizer | WordTokenizer | SyntheticVocab | ByteBPETokenizer:
    """Load a tokenizer of any kind from a JSON file written by its ``save``."""
    data = _read_json(path)
    kind = TOKENIZER_KINDS.get(data["type"])
    if kind is None:
        raise ValueError(f"{path} holds an unknown tokenizer type {data['type']!r}")
    return kind._from_file_data(data, path)
