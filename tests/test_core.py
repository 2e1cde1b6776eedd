"""Lesson 00's library pieces: `atomic_write` (whole files or none, no litter, the old file's mode) and `patch`."""
import os
import stat

import pytest

import exp.nb_00 as nb00
from exp.nb_00 import atomic_write, patch

from conftest import dead_pid


@pytest.mark.parametrize('data, expected', [(b'\x00bytes', b'\x00bytes'), ('text é', 'text é'.encode()),
                                            (lambda f: f.write(b'from a writer'), b'from a writer')])
def test_atomic_write_writes_bytes_text_or_a_writer(tmp_path, data, expected):
    atomic_write(tmp_path / 'f.bin', data)
    assert (tmp_path / 'f.bin').read_bytes() == expected and os.listdir(tmp_path) == ['f.bin']


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / 'f.txt'
    atomic_write(path, 'old')
    os.chmod(path, 0o600)
    def half(f):
        f.write(b'half of the new')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): atomic_write(path, half)
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['f.txt']
    atomic_write(path, 'new')
    assert path.read_text() == 'new' and stat.S_IMODE(path.stat().st_mode) == 0o600  # the old file's mode


def test_leftovers_of_killed_writers_go_and_live_ones_stay(tmp_path):
    dead, live = f'.f.txt.{dead_pid()}.abc123.tmp', f'.f.txt.{os.getpid()}.xyz789.tmp'
    for name in (dead, live, '.other.txt.1.abc.tmp'): (tmp_path / name).write_bytes(b'partial')
    atomic_write(tmp_path / 'f.txt', 'whole')
    assert sorted(os.listdir(tmp_path)) == sorted([live, '.other.txt.1.abc.tmp', 'f.txt'])
    assert nb00._stale(dead) and not nb00._stale(live) and not nb00._stale('f.txt')


def test_patch_adds_a_documented_method():
    class A: pass
    @patch
    def twice(self: A, x):
        "Two of `x`."
        return 2 * x
    assert A().twice(3) == 6 and A.twice.__doc__ == 'Two of `x`.' and A.twice.__qualname__ == 'A.twice'


def test_tidy_false_leaves_the_folder_unlisted(tmp_path):
    dead = f'.f.txt.{dead_pid()}.abc123.tmp'
    (tmp_path / dead).write_bytes(b'partial')
    atomic_write(tmp_path / 'f.txt', 'whole', tidy=False)   # the caller tidies the folder itself
    assert sorted(os.listdir(tmp_path)) == sorted([dead, 'f.txt'])
