"""The HTML page of ``vlm-collate inspect --html``: one self-contained file.

The page holds its CSS, its script and its data (JSON, images as ``data:``
URIs), so it opens from disk with no network. A batch summary with a small
chart comes first; the samples follow, 25 to a page, drawn by the script only
when their page is shown, so a dataset of thousands of samples opens at once.
Each token is an element; hovering (or focusing) it shows its id, position,
label id and loss weight.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from typing import Any

from .inspect import (
    _SHIFT_NOTE,
    BatchView,
    Inspection,
    SampleView,
    _batch_title,
    _counts,
    _settings,
    _summary_line,
    _title,
)

__all__ = ["PAGE_SIZE", "batch_figures", "render_html"]

PAGE_SIZE = 25
_CHART_WIDTH = 720
_CHART_HEIGHT = 90


def render_html(inspection: Inspection, *, page_size: int = PAGE_SIZE) -> str:
    """The standalone page for ``inspection``; samples are shown ``page_size`` at a time."""
    escape = html.escape
    data = _page_data(inspection, page_size)
    notes = [f'<li class="warning">note: {escape(note)}</li>' for note in inspection.notes]
    shift = f'<p class="note">{escape(_SHIFT_NOTE)}</p>' if inspection.shift_labels else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vlm-collate inspect: {escape(inspection.source or 'samples')}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>vlm-collate inspect</h1>",
        '<ul class="settings">',
        *(f"<li>{escape(line)}</li>" for line in _settings(inspection)),
        *notes,
        "</ul>",
        _LEGEND,
        shift,
        f'<p class="summary"><strong>{escape(_summary_line(inspection))}</strong></p>',
        "</header>",
        _summary_section(inspection),
        '<nav id="pager" aria-label="pages of samples"></nav>',
        '<main id="samples"><noscript>The samples are drawn by the page\'s script; '
        "enable JavaScript to see them.</noscript></main>",
        '<div id="tip" role="tooltip" hidden></div>',
        f'<script type="application/json" id="data">{_json_for_script(data)}</script>',
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def batch_figures(inspection: Inspection, batch: BatchView) -> dict[str, Any]:
    """Rows, tokens, trained tokens and padding fraction of one batch, as the page shows them."""
    by_index = {view.index: view for view in inspection.samples}
    kept = [by_index[i] for i in batch.indices if by_index[i].dropped is None]
    kept = [view for view in kept if view.segments]
    tokens = sum(view.tokens for view in kept)
    padding = sum(view.padding for view in kept)
    cells = tokens + padding
    return {
        "batch": batch.number,
        "rows": len(kept),
        "tokens": tokens,
        "trained": sum(view.trained for view in kept),
        "padding_fraction": padding / cells if cells else 0.0,
        "dropped": len(batch.indices) - len(kept),
        "warnings": len(batch.notes) + sum(len(by_index[i].warnings) for i in batch.indices),
    }


def _summary_section(inspection: Inspection) -> str:
    figures = [batch_figures(inspection, batch) for batch in inspection.batches]
    rows = [
        f'<tr><td><a href="#sample-{batch.indices[0]}">batch {batch.number}</a></td>'
        f"<td>{html.escape(_batch_title(batch))}</td><td>{row['rows']}</td>"
        f"<td>{row['tokens']}</td><td>{row['trained']}</td>"
        f"<td>{row['padding_fraction']:.0%}</td><td>{row['dropped']}</td>"
        f"<td>{row['warnings']}</td></tr>"
        for batch, row in zip(inspection.batches, figures, strict=True)
    ]
    open_attribute = " open" if len(rows) <= 12 else ""
    # Notes that name no sample (a fallback label strategy, say) stay with their batch.
    notes = [
        f'<li class="warning">batch {batch.number}: {html.escape(note)}</li>'
        for batch in inspection.batches
        for note in batch.notes
    ]
    return "\n".join(
        [
            '<section id="batches"><h2>Batches</h2>',
            _chart(figures),
            *(['<ul class="batch-notes">', *notes, "</ul>"] if notes else []),
            f"<details{open_attribute}><summary>{len(rows)} batches, one row each</summary>",
            "<table><thead><tr><th>batch</th><th>samples and shape</th><th>rows</th>"
            "<th>tokens</th><th>trained</th><th>padding</th><th>dropped</th>"
            "<th>warnings</th></tr></thead><tbody>",
            *rows,
            "</tbody></table></details></section>",
        ]
    )


def _chart(figures: list[dict[str, Any]]) -> str:
    """Stacked bars per batch: trained, other real tokens and padding, to one scale."""
    if not figures:
        return ""
    totals = [
        row["tokens"] / (1 - row["padding_fraction"]) if row["tokens"] else 0 for row in figures
    ]
    tallest = max(max(totals), 1)
    step = _CHART_WIDTH / len(figures)
    bars = []
    for position, (row, total) in enumerate(zip(figures, totals, strict=True)):
        x = position * step
        width = max(step - (1 if step > 3 else 0), 0.5)
        scale = _CHART_HEIGHT / tallest
        trained, other = row["trained"] * scale, (row["tokens"] - row["trained"]) * scale
        padding = (total - row["tokens"]) * scale
        title = (
            f"batch {row['batch']}: {row['rows']} rows, {row['tokens']} tokens, "
            f"{row['trained']} trained, {row['padding_fraction']:.0%} padding"
        )
        bars.append(
            f"<g><title>{html.escape(title)}</title>"
            + "".join(_stack(x, width, [("trained", trained), ("other", other), ("pad", padding)]))
            + "</g>"
        )
    return (
        f'<svg class="chart" viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}" '
        f'width="{_CHART_WIDTH}" height="{_CHART_HEIGHT}" role="img" '
        'aria-label="tokens per batch: trained, other tokens and padding">'
        + "".join(bars)
        + "</svg>"
        '<p class="chart-legend"><span class="key trained"></span> trained '
        '<span class="key other"></span> prompt and media '
        '<span class="key pad"></span> padding (bar height: the batch\'s token cells)</p>'
    )


def _stack(x: float, width: float, parts: list[tuple[str, float]]) -> Iterator[str]:
    bottom = float(_CHART_HEIGHT)
    for css, height in parts:
        if height <= 0:
            continue
        bottom -= height
        yield (
            f'<rect class="{css}" x="{x:.2f}" y="{bottom:.2f}" '
            f'width="{width:.2f}" height="{height:.2f}"/>'
        )


def _page_data(inspection: Inspection, page_size: int) -> dict[str, Any]:
    thumbnails: dict[str, int] = {}
    batch_of = {i: batch.number for batch in inspection.batches for i in batch.indices}
    samples = [
        _sample_data(view, batch_of.get(view.index), thumbnails) for view in inspection.samples
    ]
    return {
        "pageSize": page_size,
        "shifted": inspection.shift_labels,
        "samples": samples,
        "thumbnails": list(thumbnails),
    }


def _sample_data(view: SampleView, batch: int | None, thumbnails: dict[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": view.index,
        "batch": batch,
        "title": _title(view),
        "counts": _counts(view),
        "dropped": view.dropped is not None or not view.segments,
        "warnings": list(view.warnings),
        "media": [
            {
                "kind": item.kind,
                "name": item.name,
                "original": item.original,
                "resized": item.resized,
                "frames": item.frames,
                # Thumbnails repeat across samples (one file, many questions): store each once.
                "thumbnails": [
                    thumbnails.setdefault(uri, len(thumbnails)) for uri in item.thumbnails
                ],
            }
            for item in view.media_items
        ],
    }
    detail = view.detail
    if detail is not None:
        entry.update(
            ids=list(detail.ids),
            targets=list(detail.targets),
            kinds=detail.kinds,
            pieces=list(detail.pieces),
            weights=list(detail.weights) if detail.weights is not None else None,
            slots=list(detail.media_slots) or None,
        )
    return entry


def _json_for_script(data: Any) -> str:
    """JSON that cannot close its ``<script>`` element early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_LEGEND = (
    '<p class="legend">Legend: <span class="tok t">trained</span> '
    '<span class="tok p">prompt</span> <span class="tok m">&lt;media&gt; &times;N</span> '
    '<span class="tok d">padding</span>. Hover or focus a token for its id, position, '
    "label id and loss weight.</p>"
)

_CSS = """
:root { --trained: #c8f0c2; --trained-edge: #4f9a45; --media: #ece3fb; --media-ink: #5b2a9e;
  --pad: #f1f1f1; --ink: #1f2328; --muted: #59636e; --warn: #8a4b00; --bad: #b00020; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
  max-width: 1100px; padding: 1.2em 1.5em 4em; color: var(--ink); background: #fff; }
h1 { font-size: 1.5em; margin: 0 0 .3em; }
h2 { font-size: 1.15em; margin: 1.2em 0 .4em; }
h3 { font-size: 1em; margin: 0 0 .2em; }
.settings { color: var(--muted); padding-left: 1.2em; margin: .3em 0; font-size: 14px; }
.note, .legend { color: var(--muted); font-size: 14px; margin: .3em 0; }
table { border-collapse: collapse; font-size: 13px; margin-top: .4em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: .2em .6em; text-align: right; }
th:nth-child(2), td:nth-child(2), th:first-child, td:first-child { text-align: left; }
.chart { display: block; max-width: 100%; height: auto; border-bottom: 1px solid #999; }
.chart .trained, .key.trained { fill: var(--trained-edge); background: var(--trained-edge); }
.chart .other, .key.other { fill: #b7bcc4; background: #b7bcc4; }
.chart .pad, .key.pad { fill: #e9e9e9; background: #e9e9e9; }
.key { display: inline-block; width: .9em; height: .9em; vertical-align: -.1em; }
.chart-legend { font-size: 13px; color: var(--muted); margin: .2em 0 .6em; }
nav#pager { position: sticky; top: 0; background: #fff; padding: .5em 0; z-index: 2;
  border-bottom: 1px solid #ddd; display: flex; gap: .6em; align-items: center; flex-wrap: wrap; }
nav#pager button { font: inherit; padding: .15em .7em; }
section.sample { border: 1px solid #ddd; border-radius: 6px; padding: .7em .9em;
  margin: .9em 0; scroll-margin-top: 3.5em; }
section.sample.bad { border-color: var(--bad); }
.counts { color: var(--muted); margin: 0 0 .3em; font-size: 14px; }
.bad .counts { color: var(--bad); }
.warning { color: var(--warn); margin: .1em 0; font-size: 14px; }
.media-list { display: flex; flex-wrap: wrap; gap: .8em; margin: .4em 0; }
figure { margin: 0; font-size: 12px; color: var(--muted); }
figure img { display: block; border: 1px solid #ccc; max-height: 96px; }
.frames { display: flex; gap: 2px; }
.tokens { font: 13.5px/1.9 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  white-space: pre-wrap; word-break: break-word; background: #fbfbfb;
  border: 1px solid #e5e5e5; padding: .5em .6em; margin: .4em 0 0; }
.tok { border-radius: 2px; cursor: default; }
.tok:hover, .tok:focus { outline: 2px solid #0969da; outline-offset: -1px; }
.tok.t { background: var(--trained); box-shadow: inset 0 -2px 0 var(--trained-edge); }
.tok.m { background: var(--media); color: var(--media-ink); font-weight: 600; }
.tok.d { color: #8c959f; background: var(--pad); }
.tok img { height: 1.7em; vertical-align: middle; margin-right: .3em; border: 1px solid #aaa; }
.w { color: var(--warn); font-size: 75%; vertical-align: super; }
#tip { position: fixed; z-index: 5; background: #1f2328; color: #fff; font: 12.5px/1.45
  ui-monospace, Menlo, Consolas, monospace; padding: .4em .6em; border-radius: 4px;
  pointer-events: none; max-width: 32em; white-space: pre-wrap; }
"""

# The script draws one page of samples at a time from the JSON data, and one
# tooltip element serves every token (event delegation: no listener per token).
_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("data").textContent);
  const samples = data.samples, size = data.pageSize;
  const pages = Math.max(1, Math.ceil(samples.length / size));
  const main = document.getElementById("samples"), pager = document.getElementById("pager");
  const tip = document.getElementById("tip");
  const KIND = { t: "trained", p: "prompt", m: "media placeholder", d: "padding" };
  let page = 0;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function size2(pair) { return pair ? pair[0] + "\u00d7" + pair[1] : "?"; }

  function mediaFigure(item, compact) {
    const fig = el("figure");
    const holder = el("div", item.kind === "video" ? "frames" : "");
    for (const index of item.thumbnails) {
      const img = el("img");
      img.src = data.thumbnails[index];
      img.alt = item.name;
      holder.appendChild(img);
    }
    fig.appendChild(holder);
    let caption = item.name + ": " + size2(item.original) + " \u2192 " +
      (item.resized ? size2(item.resized) : "size not reported");
    if (item.frames) caption += ", " + item.frames + " frames sampled";
    if (item.kind === "video" && item.thumbnails.length && item.frames > item.thumbnails.length)
      caption += " (" + item.thumbnails.length + " shown)";
    fig.appendChild(el("figcaption", "", caption));
    return fig;
  }

  function tokenSpan(sample, start, end) {
    const kind = sample.kinds[start];
    const span = el("span", "tok " + kind);
    span.tabIndex = 0;
    span.dataset.s = sample.index;
    span.dataset.a = start;
    span.dataset.b = end - 1;
    const slot = sample.slots ? sample.slots[start] : -1;
    if (slot >= 0 && sample.media[slot].thumbnails.length) {
      const img = el("img");
      img.src = data.thumbnails[sample.media[slot].thumbnails[0]];
      img.alt = sample.media[slot].name;
      span.appendChild(img);
    }
    const text = sample.pieces[start];
    const shown = end - start > 1 ? text + " \u00d7" + (end - start) : text;
    span.appendChild(document.createTextNode(shown));
    return span;
  }

  function tokens(sample) {
    const pre = el("div", "tokens");
    const n = sample.ids.length;
    let t = 0;
    while (t < n) {
      const kind = sample.kinds[t];
      let end = t + 1;
      if (kind === "m" || kind === "d")
        while (end < n && sample.kinds[end] === kind && sample.ids[end] === sample.ids[t]) end++;
      pre.appendChild(tokenSpan(sample, t, end));
      const w = sample.weights ? sample.weights[t] : null;
      if (kind === "t" && w !== null && w !== 1 && (end === n || sample.kinds[end] !== "t" ||
          sample.weights[end] !== w))
        pre.appendChild(el("span", "w", "{w=" + w + "}"));
      t = end;
    }
    return pre;
  }

  function sampleSection(sample) {
    const section = el("section", "sample" + (sample.dropped ? " bad" : ""));
    section.id = "sample-" + sample.index;
    const batch = sample.batch === null ? "" : " \u00b7 batch " + sample.batch;
    section.appendChild(el("h3", "", sample.title + batch));
    section.appendChild(el("p", "counts", sample.counts));
    for (const warning of sample.warnings)
      section.appendChild(el("p", "warning", "warning: " + warning));
    if (sample.media.length) {
      const list = el("div", "media-list");
      for (const item of sample.media) list.appendChild(mediaFigure(item));
      section.appendChild(list);
    }
    if (sample.ids) section.appendChild(tokens(sample));
    return section;
  }

  function button(label, target, disabled) {
    const b = el("button", "", label);
    b.disabled = disabled;
    b.addEventListener("click", () => {
      show(target);
      window.scrollTo(0, main.offsetTop - pager.offsetHeight);
    });
    return b;
  }

  function show(number, anchor) {
    page = Math.min(Math.max(number, 0), pages - 1);
    main.replaceChildren();
    const first = page * size;
    for (const sample of samples.slice(first, first + size))
      main.appendChild(sampleSection(sample));
    pager.replaceChildren(
      button("\u2190 previous", page - 1, page === 0),
      el("span", "", "samples " + first + "\u2013" + (Math.min(first + size, samples.length) - 1) +
        " of " + samples.length + " (page " + (page + 1) + " of " + pages + ")"),
      button("next \u2192", page + 1, page === pages - 1));
    if (anchor) document.getElementById(anchor)?.scrollIntoView();
  }

  function fromHash() {
    const match = /^#sample-(\d+)$/.exec(location.hash);
    if (!match) return show(0);
    const position = samples.findIndex((s) => s.index === Number(match[1]));
    show(Math.floor(Math.max(position, 0) / size), location.hash.slice(1));
  }

  function describe(sample, a, b) {
    const id = sample.ids[a], target = sample.targets[a];
    const lines = [];
    lines.push((b > a ? "tokens " + a + "\u2013" + b + " (\u00d7" + (b - a + 1) + ")" : "token") +
      ": " + JSON.stringify(sample.pieces[a]) + " (" + KIND[sample.kinds[a]] + ")");
    lines.push("id " + id + " \u00b7 position " + (b > a ? a + "\u2013" + b : a));
    let label = "label " + target;
    if (target === -100) label += " (not trained)";
    else if (data.shifted) label += " (pre-shifted: stored at labels[" + (a - 1) + "])";
    lines.push(label);
    if (sample.weights && sample.kinds[a] === "t") lines.push("loss weight " + sample.weights[a]);
    const slot = sample.slots ? sample.slots[a] : -1;
    if (slot >= 0)
      lines.push("stands for " + sample.media[slot].kind + " " + sample.media[slot].name);
    return lines.join("\n");
  }

  function showTip(event) {
    const span = event.target.closest(".tok[data-s]");
    if (!span) { tip.hidden = true; return; }
    const sample = samples.find((s) => s.index === Number(span.dataset.s));
    tip.textContent = describe(sample, Number(span.dataset.a), Number(span.dataset.b));
    tip.hidden = false;
    const box = span.getBoundingClientRect();
    tip.style.left = Math.min(box.left, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = (box.bottom + 6 + tip.offsetHeight > window.innerHeight ?
      box.top - tip.offsetHeight - 6 : box.bottom + 6) + "px";
  }

  main.addEventListener("mouseover", showTip);
  main.addEventListener("focusin", showTip);
  main.addEventListener("mouseleave", () => { tip.hidden = true; });
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""
