// Live updates: one EventSource per window. When incidents change anywhere, the page's live
// region (#live, marked data-live="list" or "incident:<id>") is fetched again and swapped in.
// Without JavaScript the pages still read and work; they just do not refresh by themselves.
(function () {
  "use strict";
  // Signed in (the body carries the CSRF header for htmx) and the browser has EventSource.
  if (!window.EventSource || !document.body.hasAttribute("hx-headers")) return;
  let inFlight = false;
  let again = false;

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
    const region = liveRegion();
    if (!region) return;
    // One fetch at a time; a change that arrives meanwhile fetches once more afterwards.
    if (inFlight) { again = true; return; }
    // Not while someone is choosing in a select of the live region: it would close under them.
    const active = document.activeElement;
    if (active && region.contains(active) && active.tagName === "SELECT") {
      setTimeout(refresh, 1000);
      return;
    }
    const url = window.location.pathname + window.location.search;
    const kind = region.dataset.live;
    inFlight = true;
    fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        const current = liveRegion();
        // The reader may have moved on while this was fetched: swap only into the same page.
        if (!current || current.dataset.live !== kind ||
            window.location.pathname + window.location.search !== url) return;
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (!fresh) return;
        current.replaceWith(fresh);
        if (window.htmx) window.htmx.process(fresh);
      })
      .catch(function () { /* the next change, or the next stream, tries again */ })
      .finally(function () {
        inFlight = false;
        if (again) { again = false; refresh(); }
      });
  }

  const source = new EventSource("/ui/events");
  // A stream ends every minute and the browser opens the next. Whenever one opens, the live
  // part is fetched once: what changed before it opened (since the page was made, or between
  // two streams) is not missed.
  source.addEventListener("open", function () { refresh(); });
  source.addEventListener("change", function (event) {
    let ids = [];
    try { ids = JSON.parse(event.data).incidents || []; } catch (e) { return; }
    if (wanted(ids)) refresh();
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
