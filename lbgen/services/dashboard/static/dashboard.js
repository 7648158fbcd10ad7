// lbgen fleet dashboard: renders the `lbgen status --json` document pushed over server-sent events.
// Every value comes from the registry and is hostile: it only ever reaches the page as text
// (Node.append / textContent), never as HTML. No framework, no other origin (LB nodes have no internet).
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token");
  const auth = token ? "?token=" + encodeURIComponent(token) : "";
  const byId = (id) => document.getElementById(id);
  let lastStatus = null;

  // An element with a class, holding strings (as text) and nodes.
  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const child of children) {
      node.append(child instanceof Node ? child : show(child));
    }
    return node;
  }

  function show(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    return JSON.stringify(value);
  }

  function table(headers, rows, emptyText) {
    if (!rows.length) return el("p", "empty", emptyText);
    const head = el("tr", "", ...headers.map((h) => el("th", "", h)));
    const body = rows.map((row) => {
      const tr = el("tr", row.cls || "", ...row.cells.map((c) => el("td", "", c)));
      if (row.key) tr.dataset.key = row.key;
      return tr;
    });
    return el("table", "", el("thead", "", head), el("tbody", "", ...body));
  }

  // Fields this page does not know yet (newer lbgen versions add some): shown as "name: value".
  function extras(obj, known) {
    return Object.keys(obj).filter((k) => !known.includes(k)).map((k) => k + ": " + show(obj[k])).join("; ");
  }

  function yesNo(value, yes, no) {
    return el("span", value ? "yes" : "no", value ? yes : no);
  }

  function clock(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function ago(seconds) {
    return seconds === null || seconds === undefined ? "never" : show(seconds) + " s ago";
  }

  function setCount(id, n) {
    byId(id).textContent = "(" + n + ")";
  }

  // --- sections --------------------------------------------------------------------------------

  const ENDPOINT_FIELDS = ["id", "address", "port", "weight", "node", "container", "health", "tags", "meta",
    "served", "draining"];

  function endpointRow(e) {
    const address = String(e.address).includes(":") ? "[" + e.address + "]:" + e.port : e.address + ":" + e.port;
    const more = [show(e.tags && e.tags.length ? e.tags.join(",") : ""), extras(e.meta || {}, []),
      extras(e, ENDPOINT_FIELDS)].filter((s) => s).join("; ");
    const health = el("span", "health-" + show(e.health), show(e.health));
    return {
      key: e.id, cls: e.served ? "served" : "unserved",
      cells: [e.id, address, e.node || "-", health, show(e.weight), yesNo(e.served, "served", "not served"),
        e.draining ? el("span", "draining", "draining") : "-", e.container ? show(e.container).slice(0, 12) : "-",
        more],
    };
  }

  function renderServices(services) {
    setCount("services-count", services.length);
    const blocks = services.map((s) => {
      const served = s.endpoints.filter((e) => e.served).length;
      const spec = Object.keys(s.spec).map((k) => k + "=" + show(s.spec[k])).join(" ") || "(no spec)";
      const title = el("h3", "", el("span", "name", s.name), " ",
        el("span", served ? "badge ok" : "badge bad", served + "/" + s.endpoints.length + " served"),
        " ", el("span", "detail", spec));
      const rows = s.endpoints.map(endpointRow);
      const block = el("div", "service", title, table(
        ["endpoint", "address", "node", "health", "weight", "served", "draining", "container", "tags / meta"],
        rows, "no endpoint registered"));
      block.dataset.service = s.name;
      return block;
    });
    byId("services").replaceChildren(...(blocks.length ? blocks : [el("p", "empty", "no service registered")]));
  }

  const LB_FIELDS = ["node", "revision", "behind", "behind_why", "connected", "error", "version", "age", "targets", "invalid"];

  function lbRow(lb, servicesRevision) {
    if (lb.invalid !== undefined) {
      return { key: lb.node, cls: "bad", cells: [lb.node, "-", "-", "invalid status: " + show(lb.invalid),
        "-", "-", "-", "", "", extras(lb, LB_FIELDS)] };
    }
    const errors = Object.keys(lb.targets || {}).filter((t) => lb.targets[t].error);
    const state = lb.behind_why === "compacted" ? "behind?" : lb.behind ? "behind" :
      (errors.length || lb.error) ? "failing" : "in sync";
    const lag = Math.max(0, servicesRevision - lb.revision);
    const targets = el("ul", "plain", ...Object.keys(lb.targets || {}).map((name) => {
      const t = lb.targets[name];
      return el("li", t.error ? "bad" : "", name + ": revision " + show(t.revision) + ", applied " +
        ago(t.applied_age) + (t.error ? ", error: " + show(t.error) : ""), extraLine(t, ["revision", "error", "applied_age"]));
    }));
    return {
      key: lb.node, cls: state === "in sync" ? "ok" : "bad",
      cells: [lb.node, show(lb.revision), lag ? lag + " behind" : "0", el("span", "state-" + state.replace(" ", "-"), state),
        yesNo(lb.connected, "yes", "no"), ago(lb.age), lb.version || "-", lb.error || "", targets, extras(lb, LB_FIELDS)],
    };
  }

  function extraLine(obj, known) {
    const text = extras(obj, known);
    return text ? " (" + text + ")" : "";
  }

  function renderLbs(doc) {
    setCount("lbs-count", doc.lb_nodes.length);
    const rows = doc.lb_nodes.map((lb) => lbRow(lb, doc.services_revision));
    byId("lbs").replaceChildren(table(["node", "applied revision", "lag (revisions)", "state", "connected",
      "reported", "version", "last error", "targets", "other"], rows, "no LB node reports its status"));
  }

  // Quarantine entries as a list of names, a list of objects, or an object keyed by service.
  function quarantineEntries(value) {
    if (Array.isArray(value)) {
      return value.map((item) => typeof item === "object" && item !== null ?
        [show(item.service || item.name || "?"), extras(item, ["service", "name"])] : [show(item), ""]);
    }
    if (value && typeof value === "object") {
      return Object.keys(value).map((name) => [name, show(value[name])]);
    }
    return [];
  }

  function renderQuarantined(lbs) {
    const rows = [];
    for (const lb of lbs) {
      for (const [service, detail] of quarantineEntries(lb.quarantined)) {
        rows.push({ key: lb.node + "/" + service, cls: "bad", cells: [service, lb.node, "", detail] });
      }
      for (const name of Object.keys(lb.targets || {})) {
        for (const [service, detail] of quarantineEntries(lb.targets[name].quarantined)) {
          rows.push({ key: lb.node + "/" + name + "/" + service, cls: "bad", cells: [service, lb.node, name, detail] });
        }
      }
    }
    setCount("quarantined-count", rows.length);
    byId("quarantined").replaceChildren(table(["service", "LB node", "target", "why"], rows,
      "none: every LB node serves every service's latest state"));
  }

  const AGENT_FIELDS = ["node", "endpoints", "served", "leases", "reporting", "version", "docker_reachable",
    "docker_since_age", "containers", "registered", "error", "error_age", "resync_age", "resync_interval", "age"];

  // An agent's Docker column: its presence (issue 15), or why there is none.
  function agentDocker(a) {
    if (a.invalid !== undefined) return "invalid presence: " + show(a.invalid);
    if (!a.reporting) return "not reporting";
    return (a.docker_reachable ? "up " : "UNREACHABLE ") + "for " + ago(a.docker_since_age).replace(" ago", "");
  }

  function renderAgents(agents) {
    setCount("agents-count", agents.length);
    const rows = agents.map((a) => ({
      key: a.node, cls: a.invalid !== undefined || (a.reporting && !a.docker_reachable) ? "bad" : "",
      cells: [a.node || "(none: written by hand)", agentDocker(a), a.reporting ? show(a.containers) : "-",
        show(a.endpoints), show(a.served), a.reporting ? ago(a.resync_age) : "-", a.version || "-",
        (a.leases || []).join(", ") || "-", a.error ? show(a.error) + " (" + ago(a.error_age) + ")" : "",
        extras(a, AGENT_FIELDS.concat(["invalid"]))],
    }));
    byId("agents").replaceChildren(table(["node", "docker", "containers", "endpoints", "served", "last resync",
      "version", "lease", "last error", "other"], rows, "none reporting and no endpoint names a node"));
  }

  function renderRejected(rejected) {
    setCount("rejected-count", rejected.length);
    const rows = rejected.map((r) => ({ key: r.key, cls: "bad", cells: [r.key, r.reason] }));
    byId("rejected").replaceChildren(table(["key", "why it was skipped"], rows, "none"));
  }

  function renderProblems(problems) {
    setCount("problems-count", problems.length);
    const items = problems.map((p) => el("li", "", p));
    byId("problems").replaceChildren(...(items.length ? items : [el("li", "none", "none")]));
    byId("problems-section").className = problems.length ? "alert" : "";
  }

  function renderStatus(doc) {
    lastStatus = doc;
    byId("summary").textContent = "registry " + show(doc.registry) + " · prefix " + show(doc.prefix) +
      " · revision " + show(doc.revision) + " (services last changed at " + show(doc.services_revision) + ")";
    renderProblems(doc.problems || []);
    renderServices(doc.services || []);
    renderLbs(doc);
    renderQuarantined(doc.lb_nodes || []);
    renderAgents(doc.agents || []);
    renderRejected(doc.rejected || []);
  }

  function renderChanges(changes) {
    setCount("changes-count", changes.length);
    const rows = changes.map((c) => ({ key: c.key, cls: c.kind, cells: [
      c.time === null ? "before start" : clock(c.time), show(c.revision), c.kind, c.key,
    ] }));
    byId("changes").replaceChildren(table(["seen", "revision", "change", "key"], rows, "no change seen yet"));
  }

  function renderConnection(state, detail) {
    const badge = byId("connection");
    badge.textContent = state;
    badge.className = "badge " + (state === "connected" ? "ok" : "bad");
    byId("connection-detail").textContent = detail;
    document.body.classList.toggle("stale", state !== "connected");
  }

  // --- the event stream --------------------------------------------------------------------------

  function parse(event, render) {
    try {
      render(JSON.parse(event.data));
    } catch (err) {
      console.error("lbgen dashboard: bad event", event.type, err);
    }
  }

  function connect() {
    const source = new EventSource("events" + auth);
    source.addEventListener("status", (e) => parse(e, renderStatus));
    source.addEventListener("changes", (e) => parse(e, renderChanges));
    source.addEventListener("connected", () => renderConnection("connected", "live from the registry watch"));
    source.addEventListener("disconnected", (e) => parse(e, (c) => renderConnection("disconnected",
      "registry unreachable" + (c.since ? " since " + clock(c.since) : "") +
      ": " + show(c.error) + (lastStatus ? " — showing revision " + show(lastStatus.revision) : ""))));
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        renderConnection("disconnected", "the dashboard itself is unreachable; retrying");
        return;
      }
      // Refused (a missing or wrong ?token=, too many clients): EventSource gives up, so retry by hand.
      renderConnection("disconnected", "the dashboard refused the event stream (token? too many clients?); " +
        "retrying in 10 s");
      window.setTimeout(connect, 10000);
    };
  }

  byId("api-link").href = "api/status" + auth;
  connect();
})();
