// The qmaint dashboard: one page per hash route, refreshed every 2 s while open.
// Plain browser JavaScript, no build step; charts by uPlot (window.uPlot).
(function () {
  'use strict';

  const REFRESH_MS = 2000;
  const page = document.getElementById('page');
  const live = document.getElementById('live');
  let meta = { allowActions: false, showQueries: false };
  let timer = null;
  let generation = 0;
  const charts = [];

  // ---------------------------------------------------------------------------
  // helpers

  const esc = (v) =>
    String(v === null || v === undefined ? '' : v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
  const bytes = (n) => {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? v : v.toFixed(1)) + ' ' + units[i];
  };
  const age = (s) => {
    if (s === null || s === undefined) return '–';
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  };
  const time = (iso) => (iso ? esc(String(iso).replace('T', ' ').replace(/\.\d+Z$/, 'Z')) : '<span class="muted">–</span>');
  const verdict = (v) => `<span class="verdict ${esc(v)}">${esc(v)}</span>`;
  const stateOf = (p) => (p.detachPending ? 'detach pending' : p.expired ? 'expired' : p.state);
  const stateTag = (s) => `<span class="state ${esc(s.replace(' ', '-'))}">${esc(s)}</span>`;
  const table = (head, rows, empty) =>
    rows.length === 0
      ? `<p class="muted">${esc(empty || 'none')}</p>`
      : `<table><thead><tr>${head.map((h) => `<th${h.num ? ' class="num"' : ''}>${esc(h.label || h)}</th>`).join('')}</tr></thead><tbody>${rows
          .map((r) => `<tr>${r.map((c, i) => `<td${head[i] && head[i].num ? ' class="num"' : ''}>${c}</td>`).join('')}</tr>`)
          .join('')}</tbody></table>`;

  async function api(path, options) {
    const res = await fetch('./api/' + path, Object.assign({ credentials: 'same-origin' }, options || {}));
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = { error: res.statusText };
    }
    if (!res.ok) {
      const err = new Error((body && body.error) || res.statusText);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function action(path, body) {
    return api('actions/' + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-qmaint-action': '1' },
      body: JSON.stringify(body || {}),
    });
  }

  function setLive(ok, text) {
    live.textContent = text;
    live.className = 'live' + (ok ? '' : ' down');
  }

  function confirmDialog(title, html) {
    const dlg = document.getElementById('confirm');
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-body').innerHTML = html;
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.showModal();
    });
  }

  function notice(el, kind, text) {
    el.innerHTML = `<div class="notice ${kind}">${esc(text)}</div>`;
  }

  const actionsOff = () =>
    meta.allowActions ? '' : ' disabled title="read-only: start qmaint ui with --allow-actions to enable actions"';

  // A time series chart that grows while the page is open.
  function liveChart(el, title, names) {
    const width = Math.max(320, el.clientWidth || 600);
    const opts = {
      title,
      width,
      height: 200,
      series: [{}].concat(names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 2 }))),
      axes: [{}, { size: 70 }],
      // At least the last two minutes across, so the first samples do not spread over years.
      scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 120), max] } },
    };
    const data = [[]].concat(names.map(() => []));
    const chart = new window.uPlot(opts, data, el);
    charts.push(chart);
    return {
      names,
      push(values) {
        data[0].push(Date.now() / 1000);
        names.forEach((n, i) => data[i + 1].push(values[n] === undefined ? null : values[n]));
        if (data[0].length > 300) data.forEach((s) => s.shift());
        chart.setData(data);
      },
    };
  }
  const PALETTE = ['#1565c0', '#c62828', '#2e7d32', '#f9a825', '#6a1b9a', '#00838f', '#ef6c00', '#4e342e'];

  // ---------------------------------------------------------------------------
  // pages: each returns a refresh function run now and every 2 s

  const pages = {};

  pages.overview = function () {
    page.innerHTML = `<h1>Overview</h1>
      <section class="card"><h2>Queues</h2><div id="queues"></div><div id="qmsg"></div></section>
      <section class="card"><h2>Throughput and depth (sampled while this page is open)</h2><div class="grid"><div id="tput" class="chart"></div><div id="depth" class="chart"></div></div></section>
      <div class="grid"><section class="card"><h2>Health</h2><div id="health"><p class="muted">running the checks…</p></div></section>
      <section class="card"><h2>Maintenance</h2><div id="leader"></div><div id="cron"><p class="muted">looking for pg_cron…</p></div></section></div>`;
    let tput = null;
    let depth = null;
    let slow = 0;
    document.getElementById('queues').addEventListener('click', async (e) => {
      const b = e.target.closest('button[data-queue]');
      if (!b) return;
      const msg = document.getElementById('qmsg');
      try {
        const r = await action(`queues/${encodeURIComponent(b.dataset.queue)}/${b.dataset.act}`);
        notice(msg, 'ok', `${b.dataset.act}: queue ${b.dataset.queue} is ${r.paused ? 'paused' : 'running'}`);
      } catch (err) {
        notice(msg, 'error', `${b.dataset.act} refused (${err.status || 'network'}): ${err.message}`);
      }
    });
    return async () => {
      const o = await api('overview');
      const info = new Map(o.queues.map((q) => [q.queue, q]));
      const rows = o.status.queues.map((q) => {
        const i = info.get(q.queue) || { paused: false, completedPerMinute: 0, deadLetter: null };
        return [
          `<a href="#/jobs?queue=${encodeURIComponent(q.queue)}">${esc(q.queue)}</a>${i.paused ? ' <span class="verdict warn">paused</span>' : ''}`,
          num(q.counts.queued),
          num(q.ready),
          num(q.counts.running),
          num(q.counts.completed),
          num(q.counts.failed),
          num(q.counts.cancelled),
          age(q.oldestQueuedAgeSeconds),
          num(Math.round(i.completedPerMinute * 10) / 10),
          esc(i.deadLetter || ''),
          `<button data-queue="${esc(q.queue)}" data-act="${i.paused ? 'resume' : 'pause'}"${actionsOff()}>${i.paused ? 'resume' : 'pause'}</button>`,
        ];
      });
      document.getElementById('queues').innerHTML = table(
        ['queue', { label: 'queued', num: 1 }, { label: 'ready', num: 1 }, { label: 'running', num: 1 }, { label: 'completed', num: 1 }, { label: 'failed', num: 1 }, { label: 'cancelled', num: 1 }, { label: 'oldest queued', num: 1 }, { label: 'done/min (5 min)', num: 1 }, 'dead letters to', ''],
        rows,
        'no jobs yet',
      );
      const names = o.status.queues.map((q) => q.queue).slice(0, 8);
      if (!tput || tput.names.join() !== names.join()) {
        document.getElementById('tput').innerHTML = '';
        document.getElementById('depth').innerHTML = '';
        tput = liveChart(document.getElementById('tput'), 'completed per minute', names);
        depth = liveChart(document.getElementById('depth'), 'ready jobs', names);
      }
      tput.push(Object.fromEntries(names.map((n) => [n, (info.get(n) || { completedPerMinute: 0 }).completedPerMinute])));
      depth.push(Object.fromEntries(o.status.queues.map((q) => [q.queue, q.ready])));
      const l = o.leader;
      document.getElementById('leader').innerHTML = l
        ? `<p>Daemon leader: pid ${esc(l.pid)} (${esc(l.applicationName || '?')}${l.clientAddress ? ' from ' + esc(l.clientAddress) : ''}), since ${time(l.since)}</p>`
        : '<p class="muted">No daemon leads this database right now.</p>';
      // Health and pg_cron change slowly and cost more: every fifth refresh (the server caches them too).
      if (slow++ % 5 === 0) {
        const [h, c] = await Promise.allSettled([api('health'), api('cron')]);
        const he = document.getElementById('health');
        if (h.status === 'fulfilled') {
          const r = h.value;
          const code = r.exitCodes[r.status];
          he.innerHTML =
            `<p>Overall ${verdict(r.status)}: <code>qmaint health</code> exits ${code.exitCode} (${esc(code.meaning)}). <code>${esc(r.summaryLine)}</code></p>` +
            table(['check', 'status', 'observed', 'threshold'], r.checks.map((k) => [esc(k.check), verdict(k.status), esc(k.observed), `<span class="muted">${esc(k.threshold)}</span>`])) +
            r.checks.filter((k) => k.status !== 'ok').map((k) => `<div class="notice">${esc(k.check)}: ${esc(k.message)}</div>`).join('');
        } else {
          he.innerHTML = `<div class="notice error">health: ${esc(h.reason.message)}</div>`;
        }
        const ce = document.getElementById('cron');
        if (c.status === 'fulfilled') {
          const p = c.value;
          ce.innerHTML = p.available
            ? `<p>pg_cron ${esc(p.version)} (jobs in ${esc(p.cronDatabase)}): ${p.jobs.length} qmaint job(s)</p>` +
              table(['job', 'schedule', 'active', 'last run'], p.jobs.map((j) => [esc(j.name), `<code>${esc(j.schedule)}</code>`, j.active ? 'yes' : '<span class="verdict warn">no</span>', j.runs[0] ? `${time(j.runs[0].startedAt)} ${verdict(j.runs[0].status)}` : '<span class="muted">not yet</span>']))
            : `<p class="muted">pg_cron: not in use here (${esc(p.reason.split('; to fix it')[0])}; qmaint schedule install says how to set it up)</p>`;
        } else {
          ce.innerHTML = `<div class="notice error">pg_cron: ${esc(c.reason.message)}</div>`;
        }
      }
    };
  };

  pages.jobs = function (params) {
    const f = { queue: params.get('queue') || '', status: params.get('status') || '', id: params.get('id') || '', before: params.get('before') || '' };
    page.innerHTML = `<h1>Jobs</h1><section class="card">
      <form class="filters" id="filters">
        <label>queue<input name="queue" value="${esc(f.queue)}" placeholder="any"></label>
        <label>status<select name="status">${['', 'queued', 'running', 'completed', 'failed', 'cancelled'].map((s) => `<option value="${s}"${s === f.status ? ' selected' : ''}>${s || 'any'}</option>`).join('')}</select></label>
        <label>id<input name="id" value="${esc(f.id)}" size="10"></label>
        <label>created before (UTC)<input name="before" value="${esc(f.before)}" placeholder="2026-01-31T12:00:00Z"></label>
        <button type="submit">Filter</button>
      </form>
      <div id="list"></div><div class="actions"><button id="newer" disabled>« newest</button><button id="older" disabled>older »</button></div>
      <p class="muted">Newest first, 50 a page, paged by job id (never a count of the table).</p></section>`;
    document.getElementById('filters').addEventListener('submit', (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(e.target)) if (v) q.set(k, String(v));
      location.hash = '#/jobs?' + q.toString();
    });
    let after = params.get('after') || '';
    document.getElementById('older').addEventListener('click', () => {
      const q = new URLSearchParams(params);
      q.set('after', document.getElementById('older').dataset.next);
      location.hash = '#/jobs?' + q.toString();
    });
    document.getElementById('newer').addEventListener('click', () => {
      const q = new URLSearchParams(params);
      q.delete('after');
      location.hash = '#/jobs?' + q.toString();
    });
    return async () => {
      const q = new URLSearchParams();
      for (const k of ['queue', 'status', 'id', 'before']) if (f[k]) q.set(k, f[k]);
      if (after) q.set('after', after);
      const r = await api('jobs?' + q.toString());
      document.getElementById('list').innerHTML = table(
        [{ label: 'id', num: 1 }, 'queue', 'status', { label: 'attempts', num: 1 }, 'run at', 'created', 'updated', 'lease holder', 'last error'],
        r.jobs.map((j) => [
          `<a href="#/job/${esc(j.id)}">${esc(j.id)}</a>`,
          esc(j.queue),
          `<span class="status ${esc(j.status)}">${esc(j.status)}</span>`,
          `${j.retryCount}/${j.maxRetries}`,
          time(j.runAt),
          time(j.createdAt),
          time(j.updatedAt),
          esc(j.lockedBy || ''),
          esc((j.lastError || '').slice(0, 80)),
        ]),
        'no job matches',
      );
      const older = document.getElementById('older');
      older.disabled = !r.next;
      older.dataset.next = r.next || '';
      document.getElementById('newer').disabled = !after;
    };
  };

  pages.job = function (params, id) {
    page.innerHTML = `<h1>Job ${esc(id)}</h1><section class="card"><div id="job"></div>
      <div class="actions">
        <button data-act="retry"${actionsOff()}>retry</button>
        <button data-act="cancel" class="danger"${actionsOff()}>cancel</button>
        <button data-act="redrive"${actionsOff()}>redrive</button>
      </div><div id="msg"></div></section>`;
    page.querySelector('.actions').addEventListener('click', async (e) => {
      const b = e.target.closest('button[data-act]');
      if (!b) return;
      const msg = document.getElementById('msg');
      try {
        const r = await action(`jobs/${encodeURIComponent(id)}/${b.dataset.act}`);
        notice(msg, r.changed > 0 ? 'ok' : 'error', r.changed > 0 ? `${b.dataset.act}: done` : `${b.dataset.act}: nothing changed (the job is not in a state this action applies to)`);
        refresh();
      } catch (err) {
        notice(msg, 'error', `${b.dataset.act} refused (${err.status || 'network'}): ${err.message}`);
      }
    });
    let pretty = null;
    return async () => {
      const j = await api('jobs/' + encodeURIComponent(id));
      if (pretty === null || pretty.text !== j.payload) {
        let shown = j.payload;
        try {
          shown = JSON.stringify(JSON.parse(j.payload), null, 2);
        } catch {
          shown = j.payload;
        }
        pretty = { text: j.payload, shown };
      }
      document.getElementById('job').innerHTML = `<dl class="kv">
        <dt>queue</dt><dd>${esc(j.queue)}</dd>
        <dt>status</dt><dd><span class="status ${esc(j.status)}" id="job-status">${esc(j.status)}</span></dd>
        <dt>attempts</dt><dd>${j.retryCount} of ${j.maxRetries} retries used</dd>
        <dt>priority</dt><dd>${j.priority}</dd>
        <dt>lease holder</dt><dd>${esc(j.lockedBy || '–')}${j.lockedUntil ? ' until ' + time(j.lockedUntil) : ''}</dd>
        <dt>run at</dt><dd>${time(j.runAt)}</dd><dt>created</dt><dd>${time(j.createdAt)}</dd><dt>updated</dt><dd>${time(j.updatedAt)}</dd>
        <dt>last error</dt><dd>${j.lastError ? `<pre>${esc(j.lastError)}</pre>` : '–'}</dd>
        <dt>payload</dt><dd><pre>${esc(pretty.shown)}</pre></dd></dl>`;
    };
  };

  function planHtml(tables) {
    const rows = [];
    for (const t of tables) for (const s of t.steps) rows.push([esc(t.table || ''), esc(s.action), `<code>${esc(s.statement)}</code>`, esc(s.lockLevel), `<span class="muted">${esc(s.reason)}</span>`]);
    return table(['table', 'step', 'statement', 'lock', 'why'], rows, 'nothing to do: the next rotate would change nothing');
  }

  pages.partitions = function () {
    page.innerHTML = `<h1>Partitions</h1><div id="tables"></div>
      <section class="card"><h2>The plan the next rotate would run</h2><div id="plan"><p class="muted">planning…</p></div>
      <div class="actions"><button id="rotate"${actionsOff()}>Run rotate…</button></div><div id="msg"></div></section>`;
    let lastPlan = null;
    document.getElementById('rotate').addEventListener('click', async () => {
      const msg = document.getElementById('msg');
      const plan = await api('plan/rotate');
      if (!(await confirmDialog('Run rotate now?', '<p>These steps run, each under its lock_timeout:</p>' + planHtml(plan.tables)))) return;
      try {
        const r = await action('rotate', { confirm: true });
        const res = r.result;
        notice(msg, res.ran ? 'ok' : 'error', res.ran ? `rotate ran: ${res.tables.reduce((n, t) => n + t.done.length, 0)} step(s) done` : res.message);
      } catch (err) {
        notice(msg, 'error', `rotate refused (${err.status || 'network'}): ${err.message}`);
      }
    });
    let n = 0;
    return async () => {
      const r = await api('partitions');
      document.getElementById('tables').innerHTML = r.tables
        .map((t) => {
          const parts = t.partitions.filter((p) => !p.isDefault);
          let cells = '';
          let retentionDone = false;
          let lowWaterDone = t.lowWater === null;
          parts.forEach((p) => {
            const st = stateOf(p);
            if (!retentionDone && !p.expired && parts.some((q) => q.expired)) {
              cells += '<div class="mark" title="retention line"><span>retention</span></div>';
              retentionDone = true;
            }
            if (!lowWaterDone && p.from !== null && p.from >= t.lowWater) {
              cells += '<div class="mark" title="low-water mark ' + esc(t.lowWater) + '"><span>low water</span></div>';
              lowWaterDone = true;
            }
            cells += `<div class="cell ${esc(st.replace(' ', '-'))}" title="${esc(p.name)} ${esc(p.from)} .. ${esc(p.to)}: ${esc(st)}, ${num(p.liveJobs)} live"></div>`;
          });
          const ok = t.runway >= t.runwayTarget;
          const list = t.partitions.slice().reverse();
          return `<section class="card"><h2>${esc(t.table)} <span class="muted">every ${esc(t.interval)}, kept ${esc(t.retention)}</span></h2>
            <p>Runway ${verdict(ok ? 'ok' : 'warn')} ${t.runway} future partition(s) against a target of ${t.runwayTarget}. Low-water mark: ${time(t.lowWater)}.</p>
            <div class="timeline">${cells}</div>
            <div class="timeline-legend">${['future', 'hot', 'warm', 'drained', 'expired', 'detach pending'].map((s) => stateTag(s)).join(' ')} <span class="muted">oldest left, newest right</span></div>
            <h2>${t.partitions.length} partitions</h2>
            ${table(['partition', 'from', 'to', 'state', 'profile', { label: 'live jobs', num: 1 }, { label: 'rows (est.)', num: 1 }, { label: 'size', num: 1 }], list.map((p) => [esc(p.name), time(p.from), time(p.to), stateTag(stateOf(p)) + (p.retiring ? ' <span class="muted">retiring</span>' : ''), esc(p.profile), num(p.liveJobs), num(p.estimatedRows), bytes(p.bytes)]))}</section>`;
        })
        .join('') || '<p class="muted">No managed tables: run qmaint partitions apply.</p>';
      if (n++ % 5 === 0) {
        try {
          lastPlan = await api('plan/rotate');
          document.getElementById('plan').innerHTML = (lastPlan.pooled ? '<p class="muted">through a transaction pooler: one transaction</p>' : '') + planHtml(lastPlan.tables);
        } catch (err) {
          document.getElementById('plan').innerHTML = `<div class="notice error">${esc(err.message)}</div>`;
        }
      }
    };
  };

  pages.vacuum = function () {
    page.innerHTML = `<h1>Vacuum</h1>
      <section class="card"><h2>Dead tuples and size, sampled while this page is open (the 8 partitions with most dead tuples)</h2><div class="grid"><div id="dead" class="chart"></div><div id="size" class="chart"></div></div></section>
      <section class="card"><h2>Stored churn samples (qmaint.vacuum_samples, last day)</h2><div id="churn" class="chart"></div></section>
      <section class="card"><h2>xmin horizon</h2><div id="horizon"></div></section>
      <section class="card"><h2>Tune: measured churn and the thresholds it gives</h2><div id="tune"><p class="muted">planning…</p></div>
      <div class="actions"><button id="tune-run"${actionsOff()}>Run vacuum tune…</button></div><div id="msg"></div></section>
      <section class="card"><h2>Partitions</h2><div id="parts"></div></section>`;
    let dead = null;
    let size = null;
    let n = 0;
    const tuneSteps = (plan) =>
      table(['step', 'target', 'statement', 'lock'], plan.steps.map((s) => [esc(s.action), esc(s.target || ''), `<code>${esc(s.statement)}</code>`, esc(s.lockLevel)]), 'nothing to change');
    document.getElementById('tune-run').addEventListener('click', async () => {
      const msg = document.getElementById('msg');
      const r = await api('plan/tune');
      if (!r.plan) return notice(msg, 'error', 'another maintenance run holds the lock; try again shortly');
      if (!(await confirmDialog('Run vacuum tune now?', '<p>These steps run:</p>' + tuneSteps(r.plan)))) return;
      try {
        const done = await action('tune', { confirm: true });
        notice(msg, done.result.ran ? 'ok' : 'error', done.result.ran ? `tune ran: ${done.result.executed.length} step(s)` : 'another maintenance run holds the lock');
      } catch (err) {
        notice(msg, 'error', `tune refused (${err.status || 'network'}): ${err.message}`);
      }
    });
    return async () => {
      const v = await api('vacuum');
      const top = v.partitions.slice().sort((a, b) => b.deadTuples - a.deadTuples).slice(0, 8).map((p) => p.partition);
      if (!dead || dead.names.join() !== top.join()) {
        document.getElementById('dead').innerHTML = '';
        document.getElementById('size').innerHTML = '';
        dead = liveChart(document.getElementById('dead'), 'dead tuples', top);
        size = liveChart(document.getElementById('size'), 'table bytes', top);
      }
      const by = new Map(v.partitions.map((p) => [p.partition, p]));
      dead.push(Object.fromEntries(top.map((p) => [p, by.get(p).deadTuples])));
      size.push(Object.fromEntries(top.map((p) => [p, by.get(p).tableBytes])));
      const h = v.horizon;
      document.getElementById('horizon').innerHTML =
        `<p>Oldest xmin age: ${num(h.oldestXminAge)} transactions; database frozen-xid age ${num(v.databaseFrozenXidAge)}.${v.showQueries ? '' : ' <span class="muted">Query text hidden (qmaint ui --show-queries shows it).</span>'}</p>` +
        table(
          ['kind', 'pid', 'name', 'application', 'state', { label: 'xmin age', num: 1 }, { label: 'open for', num: 1 }].concat(v.showQueries ? ['query'] : []),
          h.holders.map((x) => [esc(x.kind), esc(x.pid), esc(x.name || ''), esc(x.applicationName || ''), esc(x.state || ''), num(x.xminAge), age(x.ageSeconds)].concat(v.showQueries ? [`<code>${esc(x.query || '')}</code>`] : [])),
          'nothing holds the horizon back',
        );
      document.getElementById('parts').innerHTML = table(
        ['partition', 'state', 'profile', { label: 'live', num: 1 }, { label: 'dead', num: 1 }, { label: 'dead %', num: 1 }, { label: 'table', num: 1 }, { label: 'indexes', num: 1 }, 'last autovacuum', 'autovacuum settings'],
        v.partitions.map((p) => [
          esc(p.partition),
          stateTag(p.state),
          esc(p.profile),
          num(p.liveTuples),
          num(p.deadTuples),
          (p.deadRatio * 100).toFixed(1),
          bytes(p.tableBytes),
          bytes(p.indexBytes),
          time(p.lastAutovacuum),
          `<code>${esc(Object.entries(p.reloptions).filter(([k]) => k.startsWith('autovacuum')).map(([k, val]) => `${k.replace('autovacuum_', '')}=${val}`).join(' '))}</code>`,
        ]),
        'no managed partitions',
      );
      if (n++ % 10 === 0) {
        const [s, t] = await Promise.allSettled([api('vacuum/samples'), api('plan/tune')]);
        const ce = document.getElementById('churn');
        if (s.status === 'fulfilled') {
          ce.innerHTML = '';
          const parents = [...new Set(s.value.map((x) => x.parentTable))];
          if (s.value.length === 0) ce.innerHTML = '<p class="muted">No stored samples yet: vacuum tune stores one each run.</p>';
          else {
            const times = [...new Set(s.value.map((x) => Date.parse(x.sampledAt) / 1000))].sort((a, b) => a - b);
            const series = parents.map((par) => times.map((tm) => {
              const hit = s.value.find((x) => x.parentTable === par && Date.parse(x.sampledAt) / 1000 === tm);
              return hit ? hit.deadTuples : null;
            }));
            charts.push(new window.uPlot({ title: 'dead tuples at each stored sample', width: Math.max(320, ce.clientWidth || 600), height: 200, series: [{}].concat(parents.map((p, i) => ({ label: p, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true }))), axes: [{}, { size: 70 }] }, [times].concat(series), ce));
          }
        } else ce.innerHTML = `<div class="notice error">${esc(s.reason.message)}</div>`;
        const te = document.getElementById('tune');
        if (t.status === 'fulfilled' && t.value.plan) {
          const p = t.value.plan;
          te.innerHTML =
            table(
              ['table', 'churn', { label: 'samples', num: 1 }, { label: 'naptime s', num: 1 }, { label: 'vacuum threshold', num: 1 }, { label: 'analyze threshold', num: 1 }],
              p.measurements.map((m) => [esc(m.parentTable), m.measured ? `${m.deadPerSec.toFixed(1)} dead tuples/s` : '<span class="muted">not measured yet</span>', num(m.samples), num(m.naptimeSeconds), num(m.vacuumThreshold), num(m.analyzeThreshold)]),
            ) +
            '<h2>What tune would run</h2>' +
            tuneSteps(p);
        } else te.innerHTML = t.status === 'rejected' ? `<div class="notice error">${esc(t.reason.message)}</div>` : '<p class="muted">another maintenance run holds the lock</p>';
      }
    };
  };

  pages.claim = function (params) {
    const queue = params.get('queue') || '';
    page.innerHTML = `<h1>Claim plan</h1><section class="card"><form class="filters" id="f"><label>queue<input name="queue" value="${esc(queue)}" placeholder="the oldest due job's"></label><button>Explain</button></form>
      <div id="sum"></div></section><section class="card"><h2>Rules</h2><div id="rules"></div></section>
      <section class="card"><h2>Partitions</h2><div id="parts"></div></section><section class="card"><h2>Plan tree</h2><div id="tree"></div></section>`;
    document.getElementById('f').addEventListener('submit', (e) => {
      e.preventDefault();
      const q = new FormData(e.target).get('queue');
      location.hash = '#/claim' + (q ? '?queue=' + encodeURIComponent(String(q)) : '');
    });
    return async () => {
      const r = await api('explain' + (queue ? '?queue=' + encodeURIComponent(queue) : ''));
      document.getElementById('sum').innerHTML = `<p>Verdict ${verdict(r.verdict)} for queue <b>${esc(r.queue)}</b> (${esc(r.queueSource.replace('_', ' '))}), batch ${r.batch}: ${r.analyzed ? `EXPLAIN ANALYZE, rolled back; would claim ${r.claimed}` : 'planned only'}; planning ${r.planningMs.toFixed(2)} ms, execution ${r.executionMs.toFixed(2)} ms; low-water ${time(r.lowWater)}; ${r.subplansRemoved} partition scan(s) pruned at run time.</p>`;
      document.getElementById('rules').innerHTML = table(['rule', 'verdict', 'observed', 'threshold', 'what to do'], r.rules.map((x) => [esc(x.rule), verdict(x.verdict), esc(x.observed), esc(x.threshold), esc(x.recommendation || '')]));
      document.getElementById('parts').innerHTML = table(
        ['partition', 'state', 'in plan', 'scanned', { label: 'rows', num: 1 }, { label: 'buffers hit', num: 1 }, { label: 'buffers read', num: 1 }, { label: 'pages', num: 1 }, 'claim index', { label: 'dead', num: 1 }],
        r.partitions.map((p) => [esc(p.name), stateTag(p.state), p.planned ? 'yes' : '<span class="muted">pruned</span>', p.executed ? 'yes' : '<span class="muted">no</span>', num(p.rows), num(p.sharedHit), num(p.sharedRead), num(p.pages), p.claimIndex ? esc(p.claimIndex) : '<span class="verdict critical">missing</span>', num(p.deadTuples)]),
      );
      document.getElementById('tree').innerHTML = `<pre>${esc(r.tree.join('\n'))}</pre>`;
    };
  };

  pages.runs = function () {
    page.innerHTML = `<h1>Maintenance runs</h1><section class="card"><h2>qmaint.maintenance_runs (last 20 per task and runner; failures first)</h2><div id="runs"></div></section>
      <section class="card"><h2>pg_cron run details</h2><div id="cron"><p class="muted">looking for pg_cron…</p></div></section>`;
    let n = 0;
    return async () => {
      const r = await api('runs');
      document.getElementById('runs').innerHTML =
        (r.failures > 0 ? `<div class="notice error">${r.failures} failed run(s) among the latest</div>` : '') +
        table(
          ['started (UTC)', 'task', 'runner', 'node', 'status', { label: 'took', num: 1 }, 'message'],
          r.runs.map((x) => [time(x.startedAt), esc(x.task), esc(x.runner), esc(x.node || ''), verdict(x.status), x.finishedAt ? ((Date.parse(x.finishedAt) - Date.parse(x.startedAt)) / 1000).toFixed(2) + ' s' : '', esc(x.message || '')]),
          'no maintenance run recorded yet',
        );
      if (n++ % 5 === 0) {
        const el = document.getElementById('cron');
        try {
          const c = await api('cron');
          if (!c.available) el.innerHTML = `<p class="muted">pg_cron: not in use here (${esc(c.reason)})</p>`;
          else {
            const rows = [];
            for (const j of c.jobs) for (const x of j.runs) rows.push({ j, x });
            const failed = (r) => (r.x.status === 'failed' ? 0 : 1);
            rows.sort((a, b) => failed(a) - failed(b) || String(b.x.startedAt).localeCompare(String(a.x.startedAt)));
            el.innerHTML = table(['job', 'run', 'started', 'status', 'message'], rows.map(({ j, x }) => [esc(j.name), esc(x.runid), time(x.startedAt), verdict(x.status || '?'), esc(x.message || '')]), 'no runs recorded by pg_cron yet');
          }
        } catch (err) {
          el.innerHTML = `<div class="notice error">${esc(err.message)}</div>`;
        }
      }
    };
  };

  // ---------------------------------------------------------------------------
  // router

  let refresh = () => undefined;

  function route() {
    if (timer) clearTimeout(timer);
    while (charts.length) charts.pop().destroy();
    const hash = location.hash.replace(/^#\/?/, '') || 'overview';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    const [name, arg] = path.split('/');
    const make = pages[name] || pages.overview;
    document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === (name === 'job' ? 'jobs' : name)));
    const mine = ++generation;
    const load = make(params, arg && decodeURIComponent(arg));
    refresh = async () => {
      if (mine !== generation) return;
      try {
        await load();
        setLive(true, 'updated ' + new Date().toLocaleTimeString());
      } catch (err) {
        setLive(false, 'error: ' + err.message);
        if (!page.querySelector('.notice.load')) page.insertAdjacentHTML('afterbegin', `<div class="notice error load"></div>`);
        page.querySelector('.notice.load').textContent = `${err.status || 'network'}: ${err.message}`;
      }
      const stale = page.querySelector('.notice.load');
      if (stale && live.className === 'live') stale.remove();
      if (mine === generation && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
    };
    refresh();
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      if (timer) clearTimeout(timer);
      refresh();
    }
  });
  window.addEventListener('hashchange', route);
  api('meta')
    .then((m) => {
      meta = m;
      const mode = document.getElementById('mode');
      mode.textContent = (m.allowActions ? 'actions allowed' : 'read-only') + ' · ' + m.database;
      mode.className = 'mode' + (m.allowActions ? ' actions' : '');
    })
    .catch(() => undefined)
    .finally(route);
})();
