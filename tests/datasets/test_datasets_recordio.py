"""insightface RecordIO: the project's writer/reader against an independent reader written from the format."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from gandiff.datasets.readers import open_dataset
from gandiff.datasets.recordio import (MAGIC, RecordIOError, RecordIOReader, encode_record, pack, read_record_at,
                                       unpack, write_recordio)
from gandiff.datasets.sample import decode_image, encode_image


def independent_read(folder):
    """Read train.rec/.idx/property from the published format description alone (no gandiff code).

    dmlc recordio: [u32 magic 0xced7230a][u32 lrec = cflag<<29 | len][len bytes][pad to 4]; cflag 1/2/3
    split records at a magic word that is re-inserted. mxnet IRHeader 'IfQQ' (+ flag float32 labels).
    insightface: key 0 header label=(first identity key, end key); images 1..label[0]-1; identity records
    label=(first image key, end image key).
    """
    offsets = {}
    for line in (folder / "train.idx").read_text().splitlines():
        k, v = line.split("\t")
        offsets[int(k)] = int(v)
    blob = (folder / "train.rec").read_bytes()

    def record(key):
        pos, parts = offsets[key], []
        while True:
            magic, lrec = struct.unpack_from("<II", blob, pos)
            assert magic == 0xCED7230A
            cflag, n = lrec >> 29, lrec & ((1 << 29) - 1)
            parts.append(blob[pos + 8:pos + 8 + n])
            pos += 8 + n + (-n % 4)
            if cflag in (0, 3):
                return struct.pack("<I", 0xCED7230A).join(parts)

    def header(rec):
        flag, label, id_, id2 = struct.unpack_from("<IfQQ", rec, 0)
        if flag:
            labels = struct.unpack_from(f"<{flag}f", rec, 24)
            return flag, labels, id_, id2, rec[24 + 4 * flag:]
        return flag, label, id_, id2, rec[24:]

    flag, (first_id, end), _, _, _ = header(record(0))
    first_id, end = int(first_id), int(end)
    assert flag == 2
    images = [(int(header(record(k))[1]), header(record(k))[4]) for k in range(1, first_id)]
    identities = [tuple(int(x) for x in header(record(k))[1]) for k in range(first_id, end)]
    prop = (folder / "property").read_text()
    return images, identities, prop


@pytest.fixture
def faces():
    rng = np.random.default_rng(0)
    # identity 1 holds a payload-sized image whose bytes we do not control: fine; magic splits are tested below
    return [[rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(k)] for k in (3, 1, 2)]


def test_write_then_read_both_readers(tmp_path, faces):
    counts = write_recordio(tmp_path, faces)
    assert counts == {"images": 6, "classes": 3}
    images, identities, prop = independent_read(tmp_path)
    assert prop == "3,112,112\n"
    assert identities == [(1, 4), (4, 5), (5, 7)]
    expected = [(label, img) for label, group in enumerate(faces) for img in group]
    assert [lab for lab, _ in images] == [lab for lab, _ in expected]
    for (_, data), (_, img) in zip(images, expected):
        assert np.array_equal(decode_image(data, "rec"), img)  # PNG: exact pixels
    ds = open_dataset(tmp_path)
    assert len(ds) == 6 and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 0, 0, 1, 2, 2]
    for i, (lab, img) in enumerate(expected):
        s = ds[i]
        assert s.label == lab and np.array_equal(s.image, img)
        assert ds.read_bytes(i) == images[i][1]


def test_record_layout_matches_rec_builder(tmp_path, faces):
    """Byte-level: header record last in the file with key 0, id2=1; images flag 0 with id=key."""
    write_recordio(tmp_path, faces)
    lines = (tmp_path / "train.idx").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in lines] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert int(lines[0].split("\t")[1]) == 0
    r = RecordIOReader(tmp_path)
    h0 = r.read_raw(0)
    assert h0 == struct.pack("<IfQQ", 2, 0.0, 0, 1) + struct.pack("<2f", 7, 10)
    h, payload = unpack(r.read_raw(2))
    assert (h.flag, h.label, h.id, h.id2) == (0, 0.0, 2, 0) and payload[:8] == b"\x89PNG\r\n\x1a\n"
    h, payload = unpack(r.read_raw(8))
    assert h.flag == 2 and h.label.tolist() == [4.0, 5.0] and h.id == 8 and payload == b""


def test_magic_word_inside_payload_is_split_and_restored():
    m = struct.pack("<I", MAGIC)
    for payload in (m, b"ab" + b"cd" + m + b"xyz", m + m + b"12345", b"abc" + m):  # last: unaligned, no split
        enc = encode_record(payload)
        assert len(enc) % 4 == 0
        assert read_record_at(io.BytesIO(enc), 0) == payload
    enc = encode_record(b"abcd" + m + b"xyz")
    # first part: cflag 1, length 4; second: cflag 3, length 3 (dmlc WriteRecord)
    assert struct.unpack_from("<II", enc, 0) == (MAGIC, (1 << 29) | 4)
    assert struct.unpack_from("<II", enc, 12) == (MAGIC, (3 << 29) | 3)


def test_pack_matches_mxnet_convention():
    assert pack((0, 3.0, 7, 0), b"x") == struct.pack("<IfQQ", 0, 3.0, 7, 0) + b"x"
    assert pack((0, [1, 2], 7, 0), b"") == struct.pack("<IfQQ", 2, 0.0, 7, 0) + struct.pack("<2f", 1, 2)


def test_plain_indexed_rec_without_header(tmp_path):
    """A .rec with no header record (arcface_torch's else-branch): every key is an image, labels in headers."""
    rec, idx = bytearray(), []
    imgs = [np.full((8, 8, 3), v, np.uint8) for v in (10, 200)]
    for key, (label, img) in enumerate(zip((5.0, 1.0), imgs), start=10):
        idx.append(f"{key}\t{len(rec)}\n")
        rec += encode_record(pack((0, [label, 0.0], key, 0), encode_image(img, "png")))  # label as an array
    (tmp_path / "train.rec").write_bytes(bytes(rec))
    (tmp_path / "train.idx").write_text("".join(idx))
    ds = open_dataset(tmp_path / "train.rec")
    assert ds.labels.tolist() == [5, 1] and ds.num_classes == 6
    assert ds[1].image[0, 0].tolist() == [200, 200, 200]


def test_bad_index_is_a_clear_error(tmp_path, faces):
    write_recordio(tmp_path, faces)
    (tmp_path / "train.idx").write_text("1\tnot-a-number\n")
    with pytest.raises(RecordIOError, match=r"train.idx:1"):
        RecordIOReader(tmp_path)
    (tmp_path / "train.idx").write_text("0\t3\n")
    with pytest.raises(RecordIOError, match="magic"):
        RecordIOReader(tmp_path)


def _drop_keys(folder, keys):
    lines = (folder / "train.idx").read_text().splitlines(keepends=True)
    (folder / "train.idx").write_text("".join(ln for ln in lines if int(ln.split("\t")[0]) not in keys))


def test_key_missing_from_the_index_is_the_readers_error_naming_file_and_key(tmp_path, faces):
    from gandiff.datasets.recordio import RecordIOKeyError
    from gandiff.errors import UserError

    write_recordio(tmp_path, faces)  # image keys 1..6
    _drop_keys(tmp_path, {1, 5})
    reader = RecordIOReader(tmp_path)  # opens: the missing images are skipped where they are read
    assert reader.missing_keys == 2 and reader.labels().tolist() == [0, 0, 0, 1, 2, 2]
    with pytest.raises(RecordIOKeyError, match=rf"^{tmp_path / 'train.idx'}: no record with key 5 ") as e:
        reader.read(4)
    assert isinstance(e.value, UserError)
    assert reader.read(5)[0] == 2  # its neighbours read as before
    ds = open_dataset(tmp_path)
    with pytest.raises(RecordIOKeyError, match="no record with key 1 "):
        ds[0]
    _drop_keys(tmp_path, set(range(1, 7)))
    with pytest.raises(RecordIOError, match=r"none of the image keys 1\.\.6"):
        RecordIOReader(tmp_path)


def test_offset_past_the_end_names_the_file_size(tmp_path, faces):
    write_recordio(tmp_path, faces)
    size = (tmp_path / "train.rec").stat().st_size
    lines = (tmp_path / "train.idx").read_text().splitlines()
    lines = [f"2\t{size + 100}" if ln.startswith("2\t") else ln for ln in lines]
    (tmp_path / "train.idx").write_text("\n".join(lines) + "\n")
    reader = RecordIOReader(tmp_path)
    with pytest.raises(RecordIOError, match=rf"train.rec: key 2's offset {size + 100} is past the end of the file "
                                            rf"\({size} bytes\)"):
        reader.read(1)
