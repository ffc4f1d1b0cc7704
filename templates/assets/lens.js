/* Lens gallery: class grids filtered as you type, random class, overlay toggle, model switcher, and the
   concept atlas (class relations, heatmap opacity, concept map, compare view).
   No dependencies, no network beyond this site. Text from JSON goes in with textContent only. */
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

  /* The atlas's bulky data (relations of a class, a model's concept map) is JSON loaded on demand.
     Browsers refuse fetch() from file://, so those parts need the site served (`lens serve`). */
  var jsonCache = {};
  function loadJSON(url) {
    if (!jsonCache[url]) {
      jsonCache[url] = fetch(url).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      });
    }
    return jsonCache[url];
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

  /* Filter as you type: `show(el, ok)` shows or hides each element by its data-key (or any of its
     data-keys, "|"-separated: a shared concept used by several classes); the count says how many match. */
  function matchesAny(el, query) {
    if (el.dataset.keys === undefined) return matches(el.dataset.key, query);
    if (el.dataset.keys === "") return !query;  // used by no class: shown only unfiltered
    return el.dataset.keys.split("|").some(function (k) { return matches(k, query); });
  }
  function liveFilter(input, count, elements, noun, show) {
    function apply() {
      var q = input.value.trim().toLowerCase(), shown = 0;
      elements.forEach(function (el) {
        var ok = matchesAny(el, q);
        show(el, ok);
        if (ok) shown++;
      });
      count.textContent = shown + " of " + elements.length + " " + noun;
    }
    input.addEventListener("input", apply);
    apply();
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
      liveFilter(input, count, cards, "classes", function (c, ok) { c.hidden = !ok; });
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
    // The slider fades the overlay (seen over a checkerboard) into the plain image beneath it.
    var slider = page.querySelector(".lens-overlay-slider");
    if (!slider) return;
    function fade() {
      page.style.setProperty("--lens-overlay-opacity", String(slider.value / 100));
      store("overlayOpacity", slider.value);
    }
    var kept = store("overlayOpacity");
    if (kept !== null && /^\d+$/.test(kept)) slider.value = kept;
    slider.addEventListener("input", function () {
      fade();
      if (!page.classList.contains("lens-overlay-on")) set(true);  // moving the slider shows what it changes
    });
    fade();
  }

  /* A concept's larger view (256 px), loaded only when a visitor opens it: its class page's thumbnail links to it
     (without script, the link opens the image), and a dialog shows it here. Esc or a click closes. */
  function setupLargeViews(page) {
    var links = page.querySelectorAll(".lens-cvis > a.lens-plain");
    if (!links.length) return;
    var dialog = null, img = null, caption = null;
    function open() {  // made on first use: no image element without a source until then
      if (!dialog) {
        dialog = el("dialog", "lens-large");
        img = el("img");
        caption = el("p", "lens-sub");
        dialog.appendChild(img);
        dialog.appendChild(caption);
        dialog.addEventListener("click", function () { dialog.close(); });
        document.body.appendChild(dialog);
      }
      return dialog;
    }
    links.forEach(function (a) {
      a.addEventListener("click", function (ev) {
        if (typeof HTMLDialogElement !== "function") return;  // an old browser: follow the link
        ev.preventDefault();
        open();
        var thumb = a.querySelector("img");
        img.alt = thumb ? thumb.alt + ", larger view" : "";
        img.src = a.getAttribute("href");
        caption.textContent = (thumb ? thumb.alt : "") + " · click or press Esc to close";
        dialog.showModal();
      });
    });
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


  /* ---------------------------------------------------------------- concept atlas */
  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function rankColour(rank) { return PALETTE[(rank - 1 + PALETTE.length) % PALETTE.length]; }
  // items: [rank (a concept) | null (a class), class name, class index, href | null, cosine in %]
  function linkList(label, items, root, cls) {
    var p = el("p", "lens-sub " + cls);
    p.appendChild(el("b", null, label + " "));
    items.forEach(function (it, n) {
      if (n) p.appendChild(document.createTextNode("; "));
      var text = (it[0] === null ? "" : "concept " + it[0] + " of ") + it[1] + " (" + it[2] + ")";
      if (it[3]) {
        var a = el("a", null, text);
        a.href = root + it[3];
        p.appendChild(a);
      } else {
        p.appendChild(document.createTextNode(text));
      }
      p.appendChild(document.createTextNode(" " + (it[0] === null ? "" : "cosine ") + it[4] + " %"));
    });
    return p;
  }

  function tipFor(wrap) {
    var tip = wrap.querySelector(".lens-tip");
    if (!tip) { tip = el("div", "lens-tip"); tip.hidden = true; wrap.appendChild(tip); }
    return tip;
  }

  function strategiesPlot(box, data, root) {
    // data: {kind, need, n, points: [[x, y, rank]], sources, sprite, cols, cell}
    box.textContent = "";
    var head = el("p", "lens-sub");
    head.appendChild(el("b", null, "Decision strategies. "));
    head.appendChild(document.createTextNode(data.n + (data.n === 1 ? " image" : " images") + " placed by their concept-importance vectors (" +
      ({logit: "per-image logit shares", sobol: "per-image Sobol indices", presence: "concept coefficients"}[data.kind] || data.kind) +
      "); colour: each image's most important concept. Hover or focus a point for the image."));
    box.appendChild(head);
    var wrap = el("div", "lens-stratwrap");
    var plot = svg("svg", {viewBox: "-4 -4 108 108", "class": "lens-strat", role: "group", "aria-label": "Decision strategies"});
    var tip = tipFor(wrap);
    data.points.forEach(function (pt, i) {
      var c = svg("circle", {cx: (pt[0] * 100).toFixed(1), cy: ((1 - pt[1]) * 100).toFixed(1), r: 2.2, fill: rankColour(pt[2]), tabindex: "0"});
      var label = "image " + (i + 1) + (data.sources[i] ? " (" + data.sources[i] + ")" : "") + ": concept " + pt[2] + " most important";
      c.setAttribute("aria-label", label);
      c.appendChild(svg("title", {})).textContent = label;
      function show() {
        tip.textContent = "";
        if (data.sprite) {
          var t = el("div", "lens-thumb");
          t.style.backgroundImage = "url(" + root + data.sprite + ")";
          t.style.backgroundPosition = (-(i % data.cols) * data.cell) + "px " + (-Math.floor(i / data.cols) * data.cell) + "px";
          tip.appendChild(t);
        }
        tip.appendChild(el("span", null, label));
        tip.style.left = (pt[0] * 100) + "%";
        tip.style.top = ((1 - pt[1]) * 100) + "%";
        tip.hidden = false;
      }
      c.addEventListener("mouseenter", show);
      c.addEventListener("focus", show);
      c.addEventListener("mouseleave", function () { tip.hidden = true; });
      c.addEventListener("blur", function () { tip.hidden = true; });
      plot.appendChild(c);
    });
    wrap.insertBefore(plot, tip);
    box.appendChild(wrap);
    var legend = el("p", "lens-legend");
    var ranks = {};
    data.points.forEach(function (pt) { ranks[pt[2]] = (ranks[pt[2]] || 0) + 1; });
    Object.keys(ranks).sort(function (a, b) { return a - b; }).forEach(function (r) {
      var item = el("span");
      var dot = el("i");
      dot.style.background = rankColour(+r);
      item.appendChild(dot);
      item.appendChild(document.createTextNode("concept " + r + ": " + ranks[r]));
      legend.appendChild(item);
    });
    box.appendChild(legend);
  }

  /* A class's "Shared concepts" for one model, from its class JSON: the top concepts of the model's
     dictionary with their share of the class logit, each linking to its page. */
  function sharedSection(box, s, root, index) {
    // s: {map, n, few, learned, bias, residual, items: [{atom, page, thumb, share, negative, limit?}]}
    box.textContent = "";
    box.appendChild(el("h3", null, "Shared concepts"));
    var intro = el("p", "lens-sub", "The top concepts of this model's shared concept dictionary (learned once from " +
      s.learned + ", and used by every class), by their share of " +
      "this class's logit, averaged over " + s.n + (s.n === 1 ? " photo view" : " photo views") + ". Baseline (the average activation through the head, with its bias) " + s.bias +
      ", reconstruction residual " + s.residual + ": the concepts' shares are what this class's photos add to or take from the baseline. ");
    var map = el("a", null, "Dictionary map");
    map.href = root + s.map + "#c=" + index;
    intro.appendChild(map);
    box.appendChild(intro);
    if (s.few) {
      var few = el("p", "lens-few");
      few.setAttribute("role", "note");
      few.appendChild(el("b", null, "Few photos. "));
      few.appendChild(document.createTextNode("These shares come from " + s.n + (s.n === 1 ? " photo" : " photos") + " of this class only: they are unreliable."));
      box.appendChild(few);
    }
    var list = el("ol", "lens-shared-list");
    s.items.forEach(function (it) {
      var li = el("li");
      var a = el(it.page ? "a" : "span", "lens-shared-link");
      if (it.page) a.href = root + it.page;
      if (it.thumb) {
        var img = el("img");
        img.src = root + it.thumb;
        img.alt = "Shared concept " + it.atom;
        img.loading = "lazy";
        a.appendChild(img);
      } else {
        a.appendChild(el("span", "lens-missing", it.limit ? "Not visualized (only each class's top " +
          (it.limit === 1 ? "shared concept is" : it.limit + " are") + ")." : "No visualization yet."));
      }
      a.appendChild(el("b", null, "Shared concept " + it.atom));
      li.appendChild(a);
      li.appendChild(el("span", "lens-sub", it.share + " of the logit" + (it.negative ? " (lowers the class score)" : "")));
      list.appendChild(li);
    });
    box.appendChild(list);
  }

  function setupRelations(page) {
    var src = page.getAttribute("data-relations");
    if (!src) return;
    loadJSON(src).then(function (data) {
      page.querySelectorAll(".lens-craft").forEach(function (section) {
        var m = data.models[section.getAttribute("data-model")];
        if (!m) return;
        // The page lists concepts in rank order, as the JSON does: no per-concept markup needed.
        section.querySelectorAll("ol.lens-concepts > li .lens-cbody").forEach(function (body, n) {
          var c = m.concepts[n];
          if (!c) return;
          var box = el("div", "lens-rel");
          body.appendChild(box);
          if (c.similar.length) box.appendChild(linkList("Similar to", c.similar, "../", "lens-similar-list"));
          if (c.aligned.length) box.appendChild(linkList("Aligned with", c.aligned, "../", "lens-aligned-list"));
        });
        var strat = section.querySelector(".lens-strategies");
        if (strat && m.strategies) strategiesPlot(strat, m.strategies, "../");
        var shared = section.querySelector(".lens-shared");
        if (shared && m.shared) sharedSection(shared, m.shared, "../", data["class"]);
      });
    }).catch(function (e) {
      page.querySelectorAll(".lens-strategies, .lens-shared").forEach(function (b) {
        b.textContent = "Relations could not be loaded (" + e.message + "). Serve the site over HTTP, e.g. with `lens serve`.";
      });
    });
  }

  function setupOpacity(page) {
    page.querySelectorAll(".lens-opacity-slider").forEach(function (slider) {
      // Every heatmap layer of the slider's section (a shared concept's page also shows them side by side).
      var layers = slider.closest("section").querySelectorAll(".lens-heatlayer");
      function apply() { layers.forEach(function (layer) { layer.style.opacity = String(slider.value / 100); }); }
      slider.addEventListener("input", apply);
      apply();
    });
  }

  /* Colours of the map: the classes a filter shows get the palette's distinct colours, in order of
     their first point, with a legend; past PALETTE.length classes, points are grey and the legend
     says to narrow the filter (hues by class index looked alike for unrelated classes). */
  function colourClasses(items, legend, data) {
    var order = [], colour = {};
    items.forEach(function (a) {
      var c = a.dataset.cls;
      // c is "" for a shared concept no class uses: it takes no colour
      if (!a.classList.contains("lens-off") && c && !(c in colour)) { colour[c] = order.length; order.push(c); }
    });
    var distinct = order.length <= PALETTE.length;
    items.forEach(function (a) {
      a.firstChild.setAttribute("fill", distinct && a.dataset.cls in colour ? PALETTE[colour[a.dataset.cls]] : "#999");
    });
    legend.textContent = "";
    if (!distinct) {
      legend.appendChild(el("span", null, order.length + " classes shown: filter to " + PALETTE.length + " or fewer to colour each class."));
      return;
    }
    order.forEach(function (c, n) {
      var item = el("span");
      var dot = el("i");
      dot.style.background = PALETTE[n];
      item.appendChild(dot);
      item.appendChild(document.createTextNode(pad(+c) + " " + (data.classes[c] || "")));
      legend.appendChild(item);
    });
  }

  /* A map point's tooltip (its thumbnail, if any, and its label) on hover and on keyboard focus; x, y in 0..999. */
  function mapTip(point, tip, x, y, thumb, label) {
    function show() {
      tip.textContent = "";
      if (thumb) {
        var img = el("img");
        img.alt = "";
        img.src = thumb;
        tip.appendChild(img);
      }
      tip.appendChild(el("span", null, label));
      tip.style.left = (x / 10) + "%";
      tip.style.top = (y / 10) + "%";
      tip.hidden = false;
    }
    point.addEventListener("mouseenter", show);
    point.addEventListener("focus", show);
    point.addEventListener("mouseleave", function () { tip.hidden = true; });
    point.addEventListener("blur", function () { tip.hidden = true; });
  }

  /* A map page: loads its points (data-map), makes one SVG element per point with `point(pt, data, m)`,
     then `done(items, data, m)` sets up the filter; m: the page's parts (root, model, plot, count, input, tip, legend). */
  function setupMapPage(box, point, done) {
    var m = {root: box.getAttribute("data-root") || "", model: box.getAttribute("data-model"), plot: box.querySelector(".lens-map"),
             count: box.querySelector(".lens-count"), input: box.querySelector(".lens-map-filter"), tip: box.querySelector(".lens-tip"),
             legend: box.querySelector(".lens-map-legend")};
    loadJSON(box.getAttribute("data-map")).then(function (data) {
      var items = [];
      var frag = document.createDocumentFragment();
      data.points.forEach(function (pt) {
        var a = point(pt, data, m);
        items.push(a);
        frag.appendChild(a);
      });
      m.plot.appendChild(frag);
      done(items, data, m);
    }).catch(function (e) {
      m.count.textContent = "Could not load the map (" + e.message + "). Serve the site over HTTP, e.g. with `lens serve`.";
    });
  }

  function setupMap(box) {
    setupMapPage(box, function (pt, data, m) {
      // pt: [x, y, class, concept id, rank, thumbnail hash | 0]
      var slug = pad(pt[2]), name = data.classes[pt[2]] || "";
      var a = svg("a", {href: m.root + "concepts/" + m.model + "-" + slug + ".html#c" + pt[3], "class": "lens-pt"});
      var label = "concept " + pt[4] + " of " + name + " (" + pt[2] + ")";
      a.setAttribute("aria-label", label);
      a.appendChild(svg("circle", {cx: pt[0], cy: pt[1], r: 5, fill: "#999"}));
      mapTip(a, m.tip, pt[0], pt[1], pt[5] ? m.root + "classes/" + slug + "/" + m.model + "/c" + pt[3] + "-t." + pt[5] + ".webp" : null, label);
      a.dataset.key = (slug + " " + pt[2] + " " + name).toLowerCase();
      a.dataset.id = pt[2] + "-" + pt[3];
      a.dataset.cls = String(pt[2]);
      return a;
    }, function (items, data, m) {
      liveFilter(m.input, m.count, items, "concepts", function (a, ok) { a.classList.toggle("lens-off", !ok); });
      colourClasses(items, m.legend, data);
      m.input.addEventListener("input", function () { colourClasses(items, m.legend, data); });
      var want = /#c=(\d+-\d+)/.exec(window.location.hash);
      if (want) items.forEach(function (a) { if (a.dataset.id === want[1]) { a.classList.add("lens-here"); m.plot.appendChild(a); } });
    });
  }

  /* The shared concept dictionary's map: every alive concept; those with a page link to it. Filtering by a
     class highlights the concepts it uses (the others are dimmed), coloured per class as the concept map's
     points are (colourClasses). #c=INDEX opens it filtered by that class, #a=ATOM marks that concept. */
  function setupDictMap(box) {
    setupMapPage(box, function (pt, data, m) {
      // pt: [x, y, atom, has a page (1/0), thumbnail hash | 0, [classes using it]]
      var label = "shared concept " + pt[2] + (pt[5].length ? ", used by " + pt[5].slice(0, 3).map(function (c) {
        return (data.classes[c] || "") + " (" + c + ")"; }).join(", ") : "");
      var a = pt[3] ? svg("a", {href: m.root + "dictionary/" + m.model + "/" + pad(pt[2]) + ".html", "class": "lens-pt"})
                    : svg("g", {"class": "lens-pt lens-nopage", tabindex: "0"});
      a.setAttribute("aria-label", label + (pt[3] ? "" : " (no page)"));
      a.appendChild(svg("circle", {cx: pt[0], cy: pt[1], r: pt[3] ? 6 : 3, fill: "#999"}));
      mapTip(a, m.tip, pt[0], pt[1], pt[4] ? m.root + "dictionary/" + m.model + "/a" + pad(pt[2]) + "-t." + pt[4] + ".webp" : null, label);
      a.dataset.keys = pt[5].map(function (c) { return (pad(c) + " " + c + " " + (data.classes[c] || "")).toLowerCase(); }).join("|");
      a.dataset.atom = String(pt[2]);
      a.dataset.cls = pt[5].length ? String(pt[5][0]) : "";
      return a;
    }, function (items, data, m) {
      function byClass() {  // each point shown takes the colour of the first of its classes the filter matches
        var q = m.input.value.trim().toLowerCase();
        items.forEach(function (a, n) {
          var cls = data.points[n][5], keys = a.dataset.keys.split("|");
          for (var k = 0; k < cls.length; k++) {
            if (matches(keys[k], q)) { a.dataset.cls = String(cls[k]); break; }
          }
        });
        colourClasses(items, m.legend, data);
      }
      liveFilter(m.input, m.count, items, "shared concepts", function (a, ok) { a.classList.toggle("lens-off", !ok); });
      m.input.addEventListener("input", byClass);
      var want = /#c=(\d+)/.exec(window.location.hash), here = /#a=(\d+)/.exec(window.location.hash);
      if (want) {  // from a class page: exactly that class's concepts (typing in the filter goes on from there)
        var c = String(parseInt(want[1], 10)), n = 0;
        m.input.value = data.classes[c] || c;
        items.forEach(function (a, k) {
          var ok = data.points[k][5].map(String).indexOf(c) !== -1;
          a.classList.toggle("lens-off", !ok);
          if (ok) { a.dataset.cls = c; n++; }
        });
        m.count.textContent = n + " of " + items.length + " shared concepts";
        colourClasses(items, m.legend, data);
      } else byClass();
      if (here) items.forEach(function (a) { if (a.dataset.atom === here[1]) { a.classList.add("lens-here"); m.plot.appendChild(a); } });
    });
  }

  function setupCompare(box) {
    var root = box.getAttribute("data-root") || "";
    var selA = box.querySelector(".lens-cmp-a"), selB = box.querySelector(".lens-cmp-b"), selC = box.querySelector(".lens-cmp-class");
    var out = box.querySelector(".lens-cmp-out"), count = box.querySelector(".lens-count");
    function column(name, m) {
      var col = el("div", "lens-cmp-col");
      col.appendChild(el("h3", null, name));
      if (!m) { col.appendChild(el("div", "lens-missing", "Not rendered for this model")); return col; }
      if (m.maco) {
        var img = el("img");
        img.src = root + m.maco;
        img.alt = "Class visualization, " + name;
        col.appendChild(img);
      } else {
        col.appendChild(el("div", "lens-missing", "This picture is not available."));
      }
      var list = el("ol", "lens-cmp-concepts");
      m.concepts.slice(0, 3).forEach(function (c) {
        var li = el("li");
        var a = el("a");
        a.href = root + c.page;
        if (c.thumb) {
          var t = el("img");
          t.src = root + c.thumb;
          t.alt = "Concept " + c.rank;
          a.appendChild(t);
        }
        a.appendChild(el("span", null, "Concept " + c.rank + (c.share === null ? "" : " · " + (100 * c.share).toFixed(1) + " %") + (c.important ? " ★" : "")));
        li.appendChild(a);
        list.appendChild(li);
      });
      if (!m.concepts.length) col.appendChild(el("div", "lens-missing", m.craft_state === "no-images"
        ? "No photos of this class were available, so no concepts could be found." : "Concepts are not available for this model."));
      col.appendChild(list);
      return col;
    }
    function show() {
      var i = parseInt(selC.value, 10);
      if (isNaN(i)) return;
      history.replaceState(null, "", "#c=" + i + "&a=" + encodeURIComponent(selA.value) + "&b=" + encodeURIComponent(selB.value));
      loadJSON(root + "classes/" + pad(i) + ".json").then(function (data) {
        out.textContent = "";
        var title = el("p", "lens-sub");
        var a = el("a", null, selC.options[selC.selectedIndex].textContent);
        a.href = root + "classes/" + pad(i) + ".html";
        title.appendChild(a);
        out.appendChild(title);
        var grid = el("div", "lens-cmp-grid");
        grid.appendChild(column(selA.value, data.models[selA.value]));
        grid.appendChild(column(selB.value, data.models[selB.value]));
        out.appendChild(grid);
      }).catch(function (e) { out.textContent = "Could not load the class (" + e.message + ")."; });
    }
    loadIndex(box.getAttribute("data-index")).then(function (index) {
      index.classes.forEach(function (row) {
        var o = el("option", null, pad(row[0]) + " " + row[2].split(",")[0]);
        o.value = String(row[0]);
        selC.appendChild(o);
      });
      count.textContent = index.classes.length + (index.classes.length === 1 ? " class" : " classes");
      var h = window.location.hash;
      var c = /c=(\d+)/.exec(h), a = /a=([^&]+)/.exec(h), b = /b=([^&]+)/.exec(h);
      if (c) selC.value = c[1];
      if (a) selA.value = decodeURIComponent(a[1]);
      if (b) selB.value = decodeURIComponent(b[1]);
      [selA, selB, selC].forEach(function (s) { s.addEventListener("change", show); });
      show();
    }).catch(function (e) {
      count.textContent = "Could not load the class index (" + e.message + "). Serve the site over HTTP, e.g. with `lens serve`.";
    });
  }

  function init() {
    document.querySelectorAll(".lens-finder").forEach(setupFinder);
    document.querySelectorAll("a.lens-random").forEach(setupRandom);
    document.querySelectorAll(".lens-class").forEach(function (page) {
      setupOverlay(page);
      setupSwitcher(page);
      setupRelations(page);
      setupOpacity(page);
      setupLargeViews(page);
    });
    document.querySelectorAll(".lens-mappage").forEach(setupMap);
    document.querySelectorAll(".lens-dictmap").forEach(setupDictMap);
    document.querySelectorAll(".lens-compare").forEach(setupCompare);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
