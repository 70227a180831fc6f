/*
 * OmniPath slide viewer.
 *
 * Picks a slide from /v1/slides, shows it with OpenSeadragon from its Deep Zoom
 * tiles, and chats about it through /v1/chat/completions (streaming, with the
 * `slide_id` extension field). The `omnipath` extension of each answer holds
 * boxes, polygons, PGFC regions and the attention grid in level-0 slide pixels;
 * they are drawn on an SVG layer whose transform follows the viewport, and can
 * be exported as a GeoJSON FeatureCollection that QuPath imports.
 */
'use strict';

(function () {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const KEY_STORE = 'omnipath.apiKey';
  const LAYERS = ['heatmap', 'regions', 'outlines', 'detections'];  // bottom to top
  const COLORS = {detection: [0, 200, 83], outline: [255, 171, 0], region: [41, 121, 255]};

  const state = {
    apiKey: window.localStorage.getItem(KEY_STORE) || '',
    model: null,
    slides: new Map(),   // id -> /v1/slides entry
    slideId: null,
    viewer: null,        // OpenSeadragon.Viewer, or null when the library is missing
    overlay: null,       // {svg, root, layers: {name: <g>}}
    history: [],         // [{role, content}] of the current slide's conversation
    results: [],         // [{question, analysis}] whose overlays are drawn
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  document.addEventListener('DOMContentLoaded', start);

  function start() {
    state.viewer = createViewer();
    $('slide-picker').addEventListener('change', (e) => openSlide(e.target.value));
    $('ask').addEventListener('submit', (e) => { e.preventDefault(); ask(); });
    $('question').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); ask(); }
    });
    for (const name of LAYERS) {
      $('show-' + name).addEventListener('change', applyLayerVisibility);
    }
    $('clear-overlays').addEventListener('click', () => { state.results = []; drawOverlays(); });
    $('export-geojson').addEventListener('click', exportGeoJSON);
    $('api-key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      state.apiKey = $('api-key').value.trim();
      window.localStorage.setItem(KEY_STORE, state.apiKey);
      $('api-key-form').hidden = true;
      loadServerInfo();
    });
    loadServerInfo();
  }

  // ---- server calls --------------------------------------------------------

  function authHeaders() {
    return state.apiKey ? {Authorization: 'Bearer ' + state.apiKey} : {};
  }

  async function apiJSON(path) {
    const response = await fetch(path, {headers: authHeaders()});
    if (response.status === 401) {
      $('api-key-form').hidden = false;
      throw new Error('this server needs an API key');
    }
    const body = await response.json();
    if (!response.ok) throw new Error(errorText(body, response.status));
    return body;
  }

  function errorText(body, status) {
    return (body && body.error && body.error.message) || ('HTTP ' + status);
  }

  async function loadServerInfo() {
    try {
      const models = await apiJSON('/v1/models');
      state.model = models.data.length ? models.data[0].id : null;
      const slides = await apiJSON('/v1/slides');
      fillSlidePicker(slides.data);
      setStatus(state.model ? 'model: ' + state.model : 'no model');
    } catch (err) {
      setStatus(err.message);
    }
  }

  function fillSlidePicker(entries) {
    const picker = $('slide-picker');
    picker.replaceChildren();
    state.slides.clear();
    const placeholder = new Option(entries.length ? 'choose a slide…' : 'no slides in the folder', '');
    picker.add(placeholder);
    for (const entry of entries) {
      const option = new Option(entry.error ? entry.id + ' (unreadable)' : entry.id, entry.id);
      option.disabled = Boolean(entry.error);
      picker.add(option);
      state.slides.set(entry.id, entry);
    }
    const readable = entries.filter((e) => !e.error);
    if (readable.length === 1) {
      picker.value = readable[0].id;
      openSlide(readable[0].id);
    }
  }

  // ---- the slide viewer ----------------------------------------------------

  function createViewer() {
    if (typeof window.OpenSeadragon === 'undefined') {
      const message = $('viewer-message');
      message.innerHTML = '<strong>The slide viewer library (OpenSeadragon) is not installed.</strong> ' +
        'Run <code>scripts/build_viewer.sh</code> (or <code>make setup</code>) and reload this page. ' +
        'Chat still works; overlays are listed in the answers.';
      message.hidden = false;
      return null;
    }
    const viewer = window.OpenSeadragon({
      id: 'viewer',
      prefixUrl: '/static/vendor/openseadragon/images/',
      drawer: 'canvas',
      showNavigator: true,
      navigatorPosition: 'BOTTOM_RIGHT',
      showRotationControl: false,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      gestureSettingsMouse: {clickToZoom: false},
      loadTilesWithAjax: true,
      ajaxHeaders: authHeaders(),
    });
    state.overlay = createOverlay(viewer);
    for (const event of ['open', 'animation', 'update-viewport', 'resize']) {
      viewer.addHandler(event, placeOverlay);
    }
    viewer.addHandler('open-failed', (e) => setStatus('could not open the slide: ' + (e.message || 'error')));
    return viewer;
  }

  function openSlide(slideId) {
    state.slideId = slideId || null;
    state.history = [];
    state.results = [];
    $('messages').replaceChildren();
    drawOverlays();
    const entry = state.slides.get(slideId);
    $('slide-info').textContent = entry ? describeSlide(entry) : '';
    if (!state.viewer) return;
    if (!slideId) { state.viewer.close(); return; }
    state.viewer.setAjaxHeaders(authHeaders());
    state.viewer.open('/slides/' + encodeURIComponent(slideId) + '.dzi');
  }

  function describeSlide(entry) {
    const mpp = entry.mpp_x ? ', ' + entry.mpp_x.toFixed(3) + ' µm/px' : '';
    return entry.width + ' × ' + entry.height + ' px, ' + entry.level_count + ' level' +
      (entry.level_count === 1 ? '' : 's') + mpp;
  }

  // ---- overlays ------------------------------------------------------------

  function createOverlay(viewer) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', 'overlay');
    svg.setAttribute('id', 'overlay');
    const root = document.createElementNS(SVG_NS, 'g');
    svg.appendChild(root);
    const layers = {};
    for (const name of LAYERS) {
      layers[name] = document.createElementNS(SVG_NS, 'g');
      layers[name].setAttribute('class', 'layer ' + name);
      root.appendChild(layers[name]);
    }
    viewer.canvas.appendChild(svg);
    return {svg, root, layers};
  }

  /** Map level-0 slide pixels onto the viewer element: translate + uniform scale. */
  function placeOverlay() {
    const viewer = state.viewer;
    const item = viewer && viewer.world.getItemAt(0);
    if (!item) return;
    const width = item.getContentSize().x;
    const origin = item.imageToViewerElementCoordinates(new window.OpenSeadragon.Point(0, 0));
    const corner = item.imageToViewerElementCoordinates(new window.OpenSeadragon.Point(width, 0));
    const scale = (corner.x - origin.x) / width;
    state.overlay.root.setAttribute('transform',
      'translate(' + origin.x + ' ' + origin.y + ') scale(' + scale + ')');
  }

  function applyLayerVisibility() {
    if (!state.overlay) return;
    for (const name of LAYERS) {
      state.overlay.layers[name].style.display = $('show-' + name).checked ? '' : 'none';
    }
  }

  function drawOverlays() {
    if (!state.overlay) return;
    const layers = state.overlay.layers;
    for (const name of LAYERS) layers[name].replaceChildren();
    for (const {analysis} of state.results) {
      for (const d of analysis.detections || []) {
        const [x1, y1, x2, y2] = d.box;
        layers.detections.appendChild(svgElement('rect', {
          class: 'detection', x: x1, y: y1, width: x2 - x1, height: y2 - y1, 'data-label': d.label || ''}));
      }
      for (const o of analysis.outlines || []) {
        layers.outlines.appendChild(svgElement('polygon', {
          class: 'outline', points: o.points.map((p) => p[0] + ',' + p[1]).join(' '), 'data-label': o.label || ''}));
      }
      for (const r of analysis.regions || []) {
        const [x1, y1, x2, y2] = r.box;
        layers.regions.appendChild(svgElement('rect', {
          class: 'region', x: x1, y: y1, width: x2 - x1, height: y2 - y1, 'data-score': r.score}));
      }
    }
    const latest = state.results[state.results.length - 1];
    if (latest) drawHeatmap(layers.heatmap, latest.analysis);
    applyLayerVisibility();
    placeOverlay();
  }

  /** The attention grid (G x G over the thumbnail) as translucent cells over the slide. */
  function drawHeatmap(layer, analysis) {
    const grid = analysis.score_grid;
    if (!grid || !grid.length) return;
    const [bx, by, bw, bh] = heatmapBox(analysis);
    const rows = grid.length;
    const cols = grid[0].length;
    let max = 0;
    for (const row of grid) for (const v of row) if (v !== null && v > max) max = v;
    if (max <= 0) return;
    const cw = bw / cols;
    const ch = bh / rows;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = grid[r][c];
        if (v === null || v <= 0) continue;
        const t = v / max;
        layer.appendChild(svgElement('rect', {
          class: 'heat', x: bx + c * cw, y: by + r * ch, width: cw, height: ch,
          fill: heatColor(t), 'fill-opacity': (0.08 + 0.4 * t).toFixed(3)}));
      }
    }
  }

  /** Level-0 box the score grid covers: meta.grid_box when the engine gives it, else the whole slide. */
  function heatmapBox(analysis) {
    const box = analysis.meta && analysis.meta.grid_box;
    if (Array.isArray(box) && box.length === 4) return [box[0], box[1], box[2] - box[0], box[3] - box[1]];
    const [w, h] = analysis.slide_size;
    return [0, 0, w, h];
  }

  function heatColor(t) {
    // blue (low) -> yellow -> red (high)
    const hue = 240 - 240 * Math.min(1, Math.max(0, t));
    return 'hsl(' + hue.toFixed(0) + ', 90%, 50%)';
  }

  function svgElement(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function zoomToResult(analysis) {
    const viewer = state.viewer;
    const item = viewer && viewer.world.getItemAt(0);
    const boxes = (analysis.detections || []).map((d) => d.box)
      .concat((analysis.outlines || []).map((o) => polygonBox(o.points)));
    if (!item || !boxes.length) return;
    const x1 = Math.min(...boxes.map((b) => b[0]));
    const y1 = Math.min(...boxes.map((b) => b[1]));
    const x2 = Math.max(...boxes.map((b) => b[2]));
    const y2 = Math.max(...boxes.map((b) => b[3]));
    const pad = 0.15 * Math.max(x2 - x1, y2 - y1, 1);
    viewer.viewport.fitBoundsWithConstraints(
      item.imageToViewportRectangle(x1 - pad, y1 - pad, x2 - x1 + 2 * pad, y2 - y1 + 2 * pad));
  }

  function polygonBox(points) {
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
  }

  // ---- chat ----------------------------------------------------------------

  async function ask() {
    const question = $('question').value.trim();
    if (!question || state.busy) return;
    if (!state.slideId) { setStatus('choose a slide first'); return; }
    if (!state.model) { setStatus('no model: is the server reachable?'); return; }
    state.busy = true;
    $('send').disabled = true;
    $('question').value = '';
    addMessage('user', question);
    const bubble = addMessage('assistant', '');
    const messages = state.history.concat([{role: 'user', content: question}]);
    const slideId = state.slideId;
    setStatus('thinking…');
    try {
      const response = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: Object.assign({'Content-Type': 'application/json'}, authHeaders()),
        body: JSON.stringify({model: state.model, messages, stream: true, slide_id: slideId}),
      });
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (e) { /* not JSON */ }
        throw new Error(errorText(body, response.status));
      }
      const {answer, analysis} = await readStream(response, (text) => { bubble.textContent += text; });
      if (slideId !== state.slideId) return;  // the user switched slides meanwhile
      const finalAnswer = analysis ? analysis.answer : answer;
      bubble.textContent = finalAnswer;
      state.history.push({role: 'user', content: question}, {role: 'assistant', content: finalAnswer});
      if (analysis) {
        state.results.push({question, analysis});
        drawOverlays();
        bubble.appendChild(resultSummary(analysis));
      }
      setStatus(analysis ? timingText(analysis) : '');
    } catch (err) {
      bubble.classList.remove('assistant');
      bubble.classList.add('error');
      bubble.textContent = err.message;
      setStatus('');
    } finally {
      state.busy = false;
      $('send').disabled = false;
    }
  }

  /** Read `chat.completion.chunk` server-sent events; returns the text and the `omnipath` extension. */
  async function readStream(response, onText) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let answer = '';
    let analysis = null;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') return {answer, analysis};
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) { answer += delta.content; onText(delta.content); }
          if (chunk.omnipath) analysis = chunk.omnipath;
        }
      }
    }
    return {answer, analysis};
  }

  function addMessage(role, text) {
    const li = document.createElement('li');
    li.className = role;
    li.textContent = text;
    $('messages').appendChild(li);
    li.scrollIntoView({block: 'end'});
    return li;
  }

  function resultSummary(analysis) {
    const plural = (n, one, many) => n + ' ' + (n === 1 ? one : many);
    const counts = [
      [(analysis.detections || []).length, 'box', 'boxes'],
      [(analysis.outlines || []).length, 'polygon', 'polygons'],
      [(analysis.regions || []).length, 'PGFC region', 'PGFC regions'],
    ];
    const parts = counts.filter(([n]) => n > 0).map(([n, one, many]) => plural(n, one, many));
    const span = document.createElement('span');
    span.className = 'summary';
    span.textContent = parts.length ? parts.join(' · ') : 'no overlays';
    if ((analysis.detections || []).length || (analysis.outlines || []).length) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'zoom to';
      button.addEventListener('click', () => zoomToResult(analysis));
      span.appendChild(button);
    }
    return span;
  }

  function timingText(analysis) {
    const total = analysis.timings && analysis.timings.serve_total;
    return typeof total === 'number' ? 'answered in ' + total.toFixed(1) + ' s' : '';
  }

  function setStatus(text) {
    $('status').textContent = text;
  }

  // ---- GeoJSON export ------------------------------------------------------

  /** A QuPath-importable FeatureCollection (level-0 pixel coordinates) of every drawn overlay. */
  function overlaysAsGeoJSON() {
    const features = [];
    const feature = (ring, name, color, extra) => features.push({
      type: 'Feature',
      geometry: {type: 'Polygon', coordinates: [closeRing(ring)]},
      properties: Object.assign({objectType: 'annotation', name, classification: {name, color}}, extra),
    });
    for (const {question, analysis} of state.results) {
      for (const d of analysis.detections || []) {
        const [x1, y1, x2, y2] = d.box;
        feature([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], d.label || 'Detection', COLORS.detection,
          {question, kind: 'box'});
      }
      for (const o of analysis.outlines || []) {
        feature(o.points.map((p) => [p[0], p[1]]), o.label || 'Outline', COLORS.outline, {question, kind: 'polygon'});
      }
      for (const r of analysis.regions || []) {
        const [x1, y1, x2, y2] = r.box;
        feature([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], 'PGFC region', COLORS.region,
          {question, kind: 'pgfc_region', measurements: {'attention score': r.score}});
      }
    }
    return {type: 'FeatureCollection', features};
  }

  function closeRing(points) {
    const ring = points.slice();
    const first = ring[0];
    const last = ring[ring.length - 1];
    if (ring.length && (first[0] !== last[0] || first[1] !== last[1])) ring.push([first[0], first[1]]);
    return ring;
  }

  function exportGeoJSON() {
    const collection = overlaysAsGeoJSON();
    if (!collection.features.length) { setStatus('nothing to export yet'); return; }
    const blob = new Blob([JSON.stringify(collection, null, 1)], {type: 'application/geo+json'});
    const link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = (state.slideId || 'slide') + '.omnipath.geojson';
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }
})();
