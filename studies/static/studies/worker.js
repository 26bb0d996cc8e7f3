/* Worker pages: response timing, focus/visibility events, keyboard answers (trials and practice),
   image preloading, the device gate, MTurk's one-click completion.
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

  // Keys on the practice page: 1..n answer the first unanswered question (the instructions
  // promise the keys on practice too); once all are answered, the one holding the focus.
  var practice = document.querySelector("[data-practice-form]");
  if (practice) {
    var fieldsets = Array.prototype.slice.call(practice.querySelectorAll("[data-practice-trial]"));
    var answered = function (fieldset) { return !!fieldset.querySelector("input[type=radio]:checked"); };
    var target = function () {
      var open = fieldsets.filter(function (fieldset) { return !answered(fieldset); });
      if (open.length) { return open[0]; }
      var focused = document.activeElement;
      return fieldsets.filter(function (fieldset) { return fieldset.contains(focused); })[0] || fieldsets[fieldsets.length - 1];
    };
    var mark = function () {
      var current = target();
      fieldsets.forEach(function (fieldset) { fieldset.classList.toggle("key-target", fieldset === current && fieldsets.length > 1); });
    };
    practice.addEventListener("change", mark);
    mark();
    document.addEventListener("keydown", function (event) {
      var el = event.target;
      if (el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || (el.tagName === "INPUT" && el.type !== "radio"))) { return; }
      if (event.altKey || event.ctrlKey || event.metaKey) { return; }
      var fieldset = target();
      var radio = fieldset && fieldset.querySelector('input[type=radio][data-key="' + event.key + '"]');
      if (!radio) { return; }
      event.preventDefault();
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
      var next = target();
      if (next && next !== fieldset && next.scrollIntoView) { next.scrollIntoView({ block: "nearest" }); }
    });
  }

  // MTurk completion in one click: the done page (rendered only once the completion has
  // committed) shows the code, then posts the form to MTurk's externalSubmit after a short
  // countdown. "Wait" stops it; the button stays for a manual submit (and without JavaScript).
  var mturk = document.querySelector("[data-mturk-submit][data-auto-submit-ms]");
  if (mturk) {
    var delay = Math.max(0, parseInt(mturk.getAttribute("data-auto-submit-ms"), 10) || 0);
    var note = mturk.querySelector("[data-auto-submit-note]");
    var countdown = mturk.querySelector("[data-countdown]");
    var cancel = mturk.querySelector("[data-auto-submit-cancel]");
    var storageKey = "xaistudy-mturk-autosubmit:" + (mturk.elements.assignmentId ? mturk.elements.assignmentId.value : "");
    var already = false;
    try { already = window.sessionStorage.getItem(storageKey) === "1"; } catch (e) { already = false; }
    if (!already) {
      var due = Date.now() + delay;
      var timer = null;
      var tick = function () {
        var left = due - Date.now();
        if (countdown) { countdown.textContent = String(Math.max(0, Math.ceil(left / 1000))); }
        if (left > 0) { timer = window.setTimeout(tick, Math.min(250, left)); return; }
        try { window.sessionStorage.setItem(storageKey, "1"); } catch (e) { /* storage blocked: submit anyway */ }
        mturk.setAttribute("data-submitting", "auto");
        mturk.submit();
      };
      if (note) { note.hidden = false; }
      if (cancel) {
        cancel.hidden = false;
        cancel.addEventListener("click", function () {
          if (timer !== null) { window.clearTimeout(timer); timer = null; }
          mturk.setAttribute("data-auto-submit-cancelled", "");
          if (note) { note.hidden = true; }
          cancel.hidden = true;
        });
      }
      tick();
      // Back from MTurk (page restored from the back/forward cache): no second countdown.
      window.addEventListener("pageshow", function (event) {
        if (event.persisted && mturk.getAttribute("data-submitting")) {
          if (note) { note.hidden = true; }
          if (cancel) { cancel.hidden = true; }
        }
      });
    }
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
