"""Light HTML reports: embedded photo grids become JPEG, plots palette PNG, nothing is lost."""

from __future__ import annotations

import base64
import io
import re

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402

from lfhelpers.pipeline.execute import export_html  # noqa: E402
from lfhelpers.pipeline.lighten import MAX_WIDTH, lighten_file, lighten_html  # noqa: E402

EMBEDDED = re.compile(r"data:(image/[a-z]+);base64,([A-Za-z0-9+/=\s]+)")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _photo_grid(width: int = 1800, height: int = 600) -> bytes:
    """A smooth colourful picture with noise: like photos, far more than 4,096 colours."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, (x + y) % 256], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    return _png(Image.fromarray(rgb).convert("RGBA"))


def _plot() -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.bar(["ball", "card", "key"], [3, 5, 2])
    ax.set_title("photos per class")
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _figures(html: str) -> list[tuple[str, Image.Image]]:
    return [(mime, Image.open(io.BytesIO(base64.b64decode(b))))
            for mime, b in EMBEDDED.findall(html)]


def test_photos_become_jpeg_and_plots_stay_sharp_png(tmp_path):
    photo, plot = _photo_grid(), _plot()
    html = ("<html><body><p>before</p>"
            f'<img src="data:image/png;base64,{base64.b64encode(photo).decode()}">'
            f'<img src="data:image/png;base64,{base64.b64encode(plot).decode()}">'
            "<p>after</p></body></html>")
    light, report = lighten_html(html)
    assert report.figures == 2 and report.jpeg == 1 and report.png == 1
    assert len(light) < len(html) / 3
    assert light.startswith("<html><body><p>before</p>")
    assert light.endswith("<p>after</p></body></html>")
    (jpeg_mime, jpeg), (png_mime, png) = _figures(light)
    assert jpeg_mime == "image/jpeg" and jpeg.format == "JPEG"
    assert jpeg.width == MAX_WIDTH and jpeg.height == round(600 * MAX_WIDTH / 1800)
    assert png_mime == "image/png" and png.size == Image.open(io.BytesIO(plot)).size
    original = np.asarray(Image.open(io.BytesIO(plot)).convert("RGB"), dtype=int)
    assert np.abs(np.asarray(png.convert("RGB"), dtype=int) - original).mean() < 2
    page = tmp_path / "page.html"
    page.write_text(light, encoding="utf-8")
    again = lighten_file(page)  # a second pass finds nothing to gain
    assert again.jpeg == again.png == 0 and page.read_text(encoding="utf-8") == light


def test_see_through_figures_and_broken_data_are_left_alone():
    clear = _png(Image.new("RGBA", (40, 30), (255, 0, 0, 0)))
    html = (f'<img src="data:image/png;base64,{base64.b64encode(clear).decode()}">'
            '<img src="data:image/png;base64,AAAA">')
    light, report = lighten_html(html)
    assert light == html and report.jpeg == report.png == 0


def test_export_html_embeds_light_figures(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plots.image_grid(...)")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(_photo_grid()).decode(),
                              "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# A report"), cell]
    path = tmp_path / "01_report.ipynb"
    nbformat.write(nb, path)
    html = export_html(path).read_text(encoding="utf-8")
    figures = [(mime, im) for mime, im in _figures(html) if im.width > 8]  # not the favicon
    assert [mime for mime, _ in figures] == ["image/jpeg"]
    assert figures[0][1].width == MAX_WIDTH
