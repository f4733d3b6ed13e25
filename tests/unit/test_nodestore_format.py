from __future__ import annotations

import base64
import hashlib
import json
import zlib

import orjson

from consumer.storage.nodestore import (
    ZLIB_DEFAULT,
    Compression,
    decode_blob,
    encode_blob,
    event_node_id,
    occurrence_node_id,
)


def test_node_ids_are_sentrys() -> None:
    assert event_node_id(42, "a" * 32) == hashlib.md5(f"42:{'a' * 32}".encode()).hexdigest()
    node = occurrence_node_id("b" * 32, 42)
    assert node == "i-o:" + hashlib.md5(f"{'b' * 32}::42".encode()).hexdigest()
    assert len(node) == 36


def test_round_trip_with_subkeys() -> None:
    document = {"event_id": "x", "tags": [["level", "error"]], "message": "naïve ☃"}
    data = encode_blob(document, {"unprocessed": {"raw": True}})
    main, subkeys = decode_blob(data)
    assert main == document
    assert subkeys == {"unprocessed": {"raw": True}}
    assert zlib.decompress(base64.b64decode(data)).count(b"\n") == 2


def test_reads_a_blob_written_the_way_sentry_writes_it() -> None:
    # simplejson with sort_keys, ensure_ascii, allow_nan; subkey lines after the main document.
    main = json.dumps(
        {"b": 1, "a": "é", "n": float("nan")},
        sort_keys=True,
        ensure_ascii=True,
        separators=(",", ":"),
    )
    blob = main + "\nunprocessed\n" + json.dumps({"z": [1, 2]}, separators=(",", ":"))
    data = base64.b64encode(zlib.compress(blob.encode())).decode()
    document, subkeys = decode_blob(data)
    assert document["a"] == "é" and document["b"] == 1 and document["n"] != document["n"]
    assert subkeys == {"unprocessed": {"z": [1, 2]}}


def test_a_pickled_blob_is_never_unpickled() -> None:
    data = base64.b64encode(zlib.compress(b"\x80\x04\x95...")).decode()
    assert decode_blob(data) == ({}, {})


def test_every_compression_writes_what_zlib_reads() -> None:
    document = {"message": "x" * 3000, "tags": [["a", "b"]] * 50}
    for compression in (
        Compression(),
        Compression("isal", 0),
        Compression("isal", 3),
        ZLIB_DEFAULT,
    ):
        data = encode_blob(document, compression=compression)
        assert orjson.loads(zlib.decompress(base64.b64decode(data))) == document
    assert Compression() == Compression("isal", 1)
