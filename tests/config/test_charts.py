"""The SVG charts: well-formed XML, bars and points where their values say, escaped text, empty states."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from config.charts import Series, grouped_bars, histogram, line_chart, nice_ticks, stacked_bars
from tests.pages import SCRIPT

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    return root


def rects(root: ET.Element, css: str) -> list[ET.Element]:
    return [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == f"s-{css}" and rect.get("data-value")]


def test_stacked_bars_are_proportional_to_their_values_and_stack():
    svg = stacked_bars(
        title="Runs",
        labels=["09:00", "10:00", "11:00"],
        series=[Series("succeeded", [4, 0, 2], "succeeded"), Series("failed", [2, 1, 0], "failed")],
    )
    root = parse(svg)
    ok, bad = rects(root, "succeeded"), rects(root, "failed")
    assert [float(r.get("data-value")) for r in ok] == [4, 2]
    assert [float(r.get("data-value")) for r in bad] == [2, 1]
    unit = float(ok[0].get("height")) / 4
    assert unit > 0
    for rect in ok + bad:
        assert float(rect.get("height")) == pytest.approx(unit * float(rect.get("data-value")), abs=0.15)
    # The failed part of the first bar sits on top of its succeeded part.
    assert float(bad[0].get("y")) + float(bad[0].get("height")) == pytest.approx(float(ok[0].get("y")), abs=0.15)
    # Every bar has its tooltip, and the legend names every series.
    assert [r.find(f"{SVG}title").text for r in ok] == ["succeeded, 09:00: 4", "succeeded, 11:00: 2"]
    (legend_group,) = root.findall(f".//{SVG}g[@class='chart-legend']")
    legend = [t.text for t in legend_group.iter(f"{SVG}text")]
    assert legend == ["succeeded", "failed"]
    assert root.find(f"{SVG}title").text == "Runs"


def test_bars_link_where_links_are_given_and_urls_are_escaped():
    svg = stacked_bars(
        title="Runs", labels=["a", "b"], series=[Series("failed", [1, 2], "failed", links=["/runs/?a=1&b=2", None])]
    )
    root = parse(svg)
    links = list(root.iter(f"{SVG}a"))
    assert [a.get("href") for a in links] == ["/runs/?a=1&b=2"]
    assert "&amp;b=2" in svg


def test_text_from_operators_is_escaped():
    svg = stacked_bars(title=f"Runs of {SCRIPT}", labels=[SCRIPT], series=[Series(SCRIPT, [3], SCRIPT)])
    assert "<script>" not in svg
    root = parse(svg)
    assert root.find(f"{SVG}title").text == f"Runs of {SCRIPT}"
    # The class is reduced to safe characters.
    assert all(set(r.get("class")) <= set("s-abcdefghijklmnopqrstuvwxyz0123456789_") for r in root.iter(f"{SVG}rect"))
    line = line_chart(title=SCRIPT, labels=['"x"'], series=[Series(SCRIPT, [1.0])])
    assert "<script>" not in line
    assert parse(line).find(f"{SVG}desc").text.startswith(SCRIPT)


@pytest.mark.parametrize(
    "svg",
    [
        stacked_bars(title="Runs", labels=["a", "b"], series=[Series("x", [0, 0])], empty="No runs in this window."),
        stacked_bars(title="Runs", labels=[], series=[], empty="No runs in this window."),
        line_chart(title="Runs", labels=["a"], series=[Series("x", [None])], empty="No runs in this window."),
        histogram(title="Runs", labels=["≤ 1 s", "> 1 s"], counts=[0, 0], empty="No runs in this window."),
    ],
)
def test_empty_data_renders_a_message(svg):
    root = parse(svg)
    texts = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart-empty"]
    assert texts == ["No runs in this window."]
    assert not list(root.iter(f"{SVG}rect")) and not list(root.iter(f"{SVG}circle"))
    assert "No runs in this window." in root.get("aria-label")


def test_line_chart_points_and_gaps():
    svg = line_chart(
        title="Latency",
        labels=["a", "b", "c", "d"],
        series=[Series("p50", [10, 20, None, 40], "p50"), Series("p95", [30, 60, 90, 120], "p95")],
        fmt=lambda v: f"{v:g} ms",
    )
    root = parse(svg)
    p50 = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "s-p50"]
    p95 = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "s-p95"]
    assert [float(c.get("data-value")) for c in p50] == [10, 20, 40]
    assert len(p95) == 4
    # A gap breaks the line: two stretches for p50, one for p95.
    assert len([p for p in root.iter(f"{SVG}polyline") if p.get("class") == "s-p50"]) == 2
    assert len([p for p in root.iter(f"{SVG}polyline") if p.get("class") == "s-p95"]) == 1
    # Higher values are higher up (smaller y), in proportion from the baseline.
    ys = [float(c.get("cy")) for c in p95]
    assert ys == sorted(ys, reverse=True)
    base = ys[0] + (ys[0] - ys[1])  # 30 -> 60 is one step of 30 ms; 0 is one step below 30
    assert ys[3] == pytest.approx(base - 4 * (base - ys[0]), abs=0.2)
    assert p50[0].find(f"{SVG}title").text == "p50, a: 10 ms"


def test_line_chart_fixed_top_for_percentages():
    root = parse(line_chart(title="Rates", labels=["a"], series=[Series("approved", [50.0])], top=100))
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert ticks[-1] == "100"


def test_histogram_bars_and_no_legend():
    root = parse(histogram(title="Time to decision", labels=["≤ 5 s", "≤ 15 s", "> 15 s"], counts=[3, 0, 6]))
    bars = rects(root, "0")
    assert [float(b.get("data-value")) for b in bars] == [3, 6]
    assert float(bars[1].get("height")) == pytest.approx(2 * float(bars[0].get("height")), abs=0.15)
    assert not root.findall(f".//{SVG}g[@class='chart-legend']")
    assert root.get("class") == "chart chart-histogram"


def test_many_labels_are_thinned_out():
    labels = [f"{h:02d}:00" for h in range(24)]
    root = parse(stacked_bars(title="Runs", labels=labels, series=[Series("x", [1] * 24)]))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.text in labels]
    assert shown == labels[::3]


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (7, [0, 2, 4, 6, 8]),
        (100, [0, 25, 50, 75, 100]),
        (0.03, [0, 0.01, 0.02, 0.03]),
        (0, [0, 1]),
        (1, [0, 0.25, 0.5, 0.75, 1]),
    ],
)
def test_nice_ticks(top, ticks):
    assert nice_ticks(top) == pytest.approx(ticks)


def test_grouped_bars_stand_side_by_side_on_a_fixed_scale():
    root = parse(
        grouped_bars(
            title="Evaluations",
            labels=["task success", "block rate"],
            series=[Series(f"#1 {SCRIPT}", [0.5, 0.0], "a"), Series("#2", [1.0, 0.25], "b")],
            top=1,
        )
    )
    first, second = rects(root, "a"), rects(root, "b")
    assert [r.get("data-value") for r in first] == ["0.5", "0"] and [r.get("data-value") for r in second] == [
        "1",
        "0.25",
    ]
    # Side by side: B's bar right of A's in each group, and twice as tall for twice the value.
    assert float(second[0].get("x")) > float(first[0].get("x"))
    assert float(second[0].get("height")) == pytest.approx(2 * float(first[0].get("height")))
    texts = "".join(root.itertext())
    assert SCRIPT in texts  # as text: the parser saw no element in it
    assert not list(root.iter("script")) and not list(root.iter(f"{SVG}script"))
    assert "No data" in grouped_bars(title="x", labels=["a"], series=[Series("s", [None])])
