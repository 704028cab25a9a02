/// The live page `GET /` on the metrics port serves: what `aether top` shows (functions, lifecycle,
/// instances busy/idle/starting, req/s, p50/p99, starts by kind and their latency, queue, errors,
/// eBPF counters) and three small charts of the last 60 s (req/s, p99 latency, instances), one
/// line per function. One document with its CSS and script inline, nothing fetched from elsewhere
/// and no build step: the script polls `status.json` (the control API's `OrchestratorStatus`)
/// every second, computes the request rates from the difference of the invocation counters
/// between two documents (over the orchestrator's uptime, as `aether top` does over its clock),
/// and draws the charts on canvases by hand. Text is set with `textContent`, never parsed as HTML.
enum StatusPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>aether</title>
        <style>
        body { margin: 16px 20px; font: 17px/1.4 "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
          color: #111; background: #fff; }
        h1 { font-size: 26px; margin: 0 12px 0 0; display: inline-block; }
        #summary { color: #333; }
        #problem { color: #b00020; font-weight: bold; margin-left: 12px; }
        #charts { display: flex; flex-wrap: wrap; gap: 16px; margin: 14px 0 6px; }
        figure { margin: 0; }
        figcaption { font-size: 15px; color: #333; }
        canvas { border: 1px solid #ccc; display: block; }
        #legend span { margin-right: 18px; font-size: 15px; }
        #legend i { display: inline-block; width: 14px; height: 14px; margin-right: 5px; vertical-align: -2px; }
        table { border-collapse: collapse; margin-top: 10px; }
        th, td { padding: 5px 12px; text-align: right; border-bottom: 1px solid #ddd; white-space: nowrap; }
        td { font-size: 19px; }
        th { font-size: 14px; color: #333; background: #f2f2f2; }
        th.left, td.id, td.lifecycle, td.starts { text-align: left; }
        td.id { font-size: 19px; }
        td.starts { font-size: 15px; }
        td.rate, td.invocations { font-weight: bold; }
        </style>
        </head>
        <body>
        <header><h1>aether</h1><span id="summary">waiting for the first status document</span>
        <span id="problem"></span></header>
        <div id="charts">
        <figure><figcaption>requests per second</figcaption>
        <canvas id="chart-rate" width="380" height="140"></canvas></figure>
        <figure><figcaption>p99 latency, ms</figcaption>
        <canvas id="chart-latency" width="380" height="140"></canvas></figure>
        <figure><figcaption>instances (busy + idle + starting)</figcaption>
        <canvas id="chart-instances" width="380" height="140"></canvas></figure>
        </div>
        <div id="legend"></div>
        <table>
        <thead><tr><th class="left">function</th><th class="left">lifecycle</th><th>busy</th><th>idle</th>
        <th>starting</th><th>req/s</th>
        <th>requests</th><th>p50 ms</th><th>p99 ms</th><th>queue</th><th>errors</th><th>timeouts</th>
        <th class="left">starts (kind n p50/p99 ms)</th><th>steered</th><th>packets</th><th>dropped</th></tr></thead>
        <tbody id="functions"></tbody>
        </table>
        <script>
        "use strict";
        const SECONDS = 60;
        const COLORS = ["#1f5fbf", "#d0461c", "#218a3a", "#8e3bb5", "#b8860b", "#0f8b8d", "#c2185b", "#555"];
        const history = new Map();  // function id -> [{t, rate, p99, instances}], oldest first
        let previous = null;        // {uptime, invocations: Map}
        let refreshes = 0;

        function number(value, places) {
          return value === undefined || value === null ? "-" : value.toFixed(places);
        }
        function ms(value) {
          return value === undefined || value === null ? "-" : value.toFixed(value < 10 ? 2 : 1);
        }
        function counter(value) {
          return value === undefined || value === null ? "-" : String(value);
        }

        // One function's figures, as aether top's TopModel computes them.
        function row(status, fn) {
          const serving = fn.instances.filter(i => i.phase === "serving");
          const ebpf = status.ebpf;
          const port = ebpf ? ebpf.ports.find(p => p.port === fn.port) : undefined;
          const counting = ebpf ? ebpf.links.some(l => l.program === "aether_xdp") : false;
          let rate = null;
          if (previous && previous.invocations.has(fn.id)) {
            const last = previous.invocations.get(fn.id);
            const elapsed = status.uptime_seconds - previous.uptime;
            if (elapsed > 0 && fn.stats.invocations >= last) rate = (fn.stats.invocations - last) / elapsed;
          }
          return {
            id: fn.id, lifecycle: fn.lifecycle,
            busy: serving.filter(i => i.in_flight > 0).length,
            idle: serving.filter(i => i.in_flight === 0).length,
            starting: fn.instances.filter(i => i.phase === "starting" || i.phase === "attaching").length,
            rate: rate, invocations: fn.stats.invocations,
            p50: fn.stats.p50_milliseconds, p99: fn.stats.p99_milliseconds,
            queue: fn.queue_depth, errors: fn.stats.errors, timeouts: fn.stats.timeouts,
            starts: fn.stats.starts.length === 0 ? "-" : fn.stats.starts.map(
              s => s.kind + " " + s.count + " " + ms(s.p50_milliseconds) + "/" + ms(s.p99_milliseconds)).join(", "),
            steered: port ? port.steered : null,
            packets: port && counting ? port.packets : null,
            dropped: port && counting ? port.dropped : null,
          };
        }

        function cell(tr, name, text) {
          const td = document.createElement("td");
          td.className = name;
          td.textContent = text;
          tr.appendChild(td);
        }

        function color(index) { return COLORS[index % COLORS.length]; }

        function show(status) {
          const rows = status.functions.map(fn => row(status, fn))
            .sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
          previous = {uptime: status.uptime_seconds, invocations: new Map(status.functions.map(
            fn => [fn.id, fn.stats.invocations]))};
          refreshes += 1;
          const pool = status.warm_pool
            ? ", warm pool " + status.warm_pool.copies + "/" + status.warm_pool.capacity : "";
          document.getElementById("summary").textContent =
            "version " + status.version + ", " + rows.length + " function(s), up " + Math.floor(status.uptime_seconds) +
            " s, dataplane " + status.dataplane + (status.ready ? ", ready" : ", not ready") + pool;
          document.getElementById("problem").textContent = "";

          const body = document.getElementById("functions");
          body.replaceChildren();
          for (const r of rows) {
            const tr = document.createElement("tr");
            tr.dataset.function = r.id;
            cell(tr, "id", r.id);
            cell(tr, "lifecycle", r.lifecycle);
            cell(tr, "busy", String(r.busy));
            cell(tr, "idle", String(r.idle));
            cell(tr, "starting", String(r.starting));
            cell(tr, "rate", number(r.rate, 1));
            cell(tr, "invocations", String(r.invocations));
            cell(tr, "p50", ms(r.p50));
            cell(tr, "p99", ms(r.p99));
            cell(tr, "queue", String(r.queue));
            cell(tr, "errors", String(r.errors));
            cell(tr, "timeouts", String(r.timeouts));
            cell(tr, "starts", r.starts);
            cell(tr, "steered", counter(r.steered));
            cell(tr, "packets", counter(r.packets));
            cell(tr, "dropped", counter(r.dropped));
            body.appendChild(tr);
          }

          // The charts' history: a point per function per document, the last SECONDS seconds.
          const now = status.uptime_seconds;
          const present = new Set(rows.map(r => r.id));
          for (const id of [...history.keys()]) if (!present.has(id)) history.delete(id);
          for (const r of rows) {
            const points = history.get(r.id) || [];
            points.push({t: now, rate: r.rate, p99: r.p99 === undefined ? null : r.p99,
                         instances: r.busy + r.idle + r.starting});
            while (points.length > 0 && points[0].t < now - SECONDS) points.shift();
            history.set(r.id, points);
          }
          const ids = rows.map(r => r.id);
          chart("chart-rate", ids, "rate", now);
          chart("chart-latency", ids, "p99", now);
          chart("chart-instances", ids, "instances", now);
          const legend = document.getElementById("legend");
          legend.replaceChildren();
          ids.forEach((id, index) => {
            const span = document.createElement("span");
            const swatch = document.createElement("i");
            swatch.style.background = color(index);
            span.appendChild(swatch);
            span.appendChild(document.createTextNode(id));
            legend.appendChild(span);
          });
          document.body.dataset.refreshes = String(refreshes);
        }

        // One chart: time on x (the last SECONDS seconds), the field on y from 0 to the largest
        // value seen, a line per function (broken where the value is unknown).
        function chart(canvasId, ids, field, now) {
          const canvas = document.getElementById(canvasId);
          const g = canvas.getContext("2d");
          const width = canvas.width, height = canvas.height;
          const left = 46, right = 8, top = 10, bottom = 20;
          g.clearRect(0, 0, width, height);
          let largest = 0;
          for (const id of ids) for (const p of history.get(id) || []) {
            if (p[field] !== null && p[field] > largest) largest = p[field];
          }
          const scale = largest > 0 ? largest * 1.1 : 1;
          g.font = "12px sans-serif";
          g.fillStyle = "#555";
          g.strokeStyle = "#ddd";
          g.lineWidth = 1;
          g.beginPath();
          g.moveTo(left, top); g.lineTo(left, height - bottom); g.lineTo(width - right, height - bottom);
          g.stroke();
          g.textAlign = "right";
          g.fillText(scale >= 100 ? scale.toFixed(0) : scale.toPrecision(2), left - 4, top + 10);
          g.fillText("0", left - 4, height - bottom);
          g.textAlign = "left";
          g.fillText("-" + SECONDS + " s", left, height - 5);
          g.textAlign = "right";
          g.fillText("now", width - right, height - 5);
          const x = t => left + (width - left - right) * (1 - (now - t) / SECONDS);
          const y = v => height - bottom - (height - top - bottom) * (v / scale);
          ids.forEach((id, index) => {
            g.strokeStyle = color(index);
            g.lineWidth = 2;
            g.beginPath();
            let drawing = false;
            for (const p of history.get(id) || []) {
              if (p[field] === null) { drawing = false; continue; }
              if (drawing) g.lineTo(x(p.t), y(p[field])); else g.moveTo(x(p.t), y(p[field]));
              drawing = true;
            }
            g.stroke();
          });
        }

        async function refresh() {
          try {
            const response = await fetch("status.json", {cache: "no-store"});
            if (!response.ok) throw new Error("status.json answered HTTP " + response.status);
            show(await response.json());
          } catch (error) {
            document.getElementById("problem").textContent = "no answer from the orchestrator: " + error.message;
          } finally {
            setTimeout(refresh, 1000);
          }
        }
        refresh();
        </script>
        </body>
        </html>

        """#
}
