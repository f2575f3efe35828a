// The console's one script: the live feed and the copy buttons. Loaded from the app itself; the pages
// carry no inline code (the Content-Security-Policy forbids it), and nothing here builds HTML from data:
// the rows come from the server already escaped.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var KEEP_ROWS = 200;

  function poll(tbody) {
    var timer = null;
    function next() { timer = setTimeout(tick, POLL_MS); }
    function tick() {
      if (document.hidden) { return next(); }
      var url = new URL(tbody.dataset.poll, location.href);
      url.searchParams.set("after", tbody.dataset.newest || "0");
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.status === 401) { location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) { if (html && html.trim()) { insert(tbody, html); } })
        .catch(function () { /* the server restarts or the network blips: try again at the next tick */ })
        .then(next);
    }
    next();
  }

  function insert(tbody, html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var rows = template.content.querySelectorAll("tr[data-id]");
    if (rows.length) {
      tbody.dataset.newest = rows[0].dataset.id;
      rows.forEach(function (row) { row.classList.add("fresh"); });
      var empty = tbody.querySelector("tr.empty");
      if (empty) { empty.remove(); }
    }
    tbody.prepend(template.content);
    var all = tbody.querySelectorAll("tr[data-id]");
    for (var i = KEEP_ROWS; i < all.length; i++) { all[i].remove(); }
    var older = document.getElementById("older");
    var kept = tbody.querySelectorAll("tr[data-id]");
    var last = kept[kept.length - 1];
    if (older && all.length > KEEP_ROWS && last) {
      var link = new URL(older.href);
      link.searchParams.set("before", last.dataset.id);
      older.href = link.toString();
    }
  }

  function copy(button) {
    var source = document.getElementById(button.dataset.copy);
    var text = source.textContent;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(source); });
    } else {
      select(source);
      try { if (document.execCommand("copy")) { done(); } } catch (e) { /* selected: the operator copies it */ }
    }
  }

  function select(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var tbody = document.querySelector("tbody[data-poll]");
    if (tbody) { poll(tbody); }
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () { copy(button); });
    });
  });
})();
