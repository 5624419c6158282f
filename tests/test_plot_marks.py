"""--plot of a sweep: INVALID runs drawn hollow with a legend entry, stored intervals drawn as error bars."""
import h5py
import numpy as np
import pytest

from mpirunner.report import figures as plot, rows
from tests.test_report import make_file


def test_sweep_plot_marks_invalid_runs_and_draws_intervals(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = make_file(tmp_path / "sweep.h5", batch_sizes=(1, 4, 16), steps=60)
    with h5py.File(path, "r+") as h5:
        h5["runs/bs00004"].attrs["valid"] = False
        h5["runs/bs00004"].attrs["validity_reason"] = "too short"
        stored = {name: (h5["runs"][name].attrs["throughput"], h5["runs"][name].attrs["throughput_ci95_low"],
                         h5["runs"][name].attrs["throughput_ci95_high"]) for name in h5["runs"]}
    figure = plot._sweep_figure(plt, [rows.load(path)])
    by_batch = figure.axes[0]
    bars = by_batch.containers
    assert len(bars) == 3
    hollow = [bar for bar in bars if bar.lines[0].get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and hollow[0].lines[0].get_xdata()[0] == 4
    # the error bar of batch 16 spans its stored interval
    bar16 = next(bar for bar in bars if bar.lines[0].get_xdata()[0] == 16)
    segment = bar16.lines[2][0].get_segments()[0]
    value, low, high = stored["bs00016"]
    assert sorted(segment[:, 1]) == pytest.approx([low, high])
    assert "INVALID run (hollow)" in [text.get_text() for text in by_batch.get_legend().get_texts()]
    plt.close(figure)


def test_a_sweep_without_invalid_runs_has_no_invalid_legend_entry(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plot._sweep_figure(plt, [rows.load(make_file(tmp_path / "ok.h5", batch_sizes=(1, 4)))])
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "INVALID run (hollow)" not in labels and len(figure.axes[0].containers) == 2
    assert np.all([bar.lines[0].get_markerfacecolor() != "none" for bar in figure.axes[0].containers])
    plt.close(figure)
