// Live analysis status on the series page: polls the series' status.json every 2 s while the
// analysis is queued or running, moves the progress bar, and reloads the page once it has finished
// (the results table is rendered by the server).
(function () {
  "use strict";
  var box = document.getElementById("analysis-status");
  if (!box) return;
  var url = box.dataset.statusUrl;
  var ACTIVE = { queued: true, running: true };
  var INTERVAL_MS = 2000;
  var q = function (role) { return box.querySelector('[data-role="' + role + '"]'); };

  function show(s) {
    var badge = q("badge");
    badge.textContent = s.label;
    badge.className = "badge badge-" + s.status;
    q("live").hidden = !s.active;
    q("bar").style.width = s.progress + "%";
    q("bar").parentNode.setAttribute("aria-valuenow", String(s.progress));
    q("stage").textContent = s.stage_label;
    q("percent").textContent = String(s.progress);
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("status " + r.status);
        return r.json();
      })
      .then(function (s) {
        show(s);
        if (s.active) {
          window.setTimeout(poll, INTERVAL_MS);
        } else if (s.status !== box.dataset.status) {
          window.location.reload(); // finished: the server renders results or the error
        }
      })
      .catch(function () { window.setTimeout(poll, INTERVAL_MS * 3); }); // a network blip: keep trying, slower
  }

  if (ACTIVE[box.dataset.status]) window.setTimeout(poll, INTERVAL_MS);
})();
