// dfs web: refreshes the health page's facts and plots without a reload. Served from the
// binary; it loads nothing from elsewhere and never writes.
"use strict";
(function () {
  const plots = document.getElementById("plots");
  const facts = document.getElementById("facts");
  if (!plots) {
    return;
  }
  async function refresh() {
    try {
      const [p, f] = await Promise.all([
        fetch("/api/plots", { credentials: "same-origin" }),
        fetch("/api/facts", { credentials: "same-origin" }),
      ]);
      if (p.ok) {
        plots.innerHTML = await p.text();
        plots.dataset.updated = String(Date.now());
      }
      if (f.ok && facts) {
        facts.innerHTML = await f.text();
      }
    } catch (e) {
      // The server may be restarting; the next round tries again.
    }
  }
  refresh();
  setInterval(refresh, 5000);
})();
