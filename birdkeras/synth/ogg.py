"""Makes libsndfile's OGG output reproducible.

libsndfile seeds each Ogg stream's serial number from the clock, so two runs with the
same seed would write different bytes. We rewrite every page's serial number to a value
derived from the file's seed and recompute the page CRC (Ogg's CRC-32: polynomial
0x04C11DB7, initial value 0, no reflection, no final XOR).
"""

from __future__ import annotations

from pathlib import Path


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) & 0xFF) ^ byte]
    return crc


def set_serial(path: str | Path, serial: int) -> None:
    """Rewrites the stream serial of every page in the Ogg file at `path`."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    pos = 0
    while pos + 27 <= len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: no Ogg page at byte {pos}")
        num_segments = data[pos + 26]
        body = sum(data[pos + 27 : pos + 27 + num_segments])
        end = pos + 27 + num_segments + body
        data[pos + 14 : pos + 18] = (serial & 0xFFFFFFFF).to_bytes(4, "little")
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = ogg_crc(bytes(data[pos:end])).to_bytes(4, "little")
        pos = end
    path.write_bytes(bytes(data))
