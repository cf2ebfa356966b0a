/**
 * Server-Sent Events for tests: parses a text/event-stream body (WHATWG HTML "event stream interpretation":
 * fields id, event, data; comments and retry ignored) into events with their JSON data.
 */
export interface SseEvent {
  readonly id: number;
  readonly event: string;
  readonly data: any;
}

export function parseEvents(body: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const block of body.split(/\r?\n\r?\n/)) {
    let id = 0;
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'id') id = Number(value);
      else if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) continue;
    out.push({ id, event, data: JSON.parse(data.join('\n')) });
  }
  return out;
}
