import base64
import io

import polars as pl
import pytest

from rift_core import figures

PNG = b"\x89PNG\r\n\x1a\n"


def png_ok(data: bytes) -> None:
    assert data.startswith(PNG)
    try:
        from PIL import Image
    except ImportError:
        import matplotlib.image as mpimg

        assert mpimg.imread(io.BytesIO(data), format="png").ndim == 3
    else:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 50


def render(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def collapse_frame():
    return pl.DataFrame({"method": ["naive"] * 3 + ["rift"] * 3, "epoch": [1, 2, 3] * 2,
                         "loss": [-1.0, -10.0, -100.0, 0.5, 0.4, 0.35], "mean_at_k": [0.4, 0.1, 0.0, 0.4, 0.45, 0.5]})


FIGURES = {
    "loss_curves": lambda: figures.loss_curves({"rift": [1.0, 0.8, 0.7], "naive": [1.0, -2.0, -9.0]}),
    "collapse": lambda: figures.collapse_figure(collapse_frame()),
    "bars": lambda: figures.bars_with_error(
        pl.DataFrame({"scheme": ["constant", "gaussian", "constant", "gaussian"], "bench": ["Avg", "Avg", "GSM8K", "GSM8K"],
                      "mean": [40.0, 41.0, 70.0, 71.0], "std": [1.0, None, 0.5, 0.7]}),
        x="bench", y="mean", err="std", title="reward schemes", hue="scheme"),
    "bars_single": lambda: figures.bars_with_error(pl.DataFrame({"scheme": ["constant"], "mean": [40.0], "std": [None]},
                                                                schema_overrides={"std": pl.Float64}),
                                                   x="scheme", y="mean", err="std", title="one seed"),
    "memory": lambda: figures.accuracy_vs_memory(pl.DataFrame({
        "method": ["sft", "rft", "dpo", "rift"], "peak_memory_gb": [30.0, 31.0, 55.0, 32.0],
        "mean": [38.0, 40.1, 40.5, 42.3], "std": [0.5, 0.6, None, float("nan")]})),
    "memory_single": lambda: figures.accuracy_vs_memory(pl.DataFrame(
        {"method": ["rift"], "peak_memory_gb": [32.0], "mean": [42.3], "std": [None]}, schema_overrides={"std": pl.Float64})),
    "per_k": lambda: figures.lines_per_k(pl.DataFrame({"k": [1, 2, 4, 8, 16], "pct_mixed": [0.0, 20.0, 35.0, 45.0, 50.0],
                                                       "mean_at_3": [30.0, 31.0, 33.0, 34.0, 34.5]}), ["pct_mixed", "mean_at_3"]),
    "per_k_hue": lambda: figures.lines_per_k(pl.DataFrame({"k": [2, 8, 2, 8], "method": ["rift", "rift", "rft", "rft"],
                                                           "mean": [30.0, 33.0, 29.0, 31.0]}), "mean", hue="method"),
    "per_k_single": lambda: figures.lines_per_k(pl.DataFrame({"k": [8], "mean": [30.0]}), ["mean"]),
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_a_valid_png(name):
    png_ok(render(FIGURES[name]()))


def test_save_png_writes_atomically(tmp_path):
    path = figures.save_png(FIGURES["collapse"](), tmp_path / "deep" / "collapse.png")
    assert path == tmp_path / "deep" / "collapse.png"
    png_ok(path.read_bytes())
    assert [p.name for p in path.parent.iterdir()] == ["collapse.png"]  # no temporary left behind


def test_markdown_image_is_a_data_uri():
    md = figures.markdown_image(FIGURES["loss_curves"](), "loss curve")
    prefix = "![loss curve](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    png_ok(base64.b64decode(md[len(prefix):-1]))


def test_markdown_image_closes_a_pyplot_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    figures.markdown_image(fig, "x")
    assert not plt.fignum_exists(fig.number)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="collapse_figure: frame lacks column.*mean_at_k"):
        figures.collapse_figure(collapse_frame().drop("mean_at_k"))
    with pytest.raises(ValueError, match="accuracy_vs_memory: frame lacks column.*peak_memory_gb"):
        figures.accuracy_vs_memory(pl.DataFrame({"method": ["rift"], "mean": [1.0], "std": [0.0]}))
    with pytest.raises(ValueError, match="bars_with_error: frame lacks column.*std"):
        figures.bars_with_error(pl.DataFrame({"x": ["a"], "y": [1.0]}), "x", "y", "std", "t")
    with pytest.raises(ValueError, match="lines_per_k: frame lacks column.*mean_at_3"):
        figures.lines_per_k(pl.DataFrame({"k": [1, 2]}), ["mean_at_3"])
    with pytest.raises(ValueError, match="no rows"):
        figures.collapse_figure(collapse_frame().clear())
    with pytest.raises(ValueError, match="no curves"):
        figures.loss_curves({})


def lines(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def bars(ax) -> list[float]:
    return [round(p.get_height(), 6) for p in ax.patches]


def error_sizes(ax) -> list[float]:
    """Half-lengths of the vertical error bars drawn on `ax`, in drawing order."""
    sizes = []
    for container in ax.containers:
        for segments in getattr(container, "lines", (None, None, ()))[2]:
            sizes += [round(abs(s[1][1] - s[0][1]) / 2, 6) for s in segments.get_segments()]
    return sizes


def test_each_figure_plots_the_values_of_its_frame():
    """What a reader sees: the numbers drawn are the frame's, in its units, under its labels."""
    (ax,) = FIGURES["loss_curves"]().axes
    assert lines(ax) == {"rift": ([1, 2, 3], [1.0, 0.8, 0.7]), "naive": ([1, 2, 3], [1.0, -2.0, -9.0])}

    left, right = FIGURES["collapse"]().axes
    assert lines(left)["naive"] == ([1, 2, 3], [-1.0, -10.0, -100.0])
    assert lines(right)["rift"][1] == pytest.approx([40.0, 45.0, 50.0])  # a fraction drawn in percent
    assert right.get_ylabel() == "validation Mean@k (%)"

    (ax,) = FIGURES["bars"]().axes
    assert bars(ax) == [40.0, 70.0, 41.0, 71.0]  # grouped by hue: constant's bars, then gaussian's
    assert error_sizes(ax) == [1.0, 0.5, 0.0, 0.7]  # a missing std draws no error
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Avg", "GSM8K"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["constant", "gaussian"]

    (ax,) = FIGURES["memory"]().axes
    points = {c.get_label(): tuple(c.lines[0].get_xydata()[0]) for c in ax.containers}
    assert points == {"sft": (30.0, 38.0), "rft": (31.0, 40.1), "dpo": (55.0, 40.5), "rift": (32.0, 42.3)}
    assert error_sizes(ax) == [0.5, 0.6, 0.0, 0.0]  # null and NaN std: no error bar
    assert {t.get_text() for t in ax.texts} == {"sft", "rft", "dpo", "rift"}

    ax_mixed, ax_mean = FIGURES["per_k"]().axes
    (mixed,) = ax_mixed.get_lines()
    assert list(mixed.get_xdata()) == [1, 2, 4, 8, 16] and list(mixed.get_ydata()) == [0.0, 20.0, 35.0, 45.0, 50.0]
    assert ax_mean.get_xscale() == "log" and [t.get_text() for t in ax_mean.get_xticklabels()] == ["1", "2", "4", "8", "16"]

    (ax,) = FIGURES["per_k_hue"]().axes
    assert lines(ax) == {"rift": ([2, 8], [30.0, 33.0]), "rft": ([2, 8], [29.0, 31.0])}
