//! The console's chrome, shared by every page: the document, the navigation, the access notice
//! and the script that carries the admin token.
//!
//! Access (see the README's "Console"): reads are open while no `admin_token` is configured and
//! need it otherwise; writes (redrive) always need it, so a console without a token is read-only
//! and says so. The token is never put in a page, a URL or a cookie: the sign-in form keeps it in
//! the tab's `sessionStorage`, and the script sends it as `Authorization: Bearer` on every request
//! it makes. With a token stored, the script loads the console's links and GET forms with
//! `fetch` (so the header goes along) and writes the page it gets into the document; forms with
//! `method="post"` are sent with `fetch` and their JSON answer is shown in the element the form
//! names (`data-result`). Without a token, links and GET forms are plain navigation.

use std::fmt::Write as _;

use super::page::escape;

/// The console's pages, in the order of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Dashboard,
    Search,
    DeadLetters,
    Deliveries,
}

impl Nav {
    const ALL: [Nav; 4] = [Nav::Dashboard, Nav::Search, Nav::DeadLetters, Nav::Deliveries];

    fn href(self) -> &'static str {
        match self {
            Nav::Dashboard => "/",
            Nav::Search => "/search",
            Nav::DeadLetters => "/dead-letters",
            Nav::Deliveries => "/deliveries",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Nav::Dashboard => "Dashboard",
            Nav::Search => "Search",
            Nav::DeadLetters => "Dead letters",
            Nav::Deliveries => "Deliveries",
        }
    }
}

/// What the request that renders a page may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No admin token is configured: reads are open, writes are refused.
    ReadOnly,
    /// The request carried the configured admin token: reads and writes.
    Admin,
}

pub(crate) const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#1d2430;background:#f7f8fa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:24px 0 8px}\
nav{display:flex;gap:16px;align-items:center;margin:0 0 12px}nav a{color:#1d4ed8;text-decoration:none}\
nav a.active{font-weight:600;color:#1d2430}nav .brand{font-weight:700;font-size:18px;color:#1d2430}\
.access{font-size:12px;padding:6px 10px;border-radius:4px;margin:0 0 12px;background:#eef2ff}\
.access.read-only{background:#fff4e5}.access form{display:inline;margin-left:8px}\
.meta{color:#5b6575;font-size:12px}.cards{display:flex;flex-wrap:wrap;gap:12px}\
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;min-width:150px}\
.card .n{font-size:24px;font-weight:600}.card .l{color:#5b6575;font-size:12px}\
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7}\
td,th{padding:4px 10px;border-bottom:1px solid #eef0f3;text-align:left;font-size:13px;vertical-align:top}\
td.num{text-align:right;font-variant-numeric:tabular-nums}.open{color:#b42318;font-weight:600}\
.error{color:#b42318}#trends{display:flex;flex-wrap:wrap;gap:12px}\
.chart{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 12px;margin:0;width:362px}\
.chart figcaption{font-size:13px;margin-bottom:4px}.chart svg{display:block;border:1px solid #eef0f3}\
.legend{list-style:none;padding:0;margin:4px 0 0;font-size:12px;display:flex;flex-wrap:wrap;gap:2px 12px}\
.swatch{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}\
form.filters{display:flex;flex-wrap:wrap;gap:8px 12px;align-items:end;margin:0 0 12px}\
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#5b6575}\
pre{background:#fff;border:1px solid #dde1e7;padding:8px 12px;overflow:auto;font-size:12px;max-width:100%}\
.result{margin:8px 0;font-weight:600}";

/// The console's own script (see the module documentation). It stops the dashboard's polling
/// first: a page written over the dashboard keeps its timers otherwise.
const SCRIPT: &str = r#"(function () {
  var KEY = 'switchboard.admin-token';
  if (window.switchboardPoll) { clearInterval(window.switchboardPoll); window.switchboardPoll = null; }
  function token() { try { return sessionStorage.getItem(KEY) || ''; } catch (e) { return ''; } }
  function auth(headers) { var t = token(); if (t) { headers.Authorization = 'Bearer ' + t; } return headers; }
  window.switchboardAuth = auth;
  function go(url, push) {
    fetch(url, { headers: auth({ Accept: 'text/html' }), cache: 'no-store', credentials: 'omit' })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        document.open(); document.write(html); document.close();
        // After the write: opening the document sets its URL back to the one it was loaded from.
        if (push) { history.pushState(null, '', url); } else { history.replaceState(null, '', url); }
      })
      .catch(function () {});
  }
  window.onpopstate = function () { if (token()) { go(location.href, false); } else { location.reload(); } };
  document.addEventListener('click', function (e) {
    var a = e.target.closest ? e.target.closest('a[href]') : null;
    if (!a || !token() || a.origin !== location.origin) { return; }
    e.preventDefault();
    go(a.href, true);
  });
  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (form.id === 'sign-in') {
      e.preventDefault();
      try { sessionStorage.setItem(KEY, form.elements.token.value.trim()); } catch (err) {}
      go(location.href, false);
      return;
    }
    if (form.id === 'sign-out') {
      e.preventDefault();
      try { sessionStorage.removeItem(KEY); } catch (err) {}
      location.reload();
      return;
    }
    if ((form.getAttribute('method') || 'get').toLowerCase() === 'post') {
      e.preventDefault();
      var out = document.getElementById(form.getAttribute('data-result'));
      var body = new URLSearchParams(new FormData(form, e.submitter));
      out.textContent = 'working…';
      out.removeAttribute('data-status');
      fetch(form.action, { method: 'POST', body: body, cache: 'no-store', credentials: 'omit',
                           headers: auth({ 'Content-Type': 'application/x-www-form-urlencoded' }) })
        .then(function (r) {
          return r.json().then(function (answer) {
            out.setAttribute('data-status', String(r.status));
            out.textContent = r.ok ? answer.summary : r.status + ': ' + answer.error;
          });
        })
        .catch(function () { out.setAttribute('data-status', '0'); out.textContent = 'the request failed'; });
      return;
    }
    if (token()) {
      e.preventDefault();
      var url = new URL(form.getAttribute('action') || location.pathname, location.href);
      var query = new URLSearchParams();
      new FormData(form).forEach(function (value, name) { if (value !== '') { query.append(name, value); } });
      url.search = query.toString();
      go(url.href, true);
    }
  });
  if (document.body.hasAttribute('data-sign-in') && token() && !document.body.hasAttribute('data-refused')) {
    go(location.href, false);
  }
})();"#;

/// A whole console page: `body` under the navigation (with `active` marked) and the access
/// notice. `extra_script` runs after the console's script.
pub(crate) fn page(title: &str, active: Nav, access: Access, body: &str, extra_script: &str) -> String {
    let mut html = String::with_capacity(body.len() + 8 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · switchboard</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head><body",
        title = escape(title),
    );
    html.push_str(body_attributes(access));
    html.push('>');
    nav(&mut html, Some(active));
    html.push_str(access_notice(access));
    html.push_str(body);
    let _ = write!(html, "<script>{SCRIPT}</script>");
    if !extra_script.is_empty() {
        let _ = write!(html, "<script>{extra_script}</script>");
    }
    html.push_str("</body></html>\n");
    html
}

fn body_attributes(access: Access) -> &'static str {
    match access {
        Access::ReadOnly => " data-access=\"read-only\"",
        Access::Admin => " data-access=\"admin\"",
    }
}

fn nav(html: &mut String, active: Option<Nav>) {
    html.push_str("<nav><span class=\"brand\">switchboard</span>");
    for item in Nav::ALL {
        let class = if Some(item) == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(
            html,
            "<a href=\"{}\"{class} id=\"nav-{}\">{}</a>",
            item.href(),
            item.label().to_ascii_lowercase().replace(' ', "-"),
            item.label()
        );
    }
    html.push_str("</nav>");
}

fn access_notice(access: Access) -> &'static str {
    match access {
        Access::ReadOnly => {
            "<div class=\"access read-only\" id=\"access\">Read-only console: no admin token is configured, so \
             redrive is disabled. Set <code>SWITCHBOARD_ADMIN_TOKEN</code> on the processor to enable it.</div>"
        }
        Access::Admin => {
            "<div class=\"access\" id=\"access\">Signed in with the admin token (kept in this tab only)\
             <form id=\"sign-out\"><button type=\"submit\">Forget the token</button></form></div>"
        }
    }
}

/// The page a browser gets (401) where reads need the admin token and its request had none, or
/// a wrong one (`refused`). Its form stores the token in the tab and loads the page again with it.
pub(crate) fn sign_in(refused: bool) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in · switchboard</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>\
         <body data-sign-in{}>",
        if refused { " data-refused" } else { "" }
    );
    nav(&mut html, None);
    html.push_str(
        "<h1>The console needs the admin token</h1><p>This processor has <code>SWITCHBOARD_ADMIN_TOKEN</code> set. \
         Enter it to continue: it is kept in this browser tab only and sent as an <code>Authorization</code> header, \
         never in a URL or a cookie.</p>",
    );
    if refused {
        html.push_str("<p class=\"error\" id=\"sign-in-error\">That token was not accepted.</p>");
    }
    let _ = writeln!(
        html,
        "<form id=\"sign-in\" class=\"filters\"><label>admin token<input type=\"password\" name=\"token\" \
         autocomplete=\"current-password\" required></label><button type=\"submit\">Sign in</button></form>\
         <script>{SCRIPT}</script></body></html>"
    );
    html
}

/// A link to `path` with `query`'s non-empty pairs, each value percent-encoded, escaped for an
/// attribute.
pub(crate) fn href(path: &str, query: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse("http://console.invalid").expect("a valid base");
    url.set_path(path);
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query.iter().filter(|(_, value)| !value.is_empty()) {
            pairs.append_pair(name, value);
        }
    }
    let mut link = url.path().to_owned();
    if let Some(query) = url.query().filter(|query| !query.is_empty()) {
        link.push('?');
        link.push_str(query);
    }
    escape(&link)
}

/// The paragraph that says why a page has nothing to show (`id` for tests).
pub(crate) fn error(html: &mut String, id: &str, message: &str) {
    let _ = write!(html, "<p class=\"error\" id=\"{id}\">{}</p>", escape(message));
}

/// A text input of a filter form.
pub(crate) fn input(html: &mut String, label: &str, name: &str, value: &str, placeholder: &str) {
    let _ = write!(
        html,
        "<label>{label}<input name=\"{name}\" id=\"filter-{name}\" value=\"{}\" placeholder=\"{}\"></label>",
        escape(value),
        escape(placeholder),
    );
}

/// A select of a filter form; the empty choice means "any".
pub(crate) fn select(html: &mut String, label: &str, name: &str, value: &str, choices: &[&str]) {
    let _ = write!(
        html,
        "<label>{label}<select name=\"{name}\" id=\"filter-{name}\"><option value=\"\">any</option>"
    );
    for choice in choices {
        let selected = if *choice == value { " selected" } else { "" };
        let _ = write!(html, "<option{selected}>{}</option>", escape(choice));
    }
    html.push_str("</select></label>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_says_when_it_is_read_only_and_never_holds_a_token() {
        let read_only = page("Dead letters", Nav::DeadLetters, Access::ReadOnly, "<p>x</p>", "");
        assert!(read_only.contains("data-access=\"read-only\""));
        assert!(read_only.contains("Read-only console"));
        assert!(read_only.contains("<a href=\"/dead-letters\" class=\"active\""));
        let admin = page("Dead letters", Nav::DeadLetters, Access::Admin, "", "");
        assert!(admin.contains("data-access=\"admin\""));
        assert!(admin.contains("id=\"sign-out\""));
        assert!(!admin.contains("Read-only"));
        let refused = sign_in(true);
        assert!(refused.contains("data-sign-in data-refused"));
        assert!(refused.contains("That token was not accepted"));
        assert!(sign_in(false).contains("<body data-sign-in>"));
    }

    #[test]
    fn links_encode_their_values_and_drop_empty_ones() {
        assert_eq!(
            href(
                "/search",
                &[("phone_id", "+1 555&x"), ("call_sid", ""), ("source", "twilio")]
            ),
            "/search?phone_id=%2B1+555%26x&amp;source=twilio"
        );
        assert_eq!(href("/calls/CA\"1", &[]), "/calls/CA%221");
    }
}
