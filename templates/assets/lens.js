/* Lens gallery: class grids filtered as you type, random class, overlay toggle, model switcher.
   No dependencies, no network beyond this site. Text from the index goes in with textContent only. */
(function () {
  "use strict";

  function store(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem("lens." + key);
      window.localStorage.setItem("lens." + key, value);
    } catch (e) { /* private mode: no memory, no harm */ }
    return null;
  }

  /* The class index comes as classes.js (it sets window.LENS_INDEX), loaded by a script element:
     unlike fetch(), that also works when the site is opened from disk (file://). */
  var indexCache = {};
  function loadIndex(url) {
    if (!indexCache[url]) {
      indexCache[url] = new Promise(function (resolve, reject) {
        if (window.LENS_INDEX) { resolve(window.LENS_INDEX); return; }
        var s = document.createElement("script");
        s.src = url;
        s.onload = function () {
          if (window.LENS_INDEX) resolve(window.LENS_INDEX);
          else reject(new Error("no index in " + url));
        };
        s.onerror = function () { reject(new Error("missing " + url)); };
        document.head.appendChild(s);
      });
    }
    return indexCache[url];
  }

  function pad(i) { return ("000" + i).slice(-4); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /* ---------------------------------------------------------------- class grids */
  // index.classes rows: [index, wnid, name, [per model: thumbnail hash | "!" (failed) | 0 (not rendered)]]
  function card(root, models, row, only) {
    var slug = pad(row[0]), cells = row[3], pick = -1;
    for (var m = 0; m < models.length; m++) {
      if ((only === null || m === only) && typeof cells[m] === "string" && cells[m] !== "!") { pick = m; break; }
    }
    var a = el("a", "lens-card");
    a.href = root + "classes/" + slug + ".html";
    if (pick >= 0) {
      var img = el("img");
      img.loading = "lazy";
      img.alt = "";
      img.src = root + "classes/" + slug + "/" + models[pick] + "/maco-t." + cells[pick] + ".webp";
      a.appendChild(img);
    } else {
      a.appendChild(el("div", "lens-missing", "no image"));
    }
    var title = el("span");
    title.appendChild(el("b", null, slug + " "));
    title.appendChild(document.createTextNode(row[2].split(",")[0]));
    a.appendChild(title);
    a.title = row[2] + " (" + row[1] + ")";
    a.dataset.key = (slug + " " + row[0] + " " + row[1] + " " + row[2]).toLowerCase();
    return a;
  }

  function matches(key, query) {
    if (!query) return true;
    if (/^\d+$/.test(query)) {
      var slug = key.slice(0, 4), index = String(parseInt(query, 10));
      return slug.indexOf(query) === 0 || key.split(" ")[1].indexOf(index) === 0;
    }
    return key.indexOf(query) !== -1;
  }

  function setupFinder(finder) {
    var root = finder.getAttribute("data-root") || "";
    var model = finder.getAttribute("data-model");
    var grid = finder.querySelector(".lens-grid");
    var count = finder.querySelector(".lens-count");
    var input = finder.querySelector(".lens-filter");
    loadIndex(finder.getAttribute("data-index")).then(function (index) {
      var only = model === null ? null : index.models.indexOf(model);
      var cards = [];
      var frag = document.createDocumentFragment();
      index.classes.forEach(function (row) {
        if (only !== null && (only < 0 || row[3][only] === 0)) return;
        var c = card(root, index.models, row, only);
        cards.push(c);
        frag.appendChild(c);
      });
      grid.appendChild(frag);
      function apply() {
        var q = input.value.trim().toLowerCase(), shown = 0;
        cards.forEach(function (c) {
          var ok = matches(c.dataset.key, q);
          c.hidden = !ok;
          if (ok) shown++;
        });
        count.textContent = shown + " of " + cards.length + " classes";
      }
      input.addEventListener("input", apply);
      apply();
    }).catch(function (e) {
      count.textContent = "Could not load the class index (" + e.message + "). Rebuild the site with `lens site`, or serve it with `lens serve`.";
    });
  }

  /* ---------------------------------------------------------------- random class */
  function setupRandom(link) {
    link.addEventListener("click", function (ev) {
      ev.preventDefault();
      loadIndex(link.getAttribute("data-index")).then(function (index) {
        var row = index.classes[Math.floor(Math.random() * index.classes.length)];
        window.location.href = (link.getAttribute("data-root") || "") + "classes/" + pad(row[0]) + ".html";
      }).catch(function () { window.location.href = link.getAttribute("href"); });
    });
  }

  /* ---------------------------------------------------------------- class page */
  function setupOverlay(page) {
    var button = page.querySelector(".lens-overlay-toggle");
    if (!button) return;
    function set(on) {
      page.classList.toggle("lens-overlay-on", on);
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.textContent = on ? "Show plain images" : "Show attribution overlay";
      store("overlay", on ? "1" : "0");
    }
    button.addEventListener("click", function () { set(!page.classList.contains("lens-overlay-on")); });
    if (store("overlay") === "1") set(true);
  }

  function setupSwitcher(page) {
    var buttons = page.querySelectorAll(".lens-switch button");
    var sections = page.querySelectorAll(".lens-craft");
    if (!buttons.length) return;
    var pager = page.querySelectorAll(".lens-pager a[rel]");
    function has(name) {
      for (var i = 0; i < buttons.length; i++) if (buttons[i].getAttribute("data-model") === name) return true;
      return false;
    }
    function select(name, remember) {
      buttons.forEach(function (b) { b.setAttribute("aria-selected", b.getAttribute("data-model") === name ? "true" : "false"); });
      sections.forEach(function (s) { s.hidden = s.getAttribute("data-model") !== name; });
      // Neighbouring classes open on the same model.
      pager.forEach(function (a) { a.href = a.getAttribute("href").split("#")[0] + "#model=" + encodeURIComponent(name); });
      if (remember) {
        store("model", name);
        history.replaceState(null, "", "#model=" + encodeURIComponent(name));
      }
    }
    buttons.forEach(function (b) {
      b.addEventListener("click", function () { select(b.getAttribute("data-model"), true); });
    });
    var wanted = /#model=([^&]+)/.exec(window.location.hash);
    var name = wanted ? decodeURIComponent(wanted[1]) : store("model");
    if (name && has(name)) select(name, false);
  }

  function init() {
    document.querySelectorAll(".lens-finder").forEach(setupFinder);
    document.querySelectorAll("a.lens-random").forEach(setupRandom);
    document.querySelectorAll(".lens-class").forEach(function (page) {
      setupOverlay(page);
      setupSwitcher(page);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
