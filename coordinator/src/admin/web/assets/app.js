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
  };
  // What each section shows now (a JSON string), to leave unchanged sections alone.
  var shown = { networks: null, panel: null, members: null, pager: null, tokens: null, audit: null };

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
    meta.replaceChildren(
      chip('CIDR', n.cidr),
      chip('MTU', String(n.mtu)),
      chip('keepalive', n.keepalive ? n.keepalive + ' s' : 'off'),
      chip('members', String(n.members)),
      chip('netmap version', String(n.version))
    );
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
    var actions = el('td', { class: 'actions', 'data-for': JSON.stringify([m.name, m.address, !!m.authorized]) });
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
        'data-authorized': pending ? 'false' : 'true',
        'data-online': online ? 'true' : 'false',
      },
      el('td', { class: 'name-cell' }, m.name, pending ? el('span', { class: 'sub', text: 'waiting for approval' }) : null),
      el('td', { class: 'mono', title: m['public-key'], text: m.fingerprint }),
      el('td', { class: 'mono', title: endpoints ? 'endpoints: ' + endpoints : null, text: m.address }),
      el('td', null, status),
      el('td', { class: 'mono small', text: m.version || '—' }),
      el('td', null, renderPaths(m.paths)),
      el('td', null, pending ? badge('warn', 'pending') : badge('ok', 'authorised')),
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
