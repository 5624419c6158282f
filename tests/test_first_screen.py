"""The first screen: bad inputs a newcomer meets end in one line and exit 2, on every rank, with nothing written;
an output file belongs to one job at a time; the sweep table stays readable."""
import os
import subprocess
import sys
import time

from tests.conftest import REPO, TINY, mpiexec_path, run_cli, write_jpegs


def no_traceback(result):
    return "Traceback" not in result.stdout + result.stderr


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]


# ---------------------------------------------------------------- a config that is not text

def test_a_config_file_of_random_bytes_is_one_line_naming_the_file(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_bytes(bytes(range(128, 256)) * 4)
    result = run_cli(["--config", config, "--output", tmp_path / "out.h5"])
    assert result.returncode == 2, result.stderr
    assert no_traceback(result)
    lines = error_lines(result)
    assert len(lines) == 1 and str(config) in lines[0] and "UTF-8" in lines[0], result.stderr
    assert not (tmp_path / "out.h5").exists()


def test_a_config_of_random_bytes_ends_every_rank_alike(tmp_path):
    config = tmp_path / "bench"  # no .yaml suffix: still read as the file it names
    config.write_bytes(os.urandom(512).replace(b"\n", b"\xff"))
    result = run_cli(["--config", config], ranks=2)
    assert result.returncode == 2, result.stderr
    assert no_traceback(result)
    assert error_lines(result) and all(str(config) in line for line in error_lines(result))


# ---------------------------------------------------------------- an image folder that cannot be read

def unreadable_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "noise.jpg").write_bytes(os.urandom(3000))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_a_folder_of_unreadable_images_is_exit_2_on_every_rank_before_any_step(tmp_path):
    folder = unreadable_folder(tmp_path / "images")
    output = tmp_path / "out" / "run.h5"
    result = run_cli([*TINY, "--iterations", "3", "--data", "real", "--data-path", folder, "--output", output],
                     ranks=2)
    assert result.returncode == 2, result.stdout + result.stderr
    assert no_traceback(result) and "MPI_Abort" not in result.stderr and "Abort" not in result.stdout
    lines = error_lines(result)
    assert lines, result.stderr
    assert f"{folder}/empty.jpg" in lines[0]  # the first unreadable file, in sorted order
    assert "2 of 2 image file(s) unreadable" in lines[0]  # the .txt is not an image file
    assert "throughput:" not in result.stdout  # no step was timed
    assert not output.exists()
    assert not output.parent.exists() or not list(output.parent.iterdir())


def test_some_unreadable_images_are_skipped_with_one_warning(tmp_path):
    folder = unreadable_folder(tmp_path / "images")
    write_jpegs(folder, 1)  # sorted: empty.jpg, img000.jpg, noise.jpg: rank 0's share (1st, 3rd) is unreadable
    output = tmp_path / "run.h5"
    result = run_cli([*TINY, "--iterations", "3", "--data", "real", "--data-path", folder, "--output", output],
                     ranks=2)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "image file(s) unreadable" in line]
    assert len(warnings) == 1, warnings
    assert "2 of 3 image file(s) unreadable" in warnings[0] and "empty.jpg" in warnings[0]
    assert output.exists()  # rank 0 took the readable image instead of its unreadable share
