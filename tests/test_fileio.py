import pytest

from omnipath_lvlm.fileio import atomic_open, atomic_write_bytes, atomic_write_text


def test_atomic_writes_replace_whole_files(tmp_path):
    target = atomic_write_text(tmp_path / "sub" / "a.txt", "first")
    assert target.read_text() == "first"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "kept")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
