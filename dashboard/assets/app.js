// Polis operator page: follows /ws (a snapshot, then updates; shapes in src/messages.rs), shows
// the city KPIs, the district map, the charts, the alarm list and device health, drills down
// city → district → device, and runs SQL through POST /api/sql. No build step, no dependencies.
'use strict';

/** Windows without any message after which the indicator says stale. */
const STALE_AFTER_WINDOWS = 3;
/** Window length assumed until the first metric tells the real one. */
const DEFAULT_WINDOW_MS = 10000;
/** Reconnect delays: doubled after each failure up to the maximum, reset once connected. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 15000;
/** Windows kept per series: the same number a snapshot carries. */
const WINDOWS_KEPT = 6;
/** SQL result rows shown at most, and rows a drill-down query fetches at most. */
const SQL_ROWS_SHOWN = 1000;
const DRILL_ROWS = 20000;
/** Device rows shown at most in device health. */
const DEVICE_ROWS_SHOWN = 500;
/** How often an open district drill-down asks SQL again for its devices' last readings. */
const DRILL_REFRESH_MS = 15000;
/** A bus or tram is on time with a mean delay of at most this (the same rule as city.sql). */
const ON_TIME_DELAY_S = 180;
const SEVERITY_ORDER = { critical: 0, major: 1, minor: 2, warning: 3 };

/** The operator token from the page's URL (`?token=`), sent with every API call. */
const TOKEN = new URLSearchParams(location.search).get('token');

const state = {
  /** "metric\u0000entity" -> MetricRecords, oldest window first. */
  series: new Map(),
  /** alert_id -> active AlertRecord. */
  alarms: new Map(),
  /** device_id -> Device (latest PresenceRecord + online). */
  devices: new Map(),
  activeAlarms: null,
  devicesOnline: null,
  /** Counts at the two latest window ends, for the trend of the count tiles. */
  counts: { current: null, previous: null, windowEnd: null },
  map: { congestion: '', load: '' },
  latestWindowEnd: null,
  windowMs: DEFAULT_WINDOW_MS,
  connected: false,
  lastMessageAt: 0,
  mapLayer: 'congestion',
  chartDomain: 'traffic',
  selection: { district: null, device: null, kind: null },
  range: 'live',
  drillRows: null,
};

const $ = (id) => document.getElementById(id);

// ---- helpers --------------------------------------------------------------------------------

/** Milliseconds since the epoch of an RFC 3339 time; times without a zone are UTC. */
function parseTime(text) {
  if (typeof text !== 'string') return NaN;
  return Date.parse(/(Z|[+-]\d\d:?\d\d)$/.test(text) ? text : text + 'Z');
}

function clock(timestamp) {
  const t = typeof timestamp === 'number' ? timestamp : parseTime(timestamp);
  return Number.isFinite(t) ? new Date(t).toISOString().substring(11, 19) : '–';
}

const number = (digits) => new Intl.NumberFormat('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const format = { 0: number(0), 1: number(1), 2: number(2), 3: number(3) };

/** A value with as many decimals as its size needs. */
function auto(value) {
  const size = Math.abs(value);
  return format[size >= 100 ? 0 : size >= 1 ? 1 : 3].format(value);
}

/** `text` as a SQL string literal. */
function sqlString(text) {
  return "'" + String(text).replace(/'/g, "''") + "'";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function emptyRow(body, columns, text) {
  const td = cell(body.insertRow(), text, 'empty');
  td.colSpan = columns;
}

function headers(extra) {
  const all = Object.assign({}, extra);
  if (TOKEN) all.Authorization = 'Bearer ' + TOKEN;
  return all;
}

/** POSTs `body` to `path`; resolves to the parsed JSON or rejects with the API's error text. */
async function post(path, body, contentType) {
  const response = await fetch(path, {
    method: 'POST',
    headers: headers({ 'Content-Type': contentType, Accept: 'application/json' }),
    body,
  });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch (_) {
    parsed = null;
  }
  if (!response.ok) {
    const reason = parsed && typeof parsed.error === 'string' ? parsed.error : text || response.statusText;
    throw new Error(response.status + ': ' + reason);
  }
  return parsed;
}

function sql(query) {
  return post('/api/sql?format=json', query, 'text/plain; charset=utf-8').then((rows) => {
    if (!Array.isArray(rows)) throw new Error('the SQL service did not answer with rows');
    return rows;
  });
}

/** An inline SVG line through `values` (oldest first), `width` × `height`. */
function sparkline(values, width, height, labelled) {
  const svgNs = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('class', 'spark');
  const points = values.filter(Number.isFinite);
  if (points.length) {
    const low = Math.min(...points);
    const high = Math.max(...points);
    const pad = labelled ? 16 : 2;
    const span = high > low ? high - low : 1;
    const step = values.length > 1 ? (width - 2 * pad) / (values.length - 1) : 0;
    const coords = [];
    values.forEach((v, i) => {
      if (Number.isFinite(v)) {
        const x = pad + i * step;
        const y = height - pad - ((v - low) / span) * (height - 2 * pad);
        coords.push(x.toFixed(1) + ',' + y.toFixed(1));
      }
    });
    const line = document.createElementNS(svgNs, 'polyline');
    line.setAttribute('points', coords.join(' '));
    line.setAttribute('class', 'line');
    svg.appendChild(line);
    if (labelled) {
      for (const [text, y] of [[auto(high), 12], [auto(low), height - 4]]) {
        const label = document.createElementNS(svgNs, 'text');
        label.setAttribute('x', 2);
        label.setAttribute('y', y);
        label.setAttribute('class', 'axis-label');
        label.textContent = text;
        svg.appendChild(label);
      }
    }
  }
  return svg;
}

// ---- state ----------------------------------------------------------------------------------

function storeMetric(record) {
  const key = record.metric + '\u0000' + record.entity;
  let windows = state.series.get(key);
  if (!windows) {
    windows = [];
    state.series.set(key, windows);
  }
  const start = parseTime(record.window_start);
  const length = parseTime(record.window_end) - start;
  if (length > 0) state.windowMs = length;
  const index = windows.findIndex((w) => parseTime(w.window_start) === start);
  if (index >= 0) {
    if (windows[index].revision < record.revision) windows[index] = record;
    return;
  }
  windows.push(record);
  windows.sort((a, b) => parseTime(a.window_start) - parseTime(b.window_start));
  if (windows.length > WINDOWS_KEPT) windows.splice(0, windows.length - WINDOWS_KEPT);
}

/** Stores each value of a group of metric windows as the record it stands for. */
function storeWindows(group) {
  for (const [entity, value] of group.values) {
    storeMetric({
      metric: group.metric,
      entity_kind: group.entity_kind,
      entity,
      window_start: group.window_start,
      window_end: group.window_end,
      value,
      revision: group.revision,
      emitted_at: group.emitted_at,
    });
  }
}

function storeAlarm(record) {
  if (record.state === 'cleared') state.alarms.delete(record.alert_id);
  else state.alarms.set(record.alert_id, record);
}

function apply(message) {
  if (message.type === 'snapshot') {
    state.series.clear();
    state.alarms.clear();
    state.devices.clear();
  } else if (message.type !== 'update') {
    return;
  }
  for (const group of message.metrics || []) storeWindows(group);
  (message.alarms || []).forEach(storeAlarm);
  for (const device of message.devices || []) state.devices.set(device.device_id, device);
  if (typeof message.active_alarms === 'number') state.activeAlarms = message.active_alarms;
  if (typeof message.devices_online === 'number') state.devicesOnline = message.devices_online;
  if (message.latest_window_end) state.latestWindowEnd = message.latest_window_end;
  if (message.charts) showCharts(message.charts);
  if (message.map) {
    state.map = message.map;
    showMap();
  }
  trackCounts();
  state.lastMessageAt = Date.now();
  render();
}

/** Remembers the count tiles' values per window end, so they show a trend like the others. */
function trackCounts() {
  const now = { alarms: state.alarms.size, devices: state.devicesOnline };
  if (state.latestWindowEnd !== state.counts.windowEnd) {
    state.counts.previous = state.counts.current;
    state.counts.windowEnd = state.latestWindowEnd;
  }
  state.counts.current = now;
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
 * The complete windows of `metric`, newest first, as {end, byEntity: Map(entity -> record)}: the
 * newest window is left out while fewer entities have reported for it than for the one before.
 */
function windowsOf(metric) {
  const byEnd = new Map();
  for (const [entity, windows] of seriesOf(metric)) {
    for (const record of windows) {
      const end = parseTime(record.window_end);
      if (!byEnd.has(end)) byEnd.set(end, new Map());
      byEnd.get(end).set(entity, record);
    }
  }
  const windows = [...byEnd.keys()].sort((a, b) => b - a).map((end) => ({ end, byEntity: byEnd.get(end) }));
  if (windows.length > 1 && windows[0].byEntity.size < windows[1].byEntity.size) windows.shift();
  return windows;
}

function sum(window) {
  let total = 0;
  for (const record of window.byEntity.values()) total += record.value;
  return total;
}

/** Mean of `window`, weighted by the same entity's value of `weights` in the window ending then. */
function weightedMean(window, weights) {
  const weighting = weights.find((w) => w.end === window.end);
  let total = 0, weight = 0, plain = 0;
  for (const [entity, record] of window.byEntity) {
    const w = weighting && weighting.byEntity.get(entity);
    const wv = w ? w.value : 0;
    total += record.value * wv;
    weight += wv;
    plain += record.value;
  }
  return weight > 0 ? total / weight : plain / window.byEntity.size;
}

/**
 * A KPI's [current, previous] values: from the city metric `metric` when analytics emits it,
 * otherwise computed by `fallback(window)` from the district or route metric `from`.
 */
function kpi(metric, from, fallback) {
  const city = windowsOf(metric);
  if (city.length) return [city[0], city.map((w) => w.byEntity.get('city') || [...w.byEntity.values()][0]).map((r) => r.value)];
  const windows = from ? windowsOf(from) : [];
  return [windows[0], windows.slice(0, 2).map(fallback)];
}

// ---- rendering ------------------------------------------------------------------------------

function render() {
  renderKpis();
  renderAlarms();
  renderDevices();
  if (state.selection.district && state.range === 'live') renderLiveDrill();
  $('window-end').textContent = state.latestWindowEnd
    ? 'latest window ends ' + clock(state.latestWindowEnd) + ' UTC'
    : 'no data yet';
}

function setTile(id, values, digits, note, asOf) {
  const [current, previous] = values;
  const known = Number.isFinite(current);
  $(id).textContent = known ? format[digits].format(current) : '–';
  const trend = $(id + '-trend');
  if (known && Number.isFinite(previous)) {
    const direction = current > previous ? 'up' : current < previous ? 'down' : 'flat';
    trend.textContent = { up: '▲', down: '▼', flat: '▶' }[direction];
    trend.className = 'trend ' + direction;
    trend.title = 'previous window: ' + format[digits].format(previous);
  } else {
    trend.textContent = '';
    trend.className = 'trend';
  }
  $(id + '-note').textContent = asOf ? note + ' · ' + clock(asOf) + ' UTC' : note;
}

function renderKpis() {
  const windowMinutes = state.windowMs / 60000;
  const [vehiclesAt, vehicles] = kpi('city.vehicles_per_min', 'traffic.vehicles', (w) => sum(w) / windowMinutes);
  setTile('kpi-vehicles', vehicles, 0, 'vehicles/min', vehiclesAt && vehiclesAt.end);

  const counts = windowsOf('traffic.vehicles');
  const [speedAt, speed] = kpi('city.average_speed_kmh', 'traffic.average_speed_kmh', (w) => weightedMean(w, counts));
  setTile('kpi-speed', speed, 1, 'km/h', speedAt && speedAt.end);

  const [loadAt, load] = kpi('city.load_mw', 'energy.load_kw', (w) => sum(w) / 1000);
  setTile('kpi-load', load, 2, 'MW', loadAt && loadAt.end);

  const [onTimeAt, onTime] = kpi('city.buses_on_time_ratio', 'transport.average_delay_s', (w) => {
    const delays = [...w.byEntity.values()];
    return delays.filter((r) => r.value <= ON_TIME_DELAY_S).length / delays.length;
  });
  setTile('kpi-on-time', onTime.map((v) => v * 100), 0, '% on time', onTimeAt && onTimeAt.end);

  const previous = state.counts.previous || {};
  const alarms = state.alarms.size;
  setTile('kpi-alarms', [state.activeAlarms === null ? NaN : alarms, previous.alarms], 0, 'active', null);
  $('kpi-alarms').classList.toggle('warn', alarms > 0);

  const reporting = windowsOf('city.devices_reporting');
  const reportingNote = reporting.length ? format[0].format(sum(reporting[0])) + ' reporting' : 'connected';
  setTile('kpi-devices', [state.devicesOnline === null ? NaN : state.devicesOnline, previous.devices], 0, reportingNote, null);
}

function showMap() {
  const container = $('district-map');
  container.innerHTML = state.map[state.mapLayer] || '';
  const selected = state.selection.district;
  for (const cellGroup of container.querySelectorAll('[data-district]')) {
    cellGroup.classList.toggle('selected', cellGroup.dataset.district === selected);
  }
}

/** The charts are SVG documents rendered by the dashboard server itself. */
function showCharts(charts) {
  for (const domain of ['traffic', 'energy', 'transport']) {
    if (typeof charts[domain] === 'string') $('chart-' + domain).innerHTML = charts[domain];
  }
}

function selectChart(domain) {
  state.chartDomain = domain;
  for (const button of document.querySelectorAll('#charts-panel [data-domain]')) {
    if (button.tagName === 'BUTTON') button.classList.toggle('selected', button.dataset.domain === domain);
  }
  for (const chart of document.querySelectorAll('#charts-panel .chart')) chart.hidden = chart.dataset.domain !== domain;
  $('chart-png').href = '/api/charts/' + domain + '.png' + (TOKEN ? '?token=' + encodeURIComponent(TOKEN) : '');
  $('chart-png').setAttribute('download', domain + '.png');
}

function selectLayer(layer) {
  state.mapLayer = layer;
  $('map-layer-congestion').classList.toggle('selected', layer === 'congestion');
  $('map-layer-load').classList.toggle('selected', layer === 'load');
  showMap();
}

// ---- alarms ---------------------------------------------------------------------------------

function sortedAlarms() {
  return [...state.alarms.values()].sort((a, b) =>
    (SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity]) ||
    (parseTime(b.raised_at) - parseTime(a.raised_at)) ||
    a.alert_id.localeCompare(b.alert_id));
}

function renderAlarms() {
  const body = $('alarm-list');
  body.replaceChildren();
  const alarms = sortedAlarms();
  $('alarm-count').textContent = alarms.length ? alarms.length + ' active' : '';
  if (!alarms.length) {
    emptyRow(body, 6, 'no active alarms');
    return;
  }
  for (const alarm of alarms) {
    const row = body.insertRow();
    row.dataset.alertId = alarm.alert_id;
    row.className = alarm.state;
    cell(row, alarm.severity, 'severity ' + alarm.severity);
    cell(row, clock(alarm.raised_at));
    cell(row, alarm.entity_kind + ' ' + alarm.entity);
    cell(row, alarm.message, 'message');
    const stateCell = cell(row, alarm.state + (alarm.acknowledged_by ? ' by ' + alarm.acknowledged_by : ''), 'state');
    stateCell.dataset.state = alarm.state;
    const actions = row.insertCell();
    for (const [action, label] of [['ack', 'Acknowledge'], ['clear', 'Clear']]) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = label;
      button.className = 'alarm-' + action;
      button.dataset.action = action;
      button.dataset.alertId = alarm.alert_id;
      button.disabled = action === 'ack' && alarm.state === 'acknowledged';
      actions.appendChild(button);
    }
  }
}

async function alarmAction(action, alertId, button) {
  button.disabled = true;
  try {
    const record = await post('/api/alerts/' + action, JSON.stringify({ alert_id: alertId, by: 'operator' }), 'application/json');
    $('alarm-error').hidden = true;
    if (record && record.alert_id) {
      storeAlarm(record);
      render();
    }
  } catch (error) {
    $('alarm-error').hidden = false;
    $('alarm-error').textContent = (action === 'ack' ? 'Acknowledge' : 'Clear') + ' ' + alertId + ' failed: ' + error.message;
    button.disabled = false;
  }
}

// ---- device health --------------------------------------------------------------------------

/** device id -> its active device alarms (a silent device is one). */
function deviceAlarms() {
  const byDevice = new Map();
  for (const alarm of state.alarms.values()) {
    if (alarm.entity_kind !== 'device') continue;
    if (!byDevice.has(alarm.entity)) byDevice.set(alarm.entity, []);
    byDevice.get(alarm.entity).push(alarm);
  }
  return byDevice;
}

function renderDevices() {
  const body = $('device-list');
  body.replaceChildren();
  const silent = deviceAlarms();
  const ids = new Set([...state.devices.keys(), ...silent.keys()]);
  const filter = $('device-filter').value.trim().toLowerCase();
  const shown = [...ids].filter((id) => id.toLowerCase().includes(filter)).sort((a, b) => {
    const rank = (id) => (silent.has(id) ? 0 : state.devices.get(id) && state.devices.get(id).online ? 2 : 1);
    return rank(a) - rank(b) || a.localeCompare(b);
  });
  const online = [...state.devices.values()].filter((d) => d.online).length;
  $('device-count').textContent = online + ' online · ' + (ids.size - online) + ' offline · ' + silent.size + ' silent';
  if (!shown.length) {
    emptyRow(body, 4, ids.size ? 'no device matches the filter' : 'no device presence yet');
    return;
  }
  for (const id of shown.slice(0, DEVICE_ROWS_SHOWN)) {
    const device = state.devices.get(id);
    const row = body.insertRow();
    row.dataset.device = id;
    cell(row, id);
    const presence = device ? (device.online ? 'online' : 'offline') : 'unknown';
    cell(row, presence, presence).dataset.presence = presence;
    cell(row, device ? clock(device.at) : '–', 'num');
    const alarms = silent.get(id);
    cell(row, alarms ? alarms.map((a) => a.rule).join(', ') : '', alarms ? 'silent' : '');
  }
  if (shown.length > DEVICE_ROWS_SHOWN) emptyRow(body, 4, 'showing ' + DEVICE_ROWS_SHOWN + ' of ' + shown.length + ' devices');
}

// ---- drill-down -----------------------------------------------------------------------------

const RANGE_LABEL = { live: 'live', '1h': 'last hour', '24h': 'last 24 h' };
const RANGE_INTERVAL = { '1h': '1 hour', '24h': '24 hours' };

function showBreadcrumb() {
  const { district, device } = state.selection;
  $('crumb-district').hidden = !district;
  $('crumb-district').textContent = district || '';
  $('crumb-device').hidden = !device;
  $('crumb-device').textContent = device || '';
}

/** The entity the drill-down shows: the selected district, or the city for a past range. */
function drillEntity() {
  return state.selection.district || (state.range !== 'live' ? 'city' : null);
}

function openDrill() {
  const entity = drillEntity();
  $('drill').hidden = !entity;
  showBreadcrumb();
  showMap();
  if (!entity) return;
  $('drill-title').textContent = state.selection.district ? 'District ' + entity : 'City';
  $('drill').dataset.entity = entity;
  $('drill-range').textContent = '· ' + RANGE_LABEL[state.range];
  $('drill-devices').hidden = !state.selection.district;
  $('drill-device').hidden = !state.selection.device;
  if (state.range === 'live') renderLiveDrill();
  else loadRangeDrill(entity, state.range);
  if (state.selection.district) loadDistrictDevices(state.selection.district);
}

function selectDistrict(district) {
  state.selection = { district, device: null, kind: null };
  openDrill();
}

function backToCity() {
  state.selection = { district: null, device: null, kind: null };
  openDrill();
}

/** One row per metric of the drill-down entity: latest, min, max, mean and a sparkline. */
function renderDrillMetrics(byMetric, status) {
  const body = $('drill-metrics').tBodies[0];
  body.replaceChildren();
  $('drill-status').textContent = status;
  const metrics = [...byMetric.keys()].sort();
  if (!metrics.length) {
    emptyRow(body, 6, 'no metrics for this ' + (state.selection.district ? 'district' : 'range'));
    return;
  }
  for (const metric of metrics) {
    const values = byMetric.get(metric);
    const row = body.insertRow();
    row.dataset.metric = metric;
    cell(row, metric);
    cell(row, auto(values[values.length - 1]), 'num');
    cell(row, auto(Math.min(...values)), 'num');
    cell(row, auto(Math.max(...values)), 'num');
    cell(row, auto(values.reduce((a, b) => a + b, 0) / values.length), 'num');
    row.insertCell().appendChild(sparkline(values, 120, 24, false));
  }
}

function renderLiveDrill() {
  const entity = drillEntity();
  if (!entity) return;
  const byMetric = new Map();
  for (const [key, windows] of state.series) {
    const [metric, e] = key.split('\u0000');
    if (e === entity) byMetric.set(metric, windows.map((w) => w.value));
  }
  renderDrillMetrics(byMetric, 'the last ' + WINDOWS_KEPT + ' windows, live');
}

async function loadRangeDrill(entity, range) {
  $('drill-status').textContent = 'querying ' + RANGE_LABEL[range] + '…';
  const query =
    'SELECT metric, window_end, value, revision FROM metrics WHERE entity = ' + sqlString(entity) +
    " AND window_end >= now() - INTERVAL '" + RANGE_INTERVAL[range] + "'" +
    ' ORDER BY metric, window_end, revision LIMIT ' + DRILL_ROWS;
  try {
    const rows = await sql(query);
    if (drillEntity() !== entity || state.range !== range) return;
    const latest = new Map();
    for (const row of rows) latest.set(row.metric + '\u0000' + row.window_end, row);
    const byMetric = new Map();
    for (const row of latest.values()) {
      if (!byMetric.has(row.metric)) byMetric.set(row.metric, []);
      byMetric.get(row.metric).push(row.value);
    }
    renderDrillMetrics(byMetric, rows.length + ' rows from the metrics table · ' + RANGE_LABEL[range]);
  } catch (error) {
    $('drill-status').textContent = 'the query failed: ' + error.message;
  }
}

let drillRefresh = null;

async function loadDistrictDevices(district) {
  clearTimeout(drillRefresh);
  const body = $('drill-devices').tBodies[0];
  const part = (table) =>
    'SELECT device_id, ' + sqlString(table) + ' AS kind, max(observed_at) AS last_reading FROM ' + table +
    ' WHERE district = ' + sqlString(district) + ' GROUP BY device_id';
  const query = ['traffic', 'energy', 'transport'].map(part).join(' UNION ALL ') + ' ORDER BY device_id';
  try {
    const rows = await sql(query);
    if (state.selection.district !== district) return;
    body.replaceChildren();
    if (!rows.length) emptyRow(body, 4, 'no readings from this district');
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.device = row.device_id;
      tr.dataset.kind = row.kind;
      const device = state.devices.get(row.device_id);
      cell(tr, row.device_id);
      cell(tr, row.kind);
      const presence = device ? (device.online ? 'online' : 'offline') : 'unknown';
      cell(tr, presence, presence);
      cell(tr, clock(row.last_reading), 'num');
    }
  } catch (error) {
    body.replaceChildren();
    emptyRow(body, 4, 'the device query failed: ' + error.message);
  }
  drillRefresh = setTimeout(() => {
    if (state.selection.district === district) loadDistrictDevices(district);
  }, DRILL_REFRESH_MS);
}

async function selectDevice(device, kind) {
  state.selection.device = device;
  state.selection.kind = kind;
  showBreadcrumb();
  $('drill-device').hidden = false;
  const presence = state.devices.get(device);
  const alarms = deviceAlarms().get(device) || [];
  $('drill-device-summary').textContent =
    device + ' (' + kind + ') · ' +
    (presence ? (presence.online ? 'online since ' : 'offline since ') + clock(presence.at) + ' UTC' : 'no presence event') +
    ' · ' + (alarms.length ? alarms.map((a) => a.message).join('; ') : 'no active alarm');
  try {
    const rows = await sql('SELECT * FROM ' + kind + ' WHERE device_id = ' + sqlString(device) + ' ORDER BY observed_at DESC LIMIT 20');
    if (state.selection.device === device) fillTable($('drill-readings'), rows);
  } catch (error) {
    $('drill-device-summary').textContent += ' · the readings query failed: ' + error.message;
  }
}

// ---- connection -----------------------------------------------------------------------------

let reconnectDelay = RECONNECT_FIRST_MS;
let reconnectAt = 0;

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const query = TOKEN ? '?token=' + encodeURIComponent(TOKEN) : '';
  const socket = new WebSocket(scheme + location.host + '/ws' + query);
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

function setLiveness(kind, text) {
  const indicator = $('live');
  indicator.className = 'live ' + kind;
  indicator.dataset.state = kind === 'live-ok' ? 'live' : kind;
  $('live-label').textContent = text;
}

function showLiveness() {
  const since = 'stale since ' + clock(state.lastMessageAt);
  const fresh = Date.now() - state.lastMessageAt < STALE_AFTER_WINDOWS * state.windowMs;
  if (!state.connected) {
    const seconds = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
    if (state.lastMessageAt) setLiveness('down', since + ' · reconnecting in ' + seconds + ' s');
    else setLiveness('connecting', 'connecting');
  } else if (fresh) {
    setLiveness('live-ok', 'live');
  } else {
    setLiveness('stale', since);
  }
}

// ---- SQL console ----------------------------------------------------------------------------

let sqlRows = [];

async function runSql() {
  const query = $('sql-text').value.trim();
  if (!query) return;
  const button = $('sql-run');
  button.disabled = true;
  $('sql-status').textContent = 'running…';
  const started = performance.now();
  try {
    const rows = await sql(query);
    const elapsed = Math.round(performance.now() - started) + ' ms';
    $('sql-error').hidden = true;
    showRows(rows);
    $('sql-status').textContent = rows.length + ' rows · ' + elapsed;
    $('sql-status').dataset.rows = rows.length;
  } catch (error) {
    $('sql-error').hidden = false;
    $('sql-error').textContent = error.message;
    showRows([]);
    $('sql-table').replaceChildren();
    $('sql-status').textContent = 'failed';
    delete $('sql-status').dataset.rows;
  } finally {
    button.disabled = false;
  }
}

/** Fills `table` with `rows`, one column per key in order of appearance. */
function fillTable(table, rows) {
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
    const td = cell(body.insertRow(), 'showing the first ' + SQL_ROWS_SHOWN + ' of ' + rows.length + ' rows', 'null');
    td.colSpan = columns.length;
  }
  return columns;
}

function showRows(rows) {
  sqlRows = rows;
  const columns = fillTable($('sql-table'), rows);
  const numeric = columns.filter((name) =>
    rows.some((r) => typeof r[name] === 'number') &&
    rows.every((r) => r[name] === null || r[name] === undefined || typeof r[name] === 'number'));
  const select = $('sql-plot-column');
  select.replaceChildren(...numeric.map((name) => new Option(name, name)));
  select.disabled = !numeric.length;
  $('sql-plot-button').disabled = !numeric.length;
  $('sql-plot').hidden = true;
}

function plotColumn() {
  const column = $('sql-plot-column').value;
  if (!column) return;
  const values = sqlRows.map((r) => (typeof r[column] === 'number' ? r[column] : NaN));
  const plot = $('sql-plot');
  plot.replaceChildren(sparkline(values, 800, 160, true));
  plot.dataset.column = column;
  plot.dataset.points = values.filter(Number.isFinite).length;
  plot.hidden = false;
}

// ---- start ----------------------------------------------------------------------------------

$('sql-run').addEventListener('click', runSql);
$('sql-plot-button').addEventListener('click', plotColumn);
$('sql-text').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    runSql();
  }
});
$('district-map').addEventListener('click', (event) => {
  const target = event.target.closest('[data-district]');
  if (target) selectDistrict(target.dataset.district);
});
$('drill-devices').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-device]');
  if (row) selectDevice(row.dataset.device, row.dataset.kind);
});
$('alarm-list').addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (button) alarmAction(button.dataset.action, button.dataset.alertId, button);
});
$('drill-close').addEventListener('click', backToCity);
$('crumb-city').addEventListener('click', (event) => {
  event.preventDefault();
  backToCity();
});
$('range').addEventListener('change', (event) => {
  state.range = event.target.value;
  openDrill();
});
$('device-filter').addEventListener('input', renderDevices);
for (const button of document.querySelectorAll('#map-panel [data-layer]')) {
  button.addEventListener('click', () => selectLayer(button.dataset.layer));
}
for (const button of document.querySelectorAll('#charts-panel button[data-domain]')) {
  button.addEventListener('click', () => selectChart(button.dataset.domain));
}
setInterval(showLiveness, 1000);
selectChart('traffic');
render();
connect();
