"""gandiff inspect: statistics and contact sheets on a RecordIO set."""

from __future__ import annotations

import numpy as np

from gandiff.datasets.inspect import main
from gandiff.datasets.recordio import write_recordio


def test_inspect_prints_stats_and_writes_sheets(tmp_path, capsys):
    faces = []
    for label, n in enumerate((2, 3)):
        img = np.zeros((112, 112, 3), np.uint8)
        img[..., 0] = 180 + label  # red: faces have more red than blue
        faces.append([img] * n)
    write_recordio(tmp_path / "rec", faces)
    main([str(tmp_path / "rec"), "--sheets", str(tmp_path / "sheets")])
    out = capsys.readouterr().out
    assert "images: **5**" in out and "identities: **2**" in out and "(recordio)" in out
    sheets = sorted((tmp_path / "sheets").glob("*.png"))
    assert [p.name for p in sheets] == ["000000_0.png", "000001_1.png"]
    from PIL import Image

    sheet = np.asarray(Image.open(sheets[1]))
    assert sheet.shape == (112, 336, 3) and sheet[..., 0].min() == 181 and sheet[..., 2].max() == 0


def test_inspect_names_a_key_missing_from_the_index_in_one_line(tmp_path, capsys):
    import pytest

    write_recordio(tmp_path / "rec", [[np.zeros((112, 112, 3), np.uint8)] * 3])
    idx = tmp_path / "rec" / "train.idx"
    idx.write_text("".join(ln for ln in idx.read_text().splitlines(keepends=True) if not ln.startswith("2\t")))
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "rec"), "--sheets", "none"])
    out = capsys.readouterr()
    assert e.value.code == 2 and "Traceback" not in out.err
    assert out.out.splitlines() == [f"gandiff inspect: {idx}: no record with key 2 (the index lists 4 keys; "
                                    "train.rec should have one line per record: rebuild the .idx or re-export)"]
