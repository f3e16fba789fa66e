"""Helpers shared by the tests/reference/make_*.py scripts (run from any directory:
Python puts the script's own folder, tests/reference, on sys.path)."""


def fnv1a64(data):
    """64-bit FNV-1a of a bytes object; the C tests hash token ids the same way."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
