// The console's one script. Pages work without it; with it, times are
// shown in the reader's time zone, forms tell the server that zone, and
// the audit log can follow new entries live. No inline script: the page's
// Content-Security-Policy allows this file only.
(function () {
  "use strict";

  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      t.title = t.getAttribute("datetime");
      t.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
    });
  }

  function zone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"; }
    catch (e) { return "local time"; }
  }

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function shown(v) {
    if (v === null || v === undefined) return "—";
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  // One audit entry as a row, built with textContent only (never HTML).
  function row(e) {
    var tr = document.createElement("tr");
    tr.className = "fresh";
    tr.setAttribute("data-testid", "audit-row");
    tr.setAttribute("data-position", e.position);
    tr.setAttribute("data-action", e.action);
    var td = document.createElement("td");
    td.className = "nowrap";
    var time = document.createElement("time");
    time.setAttribute("datetime", e.recorded_at);
    time.textContent = e.recorded_at;
    td.appendChild(time);
    tr.appendChild(td);
    tr.appendChild(cell(e.actor_name || e.actor_kind));
    tr.appendChild(cell(""));
    tr.appendChild(cell(e.label));
    td = document.createElement("td");
    if (e.ticket_id) {
      var a = document.createElement("a");
      a.href = "/console/tickets/" + encodeURIComponent(e.ticket_id);
      a.textContent = String(e.ticket_id).slice(0, 8) + "...";
      a.title = e.ticket_id;
      a.setAttribute("data-testid", "audit-ticket-link");
      td.appendChild(a);
    }
    tr.appendChild(td);
    tr.appendChild(cell(e.description));
    td = document.createElement("td");
    (Array.isArray(e.changes) ? e.changes : []).forEach(function (c) {
      var div = document.createElement("div");
      div.className = "change";
      div.textContent = (c.field || "") + ": " + shown(c.before) + " → " + shown(c.after);
      td.appendChild(div);
    });
    tr.appendChild(td);
    tr.appendChild(cell(e.ip || ""));
    localise(tr);
    return tr;
  }

  function live() {
    var toggle = document.getElementById("live-toggle");
    var box = document.querySelector("[data-live-box]");
    var rows = document.getElementById("audit-rows");
    if (!toggle || !box || !rows || !window.EventSource) return;
    box.hidden = false;
    var status = document.getElementById("live-status");
    var source = null;
    function say(text) { if (status) status.textContent = text; }
    toggle.addEventListener("change", function () {
      if (toggle.checked) {
        source = new EventSource(toggle.getAttribute("data-stream"));
        source.addEventListener("open", function () { say("following new entries"); });
        source.addEventListener("audit", function (m) {
          try { rows.insertBefore(row(JSON.parse(m.data)), rows.firstChild); }
          catch (e) { /* a line we cannot read is skipped */ }
          var empty = document.querySelector("[data-testid=audit-empty]");
          if (empty) empty.hidden = true;
        });
        source.addEventListener("error", function () { say("reconnecting…"); });
      } else if (source) {
        source.close();
        source = null;
        say("");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    var note = document.querySelector("[data-testid=tz-note]");
    if (note) note.textContent = "Times are shown in your time zone (" + zone() + ").";
    var minutes = String(-new Date().getTimezoneOffset());
    document.querySelectorAll("input[data-tz]").forEach(function (i) {
      if (!i.value) i.value = minutes;
    });
    live();
    // A rebuild in progress: look again shortly.
    if (document.querySelector("[data-rebuilding]")) {
      window.setTimeout(function () { window.location.reload(); }, 2000);
    }
  });
})();
