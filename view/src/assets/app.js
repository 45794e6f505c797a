// The Panoptes web view: polls api/state for cameras, events and workers; frames with their
// detections arrive on the ws WebSocket and are drawn with boxes, tracks, zones and lines.
'use strict';

const PALETTE = ['#2fd27a', '#ff7a45', '#4aa8ff', '#e85ad1', '#f5c542', '#38d9d9', '#a879ff', '#ff5470'];
const SHAPES = {
  camera: '#dbe9f6', publisher: '#ffffff', subject: '#fdf1d6', stage: '#e3f2e1', output: '#f3e1f2',
};
const MAX_EVENTS = 200;
const view = { config: { places: {} }, cams: new Map(), lastEvent: 0 };

/** The colour boxes of `label` are drawn in (saturated, never white: text stays readable). */
function colorOf(label) {
  let h = 0;
  for (const c of String(label)) h = (Math.imul(h, 31) + c.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}
// What was drawn last on each camera (its header: seq, detections), for the curious and tests.
window.panoptes = { colorOf, shown: {} };

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function card(id) {
  let c = view.cams.get(id);
  if (c) return c;
  const root = el('div', { class: 'camera', 'data-camera': id });
  const title = el('div', { class: 'title' });
  title.append(el('span', { class: 'name' }, id), el('span', { class: 'badge' }, '…'));
  const canvas = el('canvas', { width: 640, height: 360 });
  root.append(title, canvas, el('div', { class: 'stats' }));
  const grid = document.getElementById('cameras');
  const after = [...grid.children].find((n) => n.dataset.camera > id);
  grid.insertBefore(root, after || null);
  c = { root, canvas, badge: title.lastChild, stats: root.lastChild };
  view.cams.set(id, c);
  return c;
}

function ms(v) {
  return v === null || v === undefined ? '–' : `${v.toFixed(0)} ms`;
}

function showCameras(cameras) {
  const seen = new Set();
  for (const cam of cameras) {
    seen.add(cam.id);
    const c = card(cam.id);
    c.badge.textContent = cam.state;
    c.badge.className = `badge ${cam.state}`;
    c.badge.title = cam.cause || '';
    c.stats.textContent = `${cam.fps.toFixed(1)} fps · in ${cam.frames_in} · out ${cam.messages_out}`
      + ` · dropped ${cam.dropped} · lost ${cam.lost} · errors ${cam.errors}`
      + ` · latency p50 ${ms(cam.latency_p50_ms)} p99 ${ms(cam.latency_p99_ms)}`;
  }
  for (const [id, c] of view.cams) {
    if (!seen.has(id)) {
      c.root.remove();
      view.cams.delete(id);
      delete window.panoptes.shown[id];
    }
  }
}

function addEvent(e) {
  const li = el('li', { 'data-id': e.id, 'data-kind': e.kind, 'data-camera': e.camera });
  const when = new Date(e.ts_ns / 1e6).toLocaleTimeString();
  li.append(el('div', { class: 'when' }, `${when} · ${e.camera}`),
    el('span', { class: 'kind' }, e.kind), document.createTextNode(` ${e.text}`));
  const links = el('div');
  if (e.snapshot) {
    const img = el('img', { src: `api/objects/${encodeURIComponent(e.snapshot)}`, alt: 'snapshot', loading: 'lazy' });
    li.append(img);
  }
  if (e.clip) links.append(el('a', { href: `api/objects/${encodeURIComponent(e.clip)}`, target: '_blank' }, 'clip'));
  if (e.trace_id && view.config.jaeger) {
    links.append(el('a', { href: `${view.config.jaeger.replace(/\/$/, '')}/trace/${e.trace_id}`, target: '_blank' }, 'trace'));
  } else if (e.trace_id) {
    links.append(el('span', { class: 'when' }, `trace ${e.trace_id}`));
  }
  if (links.childNodes.length) li.append(links);
  const list = document.getElementById('timeline');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function showTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = el('tr');
    for (const c of cells) tr.append(el('td', {}, String(c)));
    return tr;
  }));
}

function showWorkers(leases) {
  const by = new Map();
  for (const l of leases) {
    const key = `${l.unit}\u0000${l.worker}`;
    if (!by.has(key)) by.set(key, [l.unit, l.worker, []]);
    by.get(key)[2].push(l.partition);
  }
  showTable('workers', [...by.values()].map(([u, w, ps]) => [u, w, ps.join(', ')]));
}

async function poll() {
  const link = document.getElementById('link');
  try {
    const r = await fetch(`api/state?after=${view.lastEvent}`, { cache: 'no-store' });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const s = await r.json();
    showCameras(s.cameras);
    for (const e of s.events) {
      addEvent(e);
      view.lastEvent = Math.max(view.lastEvent, e.id);
    }
    showWorkers(s.leases);
    showTable('skipped', s.skipped.map((k) => [k.subject, k.reason, k.count]));
    link.textContent = 'live';
    link.className = 'badge up';
  } catch (err) {
    link.textContent = `disconnected (${err.message})`;
    link.className = 'badge down';
  }
  setTimeout(poll, 500);
}

function scaled(p, units, w, h) {
  return units === 'normalized' ? [p[0] * w, p[1] * h] : p;
}

function label(ctx, text, x, y, color, scale) {
  const size = 13 * scale;
  ctx.font = `${size}px sans-serif`;
  const width = ctx.measureText(text).width + 6 * scale;
  const top = Math.max(0, y - size - 4 * scale);
  ctx.fillStyle = color;
  ctx.fillRect(x, top, width, size + 4 * scale);
  ctx.fillStyle = '#000';
  ctx.fillText(text, x + 3 * scale, top + size);
}

function drawPlaces(ctx, h, scale) {
  const places = view.config.places[h.camera];
  if (!places) return;
  ctx.lineWidth = 2 * scale;
  for (const z of places.zones || []) {
    const pts = z.polygon.map((p) => scaled(p, z.units, h.width, h.height));
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.fillStyle = 'rgba(88, 166, 255, 0.15)';
    ctx.fill();
    ctx.strokeStyle = 'rgba(88, 166, 255, 0.9)';
    ctx.stroke();
    label(ctx, z.id, pts[0][0], pts[0][1] + 18 * scale, 'rgba(88, 166, 255, 0.9)', scale);
  }
  for (const l of places.lines || []) {
    const [a, b] = [scaled(l.from, l.units, h.width, h.height), scaled(l.to, l.units, h.width, h.height)];
    ctx.setLineDash([8 * scale, 6 * scale]);
    ctx.strokeStyle = 'rgba(255, 196, 0, 0.95)';
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
    ctx.setLineDash([]);
    label(ctx, `${l.id} (in: ${l.in})`, a[0], a[1], 'rgba(255, 196, 0, 0.95)', scale);
  }
}

function drawFrame(h, bitmap) {
  const c = card(h.camera);
  const cv = c.canvas;
  if (cv.width !== h.width || cv.height !== h.height) {
    cv.width = h.width;
    cv.height = h.height;
  }
  const ctx = cv.getContext('2d');
  ctx.drawImage(bitmap, 0, 0, h.width, h.height);
  bitmap.close();
  // Frame pixels per screen pixel: lines and labels keep their size on screen.
  const scale = h.width / Math.max(1, cv.clientWidth);
  drawPlaces(ctx, h, scale);
  ctx.lineWidth = 2 * scale;
  for (const [id, pts] of Object.entries(h.trails || {})) {
    ctx.strokeStyle = colorOf(`track ${id}`);
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  }
  ctx.lineWidth = 3 * scale;
  for (const d of h.detections) {
    const color = colorOf(d.label);
    ctx.strokeStyle = color;
    const [x0, y0, x1, y1] = d.box;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    let text = `${d.label} ${d.score.toFixed(2)}`;
    if (d.track_id !== undefined) text += ` #${d.track_id}`;
    if (d.text) text += ` “${d.text}”`;
    label(ctx, text, x0 - 1.5 * scale, y0 - 1.5 * scale, color, scale);
  }
  window.panoptes.shown[h.camera] = h;
}

function connect() {
  const base = location.pathname.replace(/[^/]*$/, '');
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${base}ws`);
  ws.binaryType = 'arraybuffer';
  ws.onmessage = async (m) => {
    const n = new DataView(m.data).getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(m.data, 4, n)));
    try {
      const bitmap = await createImageBitmap(new Blob([new Uint8Array(m.data, 4 + n)], { type: 'image/jpeg' }));
      drawFrame(header, bitmap);
    } catch (err) {
      console.warn(`frame ${header.seq} of ${header.camera} not shown: ${err}`);
    }
  };
  ws.onclose = () => setTimeout(connect, 1000);
}

function drawGraph(graph) {
  const target = document.getElementById('graph');
  if (!graph) {
    target.textContent = 'started without a topology file';
    return;
  }
  const NS = 'http://www.w3.org/2000/svg';
  const W = 190; const GAP = 50; const LINE = 15; const PAD = 8;
  const at = new Map();
  let height = 0;
  const svg = document.createElementNS(NS, 'svg');
  graph.groups.forEach((g, col) => {
    let y = 10;
    for (const n of g.nodes) {
      const h = n.lines.length * LINE + PAD * 2;
      const x = 10 + col * (W + GAP);
      const rect = document.createElementNS(NS, 'rect');
      Object.entries({ x, y, width: W, height: h, rx: 5, fill: SHAPES[n.shape] || '#fff', stroke: '#555' })
        .forEach(([k, v]) => rect.setAttribute(k, v));
      svg.append(rect);
      n.lines.forEach((line, i) => {
        const t = document.createElementNS(NS, 'text');
        t.setAttribute('x', x + PAD);
        t.setAttribute('y', y + PAD + (i + 1) * LINE - 3);
        t.setAttribute('font-size', i ? 11 : 12);
        t.setAttribute('fill', '#111');
        t.textContent = line.length > 30 ? `${line.slice(0, 29)}…` : line;
        svg.append(t);
      });
      at.set(n.id, { x, y, h });
      y += h + 12;
    }
    height = Math.max(height, y);
  });
  for (const [from, to] of graph.edges) {
    const a = at.get(from); const b = at.get(to);
    if (!a || !b) continue;
    const path = document.createElementNS(NS, 'path');
    const [x0, y0, x1, y1] = [a.x + W, a.y + a.h / 2, b.x, b.y + b.h / 2];
    const mid = (x0 + x1) / 2;
    path.setAttribute('d', `M${x0},${y0} C${mid},${y0} ${mid},${y1} ${x1},${y1}`);
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', '#8d98a5');
    svg.append(path);
  }
  svg.setAttribute('width', 20 + graph.groups.length * (W + GAP));
  svg.setAttribute('height', height + 10);
  target.replaceChildren(svg);
}

async function start() {
  try {
    const r = await fetch('api/config', { cache: 'no-store' });
    if (r.ok) view.config = await r.json();
  } catch (err) {
    console.warn(`no configuration: ${err}`);
  }
  document.getElementById('namespace').textContent = view.config.namespace || '';
  drawGraph(view.config.graph);
  poll();
  connect();
}

start();
