import json
import os
import shutil
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


def test_atomic_write_on_full_disk_raises_write_error_and_leaves_nothing(small_disk):
    from loki_pipeline.errors import LokiWriteError

    disk = small_disk(64 * 1024)
    out = disk / "big.json"
    with pytest.raises(LokiWriteError, match="big.json.*No space left"):
        write_json(out, ["x" * 1000] * 200)
    assert list(disk.iterdir()) == []  # no temp file, no output
    small_disk.grow(4 << 20)
    write_json(out, ["x" * 1000] * 200)
    assert len(json.loads(out.read_text())) == 200


def test_atomic_dir_on_full_disk_keeps_old_output(small_disk):
    from loki_pipeline.errors import LokiWriteError

    disk = small_disk(64 * 1024)
    out = disk / "model"
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "old").write_text("keep")
    with pytest.raises(LokiWriteError), atomic_path(out, is_dir=True) as tmp:
        (tmp / "weights").write_bytes(b"\0" * (1 << 20))
    assert sorted(p.name for p in disk.iterdir()) == ["model"]
    assert (out / "old").read_text() == "keep"


@pytest.mark.parametrize("name", ["..", "."])
def test_atomic_path_refuses_dot_names(tmp_path, name):
    from loki_pipeline.errors import LokiInputError

    (tmp_path / "keep").mkdir()
    with pytest.raises(LokiInputError), atomic_path(f"{tmp_path}/keep/{name}", is_dir=True):
        pass
    assert (tmp_path / "keep").is_dir()


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-x", ".hidden", "", "a b", 3])
def test_check_name_refuses_unsafe_segments(name):
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.io import check_name

    with pytest.raises(LokiInputError):
        check_name(name, "model name")


def test_check_name_accepts_config_names():
    from loki_pipeline.io import check_name

    for name in ("smollm2-135m", "Qwen2.5-0.5B", "toolace", "loki_q10", "a.b_c-d"):
        assert check_name(name) == name


def test_remove_tree_refuses_outside_its_root(tmp_path):
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.io import remove_tree

    root = tmp_path / "resources" / "models"
    (root / "m").mkdir(parents=True)
    for target in (root / "..", root, tmp_path / "elsewhere", root / "m" / ".." / ".."):
        with pytest.raises(LokiInputError, match="outside"):
            remove_tree(target, root)
    assert root.is_dir()
    remove_tree(root / "m", root)
    assert not (root / "m").exists()


def test_exclusive_lock_refuses_a_second_holder_in_another_process(tmp_path):
    import subprocess
    import sys
    import textwrap

    from loki_pipeline.errors import LokiBusyError
    from loki_pipeline.io import exclusive_lock, lock_path

    out = tmp_path / "x.h5"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from loki_pipeline.io import exclusive_lock
        with exclusive_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        busy = rf"in use by another run \(process {proc.pid}"
        with pytest.raises(LokiBusyError, match=busy), exclusive_lock(out):
            pass
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    with exclusive_lock(out) as lock:  # released when the holder ends
        assert lock == lock_path(out) and lock.exists()
    assert not lock_path(out).exists()


def test_exclusive_lock_is_released_when_the_holder_is_killed(tmp_path):
    import signal
    import subprocess
    import sys

    from loki_pipeline.io import exclusive_lock

    out = tmp_path / "y.json"
    code = (
        "from loki_pipeline.io import exclusive_lock\n"
        f"with exclusive_lock({str(out)!r}):\n    print('locked', flush=True)\n"
        "    import time; time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with exclusive_lock(out):  # the stale lock file is no obstacle
        pass


def test_content_fingerprint_follows_content_not_mtime(tmp_path, monkeypatch):
    import loki_pipeline.io as io

    monkeypatch.setattr(io, "SAMPLE_ABOVE_BYTES", 1024)  # exercise the sampled path too
    ckpt = tmp_path / "m"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"a": 1}')
    weights = bytearray(os.urandom(200_000))
    (ckpt / "model.safetensors").write_bytes(bytes(weights))
    first = io.content_fingerprint(ckpt)
    os.utime(ckpt / "model.safetensors", (0, 0))
    assert io.content_fingerprint(ckpt) == first  # touched, same content
    copy = tmp_path / "copy"
    shutil.copytree(ckpt, copy)
    assert io.content_fingerprint(copy) == first
    weights[100_000:100_100] = os.urandom(100)  # "fine-tuned": values move in place
    (ckpt / "model.safetensors").write_bytes(bytes(weights))
    assert io.content_fingerprint(ckpt) != first
    (copy / "config.json").write_text('{"a": 2}')
    assert io.content_fingerprint(copy) != first


def test_atomic_path_names_the_output_when_its_folder_cannot_be_made(tmp_path):
    from loki_pipeline.errors import LokiWriteError

    (tmp_path / "file").write_text("")
    with (
        pytest.raises(LokiWriteError, match="out.json"),
        atomic_path(tmp_path / "file" / "out.json"),
    ):
        pass


def test_safetensors_full_disk_error_is_a_write_error(small_disk):
    import torch
    from safetensors.torch import save_file

    from loki_pipeline.errors import LokiWriteError

    disk = small_disk(64 * 1024)
    with pytest.raises(LokiWriteError, match="No space left"), atomic_path(disk / "w") as tmp:
        save_file({"w": torch.zeros(1 << 16)}, str(tmp))
    assert list(disk.iterdir()) == []


def test_exclusive_lock_works_on_a_full_disk(small_disk):
    import subprocess
    import sys

    from loki_pipeline.io import exclusive_lock

    disk = small_disk(16 * 1024)
    (disk / "filler").write_bytes(b"\0" * (16 * 1024))  # every block taken
    out = disk / "out.h5"
    second = f"from loki_pipeline.io import exclusive_lock\nwith exclusive_lock({str(out)!r}): pass"
    with exclusive_lock(out) as lock:
        assert lock.is_file()  # an empty file takes an inode, no block
        held = subprocess.run([sys.executable, "-c", second], capture_output=True, text=True)
        assert held.returncode != 0 and "in use by another run" in held.stderr
    assert not lock.exists()  # released and removed
    free = subprocess.run([sys.executable, "-c", second], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_a_second_writer_of_any_output_is_told_it_is_in_use(tmp_path):
    import subprocess
    import sys

    from loki_pipeline.errors import LokiBusyError
    from loki_pipeline.io import exclusive_lock

    out = tmp_path / "general.json"
    code = (
        "import sys\nfrom loki_pipeline.io import atomic_path\n"
        f"with atomic_path({str(out)!r}) as tmp:\n"
        "    tmp.write_text('first')\n    print('writing', flush=True)\n    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        with pytest.raises(LokiBusyError, match="general.json: in use by another run"):
            write_json(out, {"second": True})
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    assert out.read_text() == "first"
    # a stage that locks its output and then writes it does not lock itself out
    with exclusive_lock(out), exclusive_lock(out):
        write_json(out, {"again": True})
    assert json.loads(out.read_text()) == {"again": True}
    assert list(tmp_path.iterdir()) == [out]  # no lock or temp left
