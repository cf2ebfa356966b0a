import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dashboardPage } from './html.ts';

test('dashboard: hostile values from senders, recipients and audit entries render as text', () => {
  const evil = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "'`&"];
  const page = dashboardPage({
    node: evil[0]!,
    counts: { queued: 1 },
    messages: [{ queueId: 'ABCDEF123', receivedAt: 0, sender: evil[1]!, recipients: [evil[0]!, evil[2]!], state: 'queued', node: evil[1]! }],
    audit: [{ id: 1, at: 0, actor: evil[0]!, action: 'queue.hold', target: evil[1]!, detail: evil[2]!, clientIp: null }],
    refusals: [{ at: 0, clientIp: '127.0.0.2', helo: evil[0]!, mailFrom: evil[1]!, rcpt: evil[0]!, rule: evil[2]!, reason: evil[1]!, reply: evil[0]! }],
    who: { admin: evil[1]!, csrf: 'tok"en' },
  });
  assert.doesNotMatch(page, /<script>/);
  assert.doesNotMatch(page, /<img/);
  assert.doesNotMatch(page, /"><img/);
  assert.match(page, /&#60;script&#62;alert\(1\)&#60;\/script&#62;/);
  assert.match(page, /value="tok&#34;en"/);
  assert.match(page, /<h2>Latest refusals<\/h2>/);
  // Every tag in the page is one the template wrote.
  const tags = new Set([...page.matchAll(/<\/?([a-z0-9!]+)/gi)].map((m) => m[1]!.toLowerCase()));
  const allowed = new Set(['!doctype', 'html', 'head', 'meta', 'title', 'link', 'body', 'header', 'h1', 'h2', 'span', 'form', 'input', 'button', 'main', 'div', 'b', 'table', 'caption', 'thead', 'tbody', 'tr', 'th', 'td']);
  for (const t of tags) assert.ok(allowed.has(t), `unexpected tag <${t}>`);
});
