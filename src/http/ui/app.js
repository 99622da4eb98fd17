// bankcache's admin page. Everything it shows comes from the documented HTTP routes (/stats,
// /stats/banks, /stats/volumes and the REST API), with the bearer token when the server asks for one.
// Every value reaches the page through textContent: nothing read from the server is ever parsed as HTML.
'use strict';

(function () {
  const REFRESH_MS = 2000;          // the dashboard's polling period: /stats and /stats/volumes each time
  const HISTORY = 90;               // samples kept per chart (three minutes)
  const KEYS_PER_PAGE = 50;
  const SCAN_CALLS_PER_PAGE = 40;   // bank.scan calls one page may take with a prefix (each visits <= 10k slots)
  const TOKEN_KEY = 'bankcache-token';

  const $ = (id) => document.getElementById(id);
  const show = (el, on) => el.classList.toggle('hidden', !on);

  // ---- HTTP -------------------------------------------------------------------------------------------

  let token = sessionStorage.getItem(TOKEN_KEY);

  class Unauthorized extends Error {}

  /// A request to this server: the token as a bearer token, never cached, never in the URL.
  async function request(method, path, body) {
    const headers = {};
    if (token) headers['Authorization'] = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      init.body = body;
      headers['Content-Type'] = 'text/plain; charset=utf-8';
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      askForToken(token ? 'That token was refused.' : '');
      throw new Unauthorized('the server asks for its token');
    }
    return response;
  }

  /// A REST call answered with the JSON envelope: its data, or an Error carrying the server's message.
  async function api(method, path, body) {
    const response = await request(method, path, body);
    const text = await response.text();
    let envelope;
    try {
      envelope = JSON.parse(text);
    } catch (e) {
      throw new Error(response.status + ': ' + text.trim());
    }
    if (envelope.status !== 'ok') throw new Error(envelope.message || ('status ' + response.status));
    return { data: envelope.data, encoding: envelope.encoding, headers: response.headers };
  }

  const seg = (s) => encodeURIComponent(s);

  function status(text, error) {
    const el = $('status');
    el.textContent = text;
    el.classList.toggle('error', !!error);
  }

  function failed(e) {
    if (!(e instanceof Unauthorized)) status(String(e.message || e), true);
  }

  // ---- the token --------------------------------------------------------------------------------------

  let authShown = false;

  function askForToken(why) {
    authShown = true;
    show($('auth'), true);
    $('auth-error').textContent = why;
    $('token').focus();
  }

  $('auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('token').value.trim();
    $('token').value = '';
    sessionStorage.setItem(TOKEN_KEY, token);
    authShown = false;
    show($('auth'), false);
    $('auth-error').textContent = '';
    refresh();
    if (currentView === 'banks') loadBanks(bankCursor);
  });

  // ---- views ------------------------------------------------------------------------------------------

  let currentView = 'dashboard';

  function view(name) {
    currentView = name;
    show($('dashboard'), name === 'dashboard');
    show($('banks'), name === 'banks');
    $('tab-dashboard').classList.toggle('active', name === 'dashboard');
    $('tab-banks').classList.toggle('active', name === 'banks');
    if (name === 'banks' && !openBank) loadBanks(0);
  }

  $('tab-dashboard').addEventListener('click', () => view('dashboard'));
  $('tab-banks').addEventListener('click', () => view('banks'));

  // ---- charts (canvas, drawn here) --------------------------------------------------------------------

  const COLORS = ['#2f6fdd', '#e07b24', '#2a9d5b', '#c0392b', '#8e44ad', '#7f8c8d', '#d4a017'];

  /// Draws series (each {name, values, color}) over the same x axis, with a y axis from 0.
  function lineChart(canvas, series, opts) {
    const [ctx, w, h] = prepare(canvas);
    const left = 48, right = 8, top = 8, bottom = 34;
    let max = opts.max || 0;
    for (const s of series) for (const v of s.values) if (v > max) max = v;
    if (max <= 0) max = 1;
    max = niceCeil(max);
    ctx.font = '11px system-ui, sans-serif';
    ctx.strokeStyle = '#e3e7ee';
    ctx.fillStyle = '#5b6b8c';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + (h - top - bottom) * (1 - i / 4);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(w - right, y);
      ctx.stroke();
      ctx.fillText(short(max * i / 4), 4, y + 4);
    }
    const x = (i) => left + (w - left - right) * (i / (HISTORY - 1));
    const y = (v) => top + (h - top - bottom) * (1 - Math.min(v, max) / max);
    series.forEach((s) => {
      const offset = HISTORY - s.values.length;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.dashed ? 1 : 1.8;
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      s.values.forEach((v, i) => (i === 0 ? ctx.moveTo(x(offset + i), y(v)) : ctx.lineTo(x(offset + i), y(v))));
      ctx.stroke();
    });
    ctx.setLineDash([]);
    let lx = left;
    for (const s of series) {
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, h - 14, 10, 10);
      ctx.fillStyle = '#1d2330';
      const label = s.name + (s.values.length ? ' ' + short(s.values[s.values.length - 1]) : '');
      ctx.fillText(label, lx + 13, h - 5);
      lx += ctx.measureText(label).width + 26;
    }
  }

  /// The ring of volumes: one arc per volume, filled as far as the volume is, the one being written
  /// outlined; each labelled with its number and how many times it was started.
  function ringChart(canvas, ring) {
    const [ctx, , h] = prepare(canvas);
    ctx.font = '11px system-ui, sans-serif';
    if (!ring) {
      ctx.fillStyle = '#5b6b8c';
      ctx.fillText('memory only: no disk volumes', 12, h / 2);
      return;
    }
    const cx = 100, cy = h / 2, r = 80, inner = 48;
    const n = ring.volumes.length;
    const gap = n > 1 ? Math.min(0.04, Math.PI / n / 4) : 0;
    ring.volumes.forEach((v, i) => {
      const a0 = -Math.PI / 2 + (2 * Math.PI * i) / n + gap;
      const a1 = -Math.PI / 2 + (2 * Math.PI * (i + 1)) / n - gap;
      const fill = ring.size ? Math.min(1, v.used / ring.size) : 0;
      sector(ctx, cx, cy, inner, r, a0, a1, '#e3e7ee');
      sector(ctx, cx, cy, inner, inner + (r - inner) * fill, a0, a1, i === ring.current ? '#e07b24' : '#2f6fdd');
      if (i === ring.current) {
        ctx.strokeStyle = '#1d2330';
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(cx, cy, r + 3, a0, a1);
        ctx.stroke();
      }
      if (n <= 32) {
        const mid = (a0 + a1) / 2;
        ctx.fillStyle = '#1d2330';
        ctx.fillText(String(i), cx + Math.cos(mid) * (r + 12) - 4, cy + Math.sin(mid) * (r + 12) + 4);
      }
    });
    const cur = ring.volumes[ring.current];
    const lines = [
      'writing volume ' + ring.current + ' (generation ' + cur.generation + ')',
      'filled ' + pct(cur.used / ring.size) + ' of ' + bytes(ring.size),
      'volumes ' + n + ', reuses since start ' + ring.reuses,
    ];
    ring.volumes.slice(0, 8).forEach((v, i) => {
      lines.push('#' + i + ': ' + pct(v.used / ring.size) + ', started ' + v.starts + 'x');
    });
    ctx.fillStyle = '#1d2330';
    lines.forEach((line, i) => ctx.fillText(line, 205, 22 + i * 16));
  }

  /// Sizes a canvas to the space it is shown in (sharp on any pixel ratio) and clears it.
  function prepare(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 460, h = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return [ctx, w, h];
  }

  function sector(ctx, cx, cy, r0, r1, a0, a1, color) {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(cx, cy, r1, a0, a1);
    ctx.arc(cx, cy, r0, a1, a0, true);
    ctx.closePath();
    ctx.fill();
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function short(v) {
    if (v >= 1e9) return (v / 1e9).toFixed(1) + 'G';
    if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (v >= 1e4) return (v / 1e3).toFixed(0) + 'k';
    if (v >= 100) return v.toFixed(0);
    return (Math.round(v * 10) / 10).toString();
  }

  function bytes(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + ' GiB';
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
    return n + ' B';
  }

  const pct = (f) => (isFinite(f) ? (100 * f).toFixed(1) : '0.0') + '%';

  // ---- the dashboard ----------------------------------------------------------------------------------

  const OP_GROUPS = [
    ['get', ['ops_get', 'ops_getouch']],
    ['put', ['ops_put']],
    ['delete', ['ops_delete']],
    ['incr/touch', ['ops_incr', 'ops_touch']],
    ['bank ops', ['ops_bank_keys', 'ops_bank_scan', 'ops_bank_list', 'ops_bank_reset']],
    ['other', ['ops_ping', 'ops_stats', 'ops_auth']],
  ];
  const history = { ops: OP_GROUPS.map(() => []), mem: [], disk: [], miss: [], used: [], max: [], conns: [] };
  let last = null;
  let polling = false;

  function push(list, v) {
    list.push(v);
    if (list.length > HISTORY) list.shift();
  }

  async function refresh() {
    if (polling || authShown) return;
    polling = true;
    try {
      const [stats, ring] = await Promise.all([api('GET', '/stats'), api('GET', '/stats/volumes')]);
      sample(stats.data, performance.now());
      ringChart($('chart-ring'), ring.data);
      $('ring-text').textContent = ring.data
        ? 'volume ' + ring.data.current + ' is being written; ' + ring.data.reuses + ' reuses since start'
        : 'memory only';
      status('updated ' + new Date().toLocaleTimeString());
    } catch (e) {
      failed(e);
    } finally {
      polling = false;
    }
  }

  function sample(s, at) {
    if (last) {
      const dt = (at - last.at) / 1000;
      const rate = (names) => names.reduce((sum, n) => sum + Math.max(0, (s[n] || 0) - (last.s[n] || 0)), 0) / dt;
      OP_GROUPS.forEach(([, names], i) => push(history.ops[i], rate(names)));
      const mem = s.reads_memory - last.s.reads_memory;
      const disk = s.reads_disk - last.s.reads_disk;
      const miss = s.misses - last.s.misses;
      const reads = mem + disk + miss;
      push(history.mem, reads ? (100 * mem) / reads : 0);
      push(history.disk, reads ? (100 * disk) / reads : 0);
      push(history.miss, reads ? (100 * miss) / reads : 0);
      const total = OP_GROUPS.reduce((sum, [, names]) => sum + rate(names), 0);
      $('fig-ops').textContent = short(total);
      $('fig-hits').textContent = reads ? pct((mem + disk) / reads) : '-';
    }
    last = { s, at };
    push(history.used, s.memory_used / 1048576);
    push(history.max, s.memory_max / 1048576);
    push(history.conns, s.connections_current);
    $('fig-memory').textContent = bytes(s.memory_used) + ' / ' + bytes(s.memory_max);
    $('fig-conns').textContent = String(s.connections_current);
    $('fig-keys').textContent = String(s.keys);
    $('fig-banks').textContent = String(s.banks);
    $('fig-uptime').textContent = s.uptime_s + ' s';
    draw();
  }

  function draw() {
    lineChart($('chart-ops'), OP_GROUPS.map(([name], i) => ({ name, values: history.ops[i], color: COLORS[i] })), {});
    lineChart($('chart-hits'), [
      { name: 'memory', values: history.mem, color: COLORS[0] },
      { name: 'disk', values: history.disk, color: COLORS[1] },
      { name: 'miss', values: history.miss, color: COLORS[3] },
    ], { max: 100 });
    lineChart($('chart-memory'), [
      { name: 'used', values: history.used, color: COLORS[0] },
      { name: 'limit', values: history.max, color: COLORS[3], dashed: true },
    ], {});
    lineChart($('chart-conns'), [{ name: 'open', values: history.conns, color: COLORS[2] }], {});
  }

  // ---- banks ------------------------------------------------------------------------------------------

  let bankCursor = 0;
  let bankNext = 0;
  let openBank = null;

  async function loadBanks(cursor) {
    try {
      const { data } = await api('GET', '/stats/banks?count=50&cursor=' + cursor);
      bankCursor = cursor;
      bankNext = data.cursor;
      const rows = $('bank-rows');
      rows.replaceChildren();
      for (const b of data.banks) {
        const tr = document.createElement('tr');
        tr.dataset.bank = b.name;
        for (const text of [b.name, String(b.keys), bytes(b.bytes), bytes(b.ram_bytes)]) {
          const td = document.createElement('td');
          td.textContent = text;
          tr.appendChild(td);
        }
        tr.addEventListener('click', () => enterBank(b.name));
        rows.appendChild(tr);
      }
      $('banks-next').disabled = bankNext === 0;
      status(data.banks.length ? 'banks listed' : 'no banks');
    } catch (e) {
      failed(e);
    }
  }

  $('banks-first').addEventListener('click', () => loadBanks(0));
  $('banks-next').addEventListener('click', () => bankNext && loadBanks(bankNext));
  $('banks-reload').addEventListener('click', () => loadBanks(bankCursor));
  $('open-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('open-bank').value;
    if (name) enterBank(name);
  });

  function enterBank(name) {
    openBank = name;
    $('bank-name').textContent = name;
    show($('bank-list-view'), false);
    show($('bank-view'), true);
    show($('entry'), false);
    show($('editor'), false);
    closeReset();
    $('prefix').value = '';
    startScan('');
  }

  $('back').addEventListener('click', () => {
    openBank = null;
    show($('bank-view'), false);
    show($('bank-list-view'), true);
    loadBanks(bankCursor);
  });

  // A page of keys: bank.scan calls from a cursor until a page is full or the scan is done. `pages` holds
  // the cursor each page started from, for Previous.
  let scan = { prefix: '', pages: [0], next: 0, token: 0 };

  function startScan(prefix) {
    scan = { prefix, pages: [0], next: 0, token: scan.token + 1 };
    loadKeys(0);
  }

  async function loadKeys(cursor) {
    const mine = ++scan.token;
    const bank = openBank;
    const keys = [];
    let calls = 0;
    // With a prefix most slots do not match: ask for more per call, so a call walks more of the bank.
    const count = scan.prefix ? 1000 : KEYS_PER_PAGE;
    try {
      $('keys-info').textContent = 'listing...';
      let at = cursor;
      do {
        const query = '?cursor=' + at + '&count=' + count + '&prefix=' + seg(scan.prefix);
        const { data } = await api('GET', '/bank/' + seg(bank) + '/scan' + query);
        if (mine !== scan.token) return;
        keys.push(...data.keys);
        at = data.cursor;
        calls += 1;
      } while (at !== 0 && keys.length < KEYS_PER_PAGE && calls < SCAN_CALLS_PER_PAGE);
      scan.next = at;
      renderKeys(keys);
      const page = scan.pages.length;
      $('keys-info').textContent =
        keys.length + ' key' + (keys.length === 1 ? '' : 's') + ' on page ' + page + (at === 0 ? ' (end)' : '');
      $('keys-next').disabled = at === 0;
      $('keys-prev').disabled = scan.pages.length <= 1;
    } catch (e) {
      $('keys-info').textContent = '';
      failed(e);
    }
  }

  function renderKeys(keys) {
    const list = $('keys');
    list.replaceChildren();
    for (const key of keys) {
      const li = document.createElement('li');
      li.textContent = key;
      li.dataset.key = key;
      li.title = key;
      li.addEventListener('click', () => {
        for (const other of list.children) other.classList.remove('selected');
        li.classList.add('selected');
        openEntry(key);
      });
      list.appendChild(li);
    }
  }

  $('prefix-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    startScan($('prefix').value);
  });
  $('keys-next').addEventListener('click', () => {
    if (scan.next === 0) return;
    scan.pages.push(scan.next);
    loadKeys(scan.next);
  });
  $('keys-prev').addEventListener('click', () => {
    if (scan.pages.length <= 1) return;
    scan.pages.pop();
    loadKeys(scan.pages[scan.pages.length - 1]);
  });

  // ---- one entry --------------------------------------------------------------------------------------

  let entry = null;

  async function openEntry(key) {
    show($('editor'), false);
    show($('delete-confirm'), false);
    try {
      const { data, encoding, headers } = await api('GET', '/bank/' + seg(openBank) + '/entry/' + seg(key));
      entry = describe(key, data, encoding, headers);
      $('entry-key').textContent = key;
      $('entry-type').textContent = entry.type;
      $('entry-size').textContent = bytes(Number(headers.get('X-Value-Bytes') || 0));
      $('entry-lifetime').textContent = lifetimeLeft(headers.get('Cache-Control'));
      $('entry-tier').textContent = headers.get('X-Cache') === 'DISK' ? 'disk' : 'memory';
      $('entry-position').textContent = position(headers.get('X-Position'));
      $('value').textContent = entry.shown;
      show($('entry'), true);
    } catch (e) {
      failed(e);
    }
  }

  /// How a value is shown: JSON formatted; bytes as text when they are printable UTF-8, else as a hex dump.
  function describe(key, data, encoding, headers) {
    if (encoding === 'base64') {
      const raw = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      let text = null;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
        // eslint-disable-next-line no-control-regex
        if (/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) text = null;
      } catch (e) {
        text = null;
      }
      return text === null
        ? { key, type: 'bytes (hex dump)', shown: hexdump(raw), edit: null, editType: 'text' }
        : { key, type: 'bytes (UTF-8 text)', shown: text, edit: text, editType: 'text' };
    }
    if (typeof data === 'string') return { key, type: 'JSON string', shown: data, edit: data, editType: 'text' };
    const formatted = JSON.stringify(data, null, 2);
    return { key, type: 'JSON', shown: formatted, edit: formatted, editType: 'json' };
  }

  function hexdump(raw) {
    const lines = [];
    for (let at = 0; at < raw.length; at += 16) {
      const row = raw.subarray(at, at + 16);
      const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
      const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
      lines.push(at.toString(16).padStart(8, '0') + '  ' + hex.padEnd(48) + ' ' + ascii);
    }
    return lines.join('\n');
  }

  function lifetimeLeft(cacheControl) {
    const m = /max-age=(\d+)/.exec(cacheControl || '');
    return m ? m[1] + ' s' : 'forever';
  }

  function position(header) {
    if (!header) return 'memory only (no disk store)';
    const [volume, offset, size] = header.split(',');
    return 'volume ' + volume + ', offset ' + offset + ', record ' + size + ' B';
  }

  $('edit').addEventListener('click', () => {
    if (!entry) return;
    const left = /^(\d+) s$/.exec($('entry-lifetime').textContent);
    openEditor(entry.key, entry.edit === null ? '' : entry.edit, entry.editType, left ? left[1] : '');
  });
  $('add').addEventListener('click', () => openEditor('', '', 'json', ''));

  function openEditor(key, value, type, lifetime) {
    $('editor-title').textContent = key ? 'Edit entry' : 'Add entry';
    $('edit-key').value = key;
    $('edit-key').readOnly = !!key;
    $('edit-value').value = value;
    $('edit-type').value = type;
    $('edit-lifetime').value = lifetime;
    show($('entry'), false);
    show($('editor'), true);
    (key ? $('edit-value') : $('edit-key')).focus();
  }

  $('edit-cancel').addEventListener('click', () => show($('editor'), false));

  $('editor').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = $('edit-key').value;
    const value = $('edit-value').value;
    const type = $('edit-type').value;
    const lifetime = $('edit-lifetime').value.trim();
    if (!key) return status('a key is needed', true);
    if (type === 'json') {
      try {
        JSON.parse(value);
      } catch (e) {
        return status('the value is not JSON: ' + e.message, true);
      }
    }
    let query = type === 'json' ? '?as=json' : '?as=text';
    if (lifetime) query += '&lifetime=' + seg(lifetime);
    try {
      await api('POST', '/bank/' + seg(openBank) + '/entry/' + seg(key) + query, value);
      status('stored ' + key);
      show($('editor'), false);
      await openEntry(key);
    } catch (e) {
      failed(e);
    }
  });

  $('delete').addEventListener('click', () => show($('delete-confirm'), true));
  $('delete-confirm').addEventListener('click', async () => {
    if (!entry) return;
    try {
      await api('DELETE', '/bank/' + seg(openBank) + '/entry/' + seg(entry.key));
      status('deleted ' + entry.key);
      for (const li of Array.from($('keys').children)) if (li.dataset.key === entry.key) li.remove();
      entry = null;
      show($('entry'), false);
    } catch (e) {
      failed(e);
    }
  });

  // ---- reset, after typing the bank's name ------------------------------------------------------------

  function closeReset() {
    show($('reset-box'), false);
    $('reset-confirm').value = '';
    $('reset-do').disabled = true;
  }

  $('reset').addEventListener('click', () => {
    $('reset-name').textContent = openBank;
    $('reset-confirm').value = '';
    $('reset-do').disabled = true;
    show($('reset-box'), true);
    $('reset-confirm').focus();
  });
  $('reset-confirm').addEventListener('input', () => {
    $('reset-do').disabled = $('reset-confirm').value !== openBank;
  });
  $('reset-cancel').addEventListener('click', closeReset);
  $('reset-do').addEventListener('click', async () => {
    if ($('reset-confirm').value !== openBank) return;
    try {
      await api('PUT', '/bank/' + seg(openBank) + '?op=reset');
      status('bank ' + openBank + ' reset');
      closeReset();
      show($('entry'), false);
      startScan($('prefix').value);
    } catch (e) {
      failed(e);
    }
  });

  // ---- start ------------------------------------------------------------------------------------------

  draw();
  refresh();
  setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
})();
