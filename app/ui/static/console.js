// Live updates: one EventSource per window. When incidents change anywhere, the page's live
// region (#live, marked data-live="list" or "incident:<id>") is fetched again and swapped in.
// Without JavaScript the pages still read and work; they just do not refresh by themselves.
(function () {
  "use strict";
  // Signed in (the body carries the CSRF header for htmx) and the browser has EventSource.
  if (!window.EventSource || !document.body.hasAttribute("hx-headers")) return;
  let source = null;
  let pending = false;

  function liveRegion() { return document.getElementById("live"); }

  function wanted(ids) {
    const region = liveRegion();
    if (!region) return false;
    const kind = region.dataset.live || "";
    if (kind === "list") return true;
    if (kind.startsWith("incident:")) return ids.indexOf(Number(kind.slice(9))) !== -1;
    return false;
  }

  function refresh() {
    if (pending || !window.htmx) return;
    // Not while someone is choosing in a select of the live region: it would close under them.
    const active = document.activeElement;
    const region = liveRegion();
    if (region && active && region.contains(active) && active.tagName === "SELECT") {
      setTimeout(refresh, 1000);
      return;
    }
    pending = true;
    window.htmx.ajax("GET", window.location.pathname + window.location.search, {
      target: "#live", select: "#live", swap: "outerHTML",
    }).finally(function () { pending = false; });
  }

  function connect() {
    source = new EventSource("/ui/events");
    source.addEventListener("change", function (event) {
      let ids = [];
      try { ids = JSON.parse(event.data).incidents || []; } catch (e) { return; }
      if (wanted(ids)) refresh();
    });
  }
  connect();
  window.addEventListener("pagehide", function () { if (source) source.close(); });
})();
