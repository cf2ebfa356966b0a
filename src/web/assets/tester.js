// The tester run page's live view (src/web/tester-page.ts): follows the run's Server-Sent Events (same origin, the
// session cookie) and adds one row per trick as its verdict arrives. Every value from the server goes in through
// textContent (no value is ever parsed as markup): a banner or reply of "<script>" form stays text. No inline script: the page's CSP
// allows script from 'self' only.
const live = document.getElementById('tester-live');
if (live && live.dataset.events) {
  const status = document.getElementById('tester-status');
  const verdictLine = document.getElementById('tester-verdict');
  const tbody = document.querySelector('#tester-tricks tbody');
  let tricks = 0;
  let cleared = false;

  const cell = (row, text) => {
    const td = document.createElement('td');
    td.textContent = text;
    row.appendChild(td);
    return td;
  };
  const badge = (verdict) => {
    const span = document.createElement('span');
    span.className = `verdict v-${String(verdict).replace('/', '')}`;
    span.textContent = verdict;
    return span;
  };

  const source = new EventSource(live.dataset.events);
  source.addEventListener('trick', (ev) => {
    const d = JSON.parse(ev.data);
    if (!cleared) { tbody.replaceChildren(); cleared = true; } // the server-rendered rows are replayed by the stream
    const row = document.createElement('tr');
    row.className = 'trick';
    row.dataset.trick = d.id;
    row.dataset.verdict = d.verdict;
    cell(row, d.address).className = 'nowrap';
    cell(row, `${d.port} ${d.transport}`).className = 'nowrap';
    cell(row, `${d.id} ${d.title}`);
    cell(row, '').appendChild(badge(d.verdict));
    cell(row, d.reason);
    const detail = cell(row, d.detail);
    detail.className = 'wide';
    const details = document.createElement('details');
    const summary = document.createElement('summary');
    summary.textContent = 'dialogue';
    const pre = document.createElement('pre');
    pre.className = 'transcript';
    pre.textContent = d.lines.map((l) => `${l.dir}: ${l.line}`).join('\n');
    details.append(summary, pre);
    detail.appendChild(details);
    tbody.appendChild(row);
    tricks++;
    status.textContent = `Running: ${tricks} trick verdict(s) so far.`;
  });
  source.addEventListener('target', (ev) => {
    const d = JSON.parse(ev.data);
    status.textContent = `Running: ${tricks} trick verdict(s) so far; ${d.address}: ${d.verdict} (${d.reason}).`;
  });
  source.addEventListener('done', (ev) => {
    const d = JSON.parse(ev.data);
    source.close();
    live.dataset.state = d.state;
    status.textContent = `Finished (${d.state}): ${tricks} trick verdict(s).`;
    verdictLine.dataset.verdict = d.verdict ?? d.state;
    verdictLine.replaceChildren('Verdict: ', badge(d.verdict ?? d.state), ` ${d.reason ?? ''}${d.detail ? `: ${d.detail}` : ''}${d.error ? ` ${d.error}` : ''} `);
    const link = document.createElement('a');
    link.href = window.location.pathname;
    link.textContent = 'Show the full report';
    verdictLine.appendChild(link);
  });
  source.addEventListener('error', () => {
    if (live.dataset.state === 'running') status.textContent = `Connection lost after ${tricks} verdict(s); retrying...`;
  });
}
