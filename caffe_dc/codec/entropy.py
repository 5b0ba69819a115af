"""What the container asks of an entropy coder, and the stream it gets back.

A quantized record stores two symbol streams (codes and gaps) and, for
each, a table of one small number per symbol (0..``MAX_CODE_LEN``, stored
as nibbles): the code length of the symbol in bits, 0 for a symbol without
a code. A coder builds that table from the symbol counts, codes a stream
with it in blocks of ``block_size`` symbols (each block's starting bit
recorded, so blocks decode independently), and decodes streams given their
tables. The container sizes records from the table alone
(``payload_bits``), so it can choose index widths without coding.

Canonical Huffman (``huffman.HUFFMAN``) is the coder of every file the
format specifies (``docs/format.md``). Another coder is one module with a
``Coder`` subclass and one entry in ``container.CODERS``; its files name it
in the header (``coder``), and a reader that does not know the name refuses
the file.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple

import numpy as np

MAX_CODE_LEN = 15          # a table entry fits a nibble
DEFAULT_BLOCK = 4096       # symbols per independently decodable block
MAX_BLOCK = 1 << 16        # bounds a decoder's Python loop (a hostile file cannot make it spin)


class Stream(NamedTuple):
    """One coded stream: bytes, exact bit count and the block index.

    ``offsets[j]`` is the bit offset where block ``j + 1`` starts (block 0
    starts at bit 0), so there are ``ceil(count / block_size) - 1`` of them.
    """
    payload: bytes
    n_bits: int
    block_size: int
    offsets: np.ndarray  # int64


Job = Tuple[Stream, np.ndarray, int]   # a stream, its table, how many symbols it holds


class Coder:
    """An entropy coder as the container uses it; subclasses give ``name`` and the first three methods.

    Every check on a stream or table read from a file raises ``FormatError``.
    """
    name = ""

    def table(self, counts) -> np.ndarray:
        """Per symbol of the alphabet (``len(counts)``), its code length in bits, uint8 in 0..MAX_CODE_LEN."""
        raise NotImplementedError

    def encode(self, symbols, table, block_size: int = DEFAULT_BLOCK) -> Stream:
        """``symbols`` coded with ``table``, in blocks of ``block_size`` symbols."""
        raise NotImplementedError

    def decode(self, jobs: Sequence[Job], what: Sequence[str] = ()) -> List[np.ndarray]:
        """Every stream of ``jobs`` (all of a file's, at once) back to its symbols (uint16); ``what`` names them."""
        raise NotImplementedError

    def decode_small(self, stream: Stream, table, count: int, what: str = "stream") -> np.ndarray:
        """One short stream of one block (a compact length table)."""
        return self.decode([(stream, table, count)], [what])[0]

    def payload_bits(self, counts, table) -> int:
        """The payload bits of a stream with these symbol counts, without coding it."""
        return int((np.asarray(counts, np.int64) * np.asarray(table, np.int64)).sum())
