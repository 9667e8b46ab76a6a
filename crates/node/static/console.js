// Liaison console: live updates over server-sent events, and the release decision
// shown while composing. The pages work without it; this only saves reloads.
(function () {
  "use strict";
  var body = document.body;
  var csrf = body.getAttribute("data-csrf") || "";
  var live = (body.getAttribute("data-live") || "").split(" ").filter(Boolean);

  // Refreshes may overlap; a slow, older answer must never replace a newer one.
  var asked = 0;
  var shown = 0;
  function refresh() {
    var mine = ++asked;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || mine < shown) { return; }
        shown = mine;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) {
          main.innerHTML = fresh.innerHTML;
          loaded = Date.now();
          var s = document.getElementById("live-status");
          if (s) { s.textContent = new Date().toLocaleTimeString(); }
        }
      })
      .catch(function () {});
  }

  if (live.length && window.EventSource) {
    var timer = null;
    var es = new EventSource("/events");
    es.addEventListener("change", function (e) {
      if (live.indexOf(e.data) < 0) { return; }
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(refresh, 100);
    });
    // Once listening, catch up on whatever changed between this page being rendered
    // and the stream opening (a receipt can arrive in that gap), then say we listen.
    es.addEventListener("open", function () {
      refresh();
      body.setAttribute("data-listening", "1");
    });
  }

  // Deadlines count down in the node's time, which may run faster than real time.
  var loaded = Date.now();
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var els = document.querySelectorAll(".countdown[data-deadline-ms]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      var now = Number(el.getAttribute("data-now-ms")) + (Date.now() - loaded) * Number(el.getAttribute("data-speed") || 1);
      var left = Math.max(0, Math.floor((Number(el.getAttribute("data-deadline-ms")) - now) / 1000));
      var d = Math.floor(left / 86400), h = Math.floor(left % 86400 / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
      el.textContent = "(" + (d > 0 ? d + "d " + h + "h " + m + "m" : pad(h) + ":" + pad(m) + ":" + pad(s)) + ")";
    }
  }
  if (document.querySelector(".countdown[data-deadline-ms]")) {
    setInterval(function () {
      if (document.querySelector(".countdown[data-deadline-ms]")) { tick(); }
    }, 1000);
  }

  var form = document.getElementById("compose");
  if (form) {
    var words = document.getElementById("decision-words");
    var panel = document.getElementById("decision");
    var text = document.getElementById("decision-text");
    var list = document.getElementById("decision-reasons");
    // Answers can come back out of order (a slow one for an earlier choice after the
    // answer for the current one); only the latest question's answer is shown, or a
    // refused label could be shown as allowed.
    var asked = 0;
    var check = function () {
      var req = {
        from: form.elements.from.value,
        to: form.elements.to.value,
        label: form.elements.label.value,
        precedence: form.elements.precedence.value,
        body: ""
      };
      if (!req.from || !req.to || !req.label) { return; }
      var mine = ++asked;
      fetch("/api/v1/decisions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(req)
      }).then(function (r) { return r.json(); }).then(function (d) {
        if (mine !== asked) { return; }
        list.textContent = "";
        var reasons = d.reasons || (d.error ? [d.error] : []);
        reasons.forEach(function (r) { var li = document.createElement("li"); li.textContent = r; list.appendChild(li); });
        if (d.allowed) {
          panel.className = "decision allowed";
          text.textContent = words.getAttribute("data-allowed")
            .replace("{label}", d.receiver_label || "").replace("{agreement}", d.agreement || "").replace("{channel}", d.channel || "");
        } else {
          panel.className = "decision refused";
          text.textContent = words.getAttribute("data-refused");
        }
      }).catch(function () {});
    };
    ["from", "to", "label", "precedence"].forEach(function (n) {
      form.elements[n].addEventListener("change", check);
    });
  }
})();
