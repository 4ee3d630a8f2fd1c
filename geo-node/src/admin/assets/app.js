// The Geo admin page: plain JavaScript, no framework, no build step.
//
// Everything per type comes from one JSON description (GET /admin/geo/api/types, GitLab's
// replicable_types): the navigation, the overview bars, the lists, their filters and actions.
// Adding a replicable type adds no code here.
//
// Routes (in the URL fragment):
//   #/                      the site overview
//   #/type/<name>           the registry list (secondary) or records list (primary) of a type
//   #/type/<name>/<id>      the details of one registry row (secondary) or record (primary)
"use strict";

(function () {
  const PAGE_SIZE = 20;
  const REFRESH_MS = 3000;
  const DEBOUNCE_MS = 500;
  const BASE = "/admin/geo";

  const REGISTRY_FIELDS = [
    "id", "modelRecordId", "createdAt", "state", "retryCount", "retryAt", "lastSyncedAt",
    "lastSyncFailure", "missingOnPrimary", "verificationState", "verificationStartedAt",
    "verifiedAt", "verificationRetryAt", "verificationRetryCount", "verificationFailure",
    "verificationChecksum", "verificationChecksumMismatched", "checksumMismatch", "blobPath",
  ];
  const RECORD_FIELDS = [
    "id", "modelRecordId", "file", "verificationState", "verificationStartedAt", "verifiedAt",
    "verificationRetryAt", "verificationRetryCount", "verificationChecksum", "verificationFailure",
  ];
  const REPLICATION_GROUP = [
    "state", "retryCount", "retryAt", "lastSyncedAt", "lastSyncFailure", "missingOnPrimary",
    "blobPath", "createdAt",
  ];
  const REPLICATION_STATES = ["PENDING", "STARTED", "SYNCED", "FAILED"];
  const VERIFICATION_STATES = ["PENDING", "STARTED", "SUCCEEDED", "FAILED", "DISABLED"];

  const app = {
    session: null,
    types: [],
    status: null,
    view: null, // { kind: "overview" } | { kind: "list", type } | { kind: "details", type, id }
    list: { cursor: null, pageInfo: null, rows: [], count: 0 },
    timer: null,
    loading: false,
  };

  // ---- small helpers -------------------------------------------------------------------

  function $(id) {
    return document.getElementById(id);
  }

  // h("tr", {dataset: {rowId: 1}, className: "x"}, child, "text", …)
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "onclick") el.addEventListener("click", v);
      else if (k in el && k !== "list") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function show(id, on) {
    $(id).hidden = !on;
  }

  function isSecondary() {
    return app.session && app.session.node.role.indexOf("secondary") !== -1;
  }

  function canWrite() {
    return app.session && app.session.scope === "admin";
  }

  function typeByName(name) {
    return app.types.find((t) => t.name === name);
  }

  function gidNumber(gid) {
    const m = /\/(\d+)$/.exec(String(gid || ""));
    return m ? m[1] : "";
  }

  function registryGid(type, id) {
    return "gid://geo/" + type.graphql_registry_type + "/" + id;
  }

  function recordGid(type, id) {
    return "gid://geo/" + type.graphql_record_type.replace(/Record$/, "") + "/" + id;
  }

  function humanize(s) {
    return String(s).replace(/([A-Z])/g, " $1").replace(/^./, (c) => c.toUpperCase())
      .replace(/ Id$/, " ID").replace(/^Id$/, "ID").trim();
  }

  function fmt(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (typeof v === "boolean") return v ? "yes" : "no";
    return String(v);
  }

  function fmtTime(v) {
    if (!v) return "—";
    const d = new Date(v);
    return isNaN(d) ? String(v) : d.toLocaleString();
  }

  let flashTimer = null;
  function flash(text, isError) {
    const el = $("flash");
    el.textContent = text;
    el.className = isError ? "error" : "ok";
    el.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => (el.hidden = true), 6000);
  }

  // ---- the server ----------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function getJson(path) {
    const res = await fetch(BASE + path, { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) throw new Unauthorized("signed out");
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return res.json();
  }

  // Every value is written into the query as a literal (strings through JSON.stringify, enum
  // values from the lists above), so the page needs no GraphQL type names.
  async function graphql(query) {
    const headers = { "content-type": "application/json", accept: "application/json" };
    if (app.session && app.session.csrf) headers[app.session.csrf_header] = app.session.csrf;
    const res = await fetch("/api/graphql", {
      method: "POST",
      credentials: "same-origin",
      headers,
      body: JSON.stringify({ query }),
    });
    if (res.status === 401) throw new Unauthorized("signed out");
    let body;
    try {
      body = await res.json();
    } catch (e) {
      throw new Error("GraphQL: HTTP " + res.status);
    }
    if (body.errors && body.errors.length) {
      throw new Error(body.errors.map((e) => e.message).join("; "));
    }
    if (!res.ok) throw new Error("GraphQL: HTTP " + res.status);
    return body.data;
  }

  function lit(s) {
    return JSON.stringify(String(s));
  }

  function enumArg(value, allowed) {
    return allowed.indexOf(value) !== -1 ? value : null;
  }

  // ---- sign-in -------------------------------------------------------------------------

  function showLogin(message) {
    stopRefresh();
    for (const id of ["overview", "replicable", "details", "sign-out"]) show(id, false);
    $("type-nav").replaceChildren();
    show("login", true);
    if (message) $("login-error").textContent = message;
    $("token").focus();
  }

  async function signOut() {
    try {
      await fetch(BASE + "/session/delete", {
        method: "POST",
        credentials: "same-origin",
        headers: app.session && app.session.csrf ? { [app.session.csrf_header]: app.session.csrf } : {},
      });
    } finally {
      app.session = null;
      showLogin("Signed out.");
    }
  }

  // ---- navigation ----------------------------------------------------------------------

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
    if (parts[0] === "type" && typeByName(parts[1])) {
      const type = typeByName(parts[1]);
      if (parts[2] && /^\d+$/.test(parts[2])) return { kind: "details", type, id: parts[2] };
      return { kind: "list", type };
    }
    return { kind: "overview" };
  }

  function renderNav() {
    const current = app.view && app.view.type ? app.view.type.name : null;
    const links = [h("a", { href: "#/", dataset: { nav: "overview" }, className: current ? "" : "active" }, "Overview")];
    for (const t of app.types) {
      links.push(h("a", {
        href: "#/type/" + t.name,
        dataset: { nav: t.name },
        className: current === t.name ? "active" : "",
      }, t.title_plural));
    }
    $("type-nav").replaceChildren(...links);
  }

  function route() {
    const view = parseRoute();
    const sameList = app.view && view.kind === "list" && app.view.type === view.type &&
      (app.view.kind === "list" || app.view.kind === "details");
    app.view = view;
    renderNav();
    show("overview", view.kind === "overview");
    show("replicable", view.kind === "list");
    show("details", view.kind === "details");
    if (view.kind === "overview") refreshOverview();
    if (view.kind === "list") {
      if (!sameList) setupList(view.type);
      refreshList();
    }
    if (view.kind === "details") refreshDetails();
  }

  // ---- overview ------------------------------------------------------------------------

  function num(map, key) {
    const v = map ? map[key] : null;
    return typeof v === "number" ? v : null;
  }

  function bar(label, segments, typeName, group) {
    const total = segments.reduce((a, s) => a + (s.value || 0), 0);
    const track = h("div", { className: "bar", role: "img", "aria-label": label + ": " +
      segments.map((s) => s.label + " " + fmt(s.value)).join(", ") });
    for (const s of segments) {
      const seg = h("span", { className: "seg " + s.cls });
      seg.style.width = total ? (100 * (s.value || 0) / total) + "%" : "0";
      track.append(seg);
    }
    const legend = h("ul", { className: "legend" }, segments.map((s) =>
      h("li", {}, h("span", { className: "dot " + s.cls }), s.label + " ",
        h("strong", { dataset: { count: s.key } }, fmt(s.value)))));
    return h("div", { className: "bar-group", dataset: { group } },
      h("div", { className: "bar-label" }, label, " ", h("span", { className: "muted" }, total ? "(" + total + ")" : "")),
      track, legend);
  }

  function renderOverview() {
    const st = app.status;
    if (!st) return;
    const card = $("site-card");
    const sec = st.secondary;
    const pri = st.primary;
    const fields = [];
    const healthy = st.health_status === "Healthy";
    fields.push(["Health", h("span", { id: "health", className: healthy ? "ok" : "error" }, healthy ? "Healthy" : "Unhealthy")]);
    if (!healthy) fields.push(["Problems", h("span", { id: "health-detail" }, st.health)]);
    fields.push(["Role", st.role]);
    if (sec) {
      let behind = sec.events_behind;
      if (behind === undefined && typeof sec.last_event_id === "number" && typeof sec.cursor_last_event_id === "number") {
        behind = Math.max(0, sec.last_event_id - sec.cursor_last_event_id);
      }
      fields.push(["Events behind the primary", h("span", { id: "events-behind" }, fmt(behind))]);
      fields.push(["Seconds behind the primary", h("span", { id: "seconds-behind" }, fmt(sec.seconds_behind))]);
      fields.push(["Last event on the primary", fmt(sec.last_event_id)]);
      fields.push(["Log cursor", fmt(sec.cursor_last_event_id)]);
      if (sec.open_gaps_count) fields.push(["Open gaps", sec.open_gaps_count]);
    }
    if (sec && sec.events_pruned_recoveries) {
      fields.push(["Recovered from a pruned log", h("span", { id: "pruned-recoveries" }, fmt(sec.events_pruned_recoveries))]);
    }
    if (pri && pri.last_event_id !== undefined) fields.push(["Last event", fmt(pri.last_event_id)]);
    if (pri && pri.event_log_pruned_through !== undefined) fields.push(["Events pruned through", fmt(pri.event_log_pruned_through)]);
    // GitLab's Sites page: each secondary this primary knows, with its lag.
    for (const k of (pri && pri.secondaries) || []) {
      const notes = (k.stale ? ", stale" : "") + (k.pruned_past ? ", pruned past it" : "");
      fields.push(["Secondary " + k.name, h("span", { dataset: { secondary: k.name } },
        fmt(k.events_behind) + " events behind, seen " + fmt(k.seconds_since_seen) + " s ago" + notes)]);
    }
    fields.push(["Status taken", fmtTime(st.status_at)]);

    const dl = h("dl", { className: "fields" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const types = app.types.map((t) => {
      const p = t.name_plural + "_";
      const blocks = [];
      if (sec) {
        const total = num(sec, p + "registry_count");
        const synced = num(sec, p + "synced_count");
        const failed = num(sec, p + "failed_count");
        const queued = total === null ? null : Math.max(0, total - (synced || 0) - (failed || 0));
        blocks.push(bar("Synchronization", [
          { key: "synced", label: "Synced", value: synced, cls: "good" },
          { key: "failed", label: "Failed", value: failed, cls: "bad" },
          { key: "queued", label: "Queued", value: queued, cls: "queued" },
        ], t.name, "sync"));
        if (t.verification_enabled) {
          const vt = num(sec, p + "verification_total_count");
          const verified = num(sec, p + "verified_count");
          const vfailed = num(sec, p + "verification_failed_count");
          const vpending = vt === null ? null : Math.max(0, vt - (verified || 0) - (vfailed || 0));
          blocks.push(bar("Verification", [
            { key: "verified", label: "Verified", value: verified, cls: "good" },
            { key: "verification_failed", label: "Failed", value: vfailed, cls: "bad" },
            { key: "verification_queued", label: "Queued", value: vpending, cls: "queued" },
          ], t.name, "verification"));
        }
      } else if (pri) {
        const total = num(pri, p + "checksum_total_count");
        const ok = num(pri, p + "checksummed_count");
        const failed = num(pri, p + "checksum_failed_count");
        const queued = total === null ? null : Math.max(0, total - (ok || 0) - (failed || 0));
        blocks.push(h("p", { className: "muted" }, "Records: ", h("strong", { dataset: { count: "records" } }, fmt(num(pri, p + "count")))));
        if (t.verification_enabled) {
          blocks.push(bar("Checksums", [
            { key: "checksummed", label: "Checksummed", value: ok, cls: "good" },
            { key: "checksum_failed", label: "Failed", value: failed, cls: "bad" },
            { key: "checksum_queued", label: "Queued", value: queued, cls: "queued" },
          ], t.name, "checksum"));
        }
      }
      return h("article", { className: "type-card", dataset: { overviewType: t.name } },
        h("h3", {}, h("a", { href: "#/type/" + t.name }, t.title_plural),
          " ", h("span", { className: "badge" }, t.data_type_title)),
        blocks);
    });
    card.replaceChildren(
      h("h3", { className: "site-name" }, st.name),
      dl,
      h("div", { className: "types" }, types),
    );
  }

  async function refreshOverview() {
    try {
      app.status = await getJson("/api/status");
      renderOverview();
    } catch (e) {
      handleError(e);
    }
  }

  // ---- lists ---------------------------------------------------------------------------

  function filters() {
    return {
      replicationState: isSecondary() ? enumArg($("filter-replication").value, REPLICATION_STATES) : null,
      verificationState: app.view.type.verification_enabled ? enumArg($("filter-verification").value, VERIFICATION_STATES) : null,
      keyword: $("filter-keyword").value.trim(),
    };
  }

  function setupList(type) {
    $("replicable-title").textContent = type.title_plural;
    $("filter-replication").value = "";
    $("filter-verification").value = "";
    $("filter-keyword").value = "";
    $("filter-replication").closest("label").hidden = !isSecondary();
    $("filter-verification-label").hidden = !type.verification_enabled;
    app.list = { cursor: null, pageInfo: null, rows: [], count: 0 };
    $("list-body").replaceChildren();
    renderBulk(type);
    renderHead(type);
  }

  function columns(type) {
    if (isSecondary()) {
      const cols = [
        ["ID", (r) => gidNumber(r.id)],
        [humanize(type.graphql_model_id_field), (r) => fmt(r[type.graphql_model_id_field] ?? r.modelRecordId)],
        ["Replication", (r) => stateBadge(r.state, "state")],
        ["Last synced", (r) => fmtTime(r.lastSyncedAt)],
      ];
      if (type.verification_enabled) {
        cols.push(["Verification", (r) => stateBadge(r.verificationState, "verification")]);
        cols.push(["Verified", (r) => fmtTime(r.verifiedAt)]);
      }
      cols.push(["Failure", (r) => fmt(r.lastSyncFailure || r.verificationFailure)]);
      return cols;
    }
    const cols = [
      ["ID", (r) => gidNumber(r.id)],
      ["File", (r) => fmt(r.file)],
    ];
    if (type.verification_enabled) {
      cols.push(["Checksum state", (r) => stateBadge(r.verificationState, "verification")]);
      cols.push(["Verified", (r) => fmtTime(r.verifiedAt)]);
      cols.push(["Checksum", (r) => fmt(r.verificationChecksum && r.verificationChecksum.slice(0, 12))]);
      cols.push(["Failure", (r) => fmt(r.verificationFailure)]);
    }
    return cols;
  }

  function stateBadge(state, which) {
    const s = String(state || "unknown").toUpperCase();
    return h("span", { className: "state state-" + s.toLowerCase(), dataset: { [which]: s } }, humanize(s.toLowerCase()));
  }

  function renderHead(type) {
    const cols = columns(type);
    $("list-head").replaceChildren(h("tr", {},
      cols.map(([label]) => h("th", { scope: "col" }, label)),
      h("th", { scope: "col" }, h("span", { className: "visually-hidden" }, "Actions"))));
  }

  function rowActions(type, r) {
    const id = gidNumber(r.id);
    const buttons = [h("a", { href: "#/type/" + type.name + "/" + id, className: "button", dataset: { action: "details" } }, "Details")];
    if (canWrite()) {
      if (isSecondary()) {
        buttons.push(h("button", { type: "button", dataset: { action: "resync" }, onclick: () => act(type, r.id, "RESYNC") }, "Resync"));
      }
      if (type.verification_enabled) {
        buttons.push(h("button", { type: "button", dataset: { action: "reverify" }, onclick: () => act(type, r.id, "REVERIFY") }, "Reverify"));
      }
    }
    return h("div", { className: "row-actions" }, buttons);
  }

  function renderList() {
    const type = app.view.type;
    const cols = columns(type);
    const rows = app.list.rows.map((r) => h("tr", {
      dataset: {
        rowId: gidNumber(r.id),
        state: r.state ? String(r.state).toUpperCase() : "",
        verification: r.verificationState ? String(r.verificationState).toUpperCase() : "",
      },
    }, cols.map(([label, f]) => h("td", { dataset: { label } }, f(r))), h("td", { className: "actions" }, rowActions(type, r))));
    if (!rows.length) {
      rows.push(h("tr", { className: "empty" }, h("td", { colSpan: cols.length + 1 }, "Nothing matches these filters.")));
    }
    $("list-body").replaceChildren(...rows);
    $("list-count").textContent = app.list.count + (app.list.count === 1 ? " entry" : " entries");
    $("list-count").dataset.count = app.list.count;
    const pi = app.list.pageInfo || {};
    $("page-prev").disabled = !pi.hasPreviousPage;
    $("page-next").disabled = !pi.hasNextPage;
  }

  function connectionArgs(f, cursor, extra) {
    const args = [];
    if (f.replicationState) args.push("replicationState: " + f.replicationState);
    if (f.verificationState) args.push("verificationState: " + f.verificationState);
    if (f.keyword) args.push("keyword: " + lit(f.keyword));
    if (cursor && cursor.before) args.push("last: " + PAGE_SIZE, "before: " + lit(cursor.before));
    else if (cursor && cursor.after) args.push("first: " + PAGE_SIZE, "after: " + lit(cursor.after));
    else args.push("first: " + PAGE_SIZE);
    return args.concat(extra || []).join(", ");
  }

  function nodeFields(type) {
    return isSecondary() ? REGISTRY_FIELDS.concat([type.graphql_model_id_field]) : RECORD_FIELDS;
  }

  function fieldName(type) {
    return isSecondary() ? type.graphql_field_name : type.graphql_records_field_name;
  }

  async function refreshList() {
    const view = app.view;
    if (!view || view.kind !== "list") return;
    const type = view.type;
    const f = filters();
    const q = "query { geoNode { " + fieldName(type) + "(" + connectionArgs(f, app.list.cursor) + ") { count " +
      "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { " + nodeFields(type).join(" ") + " } } } }";
    try {
      const data = await graphql(q);
      if (app.view !== view) return; // navigated away meanwhile
      const conn = data.geoNode && data.geoNode[fieldName(type)];
      app.list.rows = conn ? conn.nodes : [];
      app.list.count = conn ? conn.count : 0;
      app.list.pageInfo = conn ? conn.pageInfo : null;
      renderList();
    } catch (e) {
      handleError(e);
    }
  }

  function page(dir) {
    const pi = app.list.pageInfo || {};
    if (dir > 0 && pi.hasNextPage) app.list.cursor = { after: pi.endCursor };
    else if (dir < 0 && pi.hasPreviousPage) app.list.cursor = { before: pi.startCursor };
    else return;
    refreshList();
  }

  function resetAndRefresh() {
    app.list.cursor = null;
    refreshList();
  }

  // ---- actions -------------------------------------------------------------------------

  async function act(type, gid, action) {
    const q = "mutation { geoRegistriesUpdate(input: { registryId: " + lit(gid) + ", action: " + action +
      " }) { errors } }";
    try {
      const data = await graphql(q);
      const errors = (data.geoRegistriesUpdate && data.geoRegistriesUpdate.errors) || [];
      if (errors.length) flash(errors.join("; "), true);
      else flash(type.title + " " + gidNumber(gid) + " enqueued to be " + (action === "RESYNC" ? "resynced" : "reverified") + ".");
    } catch (e) {
      handleError(e);
    }
    refreshView();
  }

  const BULK = [
    { key: "resync_all", label: "Resync all", action: "RESYNC_ALL", secondaryOnly: true },
    { key: "resync_all_failed", label: "Resync all failed", action: "RESYNC_ALL", replicationState: "FAILED", secondaryOnly: true },
    { key: "reverify_all", label: "Reverify all", action: "REVERIFY_ALL", verification: true, secondaryOnly: true },
    { key: "reverify_all_failed", label: "Reverify all failed", action: "REVERIFY_ALL", verificationState: "FAILED", verification: true },
  ];

  function renderBulk(type) {
    const buttons = BULK.filter((b) => canWrite() && (!b.secondaryOnly || isSecondary()) && (!b.verification || type.verification_enabled))
      .map((b) => h("button", { type: "button", dataset: { bulk: b.key }, onclick: () => bulk(type, b) }, b.label));
    $("bulk").replaceChildren(...buttons);
    $("bulk").hidden = !buttons.length;
  }

  function confirmDialog(title, text) {
    const dlg = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
      dlg.returnValue = "";
      dlg.showModal();
      $("confirm-ok").focus();
    });
  }

  async function bulk(type, b) {
    const what = b.label.toLowerCase().replace("all", "all " + type.title_plural.toLowerCase());
    const ok = await confirmDialog(b.label + "?",
      "This will " + what + " on this site. It may take some time for the lists to change.");
    if (!ok) return;
    const input = ["registryClass: " + type.graphql_mutation_registry_class, "action: " + b.action];
    if (b.replicationState) input.push("replicationState: " + b.replicationState);
    if (b.verificationState) input.push("verificationState: " + b.verificationState);
    const q = "mutation { geoRegistriesBulkUpdate(input: { " + input.join(", ") + " }) { registryClass errors } }";
    try {
      const data = await graphql(q);
      const errors = (data.geoRegistriesBulkUpdate && data.geoRegistriesBulkUpdate.errors) || [];
      if (errors.length) flash(errors.join("; "), true);
      else flash(b.label + ": scheduled. The list changes as it runs.");
    } catch (e) {
      handleError(e);
    }
    refreshView();
  }

  // ---- details -------------------------------------------------------------------------

  async function refreshDetails() {
    const view = app.view;
    const type = view.type;
    const gid = isSecondary() ? registryGid(type, view.id) : recordGid(type, view.id);
    $("details-back").href = "#/type/" + type.name;
    $("details-title").textContent = type.title + " " + view.id;
    const q = "query { geoNode { " + fieldName(type) + "(ids: [" + lit(gid) + "], first: 1) { nodes { " +
      nodeFields(type).join(" ") + " } } } }";
    try {
      const data = await graphql(q);
      if (app.view !== view) return;
      const conn = data.geoNode && data.geoNode[fieldName(type)];
      const r = conn && conn.nodes[0];
      if (!r) {
        $("details-body").replaceChildren(h("p", { className: "error" }, "No such entry on this site."));
        return;
      }
      const fields = nodeFields(type);
      const rep = fields.filter((k) => REPLICATION_GROUP.indexOf(k) !== -1);
      const ver = fields.filter((k) => k.startsWith("verification") || k === "verifiedAt" || k === "checksumMismatch");
      const ident = fields.filter((k) => rep.indexOf(k) === -1 && ver.indexOf(k) === -1);
      const section = (title, keys) => h("section", { className: "card" }, h("h3", {}, title),
        h("dl", { className: "fields" }, keys.map((k) => [h("dt", {}, humanize(k)),
          h("dd", { dataset: { field: k } }, /At$/.test(k) ? fmtTime(r[k])
            : k === "state" ? stateBadge(r[k], "state")
            : k === "verificationState" ? stateBadge(r[k], "verification") : fmt(r[k]))])));
      const parts = [section("Record", ident)];
      if (rep.length) parts.push(section("Replication information", rep));
      if (type.verification_enabled) parts.push(section("Verification information", ver));
      parts.push(rowActions(type, r));
      $("details-body").replaceChildren(...parts);
    } catch (e) {
      handleError(e);
    }
  }

  // ---- refresh -------------------------------------------------------------------------

  // Right after an action: not held back by a refresh already in flight.
  function refreshView() {
    if (app.view.kind === "list") refreshList();
    if (app.view.kind === "details") refreshDetails();
  }

  // One refresh at a time: a slow answer is not stacked on by the next tick.
  async function refreshCurrent() {
    if (!app.view || document.hidden || app.loading) return;
    app.loading = true;
    try {
      if (app.view.kind === "overview") await refreshOverview();
      if (app.view.kind === "list") await refreshList();
      if (app.view.kind === "details") await refreshDetails();
    } finally {
      app.loading = false;
    }
  }

  function startRefresh() {
    stopRefresh();
    app.timer = setInterval(refreshCurrent, REFRESH_MS);
  }

  function stopRefresh() {
    if (app.timer) clearInterval(app.timer);
    app.timer = null;
  }

  function handleError(e) {
    if (e instanceof Unauthorized) showLogin("Your session has ended: sign in again.");
    else flash(e.message || String(e), true);
  }

  // ---- start ---------------------------------------------------------------------------

  async function start() {
    const login = $("login");
    $("page-prev").addEventListener("click", () => page(-1));
    $("page-next").addEventListener("click", () => page(1));
    $("sign-out").addEventListener("click", signOut);
    $("filter-replication").addEventListener("change", resetAndRefresh);
    $("filter-verification").addEventListener("change", resetAndRefresh);
    let debounce = null;
    $("filter-keyword").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(resetAndRefresh, DEBOUNCE_MS);
    });
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      resetAndRefresh();
    });
    if (login.dataset.message) {
      showLogin();
      return;
    }
    try {
      app.session = await getJson("/api/session");
      app.types = await getJson("/api/types");
    } catch (e) {
      if (e instanceof Unauthorized) showLogin();
      else flash(e.message, true);
      return;
    }
    show("login", false);
    show("sign-out", true);
    $("node-name").textContent = app.session.node.name;
    $("node-role").textContent = app.session.node.role;
    document.body.dataset.role = app.session.node.role;
    document.body.dataset.scope = app.session.scope;
    window.addEventListener("hashchange", route);
    route();
    startRefresh();
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
