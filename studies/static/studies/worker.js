/* Worker pages: response timing, focus/visibility events, keyboard answers, image preloading.
   Plain JavaScript, no dependencies. Pages work without it (the server measures show/answer). */
(function () {
  "use strict";
  var form = document.querySelector("[data-trial-form]");

  // Preload the next trials' images (the server leases one trial ahead).
  document.querySelectorAll("[data-preload]").forEach(function (el) {
    var img = new Image();
    img.src = el.getAttribute("data-preload");
  });

  // Device gate (consent page of a study with a minimum viewport): measure the window; below the
  // minimum keep the consent form hidden and disabled and ask for a larger screen. The measured
  // size travels with the consent form, and the server refuses a consent without a large enough one.
  var gate = document.querySelector("[data-device-gate]");
  if (gate) {
    var consent = document.querySelector("[data-consent]");
    var minWidth = parseInt(gate.getAttribute("data-min-width"), 10) || 0;
    var minHeight = parseInt(gate.getAttribute("data-min-height"), 10) || 0;
    var checkViewport = function () {
      var width = Math.round(window.innerWidth || document.documentElement.clientWidth || 0);
      var height = Math.round(window.innerHeight || document.documentElement.clientHeight || 0);
      var fits = width >= minWidth && height >= minHeight;
      document.querySelectorAll("[data-viewport-width]").forEach(function (el) { el.value = String(width); });
      document.querySelectorAll("[data-viewport-height]").forEach(function (el) { el.value = String(height); });
      gate.querySelectorAll("[data-viewport-size]").forEach(function (el) { el.textContent = width + " × " + height; });
      gate.hidden = fits;
      if (consent) {
        consent.hidden = !fits;
        consent.querySelectorAll("button").forEach(function (button) { button.disabled = !fits; });
      }
    };
    checkViewport();
    window.addEventListener("resize", checkViewport);
  } else {
    // No minimum: still send the size (the server ignores it), so forms look the same either way.
    document.querySelectorAll("[data-viewport-width]").forEach(function (el) { el.value = String(Math.round(window.innerWidth || 0)); });
    document.querySelectorAll("[data-viewport-height]").forEach(function (el) { el.value = String(Math.round(window.innerHeight || 0)); });
  }

  if (!form) { return; }
  var start = performance.now();
  var events = [];
  var sent = false;

  function since() { return Math.max(0, Math.round(performance.now() - start)); }
  function note(type) { if (events.length < 200) { events.push({ type: type, t: since() }); } }

  // The clock starts when every image has loaded (or immediately if they already have).
  var images = Array.prototype.slice.call(form.querySelectorAll("img[data-stimulus]"));
  var pending = images.filter(function (img) { return !img.complete; }).length;
  images.forEach(function (img) {
    if (!img.complete) {
      var done = function () { pending -= 1; if (pending === 0) { start = performance.now(); } };
      img.addEventListener("load", done);
      img.addEventListener("error", done);
    }
  });

  window.addEventListener("blur", function () { note("blur"); });
  window.addEventListener("focus", function () { note("focus"); });
  document.addEventListener("visibilitychange", function () { note(document.hidden ? "hidden" : "visible"); });

  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }  // one answer per trial, even on double clicks
    sent = true;
    form.elements.client_response_ms.value = String(since());
    form.elements.focus_events.value = JSON.stringify(events);
    form.classList.add("sending");
  });

  // Keys 1..n answer (not while typing a comment).
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) { return; }
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var button = form.querySelector('button[data-key="' + event.key + '"]');
    if (button) { event.preventDefault(); button.click(); }
  });
})();
