// The overview charts of the admin home page: polls GET /api/overview (same origin, the session cookie) and draws
// each chart with uPlot. A plain ES module served from /assets (no build step, no inline script). Every value from
// the server reaches the page as text (textContent), never as markup.
import uPlot from '/assets/uPlot.esm.js';

const POLL_MS = 15_000;
const COLORS = ['#1d3557', '#2a9d8f', '#e9c46a', '#e63946', '#6a4c93', '#f4a261', '#457b9d', '#8d99ae', '#06d6a0', '#ef476f'];

const root = document.getElementById('overview');
const status = document.getElementById('overview-status');
const select = document.getElementById('overview-minutes');
const charts = new Map();

/** The chart definitions: a title, the unit of the y axis, and the series drawn from the data. */
const DEFS = {
  messages: { unit: 'per minute', series: (d) => [['in', d.messages.in], ['delivered', d.messages.delivered], ['deferred', d.messages.deferred], ['bounced', d.messages.bounced]] },
  refusals: { unit: 'per minute', series: (d) => Object.entries(d.refusals).sort((a, b) => sum(b[1]) - sum(a[1])).slice(0, COLORS.length) },
  queue: { unit: 'messages', series: (d) => Object.entries(d.queue) },
  dns: { unit: 'per second', series: (d) => [['ORDB queries answered', d.dns.ordbQueries], ['DNSBL lookups', d.dns.dnsblLookups]] },
  connections: { unit: '', series: (d) => [['open now', d.connections.open], ['sessions per minute', d.connections.sessions]] },
};

function sum(xs) { return xs.reduce((a, b) => a + (b ?? 0), 0); }

function widthOf(el) { return Math.max(200, Math.floor(el.clientWidth || el.parentElement.clientWidth || 300)); }

/** The x range every chart shows: the selected window, ending at the newest point. */
let xRange = [0, 1];

function draw(name, el, data) {
  const def = DEFS[name];
  const series = def.series(data);
  const key = series.map(([label]) => label).join('\u0000');
  const cols = [data.t, ...series.map(([, v]) => v)];
  const latest = el.parentElement.querySelector('.latest');
  if (latest) {
    latest.textContent = series.length === 0 ? 'nothing in this window'
      : series.map(([label, v]) => `${label}: ${v.length === 0 || v[v.length - 1] === null ? '-' : v[v.length - 1]}`).join(' · ');
  }
  const existing = charts.get(name);
  if (existing && existing.key === key) {
    existing.plot.setData(cols);
    return;
  }
  existing?.plot.destroy();
  el.textContent = '';
  const opts = {
    width: widthOf(el),
    height: 180,
    series: [{}, ...series.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
    axes: [{}, { label: def.unit, size: 50 }],
    scales: { x: { time: true, range: () => xRange }, y: { range: (_u, _min, max) => [0, Math.max(1, (max ?? 0) * 1.1)] } },
    legend: { live: false },
  };
  charts.set(name, { key, plot: new uPlot(opts, cols, el) });
}

async function refresh() {
  const minutes = select ? select.value : '60';
  try {
    const r = await fetch(`/api/overview?minutes=${encodeURIComponent(minutes)}`, { credentials: 'same-origin', headers: { accept: 'application/json' } });
    if (r.status === 401) { status.textContent = 'Session expired: log in again.'; return; }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const data = await r.json();
    const end = data.t.length > 0 ? data.t[data.t.length - 1] : Math.floor(Date.now() / 1000);
    xRange = [end - Number(minutes) * 60, end];
    for (const el of root.querySelectorAll('.chart[data-chart]')) draw(el.dataset.chart, el, data);
    const when = data.t.length > 0 ? new Date(data.t[data.t.length - 1] * 1000).toLocaleTimeString() : '-';
    status.textContent = `Node ${data.node}: ${data.t.length} point(s), one per ${data.stepSeconds} s (the last one is the minute in progress); updated ${when}.`;
    root.dataset.loaded = 'true';
  } catch (err) {
    status.textContent = `Charts not updated: ${err.message}`;
  }
}

if (root) {
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const [name, c] of charts) {
        const el = root.querySelector(`.chart[data-chart="${name}"]`);
        if (el) c.plot.setSize({ width: widthOf(el), height: 180 });
      }
    }, 150);
  });
  select?.addEventListener('change', () => { void refresh(); });
  void refresh();
  setInterval(() => { if (!document.hidden) void refresh(); }, POLL_MS);
}
