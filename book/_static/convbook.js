/* Convolutions, Verified: fit every formula to its column, so that it is read whole.
 *
 * MathJax 3 does not break lines. A display formula wider than the text column is set in a smaller font,
 * down to 70 %, which is enough for every formula of the book on a laptop (1280 px); what is still wider (on a
 * phone) scrolls sideways inside its own box (div.math, see convbook.css), never cut off and never widening the
 * page. An inline formula wider than its line becomes a block of its own, shrunk and scrolled the same way.
 * Runs when MathJax has typeset the page and again whenever the window changes width.
 */
(function () {
  "use strict";
  var MIN_SCALE = 0.7;   // MathJax sets formulas at ~127 % of the text: 70 % of that is still 89 % of the text size

  function fit() {
    var boxes = document.querySelectorAll(".bd-article div.math");
    var spans = document.querySelectorAll(".bd-article span.math");
    var i;
    // Writes first, then reads, then writes: three layouts per call, however many formulas the page holds.
    for (i = 0; i < boxes.length; i++) boxes[i].style.fontSize = "";
    for (i = 0; i < spans.length; i++) { spans[i].classList.remove("math-wide"); spans[i].style.fontSize = ""; }
    var scales = [], wide = [];
    for (i = 0; i < boxes.length; i++) {
      var m = boxes[i].querySelector("mjx-container");
      var need = m ? m.scrollWidth : 0, have = boxes[i].clientWidth;
      scales.push(need > have && have > 0 ? Math.max(MIN_SCALE, Math.floor((100 * have) / need) / 100) : 1);
    }
    for (i = 0; i < spans.length; i++) {
      var mjx = spans[i].querySelector("mjx-container");
      var col = spans[i].parentElement && spans[i].parentElement.closest("p, li, td, th, dd, dt, div, blockquote");
      if (!mjx || !col) { wide.push(0); continue; }
      var cs = getComputedStyle(col);
      var inner = col.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
      var w = mjx.getBoundingClientRect().width;
      wide.push(w > inner + 0.5 ? Math.max(MIN_SCALE, Math.floor((100 * inner) / w) / 100) : 0);
    }
    for (i = 0; i < boxes.length; i++) if (scales[i] < 1) boxes[i].style.fontSize = Math.round(scales[i] * 100) + "%";
    for (i = 0; i < spans.length; i++) {
      if (wide[i]) { spans[i].classList.add("math-wide"); spans[i].style.fontSize = Math.round(wide[i] * 100) + "%"; }
    }
    document.documentElement.setAttribute("data-convbook-fitted", String(window.innerWidth));
  }

  function whenTypeset() {
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) {
      mj.startup.promise.then(fit);
    } else if (document.querySelector(".bd-article .math")) {
      setTimeout(whenTypeset, 50);   // MathJax is loaded with `defer`, after this script
    } else {
      fit();
    }
  }

  window.convbookFitMath = fit;
  window.addEventListener("resize", fit);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", whenTypeset);
  else whenTypeset();
})();
