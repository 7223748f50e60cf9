// wiremesh coordinator dashboard.
//
// Renders what the admin JSON API answers and refetches it whenever the change feed
// (GET /api/events, server-sent events) says something changed; polls every 3 s while the
// feed is down. The page is never reloaded.
//
// Members are shown a page at a time, never all of them: the pending ones first (up to a
// page of them), then one page of the authorised ones, with previous/next (the API's
// `after` cursor: the key of the last member shown) and a search box (`q`). So a network
// of 10,000 members costs the page what one of 100 does.
//
// The policy panel edits the selected network's policy document (check, save, remove),
// answers "why" for a connection, and shows one member's effective rules: what the policy
// decides, for one port, between it and each other member on the page. A refused document
// shows its error and marks the line it names; nothing changes on the coordinator.
//
// Everything that comes from the API goes into the page through textContent and
// setAttribute only, never as markup: member names are chosen by nodes.
(function () {
  'use strict';

  if (!window.wmLoadedAt) {
    window.wmLoadedAt = Date.now();
  }

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') || '' : '';
  var POLL_MS = 3000;
  var FEED_RETRY_MS = 10000;
  // Members per page (and pending members shown at most).
  var PAGE = 100;
  // Typing pause before a search is sent.
  var SEARCH_DELAY_MS = 300;

  function $(id) {
    return document.getElementById(id);
  }

  var state = {
    networks: [],
    selected: null,
    // The page of authorised members shown, and whether more follow it.
    members: [],
    more: false,
    // Pending members (the first page of them) and how many there are.
    pending: [],
    pendingTotal: 0,
    // Authorised members matching the search, over all pages.
    authorizedTotal: 0,
    // The `after` cursor of each page up to the one shown (null: the first).
    cursors: [null],
    // The search text (`q`), as sent.
    query: '',
    tokens: [],
    audit: [],
    // The selected network's policy (PolicyView), null until loaded.
    policy: null,
  };
  // What each section shows now (a JSON string), to leave unchanged sections alone.
  var shown = {
    networks: null,
    panel: null,
    members: null,
    pager: null,
    tokens: null,
    audit: null,
    policy: null,
  };

  // ---- DOM helpers -------------------------------------------------------------------

  // el('td', {class: 'x', text: 'y', 'data-a': 'b', onclick: f}, child, 'text', …)
  function el(tag, props) {
    var e = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === undefined || v === null || v === false) return;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = String(v);
        else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      e.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function badge(cls, text, title) {
    return el('span', { class: 'badge ' + cls, text: text, title: title });
  }

  function enc(s) {
    return encodeURIComponent(String(s));
  }

  // A public key in the base64url form the API takes in paths.
  function urlKey(key) {
    return String(key).replace(/\+/g, '-').replace(/\//g, '_');
  }

  function absTime(ts) {
    return new Date(ts * 1000).toLocaleString();
  }

  // "12 s ago", "3 min ago", "in 5 h".
  function relTime(ts) {
    var d = Math.round(ts - Date.now() / 1000);
    var a = Math.abs(d);
    if (a < 10) return d <= 0 ? 'just now' : 'in a few seconds';
    var s;
    if (a < 60) s = a + ' s';
    else if (a < 3600) s = Math.floor(a / 60) + ' min';
    else if (a < 86400) s = Math.floor(a / 3600) + ' h';
    else s = Math.floor(a / 86400) + ' d';
    return d < 0 ? s + ' ago' : 'in ' + s;
  }

  // A relative time kept up to date in place (see tickTimes).
  function timeSpan(ts) {
    return el('span', { class: 'rel-time', 'data-ts': ts, title: absTime(ts), text: relTime(ts) });
  }

  function tickTimes() {
    document.querySelectorAll('.rel-time').forEach(function (s) {
      var ts = Number(s.getAttribute('data-ts'));
      if (Number.isFinite(ts)) s.textContent = relTime(ts);
    });
  }

  // Keeps one row per key in `parent`, in the order of `items`. A row whose key was shown
  // before stays the same element, patched where it differs from a fresh `build(item)`,
  // so a button the user (or a test) holds does not vanish because a peer's last-seen
  // time moved. Cells carrying closures mark what those depend on in an attribute, so
  // they are replaced when it changes.
  function syncRows(parent, items, keyOf, build) {
    var old = new Map();
    Array.prototype.forEach.call(parent.children, function (row) {
      old.set(row.getAttribute('data-key'), row);
    });
    var rows = items.map(function (item) {
      var key = keyOf(item);
      var fresh = build(item);
      fresh.setAttribute('data-key', key);
      var row = old.get(key);
      if (!row) return fresh;
      old.delete(key);
      patch(row, fresh);
      return row;
    });
    old.forEach(function (row) {
      row.remove();
    });
    rows.forEach(function (row, i) {
      if (parent.children[i] !== row) parent.insertBefore(row, parent.children[i] || null);
    });
  }

  function patch(row, fresh) {
    Array.prototype.slice.call(row.attributes).forEach(function (a) {
      if (!fresh.hasAttribute(a.name)) row.removeAttribute(a.name);
    });
    Array.prototype.slice.call(fresh.attributes).forEach(function (a) {
      if (row.getAttribute(a.name) !== a.value) row.setAttribute(a.name, a.value);
    });
    var olds = Array.prototype.slice.call(row.childNodes);
    var news = Array.prototype.slice.call(fresh.childNodes);
    if (olds.length !== news.length) {
      row.replaceChildren.apply(row, news);
      return;
    }
    for (var i = 0; i < news.length; i++) {
      if (!olds[i].isEqualNode(news[i])) row.replaceChild(news[i], olds[i]);
    }
  }

  // ---- errors ------------------------------------------------------------------------

  var errorSource = null;

  function showError(msg, source) {
    errorSource = source || 'action';
    $('error').textContent = msg;
    $('error-bar').hidden = false;
  }

  // Clears the error shown, or only one from `source` if given.
  function clearError(source) {
    if (source && errorSource !== source) return;
    errorSource = null;
    $('error').textContent = '';
    $('error-bar').hidden = true;
  }

  // ---- API ---------------------------------------------------------------------------

  function Failure(status, message) {
    this.status = status;
    this.message = message;
  }

  var leaving = false;

  function goLogin() {
    if (leaving) return;
    leaving = true;
    stopFeed();
    window.location.assign('/login');
  }

  // The answer of a successful request; a failure is thrown as a Failure.
  function request(method, path, body) {
    var headers = { Accept: 'application/json', 'X-CSRF-Token': csrf };
    var init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(
      function (res) {
        if (res.status === 401) {
          goLogin();
          throw new Failure(401, 'logged out');
        }
        if (!res.ok) {
          return res.json().then(
            function (j) {
              var msg = j && typeof j.error === 'string' ? j.error : res.status + ' ' + res.statusText;
              throw new Failure(res.status, msg);
            },
            function () {
              throw new Failure(res.status, res.status + ' ' + res.statusText);
            }
          );
        }
        return res;
      },
      function () {
        throw new Failure(0, 'cannot reach the coordinator');
      }
    );
  }

  // The JSON body of a successful request (null for 204).
  function api(method, path, body) {
    return request(method, path, body).then(function (res) {
      return res.status === 204 ? null : res.json();
    });
  }

  // One page of a paged listing: its items, how many match over all pages
  // (X-Total-Count), and whether a next page exists (Link: <…>; rel="next").
  function apiPage(path) {
    return request('GET', path).then(function (res) {
      return res.json().then(function (items) {
        var total = Number(res.headers.get('X-Total-Count'));
        return {
          items: items,
          total: Number.isFinite(total) ? total : items.length,
          more: /rel="next"/.test(res.headers.get('Link') || ''),
        };
      });
    });
  }

  // GET …/members for one page of members with `status`, after `after` (a key), found
  // by the search.
  function membersPath(net, status, after) {
    var path = '/api/networks/' + enc(net) + '/members?limit=' + PAGE + '&status=' + status;
    if (state.query) path += '&q=' + enc(state.query);
    if (after) path += '&after=' + enc(after);
    return path;
  }

  // Runs an admin action, shows its failure, and refreshes either way.
  function act(fn) {
    return Promise.resolve()
      .then(fn)
      .then(
        function () {
          clearError();
        },
        function (e) {
          if (!e || e.status !== 401) showError((e && e.message) || String(e), 'action');
        }
      )
      .then(function () {
        return refresh();
      });
  }

  // ---- loading -----------------------------------------------------------------------

  var inflight = null;
  var again = false;

  // Refetches everything shown; concurrent calls coalesce into one more round.
  function refresh() {
    if (inflight) {
      again = true;
      return inflight;
    }
    inflight = (async function () {
      try {
        var rounds = 0;
        do {
          again = false;
          await load();
          rounds += 1;
        } while (again && rounds < 4);
      } finally {
        inflight = null;
      }
    })();
    return inflight;
  }

  function fromHash() {
    var m = /^#net=(.+)$/.exec(window.location.hash);
    if (!m) return null;
    try {
      return decodeURIComponent(m[1]);
    } catch (_) {
      return null;
    }
  }

  function setHash(name) {
    try {
      history.replaceState(null, '', name ? '#net=' + enc(name) : window.location.pathname);
    } catch (_) {
      /* only cosmetic */
    }
  }

  async function load() {
    try {
      var nets = await api('GET', '/api/networks');
      nets.sort(function (a, b) {
        return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
      });
      state.networks = nets;
      var names = nets.map(function (n) {
        return n.name;
      });
      if (!state.selected || names.indexOf(state.selected) < 0) {
        var wanted = fromHash();
        var next = wanted && names.indexOf(wanted) >= 0 ? wanted : names[0] || null;
        if (next !== state.selected) selectLocal(next);
      }
      var sel = state.selected;
      var query = state.query;
      var after = state.cursors[state.cursors.length - 1];
      var none = { items: [], total: 0, more: false };
      var results = await Promise.all([
        sel ? apiPage(membersPath(sel, 'pending', null)) : none,
        sel ? apiPage(membersPath(sel, 'authorized', after)) : none,
        sel ? api('GET', '/api/networks/' + enc(sel) + '/tokens') : [],
        api('GET', '/api/audit?limit=50'),
        sel ? api('GET', policyPath(sel)) : null,
      ]);
      if (sel !== state.selected || query !== state.query || after !== state.cursors[state.cursors.length - 1]) {
        again = true;
        return;
      }
      var page = results[1];
      if (page.items.length === 0 && state.cursors.length > 1) {
        // The page shown emptied (members deleted or a search narrowed): one back.
        state.cursors.pop();
        again = true;
        return;
      }
      state.pending = results[0].items;
      state.pendingTotal = results[0].total;
      state.members = page.items;
      state.authorizedTotal = page.total;
      state.more = page.more;
      state.tokens = results[2];
      state.audit = results[3];
      state.policy = results[4];
      render();
      clearError('refresh');
    } catch (e) {
      if (e && e.status === 404) {
        // The selected network went away between two requests: look again.
        again = true;
        return;
      }
      if (!e || e.status !== 401) showError((e && e.message) || String(e), 'refresh');
    }
  }

  // ---- rendering ---------------------------------------------------------------------

  function render() {
    renderNetworks();
    renderPanel();
    renderMembers();
    renderTokens();
    renderAudit();
    renderPolicy();
  }

  function changed(section, value) {
    var s = JSON.stringify(value);
    if (shown[section] === s) return false;
    shown[section] = s;
    return true;
  }

  // Back to the first page of members (a new search, another network).
  function firstPage() {
    state.cursors = [null];
    state.members = [];
    state.more = false;
  }

  function selectLocal(name) {
    if (name === state.selected) return;
    state.selected = name;
    firstPage();
    state.pending = [];
    state.pendingTotal = 0;
    state.authorizedTotal = 0;
    state.query = '';
    $('member-search').value = '';
    state.tokens = [];
    $('token-created').hidden = true;
    $('token-secret').value = '';
    resetPolicy();
    setHash(name);
  }

  function select(name) {
    selectLocal(name);
    render();
    refresh();
  }

  function renderNetworks() {
    if (!changed('networks', [state.networks, state.selected])) return;
    syncRows(
      $('networks'),
      state.networks,
      function (n) {
        return n.name;
      },
      function (n) {
        var selected = n.name === state.selected;
        return el(
          'button',
          {
            type: 'button',
            class: 'net-tab' + (selected ? ' selected' : ''),
            'data-network-tab': n.name,
            'aria-current': selected ? 'true' : null,
            title: n.name + ' · ' + n.cidr,
            onclick: function () {
              select(n.name);
            },
          },
          el('span', { class: 'net-label' }, el('span', { class: 'net-name', text: n.name }), el('span', { class: 'net-cidr', text: n.cidr })),
          el('span', { class: 'count', title: 'members', text: String(n.members) })
        );
      }
    );
    $('networks-empty').hidden = state.networks.length > 0;
  }

  function selectedNetwork() {
    for (var i = 0; i < state.networks.length; i++) {
      if (state.networks[i].name === state.selected) return state.networks[i];
    }
    return null;
  }

  function chip(label, value) {
    return el('span', { class: 'chip' }, label + ' ', el('b', { text: value }));
  }

  function renderPanel() {
    var n = selectedNetwork();
    if (!changed('panel', n)) return;
    $('no-network').hidden = !!n;
    $('network-panel').hidden = !n;
    if (!n) return;
    $('net-title').textContent = n.name;
    var meta = $('net-meta');
    var chips = [
      chip('CIDR', n.cidr),
      n.cidr6 ? chip('IPv6', n.cidr6) : null,
      chip('MTU', String(n.mtu)),
      chip('keepalive', n.keepalive ? n.keepalive + ' s' : 'off'),
      chip('members', String(n.members)),
      chip('netmap version', String(n.version))
    ];
    meta.replaceChildren.apply(meta, chips.filter(Boolean));
  }

  function renderPaths(paths) {
    if (!Array.isArray(paths) || paths.length === 0) return el('span', { class: 'muted', text: '—' });
    return el.apply(
      null,
      ['div', { class: 'paths' }].concat(
        paths.map(function (p) {
          p = p || {};
          var kind = p.path === 'direct' || p.path === 'relayed' ? p.path : 'none';
          var rtt = p['rtt-ms'] !== undefined ? p['rtt-ms'] : p.rtt_ms;
          var label = (p.name || p.peer || '?') + ': ' + (p.path || 'none');
          if (typeof rtt === 'number') label += ' ' + rtt + ' ms';
          return el('span', { class: 'badge path ' + kind, title: p.peer ? 'peer ' + p.peer : null, text: label });
        })
      )
    );
  }

  function memberPath(net, m) {
    return '/api/networks/' + enc(net) + '/members/' + enc(urlKey(m['public-key']));
  }

  // The words of meshctl's FILTER column: "current", "pending", "FAILED (reason)", "-".
  function filterText(f) {
    if (!f) return '-';
    if (f.error) return 'FAILED (' + f.error + ')';
    return f.current ? 'current' : 'pending';
  }

  function filterCell(f) {
    var text = filterText(f);
    if (!f) return el('td', { class: 'filter-cell muted', 'data-kind': 'none', title: 'no policy filter (offline, or no policy)', text: text });
    var kind = f.error ? 'failed' : f.current ? 'current' : 'pending';
    var cls = f.error ? 'bad' : f.current ? 'ok' : 'warn';
    var title = 'sent ' + (f.sent || 'nothing') + '; runs ' + (f.reported || 'nothing reported');
    if (f.error) title += '; it drops the traffic concerned until an update applies';
    return el('td', { class: 'filter-cell', 'data-kind': kind }, badge(cls, text, title));
  }

  function tagsCell(tags) {
    if (!tags || tags.length === 0) return el('td', { class: 'tags-cell muted', text: '—' });
    return el.apply(
      null,
      ['td', { class: 'tags-cell' }].concat(
        tags.map(function (t) {
          return badge('tag', t, 'tag:' + t);
        })
      )
    );
  }

  function memberRow(net, m) {
    var pending = !m.authorized;
    var online = !!m.online;
    var seen = m['last-seen'];
    var path = memberPath(net, m);
    var status = el(
      'span',
      { class: 'status' },
      el('span', { class: 'dot' + (online ? ' on' : '') }),
      online ? 'online' : 'offline'
    );
    if (!online) {
      status.append(el('span', { class: 'muted small' }, ' · ', seen ? timeSpan(seen) : 'never seen'));
    } else if (seen) {
      status.setAttribute('title', 'last seen ' + absTime(seen));
    }
    var endpoints = (m.endpoints || []).join(', ');
    // The buttons' handlers use these: a change replaces the cell.
    var tags = m.tags || [];
    var actions = el('td', { class: 'actions', 'data-for': JSON.stringify([m.name, m.address, !!m.authorized, tags]) });
    if (pending) {
      actions.append(
        el('button', {
          type: 'button',
          class: 'btn small authorize',
          text: 'Authorise',
          onclick: function () {
            act(function () {
              return api('POST', path + '/authorize');
            });
          },
        })
      );
    } else {
      actions.append(
        el('button', {
          type: 'button',
          class: 'btn small deauthorize',
          text: 'Deauthorise',
          onclick: function () {
            act(function () {
              return api('POST', path + '/deauthorize');
            });
          },
        })
      );
    }
    actions.append(
      el('button', {
        type: 'button',
        class: 'btn small rename',
        text: 'Rename',
        onclick: function () {
          var name = window.prompt('New name for ' + m.name + ':', m.name);
          if (name === null) return;
          name = name.trim();
          if (!name || name === m.name) return;
          act(function () {
            return api('PATCH', path, { name: name });
          });
        },
      }),
      el('button', {
        type: 'button',
        class: 'btn small set-address',
        text: 'Address',
        title: 'set the overlay address',
        onclick: function () {
          var n = selectedNetwork();
          var addr = window.prompt(
            'Overlay address for ' + m.name + (n ? ' (inside ' + n.cidr + ')' : '') + ':',
            m.address
          );
          if (addr === null) return;
          addr = addr.trim();
          if (!addr || addr === m.address) return;
          act(function () {
            return api('PATCH', path, { address: addr });
          });
        },
      }),
      el('button', {
        type: 'button',
        class: 'btn small set-tags',
        text: 'Tags',
        title: 'set the tags the policy names',
        onclick: function () {
          var now = tags.join(' ');
          var text = window.prompt('Tags for ' + m.name + ' (separated by spaces; empty for none):', now);
          if (text === null) return;
          var want = text.split(/[\s,]+/).filter(Boolean);
          if (want.join(' ') === now) return;
          act(function () {
            return api('PUT', path + '/tags', { tags: want });
          });
        },
      }),
      el('button', {
        type: 'button',
        class: 'btn small rules',
        text: 'Rules',
        title: 'what the policy decides between this member and the others on this page, for a port',
        onclick: function () {
          var port = $('why-port').value.trim();
          if (!port) {
            port = window.prompt('Effective rules of ' + m.name + ' for which port (tcp/N, udp/N or icmp)?', 'tcp/22');
            if (port === null) return;
            port = port.trim();
            if (!port) return;
            $('why-port').value = port;
          }
          // The form asks something else now: its last answer goes.
          $('why-from').value = m.name;
          $('why-result').hidden = true;
          showEffective(net, m, port);
        },
      }),
      el('button', {
        type: 'button',
        class: 'btn small danger-outline delete',
        text: 'Delete',
        onclick: function () {
          if (!window.confirm('Delete member ' + m.name + '? It loses its address; it must join again with a token.')) return;
          act(function () {
            return api('DELETE', path);
          });
        },
      })
    );
    return el(
      'tr',
      {
        class: 'member' + (pending ? ' pending' : ''),
        'data-name': m.name,
        'data-fingerprint': m.fingerprint,
        'data-address': m.address,
        'data-address6': m.address6 || '',
        'data-authorized': pending ? 'false' : 'true',
        'data-online': online ? 'true' : 'false',
        'data-tags': tags.join(' '),
        'data-filter': filterText(m.filter),
      },
      el('td', { class: 'name-cell' }, m.name, pending ? el('span', { class: 'sub', text: 'waiting for approval' }) : null),
      el('td', { class: 'mono', title: m['public-key'], text: m.fingerprint }),
      el('td', { class: 'mono', title: endpoints ? 'endpoints: ' + endpoints : null }, m.address,
        m.address6 ? el('span', { class: 'sub address6', text: m.address6 }) : null),
      el('td', null, status),
      el('td', { class: 'mono small', text: m.version || '—' }),
      el('td', null, renderPaths(m.paths)),
      el('td', null, pending ? badge('warn', 'pending') : badge('ok', 'authorised')),
      tagsCell(tags),
      filterCell(m.filter),
      actions
    );
  }

  function count(n, one, many) {
    return n.toLocaleString() + ' ' + (n === 1 ? one : many);
  }

  // Pending members first, then the page of authorised ones, each in key order (the
  // order pages follow).
  function renderMembers() {
    var net = state.selected;
    var pendingKeys = new Set(
      state.pending.map(function (m) {
        return m['public-key'];
      })
    );
    // A member authorised between the two requests may be in both: show it once.
    var rows = state.pending.concat(
      state.members.filter(function (m) {
        return !pendingKeys.has(m['public-key']);
      })
    );
    renderPager();
    if (!changed('members', [net, rows])) return;
    syncRows(
      $('members'),
      rows,
      function (m) {
        return net + ' ' + m['public-key'];
      },
      function (m) {
        return memberRow(net, m);
      }
    );
    $('members-empty').hidden = rows.length > 0 || !!state.query;
    $('members-no-match').hidden = rows.length > 0 || !state.query;
  }

  // The counts, the note about pending members not shown, and previous/next.
  function renderPager() {
    var n = selectedNetwork();
    var first = (state.cursors.length - 1) * PAGE;
    var view = [
      n ? n.members : 0,
      state.query,
      state.pendingTotal,
      state.pending.length,
      state.authorizedTotal,
      state.members.length,
      first,
      state.more,
    ];
    if (!changed('pager', view)) return;
    var parts = [count(n ? n.members : 0, 'member', 'members')];
    var pending = state.pendingTotal ? count(state.pendingTotal, 'pending', 'pending') : '';
    if (state.query) {
      var found = count(state.pendingTotal + state.authorizedTotal, 'match', 'matches');
      parts.push(pending ? found + ' (' + pending + ')' : found);
    } else if (pending) {
      parts.push(pending);
    }
    $('member-counts').textContent = parts.join(' · ');

    var hidden = state.pendingTotal - state.pending.length;
    $('pending-more').hidden = hidden <= 0;
    $('pending-more').textContent =
      hidden > 0
        ? 'Showing ' + state.pending.length + ' of ' + state.pendingTotal.toLocaleString() +
          ' pending members; search to find the others.'
        : '';

    var paged = state.cursors.length > 1 || state.more;
    $('members-pager').hidden = !paged;
    $('members-prev').disabled = state.cursors.length <= 1;
    $('members-next').disabled = !state.more;
    $('members-page').textContent =
      state.members.length > 0
        ? 'authorised ' + (first + 1).toLocaleString() + '–' + (first + state.members.length).toLocaleString() +
          ' of ' + state.authorizedTotal.toLocaleString()
        : '';
  }

  function tokenRow(net, t) {
    var now = Date.now() / 1000;
    var expires = t['expires-at'];
    var expired = typeof expires === 'number' && expires <= now;
    var used = !t.reusable && t.uses > 0;
    var st;
    if (t.revoked) st = badge('bad', 'revoked');
    else if (expired) st = badge('bad', 'expired');
    else if (used) st = badge('', 'used');
    else st = badge('ok', 'active');
    var active = !t.revoked && !expired && !used;
    var actions = el('td', { class: 'actions' });
    if (!t.revoked) {
      actions.append(
        el('button', {
          type: 'button',
          class: 'btn small danger-outline revoke',
          text: 'Revoke',
          onclick: function () {
            act(function () {
              return api('DELETE', '/api/networks/' + enc(net) + '/tokens/' + enc(t.id));
            });
          },
        })
      );
    }
    return el(
      'tr',
      { class: 'token' + (active ? '' : ' inactive'), 'data-id': t.id },
      el('td', { class: 'mono', text: t.id }),
      el('td', { text: t.reusable ? 'reusable' : 'one-time' }),
      el('td', null, timeSpan(t['created-at'])),
      el('td', null, typeof expires === 'number' ? timeSpan(expires) : 'never'),
      el('td', { text: String(t.uses) }),
      el('td', null, st),
      actions
    );
  }

  function renderTokens() {
    var net = state.selected;
    if (!changed('tokens', [net, state.tokens])) return;
    var sorted = state.tokens.slice().sort(function (a, b) {
      return b['created-at'] - a['created-at'] || (a.id < b.id ? -1 : 1);
    });
    syncRows(
      $('tokens'),
      sorted,
      function (t) {
        return net + ' ' + t.id;
      },
      function (t) {
        return tokenRow(net, t);
      }
    );
    $('tokens-empty').hidden = sorted.length > 0;
  }

  function renderAudit() {
    if (!changed('audit', state.audit)) return;
    var body = $('audit');
    body.replaceChildren.apply(
      body,
      state.audit.map(function (a) {
        return el(
          'tr',
          { class: 'audit-entry' },
          el('td', { class: 'nowrap' }, timeSpan(a.time)),
          el('td', { text: a.actor }),
          el('td', { class: 'audit-action', text: a.action }),
          el('td', { text: a.network }),
          el('td', { class: 'mono', text: a.target }),
          el('td', { text: a.detail || '' })
        );
      })
    );
    $('audit-empty').hidden = state.audit.length > 0;
  }

  // ---- policy ------------------------------------------------------------------------

  // The stored document the editor was last loaded from (null: not loaded for this
  // network yet). While the editor holds exactly it, a change on the coordinator replaces
  // it; once edited, the edits stay until saved or reverted.
  var policyBase = null;
  // The line the last refused document was refused for (null: none).
  var policyBad = null;
  // Bumped to abandon the effective-rules requests in flight.
  var effectiveRun = 0;
  // What the effective rules shown were computed for: network, member, port, and what
  // they depend on (the document and the tags involved), to recompute when that changes.
  var effective = null;
  // Why requests in flight at once for the effective rules.
  var EFFECTIVE_PARALLEL = 4;

  function policyPath(net) {
    return '/api/networks/' + enc(net) + '/policy';
  }

  function whyPath(net, from, to, port) {
    return policyPath(net) + '/why?from=' + enc(from) + '&to=' + enc(to) + '&port=' + enc(port);
  }

  function hasDocument(p) {
    return !!p && typeof p.document === 'string';
  }

  // meshctl's words: "default deny, 2 rules, 1 test (all pass)".
  function policySummary(p) {
    if (!hasDocument(p)) return 'no policy: everything allowed between members';
    return 'default ' + p.default + ', ' + count(p.rules, 'rule', 'rules') + ', ' + count(p.tests, 'test', 'tests') + ' (all pass)';
  }

  // meshctl's words: "deny: rule at line 7: deny tag:ops -> * tcp/22".
  function whyText(w) {
    if (typeof w.line === 'number') return w.action + ': rule at line ' + w.line + ': ' + w.rule;
    return w.action + ': no rule matches, the default decides';
  }

  function policyResult(kind, text) {
    var r = $('policy-result');
    r.className = 'policy-result small' + (kind ? ' ' + kind : '');
    if (kind) r.setAttribute('data-state', kind);
    else r.removeAttribute('data-state');
    r.textContent = text || '';
  }

  // The line numbers beside the editor, the refused line marked.
  function renderLines() {
    var n = $('policy-doc').value.split('\n').length;
    var gutter = $('policy-lines');
    var want = JSON.stringify([n, policyBad]);
    if (gutter.getAttribute('data-shown') !== want) {
      var lines = [];
      for (var i = 1; i <= n; i++) {
        lines.push(el('span', { class: i === policyBad ? 'bad' : null, 'data-line': i, text: String(i) }));
      }
      gutter.replaceChildren.apply(gutter, lines);
      gutter.setAttribute('data-shown', want);
    }
    gutter.scrollTop = $('policy-doc').scrollTop;
  }

  // Marks `line` (null: none) and selects it in the editor.
  function markLine(line) {
    policyBad = line;
    renderLines();
    if (line === null) return;
    var ta = $('policy-doc');
    var lines = ta.value.split('\n');
    if (line < 1 || line > lines.length) return;
    var start = 0;
    for (var i = 0; i < line - 1; i++) start += lines[i].length + 1;
    ta.focus();
    ta.setSelectionRange(start, start + lines[line - 1].length);
    var height = parseFloat(window.getComputedStyle(ta).lineHeight) || 18;
    ta.scrollTop = Math.max(0, (line - 3) * height);
    renderLines();
  }

  // Another network: nothing of the last one's policy stays.
  function resetPolicy() {
    state.policy = null;
    shown.policy = null;
    policyBase = null;
    $('policy-doc').value = '';
    markLine(null);
    policyResult(null, '');
    $('policy-stale').hidden = true;
    $('why-result').hidden = true;
    $('why-result').textContent = '';
    closeEffective();
  }

  function renderPolicy() {
    var p = state.policy;
    var ta = $('policy-doc');
    if (p && changed('policy', [state.selected, p])) {
      var doc = hasDocument(p) ? p.document : '';
      $('policy-summary').textContent = policySummary(p);
      $('policy-remove').disabled = !hasDocument(p);
      if (policyBase === null || ta.value === policyBase) {
        if (ta.value !== doc) ta.value = doc;
        policyBase = doc;
        renderLines();
      }
      $('policy-stale').hidden = doc === policyBase;
    }
    if (effective && effective.net === state.selected) {
      var m = shownMember(effective.member);
      if (effectiveInputs(m) !== effective.inputs) showEffective(effective.net, m, effective.port);
    }
  }

  // Check, save or remove, with the answer (or the refusal and its line) in the panel.
  function policyAction(kind) {
    var net = state.selected;
    if (!net) return;
    var doc = $('policy-doc').value;
    var buttons = ['policy-check', 'policy-save', 'policy-remove', 'policy-revert'];
    var pending;
    if (kind === 'check') pending = api('POST', policyPath(net) + '/check', { document: doc });
    else if (kind === 'save') pending = api('PUT', policyPath(net), { document: doc });
    else pending = api('DELETE', policyPath(net));
    buttons.forEach(function (id) {
      $(id).disabled = true;
    });
    policyResult('busy', kind === 'check' ? 'checking…' : kind === 'save' ? 'saving…' : 'removing…');
    return pending
      .then(
        function (p) {
          if (state.selected !== net) return;
          markLine(null);
          if (kind === 'check') {
            policyResult('ok', 'ok: ' + policySummary(p) + '; not saved');
            return;
          }
          state.policy = p;
          policyBase = hasDocument(p) ? p.document : '';
          $('policy-doc').value = policyBase;
          renderLines();
          policyResult('ok', kind === 'save' ? 'saved: ' + policySummary(p) : 'removed: everything allowed between members');
        },
        function (e) {
          if (state.selected !== net || (e && e.status === 401)) return;
          var msg = (e && e.message) || String(e);
          policyResult('error', msg);
          var line = e && e.status === 422 ? /\bline (\d+)\b/.exec(msg) : null;
          markLine(line ? Number(line[1]) : null);
        }
      )
      .then(function () {
        buttons.forEach(function (id) {
          $(id).disabled = false;
        });
        $('policy-remove').disabled = !hasDocument(state.policy);
        return refresh();
      });
  }

  $('policy-check').addEventListener('click', function () {
    policyAction('check');
  });

  $('policy-save').addEventListener('click', function () {
    policyAction('save');
  });

  $('policy-remove').addEventListener('click', function () {
    var net = state.selected;
    if (!net) return;
    if (!window.confirm('Remove the policy of ' + net + '? Everything is allowed between its members again.')) return;
    policyAction('remove');
  });

  $('policy-revert').addEventListener('click', function () {
    var p = state.policy;
    policyBase = hasDocument(p) ? p.document : '';
    $('policy-doc').value = policyBase;
    $('policy-stale').hidden = true;
    markLine(null);
    policyResult(null, '');
  });

  $('policy-doc').addEventListener('input', function () {
    // The marked line may have moved: the next check marks it again.
    if (policyBad !== null) policyBad = null;
    renderLines();
  });

  $('policy-doc').addEventListener('scroll', function () {
    $('policy-lines').scrollTop = $('policy-doc').scrollTop;
  });

  function whyResult(kind, text, action) {
    var r = $('why-result');
    r.hidden = false;
    r.className = 'why-result small ' + kind;
    if (action) r.setAttribute('data-action', action);
    else r.removeAttribute('data-action');
    r.textContent = text;
  }

  $('why-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var net = state.selected;
    if (!net) return;
    var from = $('why-from').value.trim();
    var to = $('why-to').value.trim();
    var port = $('why-port').value.trim();
    if (!from || !to || !port) {
      whyResult('error', 'give from, to (a member or a description such as tag:ops) and a port (tcp/22, udp/53, icmp)');
      return;
    }
    api('GET', whyPath(net, from, to, port)).then(
      function (w) {
        if (state.selected === net) whyResult(w.action === 'allow' ? 'ok' : 'denied', whyText(w), w.action);
      },
      function (err) {
        if (state.selected === net && !(err && err.status === 401)) whyResult('error', (err && err.message) || String(err));
      }
    );
  });

  // The authorised members on the page other than `m`: the peers its rules are shown for.
  function effectivePeers(m) {
    return state.members.filter(function (p) {
      return p['public-key'] !== m['public-key'];
    });
  }

  // `m` as the page shows it now (renamed, retagged), or as it was.
  function shownMember(m) {
    var now = state.pending.concat(state.members).filter(function (p) {
      return p['public-key'] === m['public-key'];
    })[0];
    return now || m;
  }

  // What the effective rules of `m` depend on besides the port.
  function effectiveInputs(m) {
    return JSON.stringify([
      state.policy && state.policy.document,
      m.name,
      m.tags,
      effectivePeers(m).map(function (p) {
        return [p['public-key'], p.name, p.tags];
      }),
    ]);
  }

  function closeEffective() {
    effectiveRun += 1;
    effective = null;
    $('effective').hidden = true;
    $('effective-rows').replaceChildren();
  }

  function decisionCell(w) {
    var where = typeof w.line === 'number' ? 'line ' + w.line : 'default';
    return el(
      'td',
      { class: 'decision', 'data-action': w.action, 'data-line': typeof w.line === 'number' ? w.line : null, title: whyText(w) },
      badge(w.action === 'allow' ? 'ok' : 'bad', w.action),
      ' ',
      el('span', { class: 'muted small', text: where })
    );
  }

  // For `port`, what the policy decides from `m` to each other member on the page and
  // back, asking `why` for each (a few at a time), by the rules the members enforce.
  function showEffective(net, m, port) {
    var run = (effectiveRun += 1);
    var peers = effectivePeers(m);
    effective = { net: net, member: m, port: port, inputs: effectiveInputs(m) };
    var box = $('effective');
    box.hidden = false;
    box.setAttribute('data-member', m.name);
    box.setAttribute('data-port', port);
    $('effective-title').textContent = 'Effective rules of ' + m.name + ' for ' + port;
    $('effective-note').textContent = peers.length
      ? 'Against the ' + count(peers.length, 'other authorised member', 'other authorised members') +
        ' on this page. Hover a decision for the rule.'
      : 'No other authorised member on this page.';
    var jobs = [];
    var rows = peers.map(function (p) {
      var out = el('td', { class: 'decision muted', text: '…' });
      var back = el('td', { class: 'decision muted', text: '…' });
      jobs.push([m['public-key'], p['public-key'], out]);
      jobs.push([p['public-key'], m['public-key'], back]);
      return el('tr', { class: 'effective-peer', 'data-peer': p.name }, el('td', { class: 'name-cell', text: p.name }), out, back);
    });
    $('effective-rows').replaceChildren.apply($('effective-rows'), rows);
    var next = 0;
    function work() {
      if (run !== effectiveRun || next >= jobs.length) return Promise.resolve();
      var job = jobs[next++];
      return api('GET', whyPath(net, job[0], job[1], port)).then(
        function (w) {
          if (run === effectiveRun) job[2].replaceWith(decisionCell(w));
          return work();
        },
        function (e) {
          if (run !== effectiveRun) return;
          var cell = el('td', { class: 'decision error', 'data-action': 'error', text: (e && e.message) || String(e) });
          job[2].replaceWith(cell);
          // The same port or network would fail every other request too.
          if (e && (e.status === 400 || e.status === 404 || e.status === 422)) {
            $('effective-note').textContent = (e && e.message) || String(e);
            effectiveRun += 1;
            return;
          }
          return work();
        }
      );
    }
    for (var i = 0; i < EFFECTIVE_PARALLEL; i++) work();
  }

  $('effective-close').addEventListener('click', closeEffective);

  // ---- forms -------------------------------------------------------------------------

  $('net-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var name = $('net-name').value.trim();
    var cidr = $('net-cidr').value.trim();
    var mtuText = $('net-mtu').value.trim();
    var body = { name: name, cidr: cidr };
    if (mtuText) {
      var mtu = Number(mtuText);
      if (!Number.isInteger(mtu) || mtu < 0) {
        showError('MTU must be a whole number of bytes', 'action');
        return;
      }
      body.mtu = mtu;
    }
    act(function () {
      return api('POST', '/api/networks', body).then(function (net) {
        selectLocal(net.name);
        $('net-name').value = '';
        $('net-cidr').value = '';
        $('net-mtu').value = '';
      });
    });
  });

  $('net-delete').addEventListener('click', function () {
    var net = state.selected;
    if (!net) return;
    if (!window.confirm('Delete network ' + net + '? Its members and join tokens are deleted; connected nodes are told to leave.')) return;
    act(function () {
      return api('DELETE', '/api/networks/' + enc(net)).then(function () {
        if (state.selected === net) selectLocal(null);
      });
    });
  });

  $('token-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var net = state.selected;
    if (!net) return;
    var body = { reusable: $('token-reusable').checked };
    var exp = $('token-expiry').value;
    if (exp && exp !== 'never' && exp !== '0') body['expires-in-secs'] = Number(exp);
    act(function () {
      return api('POST', '/api/networks/' + enc(net) + '/tokens', body).then(function (created) {
        if (state.selected !== net) return;
        var input = $('token-secret');
        input.value = created['join-token'];
        $('token-copied').textContent = '';
        $('token-created').hidden = false;
        input.focus();
        input.select();
      });
    });
  });

  $('token-copy').addEventListener('click', function () {
    var input = $('token-secret');
    var done = function (ok) {
      $('token-copied').textContent = ok ? 'Copied.' : 'Copy failed: select the token and copy it by hand.';
    };
    var fallback = function () {
      input.focus();
      input.select();
      var ok = false;
      try {
        ok = document.execCommand('copy');
      } catch (_) {
        ok = false;
      }
      done(ok);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () {
        done(true);
      }, fallback);
    } else {
      fallback();
    }
  });

  $('members-next').addEventListener('click', function () {
    var last = state.members[state.members.length - 1];
    // (A second click before the next page arrived would skip a page.)
    if (!state.more || !last || state.cursors[state.cursors.length - 1] === last['public-key']) return;
    state.cursors.push(last['public-key']);
    refresh();
  });

  $('members-prev').addEventListener('click', function () {
    if (state.cursors.length <= 1) return;
    state.cursors.pop();
    refresh();
  });

  // The search goes out once typing pauses; it starts again from the first page.
  var searchTimer = null;
  $('member-search').addEventListener('input', function () {
    if (searchTimer) window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(function () {
      searchTimer = null;
      var q = $('member-search').value.trim();
      if (q === state.query) return;
      state.query = q;
      firstPage();
      refresh();
    }, SEARCH_DELAY_MS);
  });

  $('error-close').addEventListener('click', function () {
    clearError();
  });

  $('logout').addEventListener('click', function () {
    stopFeed();
    leaving = true;
    fetch('/logout', {
      method: 'POST',
      headers: { 'X-CSRF-Token': csrf },
      credentials: 'same-origin',
      redirect: 'manual',
    })
      .catch(function () {
        /* going to the login page anyway */
      })
      .then(function () {
        window.location.assign('/login');
      });
  });

  // ---- change feed -------------------------------------------------------------------

  var feed = null;
  var pollTimer = null;
  var retryTimer = null;

  function setLive(kind, text) {
    var l = $('live');
    l.className = 'live ' + kind;
    l.textContent = text;
  }

  function startPolling() {
    if (!pollTimer) pollTimer = window.setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function stopFeed() {
    if (feed) {
      feed.close();
      feed = null;
    }
    stopPolling();
    if (retryTimer) {
      window.clearTimeout(retryTimer);
      retryTimer = null;
    }
  }

  function connect() {
    if (leaving) return;
    if (!('EventSource' in window)) {
      setLive('polling', 'polling');
      startPolling();
      return;
    }
    var es = new EventSource('/api/events');
    feed = es;
    es.addEventListener('open', function () {
      setLive('on', 'live');
      stopPolling();
    });
    es.addEventListener('change', function () {
      refresh();
    });
    es.addEventListener('error', function () {
      if (leaving) return;
      setLive('polling', 'polling');
      startPolling();
      // A closed source does not come back by itself (e.g. it was refused): retry later.
      if (es.readyState === 2 && feed === es) {
        feed = null;
        if (!retryTimer) {
          retryTimer = window.setTimeout(function () {
            retryTimer = null;
            connect();
          }, FEED_RETRY_MS);
        }
      }
    });
  }

  // ---- start -------------------------------------------------------------------------

  window.setInterval(tickTimes, 10000);
  refresh();
  connect();
})();
