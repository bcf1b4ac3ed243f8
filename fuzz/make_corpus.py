#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpora of fuzz/fuzz_header.c to
fuzz/corpus/header/ and of fuzz/fuzz_shm.c to fuzz/corpus/shm/ (standard
library only: struct + json).

    python3 fuzz/make_corpus.py [OUTDIR [SHM_OUTDIR]]

Seeds are small safetensors files: valid ones covering every dtype name,
metadata, "dlpx.checksums" (valid and malformed), scalars, empty tensors and
multi-dimensional tensors, plus malformed files (bad lengths, gaps, overlaps,
bad JSON).  The segment seeds are images as dlpx_segment_create lays them out
(header padded to 64 bytes, a "dlpx.segment" id), images with bad ids, and
the descriptor server's requests and replies.  Rerunning rewrites the generated seeds; other files in OUTDIR
(the regression seeds, regress-*: minimized inputs that found bugs) are left
alone.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus", "header")
SHM_OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "corpus", "shm")

# name -> bits per element (src/io/st_dtype.c)
DTYPES = {
    "BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * DTYPES[dtype] // 8


def header_bytes(header, pad=True, align=8):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:  # the reference writer pads with spaces to 8 bytes (segments: 8 + N to 64)
        text += b" " * (-(8 + len(text)) % align)
    return text


def file_bytes(tensors, metadata=None, fill=None, pad=True, align=8):
    """tensors: list of (name, dtype, shape); data laid out in that order."""
    header, data, at = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for i, (name, dtype, shape) in enumerate(tensors):
        size = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        data += bytes(((fill if fill is not None else i * 37) + k) & 255 for k in range(size))
        at += size
    text = header_bytes(header, pad, align)
    return struct.pack("<Q", len(text)) + text + data


def raw(header_text, data=b"", length=None):
    if isinstance(header_text, str):
        header_text = header_text.encode()
    n = len(header_text) if length is None else length
    return struct.pack("<Q", n) + header_text + data


# XXH3-64 (dlpx_xxh3) of the bytes (first + k) & 255 for k < length, keyed
# by (first, length): computed once with libdlpx, as the standard library
# has no XXH3.  Seeds made with real=True carry checksums that match.
KNOWN_XXH3 = {
    (0, 24): "eb173b2aa3b5397a",
    (37, 5): "97deb25a88831a91",
    (0, 4096): "eb4b7c3707879151",
    (0, 7): "0cd2084a62406b69",
    (37, 9): "04836a49836d90c9",
}


def checksums(tensors, chunk=16777216, hashes=None, algorithm="xxh3-64", real=False):
    """The dlpx.checksums value of tensors laid out by file_bytes: wrong
    hashes (seeds only) unless real, or those given in hashes."""
    sums = {}
    for i, (name, dtype, shape) in enumerate(tensors):
        size = nbytes(dtype, shape)
        count = (size + chunk - 1) // chunk
        if real:
            sums[name] = "".join(
                KNOWN_XXH3[((i * 37 + c * chunk) & 255, min(chunk, size - c * chunk))]
                for c in range(count))
        else:
            sums[name] = "0123456789abcdef" * count
        sums[name] = (hashes or {}).get(name, sums[name])
    return json.dumps({"algorithm": algorithm, "chunk": chunk, "tensors": sums},
                      separators=(",", ":"), sort_keys=True)


def seeds():
    s = {}
    # every dtype name: all in one file, and in groups with other shapes
    names = list(DTYPES)
    s["dtypes-all"] = file_bytes([("t_" + d.lower(), d, [4]) for d in names])
    shapes = [[3], [2, 4], [2, 2, 2], [1, 8]]
    for g in range(0, len(names), 6):
        group = names[g:g + 6]
        s["dtypes-%d" % (g // 6)] = file_bytes(
            [(d.lower(), d, shapes[k % len(shapes)]) for k, d in enumerate(group)])

    s["empty-header"] = raw("{}")
    s["scalar"] = file_bytes([("s", "F32", [])])
    s["empty-tensors"] = file_bytes([("a", "F32", [0]), ("b", "I64", [3, 0, 2]), ("c", "U8", [2])])
    s["only-empty"] = file_bytes([("z", "F16", [0, 5])])
    s["bigrow"] = file_bytes([("rows", "U8", [2, 4100])])  # runs of 4 KiB and more
    s["matrix"] = file_bytes([("w", "F32", [4, 8]), ("b", "F32", [8])])
    s["cube"] = file_bytes([("x", "I16", [3, 4, 5])])
    # fuzz_header.c cuts the file after opening it when the 7th byte from
    # the end has its low 4 bits set; the 8th from the end says where
    shrinks = bytearray(file_bytes([("rows", "U8", [2, 4100]), ("t", "F32", [3])]))
    shrinks[-7], shrinks[-8] = 0xff, 200
    s["shrinks"] = bytes(shrinks)
    s["metadata"] = file_bytes([("t", "BF16", [2, 2])],
                               metadata={"format": "pt", "author": "dlpx", "": "empty key",
                                         "unicode": "\u00e9\u4e2d\U0001f600"})
    s["metadata-null"] = raw('{"__metadata__":null,"t":{"dtype":"U8","shape":[1],'
                             '"data_offsets":[0,1]}}', b"x")
    s["metadata-not-object"] = raw('{"__metadata__":["x"]}')

    t = [("a", "F32", [2, 3]), ("b", "U8", [5]), ("e", "I32", [0])]
    s["checksums"] = file_bytes(t, metadata={"dlpx.checksums": checksums(t, real=True)})
    s["checksums-mismatch"] = file_bytes(t, metadata={"dlpx.checksums": checksums(t)})
    t4 = [("big", "U8", [4096 * 2 + 7]), ("small", "I8", [9])]
    s["checksums-chunks"] = file_bytes(
        t4, metadata={"dlpx.checksums": checksums(t4, chunk=4096, real=True), "format": "np"})
    s["checksums-other-algorithm"] = file_bytes(
        t, metadata={"dlpx.checksums": checksums(t, algorithm="sha256")})
    s["checksums-bad-chunk"] = file_bytes(t, metadata={"dlpx.checksums": checksums(t, chunk=100)})
    s["checksums-wrong-count"] = file_bytes(
        t, metadata={"dlpx.checksums": checksums(t, hashes={"b": "00"})})
    s["checksums-unknown-name"] = file_bytes(
        [("a", "U8", [4])],
        metadata={"dlpx.checksums": json.dumps(
            {"algorithm": "xxh3-64", "chunk": 4096, "tensors": {"nope": "0000000000000000"}})})
    s["checksums-upper-hex"] = file_bytes(
        [("a", "U8", [4])], metadata={"dlpx.checksums": checksums(
            [("a", "U8", [4])], hashes={"a": "0123456789ABCDEF"})})
    s["checksums-not-json"] = file_bytes([("a", "U8", [4])], metadata={"dlpx.checksums": "{nope"})

    # malformed
    s["bad-json"] = raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]', b"\0" * 4)
    s["bad-length"] = raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x",
                          length=1 << 40)
    s["gap"] = raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                   '"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}', b"abc")
    s["overlap"] = raw('{"a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},'
                       '"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"ab")
    s["truncated"] = file_bytes([("a", "F64", [4])])[:-5]
    s["trailing-data"] = file_bytes([("a", "U8", [2])]) + b"extra"
    s["size-mismatch"] = raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"abcd")
    s["unknown-dtype"] = raw('{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}',
                             b"\0" * 16)
    s["subbyte-odd"] = raw('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"\0\0")
    s["huge-shape"] = raw('{"a":{"dtype":"F64","shape":[4294967296,4294967296,16],'
                          '"data_offsets":[0,0]}}')
    s["huge-empty"] = file_bytes([("a", "F64", [0, 9223372036854775807]), ("b", "U8", [1])])
    s["ndim-128"] = file_bytes([("a", "I8", [1] * 127 + [2])])
    s["negative"] = raw('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', b"x")
    s["duplicate"] = raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                         '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"xy")
    s["not-object"] = raw('[1,2,3]')
    # JSON corners for the differential check against jansson (json.c):
    # escapes, surrogates, UTF-8, numbers at the edges of long long and of
    # double, deep nesting, duplicates in nested and large objects
    t = [("a", "U8", [1])]
    s["json-escapes"] = raw('{"\\u0061\\n\\t\\"\\\\\\/\\ud83d\\ude00\u00e9":'
                            '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x")
    s["json-utf8"] = raw('{"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf":'
                         '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'.encode("latin-1"), b"x")
    s["json-numbers"] = raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],'
                            '"n":[-0,9223372036854775807,-9223372036854775808,1.0,1e2,-0.0,'
                            '1.7976931348623157e308,4.9e-324,1e-400,0.5E+3]}}', b"x")
    s["json-overflow"] = raw('{"a":{"dtype":"U8","shape":[9223372036854775808],'
                             '"data_offsets":[0,1e999]}}', b"x")
    s["json-deep"] = raw('{"__metadata__":null,"a":{"dtype":"U8","shape":[1],'
                         '"data_offsets":[0,1],"x":' + "[" * 2047 + "]" * 2047 + '}}', b"x")
    s["json-nested-dup"] = raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],'
                               '"x":{"k":1,"k":2}}}', b"x")
    big = ",".join('"t%d":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}' % (i, i, i + 1)
                   for i in range(40))
    s["json-large-object"] = raw("{" + big + "}", b"x" * 40)
    s["json-large-dup"] = raw("{" + big + ',"t7":1}', b"x" * 40)
    s["json-bad"] = raw('{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1],'
                        '"s":"\\ud800","t":"\xed\xa0\x80"}}'.encode("latin-1"), b"x")
    return s


SEGMENT_ID = "0123456789abcdef0123456789abcdef"


def segment(tensors, metadata=None, seg_id=SEGMENT_ID):
    """An image as dlpx_segment_create makes it."""
    meta = dict(metadata or {})
    if seg_id is not None:
        meta["dlpx.segment"] = seg_id
    return file_bytes(tensors, metadata=meta, align=64)


def shm_seeds():
    s = {}
    s["seg-one"] = segment([("x", "F32", [3, 5])])
    s["seg-many"] = segment([("w", "BF16", [4, 8]), ("b", "F32", [8]), ("i", "I64", [2]),
                             ("m", "BOOL", [7]), ("s", "U8", []), ("f4", "F4", [6])],
                            metadata={"format": "pt"})
    s["seg-empty"] = segment([])
    s["seg-zero-size"] = segment([("z", "F64", [0, 4]), ("e", "I8", [0])])
    s["seg-no-id"] = file_bytes([("x", "U8", [4])], align=64)
    s["seg-bad-id-upper"] = segment([("x", "U8", [4])], seg_id=SEGMENT_ID.upper())
    s["seg-bad-id-short"] = segment([("x", "U8", [4])], seg_id="0123")
    s["seg-bad-id-long"] = segment([("x", "U8", [4])], seg_id=SEGMENT_ID + "0")
    s["seg-truncated"] = segment([("x", "F32", [16])])[:-7]
    s["seg-trailing"] = segment([("x", "U8", [2])]) + b"\0" * 64
    t = [("a", "F32", [2, 3]), ("b", "U8", [5])]
    s["seg-checksums"] = segment(t, metadata={"dlpx.checksums": checksums(t, real=True)})
    s["seg-aliases"] = segment([("a", "F32", [2])],
                               metadata={"dlpx.aliases": json.dumps({"b": "a"})})
    s["request"] = b"DLPXSHM1" + SEGMENT_ID.encode()
    s["request-upper"] = b"DLPXSHM1" + SEGMENT_ID.upper().encode()
    s["request-short"] = b"DLPXSHM1" + SEGMENT_ID[:20].encode()
    s["reply-found"] = b"DLPXSHM1" + struct.pack("<i", 0)
    s["reply-not-found"] = b"DLPXSHM1" + struct.pack("<i", 1)
    s["reply-other"] = b"DLPXSHM1" + struct.pack("<i", 7)
    return s


def write(outdir, seeds_):
    os.makedirs(outdir, exist_ok=True)
    for name, data in sorted(seeds_.items()):
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds_), outdir))


def main():
    write(OUT, seeds())
    write(SHM_OUT, shm_seeds())


if __name__ == "__main__":
    main()
