// imo dashboard: polls /api/summary and renders it. Every value from the chain goes in through textContent or
// attributes (never innerHTML); the NFT images are the on-chain tokenURI SVGs as data: URIs in <img>.
"use strict";

const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#4f46e5", "#0891b2", "#db2777", "#059669", "#d97706", "#7c3aed", "#dc2626", "#0d9488"];
const charts = {};
let lastBlock = null;
let labels = {};

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function eth(wei, digits = 4) {
  const x = Number(wei) / 1e18;
  if (x === 0) return "0 ETH";
  return x.toLocaleString("en-US", { maximumSignificantDigits: digits }) + " ETH";
}

function ethNumber(wei) { return Number(wei) / 1e18; }

function hue(address) {
  let h = 0;
  for (const ch of address.toLowerCase().slice(2)) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function short(address) { return address ? address.slice(0, 6) + "…" + address.slice(-4) : ""; }

function addr(address) {
  if (!address) return el("span", { class: "muted", text: "—" });
  const label = labels[address.toLowerCase()];
  return el("span", { class: "addr", title: address, "data-address": address },
    el("i", { style: `background: hsl(${hue(address)} 70% 48%)` }), label ? `${label} ${short(address)}` : short(address));
}

function duration(s) {
  if (s === undefined || s === null) return "—";
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${(s / 60).toFixed(s < 600 ? 1 : 0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function badge(text, kind) { return el("span", { class: `badge ${kind || text}`, text }); }

function replaceRows(tbody, rows) { tbody.replaceChildren(...rows); }

// ------------------------------------------------------------------ outputs: logits as bars, images as pixels

function logitBars(out) {
  const values = out.values, w = 7, gap = 2, h = 28;
  const max = Math.max(...values.map(Math.abs), 1);
  const s = svg("svg", { width: values.length * (w + gap), height: h, viewBox: `0 0 ${values.length * (w + gap)} ${h}`, role: "img" });
  const title = svg("title");
  title.textContent = `logits (fixed point, scale ${out.scale}): ${values.join(", ")}`;
  s.append(title);
  values.forEach((v, i) => {
    const bar = Math.max(1, Math.abs(v) / max * (h / 2 - 1));
    s.append(svg("rect", { x: i * (w + gap), y: v >= 0 ? h / 2 - bar : h / 2, width: w, height: bar, rx: 1,
      fill: i === out.argmax ? "#4338ca" : (v >= 0 ? "#818cf8" : "#fca5a5") }));
  });
  s.append(svg("line", { x1: 0, x2: values.length * (w + gap), y1: h / 2, y2: h / 2, stroke: "#cbd5e1", "stroke-width": 0.5 }));
  return el("div", { class: "out", "data-argmax": out.argmax }, s, el("span", { class: "digit", text: `→ ${out.argmax}` }));
}

function pixelImage(out, size) {
  const canvas = el("canvas", { width: 8, height: 8, style: `width:${size}px;height:${size}px`, title: "the 8x8 image output" });
  const ctx = canvas.getContext("2d");
  const one = 2 ** out.scale;
  out.values.forEach((v, i) => {
    const g = Math.round(Math.min(1, Math.max(0, v / one)) * 255);
    ctx.fillStyle = `rgb(${g},${g},${g})`;
    ctx.fillRect(i % 8, Math.floor(i / 8), 1, 1);
  });
  return el("div", { class: "out" }, canvas, el("span", { class: "muted", text: "8×8 image" }));
}

function outputCell(out) {
  if (!out) return el("span", { class: "muted", text: "—" });
  if (out.error) return el("span", { class: "muted", text: out.error });
  if (out.kind === "text") return el("span", { class: "out", text: JSON.stringify(out.text) });
  return out.kind === "image" ? pixelImage(out, 32) : logitBars(out);
}

// ------------------------------------------------------------------ sections

function renderChain(doc) {
  const c = doc.chain, box = document.getElementById("chain");
  const age = Math.max(0, Math.round(Date.now() / 1000 - doc.generated_at));
  box.replaceChildren(
    el("div", {}, el("span", { class: "live", id: "live" }), "chain ", el("b", { text: c.chain_id }), " · block ", el("b", { text: c.block }),
      " · ", new Date(c.time * 1000).toISOString().replace("T", " ").slice(0, 19), " UTC"),
    el("div", {}, c.rpc_url || "", " · ", doc.revenue.token.name, " (", doc.revenue.token.symbol, ") ", short(doc.contracts.token)),
    el("div", { class: "updated", text: `read ${age ? age + " s ago" : "just now"}; refreshes every ${REFRESH_MS / 1000} s` }));
}

function renderKpis(doc) {
  const t = doc.totals, by = t.by_status;
  const k = (label, value, sub, color) => el("div", { class: "kpi", style: `--c: ${color}` },
    el("div", { class: "label", text: label }), el("div", { class: "value", text: value }), el("div", { class: "sub", text: sub }));
  document.getElementById("kpis").replaceChildren(
    k("Requests", t.requests, `${by.finalized || 0} finalized · ${(by.pending || 0) + (by.submitted || 0)} open`, "#4f46e5"),
    k("Disputes", t.disputes, `${t.slashed} slashed · ${t.answered} answered`, t.slashed ? "#dc2626" : "#64748b"),
    k("Fees paid", eth(t.fees_wei, 3), `${doc.models.length} model${doc.models.length === 1 ? "" : "s"} registered`, "#0891b2"),
    k("Token revenue", eth(t.revenue_wei, 3), `${doc.revenue.snapshots.length} snapshots · ${eth(doc.revenue.token.pending_wei)} pending`, "#059669"),
    k("Claimed by holders", eth(t.claimed_wei, 3), `${doc.revenue.holders.filter((h) => h.claimed_wei > 0).length} of ${doc.revenue.holder_count} holders claimed`, "#d97706"),
    k("AIGC NFTs", t.nfts, doc.nft ? `${doc.nft.name} (${doc.nft.symbol})` : "no collection", "#db2777"));
}

function renderRequests(doc) {
  const slashedSegs = {};
  for (const d of doc.disputes) if (d.outcome === "slashed") (slashedSegs[d.request] ||= new Set()).add(d.segment);
  const rows = doc.requests.map((r) => {
    const lat = r.latency.submit;
    const segs = el("div", {}, ...r.segments.map((s) => {
      const hit = slashedSegs[r.id] && slashedSegs[r.id].has(s.k);
      const what = s.mode === "zk" ? (s.proof_bytes ? `proof ${(s.proof_bytes / 1024).toFixed(1)} KB` : "proof") : "optimistic";
      return el("span", { class: `chip ${s.mode}`, title: hit ? "a dispute on this segment slashed an earlier answer" : what },
        `S${s.k} ${s.mode}`, el("span", { class: "muted", text: `· ${what}` }), hit ? el("span", { class: "resub", text: "✗ slashed before" }) : null);
    }));
    const resubmits = r.submissions.length > 1 ? el("span", { class: "resub", text: ` ${r.submissions.length} answers`,
      title: r.submissions.map((s, i) => `answer ${i + 1} by ${s.submitter} (block ${s.block}): ${s.outcome}`).join("\n") }) : null;
    return el("tr", { "data-request": r.id, "data-status": r.status },
      el("td", { class: "id", text: r.id }),
      el("td", { text: r.model }),
      el("td", {}, badge(r.status)),
      el("td", { class: "num", text: eth(r.fee_wei) }),
      el("td", {}, addr(r.submitter), resubmits),
      el("td", { class: "num", title: lat ? `first answer after ${r.latency.first_submit.blocks} blocks; final after ${r.latency.finalized ? r.latency.finalized.blocks + " blocks" : "—"}` : "" },
        lat ? `${lat.blocks} blk · ${duration(lat.seconds)}` : "—"),
      el("td", {}, segs),
      el("td", { class: "num" }, r.disputes ? el("span", { class: "badge slashed", text: r.disputes }) : el("span", { class: "muted", text: "0" })),
      el("td", {}, outputCell(r.output)));
  });
  replaceRows(document.querySelector("#requests tbody"), rows);
  document.getElementById("requests-empty").hidden = rows.length > 0;
}

function renderModels(doc) {
  const box = document.getElementById("models");
  box.replaceChildren(...doc.models.map((m) => {
    const pipe = el("div", { class: "pipeline" });
    m.segments.forEach((s, i) => {
      if (i === 0) pipe.append(el("div", { class: "boundary", text: m.boundary_sizes[0] ? `input ${m.boundary_sizes[0]}` : "input hashed" }));
      pipe.append(el("div", { class: `seg ${s.mode}`, title: `${s.proof}\nverifier ${s.verifier}`, "data-mode": s.mode },
        el("b", { text: `S${s.k} · ${s.mode}` }), el("span", { text: s.mode === "zk" ? "zk proof posted" : "fraud-provable" })));
      const out = m.boundary_sizes[s.k];
      pipe.append(el("div", { class: "boundary", text: i === m.segments.length - 1 ? `output ${out}` : (out ? `public ${out}` : "hashed") }));
    });
    return el("div", { class: "model", "data-model": m.id },
      el("div", { class: "head" }, el("b", { text: `#${m.id} ${m.name}` }),
        el("span", { class: "terms", text: `fee ${eth(m.fee_wei)} · bond ${eth(m.bond_wei)} · operator ${m.operator_share_bps / 100}% · windows ${duration(m.challenge_window_s)} / ${duration(m.response_window_s)}` })),
      pipe);
  }));
  if (!doc.models.length) box.replaceChildren(el("p", { class: "empty", text: "No model registered yet." }));
}

function renderDisputes(doc) {
  const rows = doc.disputes.map((d) => {
    const kind = d.outcome.startsWith("void") ? "void" : d.outcome.startsWith("open") ? "open" : d.outcome;
    return el("tr", { "data-request": d.request, "data-segment": d.segment, "data-outcome": d.outcome, "data-challenger": d.challenger },
      el("td", { class: "id", text: `#${d.request} ${d.model}` }),
      el("td", {}, el("span", { class: `chip ${d.kind.startsWith("invalid zk") ? "zk" : "op"}`, text: `S${d.segment}` })),
      el("td", { text: d.kind }),
      el("td", {}, addr(d.challenger)),
      el("td", {}, addr(d.submitter)),
      el("td", {}, badge(d.outcome, kind)),
      el("td", {}, d.winner ? el("span", { class: `winner ${d.winner}`, text: d.winner === "challenger" ? "challenger ✓" : "submitter ✓" }) : el("span", { class: "muted", text: "—" })),
      el("td", { class: "num", text: d.reward_wei !== undefined ? eth(d.reward_wei) : "—" }),
      el("td", { class: "num", text: d.to_token_wei !== undefined ? eth(d.to_token_wei) : "—" }));
  });
  replaceRows(document.querySelector("#disputes tbody"), rows);
  document.getElementById("disputes-empty").hidden = rows.length > 0;
}

function renderNfts(doc) {
  const box = document.getElementById("nfts");
  const tokens = doc.nft ? doc.nft.tokens : [];
  box.replaceChildren(...tokens.map((t) => el("div", { class: "nft", "data-token": t.token_id },
    t.image ? el("img", { class: "nft-image", src: t.image, alt: t.name || "AIGC image", title: t.description || "" }) : el("div", { class: "muted", text: t.error || "no image" }),
    el("dl", {},
      el("h3", { text: t.name || short(t.token_id) }),
      el("dt", { text: "token" }), el("dd", { class: "addr", title: t.token_id, text: short(t.token_id) }),
      el("dt", { text: "oracle request" }), el("dd", { text: t.request !== undefined ? `#${t.request}` : "—" }),
      el("dt", { text: "minted by" }), el("dd", {}, addr(t.minter)),
      el("dt", { text: "owner" }), el("dd", {}, addr(t.owner)),
      el("dt", { text: "transfers" }), el("dd", { text: t.transfers }),
      el("dt", { text: "royalty" }), el("dd", {}, t.royalty ? `${t.royalty.bps / 100}% → ` : "—", t.royalty ? addr(t.royalty.receiver) : null),
      el("dt", { text: "mint fee" }), el("dd", { text: eth(doc.nft.mint_fee_wei) }),
      el("dt", { text: "about" }), el("dd", { class: "muted", text: t.description || "" })))));
  document.getElementById("nfts-empty").hidden = tokens.length > 0;
}

// ------------------------------------------------------------------ charts (Chart.js from node_modules)

function chart(id, config) {
  if (typeof Chart === "undefined") {
    const canvas = document.getElementById(id);
    canvas.replaceWith(el("p", { class: "empty", id, text: "Chart.js is not installed (run `npm ci`)." }));
    return;
  }
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#6b7488";
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].update("none");
  } else {
    config.options = { responsive: true, maintainAspectRatio: false, animation: false, ...config.options };
    charts[id] = new Chart(document.getElementById(id), config);
  }
}

const ethTick = { callback: (v) => `${Number(v).toLocaleString("en-US", { maximumSignificantDigits: 3 })} ETH` };
const ethTooltip = { callbacks: { label: (c) => `${c.dataset.label}: ${Number(c.raw).toLocaleString("en-US", { maximumSignificantDigits: 6 })} ETH` } };

function renderCharts(doc) {
  // revenue per snapshot, stacked by source, plus what is pending for the next snapshot
  const snaps = doc.revenue.snapshots;
  const pending = doc.revenue.token.pending_sources;
  const sources = [...new Set([...snaps.flatMap((s) => Object.keys(s.sources)), ...Object.keys(pending)])];
  const cols = snaps.map((s) => `snapshot ${s.id}`);
  const hasPending = Object.values(pending).some((v) => v > 0);
  if (hasPending) cols.push("pending");
  chart("revenue-chart", {
    type: "bar",
    data: {
      labels: cols,
      datasets: [
        ...sources.map((src, i) => ({ label: src, backgroundColor: PALETTE[i % PALETTE.length], borderRadius: 4, stack: "revenue",
          data: [...snaps.map((s) => ethNumber(s.sources[src] || 0)), ...(hasPending ? [ethNumber(pending[src] || 0)] : [])] })),
        { label: "of which claimable by holders", stack: "claimable", backgroundColor: "rgba(28, 34, 51, .18)", borderColor: "#1c2233",
          borderWidth: 1, borderRadius: 4, data: [...snaps.map((s) => ethNumber(s.claimable_wei)), ...(hasPending ? [0] : [])] },
      ],
    },
    options: { scales: { x: { stacked: true, grid: { display: false } }, y: { stacked: true, beginAtZero: true, ticks: ethTick } },
      plugins: { tooltip: ethTooltip, legend: { position: "bottom", labels: { usePointStyle: true } } } },
  });
  document.getElementById("revenue-note").textContent =
    `what reached the token, by source; ${doc.revenue.token.claim_share_bps / 100}% of each snapshot is claimable by holders`;

  // claims per holder, stacked by snapshot; the legend names the holder's share of the supply
  const holders = doc.revenue.holders;
  chart("claims-chart", {
    type: "bar",
    data: {
      labels: holders.map((h) => `${labels[h.holder.toLowerCase()] ? labels[h.holder.toLowerCase()] + " " : ""}${short(h.holder)} · ${(h.share * 100).toFixed(h.share < 0.1 ? 1 : 0)}%`),
      datasets: [
        ...snaps.map((s, i) => ({ label: `claimed at snapshot ${s.id}`, backgroundColor: PALETTE[(i + 3) % PALETTE.length], borderRadius: 4,
          data: holders.map((h) => ethNumber(h.per_snapshot[String(s.id)] || 0)) })),
        { label: "claimable, not claimed yet", backgroundColor: "#e2e8f0", borderColor: "#94a3b8", borderWidth: 1, borderRadius: 4,
          data: holders.map((h) => ethNumber(h.unclaimed_wei)) },
      ],
    },
    options: { indexAxis: "y", scales: { x: { stacked: true, ticks: { ...ethTick, maxRotation: 0, maxTicksLimit: 6 } }, y: { stacked: true, grid: { display: false } } },
      plugins: { tooltip: ethTooltip, legend: { position: "bottom", labels: { usePointStyle: true } } } },
  });

  // request lifecycle: chain seconds waiting for the answer that stood, then its challenge window
  const reqs = doc.requests.filter((r) => r.latency.submit);
  chart("latency-chart", {
    type: "bar",
    data: {
      labels: reqs.map((r) => `#${r.id} ${r.model}`),
      datasets: [
        { label: "request → answer that stood", backgroundColor: reqs.map((r) => (r.disputes ? "#dc2626" : "#4f46e5")), borderRadius: 4,
          data: reqs.map((r) => r.latency.submit.seconds) },
        { label: "answer → finalized (challenge window)", backgroundColor: "#cbd5e1", borderRadius: 4,
          data: reqs.map((r) => (r.latency.finalized ? r.latency.finalized.seconds - r.latency.submit.seconds : 0)) },
      ],
    },
    options: { indexAxis: "y", scales: { x: { stacked: true, title: { display: true, text: "chain seconds (red: went through a dispute)" } },
      y: { stacked: true, grid: { display: false } } },
      plugins: { legend: { position: "bottom", labels: { usePointStyle: true } }, tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${duration(c.raw)}` } } } },
  });
}

// ------------------------------------------------------------------ the loop

function render(doc) {
  labels = {};
  const c = doc.contracts;
  for (const [name, a] of Object.entries({ deployer: c.deployer, oracle: c.oracle, token: c.token, NFT: c.nft, consumer: c.consumer, sale: c.offering })) if (a) labels[a.toLowerCase()] = name;
  renderChain(doc);
  if (doc.chain.block !== lastBlock) {
    renderKpis(doc);
    renderRequests(doc);
    renderModels(doc);
    renderDisputes(doc);
    renderNfts(doc);
    renderCharts(doc);
    lastBlock = doc.chain.block;
  }
  document.getElementById("footer").textContent =
    `oracle ${c.oracle} · token ${c.token}${c.nft ? " · NFT " + c.nft : ""} — read-only; every value is re-read from the chain`;
}

async function refresh() {
  const errorBox = document.getElementById("error");
  try {
    const response = await fetch("/api/summary", { cache: "no-store" });
    const doc = await response.json();
    if (!response.ok) throw new Error(doc.error || `HTTP ${response.status}`);
    render(doc);
    errorBox.hidden = true;
    document.body.dataset.ready = "1";
  } catch (err) {
    errorBox.textContent = `Cannot read the chain: ${err.message}`;
    errorBox.hidden = false;
    const live = document.getElementById("live");
    if (live) live.classList.add("stale");
    else document.getElementById("chain").textContent = "chain unreachable";
    document.body.dataset.error = "1";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
