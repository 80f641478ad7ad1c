// Polis operator page: follows /ws (a snapshot, then updates), shows KPIs, tables and the
// server-rendered charts, and runs SQL through POST /api/sql. No build step, no dependencies.
'use strict';

/** The indicator turns stale when no message arrived for this long. */
const STALE_AFTER_MS = 30000;
/** Reconnect delays: doubled after each failure up to the maximum, reset once connected. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 15000;
/** Windows kept per series: the same number a snapshot carries. */
const WINDOWS_KEPT = 6;
/** SQL result rows shown at most. */
const SQL_ROWS_SHOWN = 1000;

const state = {
  /** "metric\u0000entity" -> MetricRecords, oldest window first. */
  series: new Map(),
  latestWindowEnd: null,
  connected: false,
  lastMessageAt: 0,
};

const $ = (id) => document.getElementById(id);

// ---- state ----------------------------------------------------------------------------------

function store(record) {
  const key = record.metric + '\u0000' + record.entity;
  let windows = state.series.get(key);
  if (!windows) {
    windows = [];
    state.series.set(key, windows);
  }
  const start = Date.parse(record.window_start);
  const index = windows.findIndex((w) => Date.parse(w.window_start) === start);
  if (index >= 0) {
    if (windows[index].revision < record.revision) windows[index] = record;
    return;
  }
  windows.push(record);
  windows.sort((a, b) => Date.parse(a.window_start) - Date.parse(b.window_start));
  if (windows.length > WINDOWS_KEPT) windows.splice(0, windows.length - WINDOWS_KEPT);
}

function apply(message) {
  if (message.type === 'snapshot') state.series.clear();
  else if (message.type !== 'update') return;
  (message.metrics || []).forEach(store);
  if (message.latest_window_end) state.latestWindowEnd = message.latest_window_end;
  if (message.charts) showCharts(message.charts);
  state.lastMessageAt = Date.now();
  render();
}

/** Every series of `metric`: [entity, windows]. */
function seriesOf(metric) {
  const found = [];
  for (const [key, windows] of state.series) {
    const [m, entity] = key.split('\u0000');
    if (m === metric && windows.length) found.push([entity, windows]);
  }
  return found.sort((a, b) => a[0].localeCompare(b[0]));
}

/**
 * The latest complete window of `metric`: the newest one, unless fewer entities have reported
 * for it than for the one before (it is still arriving), then that one.
 * Returns {end, byEntity: Map(entity -> record)} or null.
 */
function completeWindow(metric) {
  const byEnd = new Map();
  for (const [entity, windows] of seriesOf(metric)) {
    for (const record of windows) {
      const end = Date.parse(record.window_end);
      if (!byEnd.has(end)) byEnd.set(end, new Map());
      byEnd.get(end).set(entity, record);
    }
  }
  const ends = [...byEnd.keys()].sort((a, b) => b - a);
  if (!ends.length) return null;
  const chosen = ends.length > 1 && byEnd.get(ends[0]).size < byEnd.get(ends[1]).size ? ends[1] : ends[0];
  return { end: chosen, byEntity: byEnd.get(chosen) };
}

function sum(window) {
  let total = 0;
  for (const record of window.byEntity.values()) total += record.value;
  return total;
}

/** Mean of `window`, weighted by the same entity's value of `weights` in the same window. */
function weightedMean(window, weights) {
  let total = 0, weight = 0, plain = 0;
  for (const [entity, record] of window.byEntity) {
    const w = weights ? weights.byEntity.get(entity) : undefined;
    const wv = w && w.window_end === record.window_end ? w.value : 0;
    total += record.value * wv;
    weight += wv;
    plain += record.value;
  }
  return weight > 0 ? total / weight : plain / window.byEntity.size;
}

// ---- rendering ------------------------------------------------------------------------------

const number = (digits) => new Intl.NumberFormat('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const format = { 0: number(0), 1: number(1), 2: number(2) };

function clock(timestamp) {
  return new Date(timestamp).toISOString().substring(11, 19);
}

function render() {
  renderKpis();
  renderTables();
  $('window-end').textContent = state.latestWindowEnd
    ? 'latest window ends ' + clock(state.latestWindowEnd) + ' UTC'
    : 'no data yet';
}

function setKpi(id, window, value, digits, note) {
  $(id).textContent = window ? format[digits].format(value) : '–';
  $(id + '-note').textContent = window ? note + ' · ' + clock(window.end) + ' UTC' : note;
}

function renderKpis() {
  const vehicles = completeWindow('traffic.vehicles');
  setKpi('kpi-vehicles', vehicles, vehicles && sum(vehicles), 0, 'per window, city');

  const speed = completeWindow('traffic.average_speed_kmh');
  setKpi('kpi-speed', speed, speed && weightedMean(speed, vehicles), 1, 'km/h');

  const load = completeWindow('energy.load_kw');
  setKpi('kpi-load', load, load && sum(load) / 1000, 2, 'MW');

  const voltage = completeWindow('energy.min_voltage_v');
  const lowest = voltage ? Math.min(...[...voltage.byEntity.values()].map((r) => r.value)) : 0;
  setKpi('kpi-voltage', voltage, lowest, 1, 'V');

  const active = completeWindow('transport.active_vehicles');
  setKpi('kpi-active', active, active && sum(active), 0, 'public transport');

  const delay = completeWindow('transport.average_delay_s');
  setKpi('kpi-delay', delay, delay && weightedMean(delay, active), 0, 's');
}

/** Latest record per entity for each metric: Map(entity -> {metric -> record}). */
function latestByEntity(metrics) {
  const rows = new Map();
  for (const metric of metrics) {
    for (const [entity, windows] of seriesOf(metric)) {
      if (!rows.has(entity)) rows.set(entity, {});
      rows.get(entity)[metric] = windows[windows.length - 1];
    }
  }
  return new Map([...rows].sort((a, b) => a[0].localeCompare(b[0])));
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** Fills `tbodyId` with one row per entity; `columns` are [metric, digits, scale]. */
function renderTable(tbodyId, columns) {
  const body = $(tbodyId);
  const rows = latestByEntity(columns.map((c) => c[0]));
  body.replaceChildren();
  if (!rows.size) {
    const row = body.insertRow();
    const td = cell(row, 'waiting for data', 'empty');
    td.colSpan = columns.length + 2;
    return;
  }
  const asOf = (records) => Math.max(...Object.values(records).map((r) => Date.parse(r.window_end)));
  const newest = Math.max(...[...rows.values()].map(asOf));
  for (const [entity, records] of rows) {
    const row = body.insertRow();
    cell(row, entity);
    for (const [metric, digits, scale] of columns) {
      const record = records[metric];
      cell(row, record ? format[digits].format(record.value * scale) : '–', 'num');
    }
    cell(row, clock(asOf(records)), 'num');
    if (asOf(records) < newest) row.className = 'behind';
  }
}

function renderTables() {
  renderTable('table-traffic', [
    ['traffic.vehicles', 0, 1],
    ['traffic.average_speed_kmh', 1, 1],
    ['traffic.occupancy_ratio', 0, 100],
  ]);
  renderTable('table-energy', [
    ['energy.load_kw', 1, 1],
    ['energy.min_voltage_v', 1, 1],
  ]);
  renderTable('table-transport', [
    ['transport.active_vehicles', 0, 1],
    ['transport.average_delay_s', 0, 1],
  ]);
}

/** The charts are SVG documents rendered by the dashboard server itself. */
function showCharts(charts) {
  for (const domain of ['traffic', 'energy', 'transport']) {
    if (typeof charts[domain] === 'string') $('chart-' + domain).innerHTML = charts[domain];
  }
}

// ---- connection -----------------------------------------------------------------------------

let reconnectDelay = RECONNECT_FIRST_MS;
let reconnectAt = 0;

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const socket = new WebSocket(scheme + location.host + '/ws');
  socket.onopen = () => {
    state.connected = true;
    reconnectDelay = RECONNECT_FIRST_MS;
    showLiveness();
  };
  socket.onmessage = (event) => {
    try {
      apply(JSON.parse(event.data));
    } catch (error) {
      console.error('could not apply a dashboard message', error);
    }
    showLiveness();
  };
  socket.onclose = () => {
    state.connected = false;
    const delay = reconnectDelay * (0.75 + Math.random() * 0.5);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
    reconnectAt = Date.now() + delay;
    setTimeout(connect, delay);
    showLiveness();
  };
}

function showLiveness() {
  const indicator = $('live');
  const label = $('live-label');
  const fresh = Date.now() - state.lastMessageAt < STALE_AFTER_MS;
  if (!state.connected) {
    const seconds = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
    indicator.className = state.lastMessageAt ? 'live down' : 'live connecting';
    label.textContent = state.lastMessageAt ? 'STALE · reconnecting in ' + seconds + ' s' : 'CONNECTING';
  } else if (fresh) {
    indicator.className = 'live live-ok';
    label.textContent = 'LIVE';
  } else {
    indicator.className = 'live stale';
    label.textContent = 'STALE · no update for ' + Math.round((Date.now() - state.lastMessageAt) / 1000) + ' s';
  }
}

// ---- SQL console ----------------------------------------------------------------------------

async function runSql() {
  const sql = $('sql-text').value.trim();
  if (!sql) return;
  const button = $('sql-run');
  button.disabled = true;
  $('sql-status').textContent = 'running…';
  const started = performance.now();
  try {
    const response = await fetch('/api/sql', {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain; charset=utf-8', Accept: 'application/json' },
      body: sql,
    });
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch (_) {
      body = null;
    }
    const elapsed = Math.round(performance.now() - started) + ' ms';
    if (response.ok && Array.isArray(body)) {
      showRows(body);
      $('sql-status').textContent = body.length + ' rows · ' + elapsed;
    } else {
      const reason = body && typeof body.error === 'string' ? body.error : text || response.statusText;
      showSqlError(response.status + ': ' + reason);
      $('sql-status').textContent = 'failed · ' + elapsed;
    }
  } catch (error) {
    showSqlError('the request failed: ' + error.message);
    $('sql-status').textContent = 'failed';
  } finally {
    button.disabled = false;
  }
}

function showSqlError(message) {
  $('sql-error').hidden = false;
  $('sql-error').textContent = message;
  $('sql-table').replaceChildren();
}

function showRows(rows) {
  $('sql-error').hidden = true;
  const table = $('sql-table');
  table.replaceChildren();
  const columns = [];
  for (const row of rows) {
    for (const name of Object.keys(row)) if (!columns.includes(name)) columns.push(name);
  }
  const head = table.createTHead().insertRow();
  for (const name of columns) {
    const th = document.createElement('th');
    th.textContent = name;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const row of rows.slice(0, SQL_ROWS_SHOWN)) {
    const tr = body.insertRow();
    for (const name of columns) {
      const value = row[name];
      if (value === null || value === undefined) cell(tr, 'NULL', 'null');
      else cell(tr, typeof value === 'object' ? JSON.stringify(value) : String(value), typeof value === 'number' ? 'num' : '');
    }
  }
  if (rows.length > SQL_ROWS_SHOWN) {
    const tr = body.insertRow();
    const td = cell(tr, 'showing the first ' + SQL_ROWS_SHOWN + ' of ' + rows.length + ' rows', 'null');
    td.colSpan = columns.length;
  }
}

// ---- start ----------------------------------------------------------------------------------

$('sql-run').addEventListener('click', runSql);
$('sql-text').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    runSql();
  }
});
setInterval(showLiveness, 1000);
render();
connect();
