// troupe's dashboard: reads /api once, then follows /api/events (Server-Sent Events). No
// polling, no library. Every action is checked again by the server.
'use strict';

const WINDOW = 600; // seconds of chart history
const MAX_EVENTS = 200;
const state = { members: null, lines: { nodes: {}, watchers: {} }, busy: false };

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, kind) {
  return el('span', { class: `badge s-${kind || text}` }, text);
}

function banner(text) {
  const node = $('#banner');
  node.textContent = text || '';
  node.hidden = !text;
}

async function api(path, body) {
  const options = { credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    options.method = 'POST';
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`/api/${path}`, options);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (response.status === 401) {
    banner(data && data.error);
    $('#connection').textContent = 'no access';
    $('#connection').className = 'badge s-lost';
  }
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

// ---- formatting -------------------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor(seconds % 3600 / 60)}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor(seconds % 86400 / 3600)}h`;
}

function bytes(value) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return `${value.toFixed(value < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
}

function host(endpoint) {
  return (endpoint || '').replace(/^tcp:\/\//, '');
}

// ---- nodes and matrix ---------------------------------------------------------------------

function renderMembers(data) {
  state.members = data;
  $('#cluster').textContent = `cluster ${data.cluster}`;
  const counts = {};
  for (const node of data.nodes) counts[node.state] = (counts[node.state] || 0) + 1;
  $('#summary').textContent = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ');
  const body = $('#members tbody');
  body.replaceChildren(...data.nodes.map((node) => el('tr',
    { class: node.state, dataset: { node: node.name, state: node.state } },
    el('td', {}, node.name),
    el('td', { class: 'state-cell' }, badge(node.state)),
    el('td', {}, host(node.endpoint)),
    el('td', {}, node.version || '–'),
    el('td', {}, node.state === 'alive' || node.state === 'suspect'
      ? duration(node.uptime) : `${duration(node.uptime)} (last)`),
    el('td', {}, `${duration(data.time - node.last_seen)} ago`),
    el('td', {}, String(node.watchers)))));
  renderMatrix(data);
}

const CELL_ACTIONS = [
  ['start', 'start'], ['stop', 'stop'], ['restart', 'restart'],
  ['incr', '+1'], ['decr', '−1'], ['reset', 'reset…'],
];

function actionButtons(node, watcher, actions, down) {
  return el('div', { class: 'actions' }, actions.map(([action, label]) => el('button', {
    dataset: { action, node, watcher },
    class: action === 'reset' ? 'danger' : null,
    title: `${action} ${watcher === '*' ? 'every watcher' : watcher} on ${node === '*' ? 'every node' : node}`,
    disabled: down || state.busy,
    onclick: () => act(action, node, watcher),
  }, label)));
}

function renderMatrix(data) {
  // Drawn again only when something it shows changed: a button under the pointer stays put.
  const shown = JSON.stringify([data.watchers, data.nodes.map((n) => [n.name, n.kind, n.state, n.matrix])]);
  if (shown === state.matrixShown) return;
  state.matrixShown = shown;
  const table = $('#matrix');
  const watchers = data.watchers;
  const head = el('tr', {}, el('th', {}, 'node'), watchers.map((watcher) => el('th',
    { dataset: { watcher } }, watcher, actionButtons('*', watcher, CELL_ACTIONS, false))));
  const rows = data.nodes.filter((node) => node.kind === 'troupe' && node.state !== 'locked')
    .map((node) => {
      const down = node.state !== 'alive';
      return el('tr', { class: node.state, dataset: { node: node.name } },
        el('th', {}, node.name, ' ', badge(node.state),
          actionButtons(node.name, '*', CELL_ACTIONS.filter(([a]) => a !== 'reset'), down)),
        watchers.map((watcher) => {
          const cell = node.matrix[watcher];
          if (!cell) return el('td', { class: 'cell' }, '–');
          return el('td', {
            class: down ? 'cell stale' : 'cell',
            dataset: { node: node.name, watcher, status: cell.status, processes: cell.numprocesses },
            title: down ? `last known on ${node.name}, which is ${node.state}` : null,
          },
          badge(cell.status), el('span', { class: 'count' }, `${cell.numprocesses} proc`),
          cell.stopped_reason ? el('div', { class: 'reason' }, cell.stopped_reason) : null,
          actionButtons(node.name, watcher, CELL_ACTIONS, down));
        }));
    });
  table.replaceChildren(el('thead', {}, head), el('tbody', {}, rows));
}

// ---- actions ------------------------------------------------------------------------------

function describe(action, node, watcher) {
  const who = watcher === '*' ? 'every watcher' : watcher;
  const where = node === '*' ? 'every node' : node;
  return action === 'reconfigure' ? `reconfigure ${where}` : `${action} ${who} on ${where}`;
}

function setBusy(busy) {
  state.busy = busy;
  for (const button of document.querySelectorAll('button[data-action]')) {
    const row = button.closest('tr');
    const down = row && row.dataset.node && row.classList.length && !row.classList.contains('alive');
    button.disabled = busy || Boolean(down && button.dataset.node !== '*');
  }
}

async function act(action, node, watcher) {
  let confirmReset = false;
  if (action === 'reset' || action === 'reconfigure') {
    const answer = await confirmWipe(action, node, watcher);
    if (answer === null) return;
    confirmReset = answer;
  }
  setBusy(true);
  showResult({ pending: describe(action, node, watcher) });
  try {
    const body = { action, node, watcher };
    if (action === 'reset' || action === 'reconfigure') body.confirm = true;
    if (action === 'reconfigure') body.reset = confirmReset;
    const answer = await api('action', body);
    showResult({ title: describe(action, node, watcher), answer });
  } catch (e) {
    showResult({ title: describe(action, node, watcher), error: e.message });
  } finally {
    setBusy(false);
  }
}

function showResult({ pending, title, answer, error }) {
  $('#result-section').hidden = false;
  const box = $('#result');
  if (pending) {
    box.replaceChildren(el('div', { class: 'summary' }, `${pending}: waiting for the nodes…`));
    return;
  }
  if (error) {
    box.replaceChildren(el('div', { class: 'summary failed' }, `${title}: ${error}`));
    return;
  }
  box.replaceChildren(
    el('div', { class: `summary ${answer.ok ? 'ok' : 'failed'}`, dataset: { ok: answer.ok } },
      `${title}: ${answer.ok ? 'ok' : 'failed on some node'}`),
    ...answer.results.map((r) => el('div', {},
      answer.results.length > 1 ? el('div', {}, `${r.command} ${r.watcher || ''}`) : null,
      el('pre', {}, r.table))));
}

function confirmWipe(action, node, watcher) {
  const dialog = $('#confirm');
  const resetBox = $('#confirm-reset');
  resetBox.checked = false;
  $('#confirm-reset-label').hidden = action !== 'reconfigure';
  $('#confirm-title').textContent = `${describe(action, node, watcher)}?`;
  $('#confirm-ok').textContent = action;
  const fill = async () => {
    const body = $('#confirm-body');
    body.replaceChildren(el('p', {}, 'Asking the nodes what this wipes…'));
    $('#confirm-ok').disabled = true;
    try {
      const plan = await api('plan', { action, node, watcher, reset: resetBox.checked });
      const parts = [];
      if (action === 'reconfigure') {
        parts.push(el('p', {}, `Stops every watcher on ${plan.nodes.join(', ')}, pushes the `
          + 'peer list (configure), then starts them again.'));
      } else {
        parts.push(el('p', {}, `Stops ${watcher === '*' ? 'every watcher' : watcher} on `
          + `${plan.nodes.join(', ')}, wipes, runs the reset_hook, starts it again.`));
      }
      if (plan.wipes.length) {
        parts.push(el('p', {}, el('strong', {}, 'Deleted for good, on each node:')));
        parts.push(el('ul', { id: 'confirm-wipes' }, plan.wipes.map((w) => el('li', {},
          `${w.node} · ${w.watcher}: `,
          w.data_dir.length ? w.data_dir.map((d) => el('code', {}, d)) : 'no data_dir',
          w.reset_hook ? ` (then reset_hook ${w.reset_hook})` : ''))));
      } else if (action === 'reset' || resetBox.checked) {
        parts.push(el('p', {}, 'No selected watcher declares a data_dir or reset_hook: nothing to wipe.'));
      } else {
        parts.push(el('p', {}, 'Wipes nothing.'));
      }
      for (const [n, reason] of Object.entries(plan.errors || {})) {
        parts.push(el('p', { class: 'summary failed' }, `${n}: ${reason}`));
      }
      body.replaceChildren(...parts);
      $('#confirm-ok').disabled = false;
    } catch (e) {
      body.replaceChildren(el('p', { class: 'summary failed' }, e.message));
    }
  };
  resetBox.onchange = fill;
  fill();
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok' ? resetBox.checked : null);
    }, { once: true });
  });
}

// ---- events -------------------------------------------------------------------------------

function addActivity(activity) {
  const body = $('#events tbody');
  body.prepend(el('tr', { dataset: { kind: activity.kind, node: activity.node } },
    el('td', {}, clock(activity.time)),
    el('td', {}, activity.node),
    el('td', {}, activity.watcher || ''),
    el('td', {}, badge(activity.kind)),
    el('td', {}, [activity.pid ? `pid ${activity.pid} ` : '', activity.detail].join(''))));
  while (body.children.length > MAX_EVENTS) body.lastChild.remove();
}

// ---- charts -------------------------------------------------------------------------------

function mergeLines(update) {
  for (const group of ['nodes', 'watchers']) {
    for (const [key, points] of Object.entries(update[group] || {})) {
      const line = state.lines[group][key] || [];
      const last = line.length ? line[line.length - 1][0] : -Infinity;
      for (const point of points) if (point[0] > last) line.push(point);
      state.lines[group][key] = line;
    }
  }
  const oldest = Date.now() / 1000 - WINDOW;
  for (const group of ['nodes', 'watchers']) {
    for (const [key, line] of Object.entries(state.lines[group])) {
      while (line.length && line[0][0] < oldest) line.shift();
      if (!line.length) delete state.lines[group][key];
    }
  }
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child));
  return node;
}

// Lines drawn per chart: those with the highest last value. A thousand lines and legend
// entries (a cluster of a thousand nodes) made no chart, and took the page's main thread.
const CHART_LINES = 8;

function chart(title, lines, value, format) {
  const width = 600; const height = 170; const left = 52; const bottom = 18; const top = 8;
  const now = Date.now() / 1000;
  const latest = (key) => value(lines[key][lines[key].length - 1]) ?? 0;
  const all = Object.keys(lines);
  const keys = all.sort((a, b) => latest(b) - latest(a) || a.localeCompare(b)).slice(0, CHART_LINES);
  let max = 0;
  for (const key of keys) for (const p of lines[key]) max = Math.max(max, value(p));
  max = max > 0 ? max * 1.1 : 1;
  const x = (t) => left + (width - left - 4) * (1 - (now - t) / WINDOW);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const plot = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' },
    svg('line', { class: 'axis', x1: left, y1: y(0), x2: width, y2: y(0) }),
    svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: y(0) }),
    svg('text', { class: 'label', x: 2, y: top + 8 }, format(max)),
    svg('text', { class: 'label', x: 2, y: y(0) }, format(0)),
    svg('text', { class: 'label', x: left, y: height - 4 }, '−10 min'),
    svg('text', { class: 'label', x: (left + width) / 2 - 12, y: height - 4 }, '−5 min'),
    svg('text', { class: 'label', x: width - 26, y: height - 4 }, 'now'),
    ...keys.map((key, i) => svg('polyline', {
      class: `c${i % 8}`,
      points: lines[key].map((p) => `${x(p[0]).toFixed(1)},${y(value(p)).toFixed(1)}`).join(' '),
    })),
    // The last point of each line, so a line of one sample shows too.
    ...keys.map((key, i) => {
      const p = lines[key][lines[key].length - 1];
      return svg('circle', { class: `c${i % 8} dot`, cx: x(p[0]).toFixed(1), cy: y(value(p)).toFixed(1), r: 2 });
    }));
  const legend = el('div', { class: 'legend' }, keys.map((key, i) => el('span', {},
    el('span', { class: `swatch c${i % 8}` }), key)));
  const heading = all.length > keys.length ? `${title}: the ${keys.length} highest of ${all.length}` : title;
  return el('div', { class: 'chart', dataset: { chart: title } }, el('h3', {}, heading), plot,
    keys.length ? legend : el('div', { class: 'legend' }, 'no samples yet'));
}

function renderCharts() {
  const percent = (v) => `${v.toFixed(v < 10 ? 1 : 0)} %`;
  $('#charts').replaceChildren(
    chart('CPU per node', state.lines.nodes, (p) => p[1], percent),
    chart('Memory (RSS) per node', state.lines.nodes, (p) => p[2], bytes),
    chart('CPU per watcher', state.lines.watchers, (p) => p[1], percent),
    chart('Memory (RSS) per watcher', state.lines.watchers, (p) => p[2], bytes));
}

// ---- output -------------------------------------------------------------------------------

const MAX_LOG_LINES = 20000;
const logs = { lines: [], follow: null };

function fillLogChoices(data) {
  const keep = (select, values, first) => {
    const current = select.value;
    select.replaceChildren(...first, ...values.map((v) => el('option', { value: v }, v)));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  keep($('#log-watcher'), data.watchers, []);
  keep($('#log-node'), data.nodes.filter((n) => n.kind === 'troupe').map((n) => n.name),
    [el('option', { value: '*' }, 'every node')]);
}

function logMatches(line) {
  const filter = $('#log-filter').value;
  return !filter || line.line.includes(filter) || line.node.includes(filter);
}

function logRow(line) {
  return el('div', { class: line.stream, dataset: { node: line.node } },
    el('span', { class: 'who' }, `${clock(line.time)} ${line.node} ${line.watcher}[${line.pid}] `),
    line.line);
}

function renderLogs() {
  const box = $('#log-lines-box');
  box.replaceChildren(...logs.lines.filter(logMatches).map(logRow));
  box.scrollTop = box.scrollHeight;
}

function addLogLine(line) {
  logs.lines.push(line);
  if (logs.lines.length > MAX_LOG_LINES) logs.lines.shift();
  if (!logMatches(line)) return;
  const box = $('#log-lines-box');
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.append(logRow(line));
  while (box.children.length > MAX_LOG_LINES) box.firstChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function logQuery() {
  const watcher = $('#log-watcher').value;
  const node = $('#log-node').value;
  return `watcher=${encodeURIComponent(watcher)}&node=${encodeURIComponent(node)}`;
}

async function showLogs() {
  if (!$('#log-watcher').value) return;
  const lines = Number($('#log-lines').value) || 100;
  $('#log-status').textContent = 'reading…';
  try {
    const answer = await api(`logs?${logQuery()}&lines=${lines}`);
    logs.lines = answer.lines;
    renderLogs();
    const failed = Object.entries(answer.failed || {}).map(([n, r]) => `${n}: ${r}`);
    $('#log-status').textContent = `${answer.lines.length} lines${failed.length ? `; ${failed.join('; ')}` : ''}`;
  } catch (e) {
    $('#log-status').textContent = e.message;
  }
  followLogs();
}

function followLogs() {
  if (logs.follow) logs.follow.close();
  logs.follow = null;
  if (!$('#log-follow').checked || !$('#log-watcher').value) return;
  logs.follow = new EventSource(`/api/logs/follow?${logQuery()}`);
  logs.follow.addEventListener('open', () => { $('#log-status').dataset.following = 'true'; });
  logs.follow.addEventListener('line', (e) => addLogLine(JSON.parse(e.data)));
}

function downloadLogs() {
  const text = logs.lines.filter(logMatches)
    .map((l) => `${new Date(l.time * 1000).toISOString()} ${l.node} ${l.watcher}[${l.pid}] ${l.stream}: ${l.line}`)
    .join('\n');
  const link = el('a', {
    href: URL.createObjectURL(new Blob([`${text}\n`], { type: 'text/plain' })),
    download: `${$('#log-watcher').value}-${$('#log-node').value.replace('*', 'all')}.log`,
  });
  document.body.append(link);
  link.click();
  link.remove();
}

// ---- start --------------------------------------------------------------------------------

function follow() {
  const connection = $('#connection');
  const events = new EventSource('/api/events');
  events.addEventListener('open', () => {
    connection.textContent = 'live';
    connection.className = 'badge s-live';
  });
  events.addEventListener('error', () => {
    connection.textContent = 'reconnecting';
    connection.className = 'badge s-lost';
  });
  events.addEventListener('members', (e) => {
    const data = JSON.parse(e.data);
    renderMembers(data);
    fillLogChoices(data);
    setBusy(state.busy);
  });
  events.addEventListener('activity', (e) => addActivity(JSON.parse(e.data)));
  events.addEventListener('stats', (e) => {
    mergeLines(JSON.parse(e.data));
    renderCharts();
  });
  events.addEventListener('missed', (e) => {
    const { count } = JSON.parse(e.data);
    addActivity({ time: Date.now() / 1000, node: '', kind: 'missed',
      detail: `${count} events not shown (this page fell behind): reload for the latest` });
  });
}

async function start() {
  $('#reconfigure').addEventListener('click', () => act('reconfigure', '*', '*'));
  $('#log-show').addEventListener('click', showLogs);
  $('#log-follow').addEventListener('change', followLogs);
  $('#log-filter').addEventListener('input', renderLogs);
  $('#log-download').addEventListener('click', downloadLogs);
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token) {
    // The token came in the URL's fragment, which no server sees; the cookie set from it
    // carries it from now on, and it leaves the address bar.
    const response = await fetch('/api/login', {
      method: 'POST', credentials: 'same-origin', headers: { Authorization: `Bearer ${token}` },
    });
    history.replaceState(null, '', location.pathname);
    if (!response.ok) {
      banner((await response.json()).error);
      return;
    }
  }
  try {
    mergeLines(await api('stats'));
    renderCharts();
  } catch (e) {
    banner(e.message);
    return;
  }
  follow();
}

start();
