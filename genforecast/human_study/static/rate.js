// Keyboard answers and response timing for the rating and pairwise pages. The forms work without it (mouse only).
// Rating page: 1-5 answer the highlighted question, H/C the origin question, Enter goes on, Backspace goes back.
// Pair page: the left and right arrow keys (or 1 and 2) choose a design.
(function () {
  "use strict";
  var started = performance.now();

  function stamp(form) {
    form.elements.client_ms.value = String(Math.round(performance.now() - started));
  }

  var form = document.getElementById("answer-form");
  if (form) {
    var groups = Array.prototype.slice.call(form.querySelectorAll("fieldset[data-question]"));
    var next = document.getElementById("next");
    var current = 0;
    var sent = false;
    var answered = function (group) { return group.querySelector("input:checked") !== null; };
    var complete = function () { return groups.every(answered); };
    var highlight = function () {
      groups.forEach(function (group, index) { group.classList.toggle("current", index === current); });
    };
    var advance = function () {
      var open = groups.findIndex(function (group) { return !answered(group); });
      current = open === -1 ? groups.length - 1 : open;
      highlight();
    };
    var choose = function (group, value) {
      var input = group.querySelector('input[value="' + value + '"]');
      if (input) { input.checked = true; advance(); }
    };
    var submit = function () {
      if (sent || !complete()) { return; }
      sent = true;
      stamp(form);
      next.disabled = true;
      form.submit();
    };
    groups.forEach(function (group, index) {
      group.addEventListener("click", function () { current = index; highlight(); });
    });
    form.addEventListener("change", advance);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      submit();
    });
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) { return; }
      var group = groups[current];
      var key = event.key.toLowerCase();
      if (key === "enter") { event.preventDefault(); submit(); return; }
      if (key === "backspace") { event.preventDefault(); current = Math.max(0, current - 1); highlight(); return; }
      if (group.dataset.question === "origin") {
        if (key === "h") { choose(group, "human"); } else if (key === "c") { choose(group, "computer"); }
      } else if (/^[1-5]$/.test(key)) {
        event.preventDefault();
        choose(group, key);
      }
    });
    highlight();
  }

  var pair = document.getElementById("pair-form");
  if (pair) {
    var chosen = false;
    // Clicks submit natively (with the clicked button's value); keys go through requestSubmit, which fires this
    // same event. Calling requestSubmit from inside a submit event would be ignored by the browser.
    pair.addEventListener("submit", function (event) {
      if (chosen || !event.submitter) { event.preventDefault(); return; }
      chosen = true;
      stamp(pair);
    });
    var pick = function (id) {
      if (!chosen) { pair.requestSubmit(document.getElementById(id)); }
    };
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) { return; }
      if (event.key === "ArrowLeft" || event.key === "1") { event.preventDefault(); pick("choose-left"); }
      if (event.key === "ArrowRight" || event.key === "2") { event.preventDefault(); pick("choose-right"); }
    });
  }
})();
