"""CRC32C (Castagnoli), the checksum of the TFRecord framing, and the mask TFRecord applies to it.

`zlib.crc32` is the IEEE polynomial, a different checksum. The C implementation of the `google_crc32c` or
`crc32c` package is used when one is installed; otherwise a table-driven pure-Python loop (8-10 MB/s here,
about a minute for the 499 MB of nasbench_only108.tfrecord; slicing-by-8 was only 1.5x faster).
"""

_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reflected
_MASK_DELTA = 0xA282EAD8  # TFRecord's mask constant (TensorFlow core/lib/hash/crc32c.h)


def _make_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLYNOMIAL if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data):
    """CRC32C of `data` (bytes-like) in pure Python."""
    crc = 0xFFFFFFFF
    table = _TABLE  # a local name: this loop is the hot path of a converter without a C backend
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_backend():
    try:
        import google_crc32c

        # Without its C extension the package falls back to a pure-Python loop no faster than ours.
        if getattr(google_crc32c, "implementation", "c") == "c":
            return "google_crc32c", google_crc32c.value
    except ImportError:
        pass
    try:
        import crc32c as crc32c_package

        return "crc32c", crc32c_package.crc32c
    except (ImportError, AttributeError):
        pass
    return "pure Python", crc32c_python


# `crc32c(data)`: the CRC32C of bytes-like `data` from the fastest implementation installed; BACKEND names it.
BACKEND, crc32c = _fast_backend()


def masked_crc32c(data):
    """The CRC32C of `data` as a TFRecord stores it: rotated right by 15 bits plus a constant, mod 2**32."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
