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

  // What the keyboard is on inside the live region, so that the same control can have the
  // focus back after a refresh replaces the region (a keyboard user must not be thrown to the
  // top of the page, nor press Enter on nothing, whenever something changes elsewhere).
  function focusKey(element) {
    if (element.id) return { id: element.id };
    const form = element.closest("form");
    return {
      tag: element.tagName,
      action: form ? form.getAttribute("action") : null,
      name: element.getAttribute("name"),
      href: element.getAttribute("href"),
      text: element.textContent.trim(),
    };
  }

  // What the reader chose or typed in the live region's forms and has not sent yet (a menu
  // choice, a note): kept across a refresh, so that the control keeps its value and Enter on
  // its button sends what they chose, not the page's default.
  function isBox(control) { return control.type === "checkbox" || control.type === "radio"; }

  function formControls(region) {
    return Array.prototype.filter.call(
      region.querySelectorAll("select, textarea, input"),
      function (control) {
        return control.name && control.type !== "hidden" && control.type !== "submit";
      });
  }

  function controlKey(control) {
    const form = control.closest("form");
    return (form ? form.getAttribute("action") : "") + "\u0000" + control.name +
      (isBox(control) ? "\u0000" + control.value : "");
  }

  function edited(control) {
    if (control.tagName === "SELECT") {
      return Array.prototype.some.call(control.options, function (option) {
        return option.selected !== option.defaultSelected;
      });
    }
    if (isBox(control)) return control.checked !== control.defaultChecked;
    return control.value !== control.defaultValue;
  }

  function changedControls(region) {
    const changed = new Map();
    formControls(region).forEach(function (control) {
      if (edited(control)) {
        changed.set(controlKey(control), { value: control.value, checked: control.checked });
      }
    });
    return changed;
  }

  function restoreControls(region, changed) {
    if (!changed.size) return;
    formControls(region).forEach(function (control) {
      const was = changed.get(controlKey(control));
      if (!was) return;
      if (isBox(control)) {
        control.checked = was.checked;
      } else if (control.tagName !== "SELECT" ||
                 Array.prototype.some.call(control.options, function (option) {
                   return option.value === was.value;
                 })) {
        control.value = was.value;  // a menu choice only while it is still offered
      }
    });
  }

  function findByKey(root, key) {
    if (key.id) return root.querySelector("#" + CSS.escape(key.id));
    const candidates = root.getElementsByTagName(key.tag);
    for (let i = 0; i < candidates.length; i++) {
      const candidate = candidates[i];
      const form = candidate.closest("form");
      if ((form ? form.getAttribute("action") : null) === key.action &&
          candidate.getAttribute("name") === key.name &&
          candidate.getAttribute("href") === key.href &&
          candidate.textContent.trim() === key.text) return candidate;
    }
    return null;
  }

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
        const focused = document.activeElement;
        const key = focused && focused !== current && current.contains(focused)
          ? focusKey(focused) : null;
        const edited = changedControls(current);
        current.replaceWith(fresh);
        restoreControls(fresh, edited);
        if (window.htmx) window.htmx.process(fresh);
        if (key) {
          const same = findByKey(fresh, key);
          if (same) same.focus({ preventScroll: true });
        }
      })
      .catch(function () { /* the next change, or the next stream, tries again */ })
      .finally(function () {
        inFlight = false;
        if (again) { again = false; refresh(); }
      });
  }

  const source = new EventSource("/ui/events");
  // A stream ends every minute and the browser opens the next. Once each is listening (its
  // first event, `ready`), the live part is fetched once: what changed before (since the page
  // was made, or between two streams) is not missed, and what changes after is announced.
  source.addEventListener("ready", function () { refresh(); });
  source.addEventListener("change", function (event) {
    let ids = [];
    try { ids = JSON.parse(event.data).incidents || []; } catch (e) { return; }
    if (wanted(ids)) refresh();
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
