"""What a person would see cut off: run in a real browser by the browser tests and scripts/screenshots.py.

`CLIPPED` is a JavaScript function for Playwright's `page.evaluate(CLIPPED, selectors)`. For every visible element
matching a selector it reports text cut by an ellipsis, content wider than a box that hides or scrolls it, and the
element running past the page's right edge; for every visible plotly figure inside one, a drawing wider than its
box and a plot area squeezed under MIN_PLOT_WIDTH pixels (a legend at the side of a half-page figure does this).
"""

from __future__ import annotations

MIN_PLOT_WIDTH = 300

CLIPPED = """(selectors) => {
  const problems = [];
  const visible = (node) => node.offsetParent !== null && node.getBoundingClientRect().width > 0;
  const name = (node) => (node.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 40);
  const page = document.documentElement.clientWidth;
  for (const selector of selectors) {
    for (const element of document.querySelectorAll(selector)) {
      if (!visible(element)) continue;
      const box = element.getBoundingClientRect();
      if (box.right > page + 1)
        problems.push(`${selector} runs past the page's right edge (${box.right} > ${page})`);
      for (const node of [element, ...element.querySelectorAll('*')]) {
        if (!visible(node) || node.closest('.js-plotly-plot')) continue;
        const style = getComputedStyle(node);
        const wider = node.scrollWidth > node.clientWidth + 1;
        if (wider && style.textOverflow === 'ellipsis')
          problems.push(`${selector}: "${name(node)}" is cut by an ellipsis`);
        else if (wider && node.clientWidth > 0 && ['hidden', 'clip', 'auto', 'scroll'].includes(style.overflowX)
                 && node.children.length > 0)
          problems.push(`${selector}: ${node.tagName.toLowerCase()} "${name(node)}" is ${node.scrollWidth}px ` +
                        `wide in a ${node.clientWidth}px box`);
      }
      for (const plot of [element, ...element.querySelectorAll('.js-plotly-plot')]) {
        if (!plot.matches('.js-plotly-plot')) continue;
        if (!visible(plot)) continue;
        const svg = plot.querySelector('.main-svg');
        const area = plot.querySelector('.nsewdrag');
        const title = name(plot.querySelector('.gtitle') || plot);
        if (svg && svg.getBoundingClientRect().width > plot.getBoundingClientRect().width + 1)
          problems.push(`${selector}: figure "${title}" is wider than its box`);
        const width = area ? Math.round(area.getBoundingClientRect().width) : null;
        if (width !== null && width < MIN_PLOT_WIDTH)
          problems.push(`${selector}: figure "${title}" has a plot area ${width}px wide`);
      }
    }
  }
  return problems;
}""".replace("MIN_PLOT_WIDTH", str(MIN_PLOT_WIDTH))

STAGE1 = ("#s1-chart", "#s1-table", "#s1-scatter", "#s1-heatmap")
