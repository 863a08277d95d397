import os
import stat

import pytest

from loki_pipeline.io import atomic_path, write_json


def test_atomic_file_appears_only_on_success(tmp_path):
    out = tmp_path / "a.json"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    write_json(out, {"x": 1})
    assert out.read_text().strip() == '{\n  "x": 1\n}'


def test_atomic_dir_replaces_old_output_only_on_success(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old").write_text("keep")
    with pytest.raises(RuntimeError), atomic_path(out, is_dir=True) as tmp:
        (tmp / "new").write_text("partial")
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["old"]
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "new").write_text("done")
    assert sorted(p.name for p in out.iterdir()) == ["new"]


def test_atomic_outputs_get_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "f.json", [])
        with atomic_path(tmp_path / "d", is_dir=True):
            pass
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
